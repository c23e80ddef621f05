"""Builders with the official names: `build_sam2` (and `build_sam2_video_predictor` in the video module)."""

import dataclasses
import functools
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sam2_jax import configs as model_configs
from sam2_jax import compilation_cache
from sam2_jax.checkpoint import hf as hf_ckpt
from sam2_jax.checkpoint import orbax as orbax_ckpt
from sam2_jax.checkpoint import torch as torch_ckpt
from sam2_jax.modeling.initialization import torch_default_init
from sam2_jax.modeling.sam2 import SAM2

Params = Any

# Decoder settings the official builders add with `apply_postprocessing=True`.
POSTPROCESSING = dict(dynamic_multimask_via_stability=True, dynamic_multimask_stability_delta=0.05,
                      dynamic_multimask_stability_thresh=0.98)


@dataclasses.dataclass
class SAM2Model:
  """A SAM 2 Flax module with its params: what `build_sam2` returns and the predictors take."""
  config: ml_collections.FrozenConfigDict
  params: Params

  @functools.cached_property
  def module(self) -> SAM2:
    return SAM2(self.config)

  def apply(self, method: str, *args, **kwargs):
    """Runs `SAM2.<method>` with this model's params."""
    return self.module.apply({"params": self.params}, *args, method=getattr(SAM2, method), **kwargs)

  @property
  def image_size(self) -> int:
    return self.config.image_size


def get_model_config(config_name: str, **overrides) -> ml_collections.FrozenConfigDict:
  """The named official config with `overrides` (e.g. image_size=512) applied."""
  config = model_configs.get_config(config_name)
  for key, value in overrides.items():
    if key not in config:
      raise ValueError(f"Unknown model config override {key!r}; valid keys: {', '.join(sorted(config.keys()))}.")
    if isinstance(config[key], ml_collections.ConfigDict):  # a nested group, e.g. trunk=dict(embed_dim=32)
      config[key].update(dict(value))
    else:
      config[key] = value
  if "trunk" in overrides and "neck" not in overrides:  # keep the neck's inputs the trunk's stage widths
    config.neck.backbone_channel_list = tuple(config.trunk.embed_dim * 2**i for i in reversed(range(4)))
  if config.image_size % 32 or config.image_size < 64:
    raise ValueError(f"image_size must be a positive multiple of 32 (at least 64), got {config.image_size}.")
  return ml_collections.FrozenConfigDict(config)


def abstract_params(config: ml_collections.FrozenConfigDict) -> Params:
  """Shapes and dtypes of the model's params, without computing anything."""
  image = jax.ShapeDtypeStruct((1, config.image_size, config.image_size, 3), jnp.float32)
  return jax.eval_shape(lambda x: SAM2(config).init(jax.random.key(0), x), image)["params"]


def init_params(config: ml_collections.FrozenConfigDict, seed: int | jax.Array = 0) -> Params:
  """Randomly initialised params, distributed as the official model's (`torch_default_init`).

  `seed` is an int or a PRNG key; the result is jitted, so it can be placed with `out_shardings`
  when this is wrapped in `jax.jit`.
  """
  key = jax.random.key(seed) if isinstance(seed, (int, np.integer)) else seed
  image = jnp.zeros((1, config.image_size, config.image_size, 3), jnp.float32)

  def init(key):
    key_flax, key_torch = jax.random.split(key)
    return torch_default_init(SAM2(config).init(key_flax, image)["params"], key_torch)

  return jax.jit(init)(key)


def infer_config_name(state_dict: Mapping[str, Any]) -> str:
  """The official config a state dict was trained with, from its keys and trunk shapes."""
  version = "sam2.1" if "no_obj_embed_spatial" in state_dict else "sam2"
  key = "image_encoder.trunk.pos_embed"
  if key not in state_dict:
    raise ValueError(f"Cannot tell the model size: the checkpoint has no {key!r}; pass --config.")
  embed_dim = state_dict[key].shape[1]
  depth = 1 + max(int(k.split(".")[3]) for k in state_dict if k.startswith("image_encoder.trunk.blocks."))
  sizes = {(96, 12): "t", (96, 16): "s", (112, 24): "b+", (144, 48): "l"}
  if (embed_dim, depth) not in sizes:
    raise ValueError(f"No official config has a trunk of width {embed_dim} and depth {depth}; pass --config.")
  return f"{version}_hiera_{sizes[embed_dim, depth]}"


def _check_version(state_dict: Mapping[str, Any], config_name: str) -> None:
  """Explains a SAM 2 / SAM 2.1 mix-up; other mismatches are left to the strict key-by-key report."""
  try:
    inferred = infer_config_name(state_dict)
  except ValueError:
    return
  has_21 = inferred.startswith("sam2.1")
  wants_21 = config_name.startswith("sam2.1")
  if has_21 != wants_21:
    raise ValueError(
        f"The checkpoint is a {'SAM 2.1' if has_21 else 'SAM 2 (2.0)'} checkpoint but config {config_name!r} is "
        f"{'SAM 2.1' if wants_21 else 'SAM 2 (2.0)'}: use config {inferred!r}.")


def params_from_state_dict(state_dict: Mapping[str, Any], config: ml_collections.FrozenConfigDict) -> Params:
  """Strictly converts an official state dict for `config` (see checkpoint.torch)."""
  _check_version(state_dict, config.name)
  return torch_ckpt.state_dict_to_params(state_dict, abstract_params(config), context=f" {config.name}")


def find_sam2_jax_checkpoint(checkpoint: str | os.PathLike) -> str | None:
  """The Orbax directory (model checkpoint or training step) that `checkpoint` names.

  None when `checkpoint` is a state-dict file or a Hugging Face model folder; ValueError when it does not
  exist or is a folder holding no model. Reads no weights, so callers can check a path before doing work.
  """
  checkpoint = os.fspath(checkpoint)
  if not os.path.exists(checkpoint):
    raise ValueError(f"Checkpoint {checkpoint!r} does not exist.")
  directory = orbax_ckpt.find_checkpoint(checkpoint)
  if directory is None and os.path.isdir(checkpoint) and hf_ckpt.safetensors_files(checkpoint) is None:
    raise ValueError(f"Checkpoint folder {checkpoint!r} holds no model: expected a sam2_jax model checkpoint (from "
                     "`python -m sam2_jax.convert`), a train.py workdir or one of its checkpoint steps, or a Hugging "
                     "Face model folder (model.safetensors).")
  return directory


def build_sam2(config_name: str | None = None, checkpoint: str | os.PathLike | None = None,
               apply_postprocessing: bool = True, seed: int = 0, **overrides) -> SAM2Model:
  """Builds SAM 2 like the official `build_sam2`.

  Args:
    config_name: an official config name ("sam2.1_hiera_t", ...; ".yaml" paths are accepted).
      May be None when `checkpoint` tells it.
    checkpoint: an official `.pt` file or a Hugging Face transformers SAM 2 checkpoint (a `.safetensors`
      file or model folder; converted on the fly), a directory written by `python -m sam2_jax.convert`,
      a train.py workdir (its newest checkpoint) or one of its steps (`{workdir}/checkpoints/{step}`),
      or None for random weights.
    apply_postprocessing: dynamic multimask fallback via stability, as the official builder.
    seed: seed of the random initialisation when `checkpoint` is None.
    **overrides: model config fields, e.g. image_size=512 or compute_dtype="bfloat16"; nested groups
      take dicts, e.g. trunk=dict(stages=(1, 1, 1, 1)).
  """
  compilation_cache.enable()
  if apply_postprocessing:
    overrides = {**POSTPROCESSING, **overrides}
  if checkpoint is None:
    if config_name is None:
      raise ValueError("build_sam2 needs a config name when no checkpoint is given.")
    config = get_model_config(config_name, **overrides)
    return SAM2Model(config, init_params(config, seed))
  checkpoint = os.fspath(checkpoint)
  directory = find_sam2_jax_checkpoint(checkpoint)
  if directory is not None:
    metadata = orbax_ckpt.load_metadata(directory)
    saved_name = metadata["config_name"]
    if config_name is not None and model_configs.get_config(config_name).name != saved_name:
      raise ValueError(f"Checkpoint {checkpoint!r} holds a {saved_name!r} model, not {config_name!r}.")
    config = get_model_config(saved_name, **{**metadata.get("overrides", {}), **overrides})
    return SAM2Model(config, orbax_ckpt.load_params(directory, abstract_params(config)))
  state_dict = hf_ckpt.read_state_dict(checkpoint)
  config = get_model_config(config_name or infer_config_name(state_dict), **overrides)
  return SAM2Model(config, jax.tree.map(jnp.asarray, params_from_state_dict(state_dict, config)))


def to_state_dict(model: SAM2Model) -> dict[str, np.ndarray]:
  """The model's params as an official state dict of NumPy arrays."""
  return torch_ckpt.params_to_state_dict(model.params)
