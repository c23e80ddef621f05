"""The SAM 2 training forward pass and train step: image encoder over all frames, then a scan over
frames carrying the memory bank, with the official interactive prompt simulation and losses.

Batches (from `sam2_jax.data.pipeline`): images uint8 (B, T, S, S, 3), masks bool (B, T, O, S, S),
obj_valid bool (B, O). The O objects of the B clips are flattened to N = B * O tracked objects,
each with its clip's image features, as the official trainer does. Prompts live in fixed-size
buffers with a token mask, so every frame has the same shapes whatever prompts it received.
"""

import dataclasses
import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from sam2_jax.build_sam import get_model_config, init_params
from sam2_jax.modeling import track
from sam2_jax.modeling.memory_bank import MemoryBank
from sam2_jax.modeling.sam2 import HIDDEN_DIM, SAM2, use_multimask
from sam2_jax.predictors import transforms
from sam2_jax.training import losses
from sam2_jax.training import optimizer
from sam2_jax.training import prompt_simulation as ps
from sam2_jax.training import sharding

Params = Any


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Params
  opt_state: Any
  rng: jax.Array


def clip_losses(module: SAM2, batch: dict[str, jax.Array], key: jax.Array, prompts: ml_collections.ConfigDict,
                loss_config: losses.LossConfig = losses.LossConfig(), freeze_image_encoder: bool = False,
                remat: bool = True) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The official training loss of a batch of clips (use through `module.apply`)."""
  images, gt_masks, valid = batch["images"], batch["masks"], batch["obj_valid"]
  b, t, s = images.shape[:3]
  o = gt_masks.shape[2]
  n = b * o
  x = transforms.normalize(images.reshape(b * t, s, s, 3))
  feats = module.forward_image(x, deterministic=freeze_image_encoder)  # drop path in a trained trunk
  if freeze_image_encoder:
    feats = jax.lax.stop_gradient(feats)
  per_object = lambda f: jnp.repeat(jnp.swapaxes(f.reshape(b, t, *f.shape[1:]), 0, 1), o, axis=1)  # (T, N, ...)
  vision = per_object(feats["vision_features"])
  high_res = [per_object(f) for f in feats["high_res_features"]]
  gt = jnp.swapaxes(gt_masks, 0, 1).reshape(t, n, s, s)
  valid = valid.reshape(n)

  k_plan, k_steps = jax.random.split(key)
  plan = ps.sample_clip_plan(k_plan, t, prompts)
  num_pts = 2 + prompts.num_correction_pt_per_frame
  num_cond = min(t, max(prompts.num_init_cond_frames,
                        prompts.num_frames_to_correct if prompts.add_all_frames_to_correct_as_cond else 0, 1))
  bank = MemoryBank.empty(module.config, n, num_cond, training=True, dtype=jnp.float32)
  zero = {k: jnp.zeros((), jnp.float32) for k in losses.LOSS_KEYS}

  def frame_step(carry, xs):
    bank, num_cond_used, sums = carry
    frame, step_key = xs
    k_box, k_click, k_corr = jax.random.split(step_key, 3)
    is_init, correct = plan["init_cond"][frame], plan["correct"][frame]
    f = {"vision_features": vision[frame], "vision_pos_enc": feats["vision_pos_enc"],
         "high_res_features": [h[frame] for h in high_res]}
    gt_t = gt[frame]
    backbone = f["vision_features"]
    pix = track.conditioned_features(module, bank, f, frame, t, is_init, False, training=True, deterministic=False)

    # Initial prompt: the GT mask (taken as the output), or a noisy box / one click.
    use_box = plan["use_box"][frame]
    box_pts, box_lbl = ps.sample_box_points(k_box, gt_t, prompts.box_noise, prompts.box_noise_bound)
    click_pt, click_lbl = ps.sample_points_from_errors(k_click, gt_t, jnp.zeros_like(gt_t))
    coords = jnp.zeros((n, num_pts, 2), jnp.float32)
    labels = -jnp.ones((n, num_pts), jnp.int32)
    prompted = is_init & plan["use_pt"]
    coords = jnp.where(use_box, coords.at[:, :2].set(box_pts), coords.at[:, 0].set(click_pt))
    labels = jnp.where(use_box, labels.at[:, :2].set(box_lbl), labels.at[:, 0].set(click_lbl))
    count = jnp.where(prompted, jnp.where(use_box, 2, 1), 0)

    def step_loss(o):
      terms = losses.step_losses(o["high_res_multimasks"], o["ious"], o["object_score_logits"], gt_t, loss_config)
      return {k: jnp.sum(v * valid) for k, v in terms.items()}

    # The SAM passes of the frame, one decoder for all. Round 0 is the first prompt: the prompted heads, or the
    # mask-as-output path (no memory, no points, the GT mask as SAM's mask input, one mask; the output is the GT
    # mask, the pointer this pass's). Rounds 1..K run on the frames to correct: a click from each object's error
    # region, the previous logits as the mask prompt.
    gt_as_output = is_init & ~plan["use_pt"]
    gt_mask_prompt = module.downsample_mask(gt_t[:, None])
    triple = lambda x: jnp.repeat(x, 3, axis=1)

    def sam_round(carry, xs):
      first, round_key = xs

      def run(carry):
        out, coords, labels, count, frame_sums = carry
        k_gt, k_pt = jax.random.split(round_key)
        from_gt = jax.random.uniform(k_gt) < prompts.prob_to_sample_from_gt
        pred = jnp.where(from_gt, False, out["high_res_masks"][:, 0] > 0)
        pt, lbl = ps.sample_points_from_errors(k_pt, gt_t, pred)
        coords = jnp.where(first, coords, coords.at[:, count].set(pt))
        labels = jnp.where(first, labels, labels.at[:, count].set(lbl))
        count = jnp.where(first, count, count + 1)
        as_output = first & gt_as_output
        new = module.forward_sam_heads(
            jnp.where(as_output, backbone, pix), coords, labels,
            jnp.where(first, gt_mask_prompt, out["low_res_masks"]), f["high_res_features"],
            ~as_output & use_multimask(module.config, is_init, count), num_points=count, train=True,
            use_mask_inputs=~first | gt_as_output)
        mask_out = module.mask_as_output(gt_t[:, None], new["obj_ptr"])
        mask_out = dict(mask_out, low_res_multimasks=triple(mask_out["low_res_multimasks"]),
                        high_res_multimasks=triple(mask_out["high_res_multimasks"]), ious=triple(mask_out["ious"]))
        new = jax.tree.map(lambda m, o: jnp.where(as_output, m, o), mask_out, new)
        frame_sums = jax.tree.map(jnp.add, frame_sums, step_loss(new))
        return {k: new[k].astype(v.dtype) for k, v in out.items()}, coords, labels, count, frame_sums

      return jax.lax.cond(first | correct, run, lambda c: c, carry), None

    s4 = gt_mask_prompt.shape[-1]
    no_output = dict(low_res_masks=jnp.zeros((n, 1, s4, s4)), high_res_masks=jnp.zeros((n, 1, s, s)),
                     obj_ptr=jnp.zeros((n, HIDDEN_DIM)), object_score_logits=jnp.zeros((n, 1)))
    rounds = prompts.num_correction_pt_per_frame
    round_keys = jnp.concatenate([k_corr[None], jax.random.split(k_corr, rounds)])
    out, _, _, _, frame_sums = jax.lax.scan(
        sam_round, (no_output, coords, labels, count, zero), (jnp.arange(rounds + 1) == 0, round_keys))[0]
    as_cond = is_init | (prompts.add_all_frames_to_correct_as_cond & correct)
    bank = track.remember(module, bank, backbone, out["high_res_masks"], out["object_score_logits"], out["obj_ptr"],
                          frame, as_cond, jnp.minimum(num_cond_used, num_cond - 1))
    sums = jax.tree.map(jnp.add, sums, frame_sums)
    iou = _mask_iou(out["high_res_masks"][:, 0] > 0, gt_t)
    return (bank, num_cond_used + as_cond.astype(jnp.int32), sums), iou

  body = jax.checkpoint(frame_step) if remat else frame_step
  (_, _, sums), ious = jax.lax.scan(body, (bank, jnp.zeros((), jnp.int32), zero),
                                    (plan["order"], jax.random.split(k_steps, t)))
  num_objects = jnp.maximum(jnp.sum(valid.astype(jnp.float32)), 1.0)
  terms = {k: v / num_objects for k, v in sums.items()}
  total = losses.combine_losses(terms, loss_config)
  metrics = dict(terms, loss=total, mask_iou=jnp.sum(ious * valid) / (num_objects * t),
                 num_objects=num_objects)
  return total, metrics


def _mask_iou(pred: jax.Array, gt: jax.Array) -> jax.Array:
  inter = jnp.sum(pred & gt, axis=(-2, -1)).astype(jnp.float32)
  union = jnp.sum(pred | gt, axis=(-2, -1)).astype(jnp.float32)
  return jnp.where(union > 0, inter / jnp.maximum(union, 1.0), 1.0)


def train_step(module: SAM2, tx: optax.GradientTransformation, state: TrainState, batch: dict[str, jax.Array],
               prompts: ml_collections.ConfigDict, loss_config: losses.LossConfig = losses.LossConfig(),
               freeze_image_encoder: bool = False, remat: bool = True) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimisation step: loss and gradients of `clip_losses`, then the optimizer update."""
  rng, key, dropout_key = jax.random.split(state.rng, 3)

  def loss_fn(params):
    return module.apply({"params": params}, batch, key, prompts, loss_config, freeze_image_encoder, remat,
                        method=clip_losses, rngs={"dropout": dropout_key})

  (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state, rng=rng), metrics


def from_config(module: SAM2, config: ml_collections.ConfigDict, params: Params) -> tuple[
    optax.GradientTransformation, Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]]:
  """The optimizer for `params` (a tree or its abstract shapes) and the train step (not jitted) of a training
  config (`configs/train.py`): `config.freeze_image_encoder` both stops the encoder's gradients and keeps the
  optimizer (weight decay included) off its params."""
  tx = optimizer.make_optimizer(config.optimizer, params, config.num_steps, config.freeze_image_encoder)
  return tx, functools.partial(train_step, module, tx, prompts=config.prompts,
                               freeze_image_encoder=config.freeze_image_encoder, remat=config.remat)


def model_config(config: ml_collections.ConfigDict, kernels: str | None = None) -> ml_collections.FrozenConfigDict:
  """The model config of a training config (`configs/train.py`), its kernel set replaced by `kernels` if given.

  Raises ValueError for the errors that would otherwise surface only after generating data or compiling.
  """
  for name in ("num_steps", "log_every", "checkpoint_every", "keep_checkpoints"):
    if config[name] <= 0:
      raise ValueError(f"config.{name} must be positive, got {config[name]}.")
  if config.eval_every < 0:
    raise ValueError(f"config.eval_every must be >= 0 (0: no evaluation), got {config.eval_every}.")
  overrides = config.model_overrides.to_dict()
  if kernels is not None:
    overrides["kernels"] = kernels
  result = get_model_config(config.model_name, **overrides)
  if config.data.resolution != result.image_size:
    raise ValueError(f"config.data.resolution ({config.data.resolution}) must equal the model's image_size "
                     f"({result.image_size}).")
  return result


@dataclasses.dataclass(frozen=True)
class Program:
  """What a training config runs on a mesh: train.py executes it, `sam2_jax.aot_compile` compiles it."""
  module: SAM2
  init_state: Callable[[Params, jax.Array], TrainState]  # (params, key) -> the step-0 state
  abstract_state: TrainState  # ShapeDtypeStructs carrying the state's shardings
  train_step: Any  # jitted (state, global batch) -> (state, metrics), sharded on the mesh; donates the state

  @property
  def state_shardings(self) -> TrainState:
    return jax.tree.map(lambda x: x.sharding, self.abstract_state)


def program(config: ml_collections.ConfigDict, model_config: ml_collections.FrozenConfigDict,
            mesh: jax.sharding.Mesh) -> Program:
  """The train step of a training config (`configs/train.py`) on `mesh`, with the state's shardings."""
  module = SAM2(model_config)
  abstract_params = jax.eval_shape(functools.partial(init_params, model_config), jax.random.key(0))
  tx, step_fn = from_config(module, config, abstract_params)

  def init_state(params, key):
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=key)

  abstract_state = jax.eval_shape(init_state, abstract_params, jax.random.key(0))
  shardings = sharding.param_shardings(abstract_state, mesh)
  train_step = jax.jit(step_fn, in_shardings=(shardings, sharding.batch_sharding(mesh)),
                       out_shardings=(shardings, None), donate_argnums=0)
  abstract_state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state,
                                shardings)
  return Program(module, init_state, abstract_state, train_step)
