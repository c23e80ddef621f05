r"""Does a from-scratch model learn to read its memory? Overfits one synthetic clip and says.

Trains the demo model (`configs/train.py:demo`, initialised as the official model is, one mask
output on tracked frames unless `--multimask_output_for_tracking`) on one fixed clip with several
objects: each object's ground-truth mask on frame 0 is the prompt, frames 1.. are tracked from
memory alone, official losses, Adam. Then it tracks the clip with the video predictor and prints,
per object, the mean IoU on the tracked frames, and how much the objects' memories and
memory-conditioned features (frame 1) differ. A model that reads its memory gives each object its
own mask; one that does not gives every object the same mask (for two objects: the union), and
the objects' features converge.

  python -m bench.overfit_clip --blank              # uniform grey frames: the memory holds the only clue
  python -m bench.overfit_clip --blank --lr=1e-3    # too high a rate: the memory signal is suppressed
  python -m bench.overfit_clip                      # the clip's own frames
  python -m bench.overfit_clip --blank --official   # the same with the official SAM2Train
"""

import functools
import time
from typing import Any, Callable

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bench import official_training
from configs.train import get_config
from data import synthetic
from sam2_jax import huge_pages
from sam2_jax.build_sam import SAM2Model, abstract_params, get_model_config, init_params
from sam2_jax.checkpoint.torch import state_dict_to_params
from sam2_jax.evaluation.clicks import mask_iou
from sam2_jax.modeling import track
from sam2_jax.modeling.memory_bank import MemoryBank
from sam2_jax.modeling.sam2 import SAM2
from sam2_jax.predictors import transforms
from sam2_jax.predictors.video import SAM2VideoPredictor
from sam2_jax.training import prompt_simulation, step

_SIZE = flags.DEFINE_integer("image_size", 128, "Square input size.")
_STEPS = flags.DEFINE_integer("steps", 600, "Optimisation steps.")
_REPORT_EVERY = flags.DEFINE_integer("report_every", 200, "Steps between evaluations.")
_LR = flags.DEFINE_float("lr", 1e-4, "Adam learning rate (gradients clipped at norm 1).")
_OBJECTS = flags.DEFINE_integer("num_objects", 2, "Objects in the clip.")
_FRAMES = flags.DEFINE_integer("num_frames", 8, "Frames in the clip.")
_FRAME_STEP = flags.DEFINE_integer("frame_step", 0, "Motion between frames (0: all frames equal).")
_BLANK = flags.DEFINE_bool("blank", False, "Replace the frames by uniform grey (masks unchanged).")
_MASK_SCALE = flags.DEFINE_float("mask_scale", 1.0, "Factor on the memory encoder's mask projection at init.")
_MULTIMASK = flags.DEFINE_bool("multimask_output_for_tracking", False,
                                "Three masks on tracked frames, the best one supervised and the highest predicted "
                                "IoU tracked (the official setting; off, one mask must be the object's).")
_OFFICIAL = flags.DEFINE_bool("official", False, "Train the official SAM2Train instead (same sizes, prompts, losses "
                               "and Adam; its own init), converted to our model for the report.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the clip, the weights and the prompts.")


def pick_clip(size: int, num_frames: int, frame_step: int, num_objects: int, seed: int):
  """The first synthetic SA-V clip with at least `num_objects` objects: (frames, masks (T, O, H, W))."""
  for index in range(1000):
    frames, masks = synthetic.render_clip(synthetic.sample_rng(seed, "sav", index), size, size, num_frames,
                                          frame_step=frame_step, max_objects=synthetic.MAX_OBJECTS)
    if masks.shape[1] >= num_objects:
      return frames, masks[:, :num_objects]
  raise ValueError(f"No synthetic clip with {num_objects} objects in 1000 tries.")


def memory_difference(module: SAM2, frames: np.ndarray, masks: np.ndarray) -> tuple[jax.Array, jax.Array]:
  """Relative difference between objects 0 and 1 of the frame-0 memory and the frame-1 conditioned features."""
  x = transforms.normalize(jnp.asarray(frames[:2]))
  feats = module.forward_image(x)
  frame = lambda i: {"vision_features": feats["vision_features"][i:i + 1], "vision_pos_enc": feats["vision_pos_enc"],
                     "high_res_features": [h[i:i + 1] for h in feats["high_res_features"]]}
  n = masks.shape[1]
  per_object = lambda a: jnp.broadcast_to(a, (n, *a.shape[1:]))
  first = frame(0)
  out = module.use_mask_as_output(per_object(first["vision_features"]),
                                  [per_object(h) for h in first["high_res_features"]], jnp.asarray(masks[0])[:, None])
  memory, _ = module.encode_new_memory(per_object(first["vision_features"]), out["high_res_masks"],
                                       out["object_score_logits"], False)
  bank = MemoryBank.empty(module.config, n, 1, training=True, dtype=jnp.float32)
  bank = bank.add_cond(0, 0, memory.astype(jnp.float32), out["obj_ptr"], jnp.ones((n,), bool))
  conditioned = track.conditioned_features(module, bank, frame(1), 1, frames.shape[0], False, False, training=True)
  rel = lambda a: jnp.linalg.norm(a[0] - a[1]) / jnp.linalg.norm(a[0])
  return rel(memory), rel(conditioned)


def tracked_iou(config, params, frames: np.ndarray, masks: np.ndarray) -> np.ndarray:
  """Mean IoU of each object over frames 1.. when the video predictor tracks it from its frame-0 mask."""
  predictor = SAM2VideoPredictor(SAM2Model(config, jax.device_get(params)))
  state = predictor.init_state(frames)
  for obj in range(masks.shape[1]):
    predictor.add_new_mask(state, 0, obj + 1, masks[0, obj])
  ious = []
  for frame_idx, _, logits in predictor.propagate_in_video(state):
    if frame_idx:
      pred = np.asarray(logits[:, 0] > 0)
      ious.append([mask_iou(p, g) for p, g in zip(pred, masks[frame_idx])])
  return np.mean(ious, axis=0)


Trainer = tuple[Callable[[], float], Callable[[], Any]]  # (one step, returning its loss; the current params)


def jax_trainer(module: SAM2, params, batch: dict[str, np.ndarray]) -> Trainer:
  """Our train step with Adam on `batch`."""
  prompts = prompt_simulation.default_config()
  prompts.prob_to_use_pt_input, prompts.num_init_cond_frames = 0.0, 1
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(_LR.value))
  state = step.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                          rng=jax.random.key(_SEED.value + 1))
  train = jax.jit(functools.partial(step.train_step, module, tx, prompts=prompts))
  batch = jax.tree.map(jnp.asarray, batch)

  def advance():
    nonlocal state
    state, metrics = train(state, batch)
    return float(metrics["loss"])

  return advance, lambda: state.params


def official_trainer(name: str, overrides: dict[str, Any], batch: dict[str, np.ndarray],
                     abstract_params) -> Trainer:
  """The official SAM2Train (same sizes and prompts, its own init) with torch Adam on `batch`; params converted."""
  import torch  # pylint: disable=g-import-not-at-top

  torch.manual_seed(_SEED.value)
  model = official_training.build_official_train(
      name, overrides["image_size"], trunk=dict(overrides["trunk"], drop_path_rate=0.0),
      memory_attention=overrides["memory_attention"],
      multimask_output_for_tracking=overrides["multimask_output_for_tracking"],
      prob_to_use_pt_input_for_train=0.0, num_init_cond_frames_for_train=1, rand_init_cond_frames_for_train=False)
  loss_fn = official_training.official_loss()
  opt = torch.optim.Adam(model.parameters(), lr=_LR.value)
  torch_batch = official_training.official_batch(batch)
  count = 0

  def advance():
    nonlocal count
    count += 1
    model.rng = np.random.default_rng(_SEED.value + count)
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(torch_batch), torch_batch.masks)["core_loss"]
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return float(loss.detach())

  def current_params():
    return state_dict_to_params({k: v.detach().numpy() for k, v in model.state_dict().items()}, abstract_params)

  return advance, current_params


def main(argv):
  del argv
  demo = get_config("demo")
  overrides = dict(demo.model_overrides.to_dict(), image_size=_SIZE.value,
                   multimask_output_for_tracking=_MULTIMASK.value)
  config = get_model_config(demo.model_name, **overrides)
  module = SAM2(config)
  frames, masks = pick_clip(_SIZE.value, _FRAMES.value, _FRAME_STEP.value, _OBJECTS.value, _SEED.value)
  if _BLANK.value:
    frames = np.full_like(frames, 128)
  print(f"clip: {masks.shape[1]} objects, frame-0 areas {masks[0].sum((1, 2)).tolist()} px", flush=True)
  batch = dict(images=frames[None], masks=masks[None], obj_valid=np.ones((1, masks.shape[1]), bool))

  if _OFFICIAL.value:
    advance, current_params = official_trainer(demo.model_name, overrides, batch, abstract_params(config))
  else:
    params = init_params(config, _SEED.value)
    downsampler = params["memory_encoder"]["mask_downsampler"]
    last = max(downsampler, key=lambda name: int(name.split("_")[1]))
    downsampler[last]["kernel"] = downsampler[last]["kernel"] * _MASK_SCALE.value
    advance, current_params = jax_trainer(module, params, batch)
  differences = jax.jit(lambda p: module.apply({"params": p}, frames, masks, method=memory_difference))

  def report(tag: str, params) -> None:
    mem, cond = differences(params)
    iou = tracked_iou(config, params, frames, masks) if tag != "init" else None
    iou_text = "" if iou is None else f" tracked IoU per object {np.round(iou, 3).tolist()}"
    print(f"{tag}: objects' memories differ by {float(mem):.2%}, conditioned features by {float(cond):.2%}"
          + iou_text, flush=True)

  if not _OFFICIAL.value:
    report("init", current_params())
  start = time.perf_counter()
  for i in range(1, _STEPS.value + 1):
    loss = advance()
    if i % _REPORT_EVERY.value == 0 or i == _STEPS.value:
      print(f"step {i} ({time.perf_counter() - start:.0f} s): loss {loss:.3f}", flush=True)
      report(f"step {i}", current_params())


if __name__ == "__main__":
  huge_pages.restart_with_huge_pages()
  app.run(main)
