"""AdamW with the official SAM 2 parameter groups, as one optax transformation.

Rules (official `training/optimizer.py` and the MOSE fine-tune config), applied per parameter by its
official state-dict name:
- learning rate: `vision_lr` for `image_encoder.*`, `lr` otherwise; times a layer-wise decay on the Hiera
  trunk: `layer_decay ** (depth + 1 - layer_id)` with `patch_embed` at layer 0, `blocks.i` at layer i + 1,
  other trunk params at depth + 1 (scale 1), and `*pos_embed*` forced to 1;
- weight decay: `weight_decay`, but 0 for names matching `*bias*` and for the params of torch
  `nn.LayerNorm` modules (the `LayerNorm2d` modules of the conv stacks keep it, as do embeddings);
- gradients clipped to a global L2 norm of `clip_norm` (torch's `clip_grad_norm_`, its 1e-6 included);
- every learning rate follows one cosine from its peak to `end_lr_factor` × peak over training
  (optionally after a linear warmup); the weight decay is decoupled (AdamW: `p -= lr * wd * p`).
Frozen params get no update and no optimizer state, and their gradients do not count in the clipping
norm (as for torch params with `requires_grad=False`): the official buffers that are params in the
Flax tree (`BUFFERS`) always, and `image_encoder.*` with `freeze_image_encoder` (the training config's
option, which also stops the train step's gradients into the encoder).
"""

import dataclasses
import fnmatch
import math
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from sam2_jax.checkpoint.torch import torch_key

Params = Any
Path = tuple[str, ...]

# Module prefixes (official names) whose LayerNorms are `LayerNorm2d`, not `torch.nn.LayerNorm`.
LAYER_NORM_2D = ("sam_prompt_encoder.mask_downscaling.*", "sam_mask_decoder.output_upscaling.*",
                 "memory_encoder.mask_downsampler.encoder.*", "memory_encoder.fuser.layers.*.norm")
# Official buffers (never trained) that the Flax model holds as params.
BUFFERS = ("sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",)
_TRUNK = "image_encoder.trunk"
_TRUNK_BLOCK = re.compile(r"image_encoder\.trunk\.blocks\.(\d+)\.")


def default_config() -> ml_collections.ConfigDict:
  """The official MOSE fine-tune values (AdamW, torch defaults for betas and eps)."""
  return ml_collections.ConfigDict(dict(
      lr=5.0e-6, vision_lr=3.0e-6, weight_decay=0.1, layer_decay=0.9, clip_norm=0.1, warmup_steps=0,
      end_lr_factor=0.1, b1=0.9, b2=0.999, eps=1e-8,
      lr_scales=()))  # (pattern, factor) pairs: params whose official name matches also get lr × factor


@dataclasses.dataclass(frozen=True)
class ParamGroup:
  """How one parameter is optimised: its peak learning rate (base or vision lr × `layer_scale`)."""
  lr: float
  layer_scale: float
  weight_decay: float
  trainable: bool


def _path(key_path) -> Path:
  return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in key_path)


def _flat(tree: Params) -> dict[Path, Any]:
  return {_path(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def trunk_depth(params: Params) -> int:
  """Number of Hiera blocks (`image_encoder/trunk/blocks_i`) in the param tree; 0 without a trunk."""
  trunk = params.get("image_encoder", {}).get("trunk", {})
  return sum(1 for name in trunk if re.fullmatch(r"blocks_\d+", name))


def layer_scale(key: str, depth: int, decay: float) -> float:
  """Layer-wise lr decay of the official param `key` for a trunk of `depth` blocks."""
  if not key.startswith(_TRUNK) or fnmatch.fnmatchcase(key, "*pos_embed*"):
    return 1.0
  num_layers = depth + 1
  block = _TRUNK_BLOCK.match(key)
  if "patch_embed" in key:
    layer_id = 0
  elif block:
    layer_id = int(block[1]) + 1
  else:
    layer_id = num_layers
  return decay ** (num_layers - layer_id)


def is_torch_layer_norm(path: Path, params_flat: dict[Path, Any]) -> bool:
  """Whether the param at `path` belongs to a torch `nn.LayerNorm` (a Flax LayerNorm not in a conv stack)."""
  module = path[:-1]
  if module + ("scale",) not in params_flat:  # only LayerNorms have `scale` params in the tree
    return False
  module_key = torch_key(path).rsplit(".", 1)[0]
  return not any(fnmatch.fnmatchcase(module_key, p) for p in LAYER_NORM_2D)


def param_groups(params: Params, config: ml_collections.ConfigDict, freeze_image_encoder: bool = False) -> Params:
  """A tree like `params` with a `ParamGroup` per parameter (learning rate, decay, trainability)."""
  flat = _flat(params)
  depth = trunk_depth(params)
  vision_lr = config.lr if config.vision_lr is None else config.vision_lr
  groups = {}
  for path in flat:
    key = torch_key(path)
    vision = fnmatch.fnmatchcase(key, "image_encoder.*")
    scale = layer_scale(key, depth, config.layer_decay)
    extra = math.prod(factor for pattern, factor in config.lr_scales if fnmatch.fnmatchcase(key, pattern))
    no_decay = fnmatch.fnmatchcase(key, "*bias*") or is_torch_layer_norm(path, flat)
    groups[path] = ParamGroup(lr=(vision_lr if vision else config.lr) * scale * extra, layer_scale=scale,
                              weight_decay=0.0 if no_decay else config.weight_decay,
                              trainable=key not in BUFFERS and not (vision and freeze_image_encoder))
  return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), [groups[p] for p in flat])


def lr_factor_schedule(total_steps: int, warmup_steps: int = 0, end_lr_factor: float = 0.1) -> optax.Schedule:
  """Multiplier of every peak learning rate at a step (0-based).

  Linear from 0 to 1 over `warmup_steps`, then a cosine from 1 to `end_lr_factor` over the remaining
  steps. Without warmup this is the official fvcore cosine at `where = step / total_steps`.
  """
  if total_steps <= warmup_steps:
    raise ValueError(f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps}).")

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    progress = jnp.clip((step - warmup_steps) / (total_steps - warmup_steps), 0.0, 1.0)
    cosine = end_lr_factor + (1 - end_lr_factor) * 0.5 * (1 + jnp.cos(math.pi * progress))
    if warmup_steps == 0:
      return cosine
    return jnp.where(step < warmup_steps, step / warmup_steps, cosine)

  return schedule


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
  """torch `clip_grad_norm_`: scales gradients by min(1, max_norm / (global L2 norm + 1e-6))."""

  def update_fn(updates, state, params=None):
    del params
    coef = jnp.minimum(max_norm / (optax.tree.norm(updates) + 1e-6), 1.0)
    return jax.tree.map(lambda g: (g * coef).astype(g.dtype), updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def scale_by_param_groups(groups: Params, factor: Callable[[jax.Array], jax.Array]) -> optax.GradientTransformation:
  """Decoupled weight decay and the per-parameter scheduled learning rate: -lr_t * (u + wd * p).

  Looks groups up by path, so it also works inside `optax.multi_transform` (masked trees).
  """
  by_path = _flat(groups)

  def init_fn(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("scale_by_param_groups needs the params (weight decay).")
    f = factor(state.count)

    def one(key_path, u, p):
      group = by_path[_path(key_path)]
      if group.weight_decay:
        u = u + group.weight_decay * p
      return (-group.lr * f * u).astype(u.dtype)

    updates = jax.tree_util.tree_map_with_path(one, updates, params)
    return updates, optax.ScaleByScheduleState(count=optax.safe_int32_increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(config: ml_collections.ConfigDict, params: Params, total_steps: int,
                   freeze_image_encoder: bool = False) -> optax.GradientTransformation:
  """The official SAM 2 AdamW for `params` (a tree or its abstract shapes) over `total_steps` steps.

  `config` fields: lr, vision_lr, weight_decay, layer_decay, clip_norm (None or 0: no clipping),
  warmup_steps, end_lr_factor, b1, b2, eps, lr_scales (see `default_config`). With `freeze_image_encoder`,
  `image_encoder.*` is neither updated nor decayed.
  """
  groups = param_groups(params, config, freeze_image_encoder)
  parts = [clip_by_global_norm(config.clip_norm)] if config.clip_norm else []
  parts += [optax.scale_by_adam(b1=config.b1, b2=config.b2, eps=config.eps),
            scale_by_param_groups(groups, lr_factor_schedule(total_steps, config.warmup_steps,
                                                             config.end_lr_factor))]
  tx = optax.chain(*parts)
  labels = jax.tree.map(lambda g: "train" if g.trainable else "frozen", groups)
  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
