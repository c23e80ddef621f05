r"""Training speed: one jitted sam2-jax train step, its model FLOPs and MFU, and the official `SAM2Train`.

For each config a synthetic batch in the data pipeline's layout (images uint8 (B, T, S, S, 3),
random; masks bool (B, T, O, S, S), one moving ellipse per object; obj_valid all True) goes through
`sam2_jax.training.step.train_step` (loss, gradients, AdamW of `make_optimizer` with the MOSE
fine-tune values), jitted with the train state donated as in train.py. Compilation is timed on its
own; then steps are timed to `block_until_ready`. `--remat` (on by default, as in every config
of configs/train.py) recomputes each frame step in the backward pass: without it the scan over
frames stacks, for every frame, the residuals of both sides of each `lax.cond` (the untaken side
filled with zeros) and of the 7 correction rounds, e.g. 3.0 GB of XLA temporaries for t at 128
(0.9 GB with remat), growing with the image area. Filling and copying those buffers also made it
slower: 12.4 s vs 10.7 s for t at 256 (before the convolution rewrites of layers.py), and for the
demo model at 128 (2 objects, 8 frames) 0.80 s vs 0.43 s with a mask prompt, 0.98 s vs 0.60 s with
correction clicks.

Prompt simulation is fixed so that every timed step does the same work: the official MOSE recipe's
prompt config with a fixed plan, the costliest one the recipe can draw: point prompts (never the
ground-truth mask without clicks), frame 0 as the only initial conditioning frame, and correction
clicks (7 rounds) on frame 0 and on one other frame, which then also runs memory attention; box vs
click, clicks from the ground truth vs from errors, and the extra frame stay random (they do not
change the work). The JAX step reuses the same PRNG key on every step (the state's key is put
back after the step), so `lax.cond` takes the same branches each time; the official model gets
`torch.manual_seed` and a fresh `np.random.default_rng` (its plan sampler) with the same seed
before each step. An average step of the recipe does less: half use the ground-truth masks as
prompts without corrections, half have two initial conditioning frames (no memory attention on
the second), and half of the others correct frame 0 only.

FLOPs per step are counted from the train step's jaxpr (forward, backward and update, without
rematerialisation: model FLOPs): matmuls and convolutions only, 2 per multiply-add, each loop
iteration counted, and each `lax.cond` counted on the branch it actually takes (the predicates
depend only on the PRNG key, so they are evaluated; the count says if any could not be). XLA's own
cost analysis of the compiled step is printed beside it for reference: it counts a loop body once
(the scans over frames and correction rounds) and a conditional at its costliest branch, so it is
well below the executed work. MFU = FLOPs per step / step time / peak, the peak being the measured
rate of a large jitted matmul in the compute dtype on this device (best of runs before and after).

The official `training.model.sam2.SAM2Train` (CPU only, float32) is built with Hydra from the model
section of configs/sam2.1_training/sam2.1_hiera_b+_MOSE_finetune.yaml (drop path 0.1, memory
attention dropout 0.1, the recipe's prompt probabilities with the fixed plan above), with the
trunk and neck sizes of configs/sam2.1/sam2.1_hiera_{t,b+}.yaml and the image size overridden.
Its step is a forward of the same batch (as a `BatchedVideoDatapoint`), the official
`MultiStepMultiMasksAndIous` loss (mask 20, dice 1, iou 1, class 1), `backward()`, gradient
clipping (0.1) and a `torch.optim.AdamW` step, i.e. the same parts as ours (the official param
groups with layer-wise decay do not change the cost). JAX and official steps alternate, each timed
step right after an untimed one of its own (`common.time_interleaved` with `settle`: a training
loop's steady state); `ratio` is JAX time / official time. Our image encoder runs without
drop path (the official trains with 0.1; a cheap elementwise op either way).

  .venv/bin/python -m bench.train_step --configs=t,b+ --image_size=256 --iters=3   # CPU (about 14 min here)
  .venv/bin/python -m bench.train_step --configs=t --image_size=128 --iters=2       # quick
  .venv/bin/python -m bench.train_step --configs=b+ --dtype=bfloat16                # GPU/TPU, 1024

Target on a GPU or TPU: >= 40% MFU for b+ at 1024 in bfloat16; not measured yet (on an H100 the b+
step's compilation outlasted a 10-minute run: README, Performance).
"""

import dataclasses
import gzip
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from bench import common
from bench import official_training
from sam2_jax import huge_pages
from sam2_jax.build_sam import get_model_config, init_params
from sam2_jax.modeling.sam2 import SAM2
from sam2_jax.training import flops
from sam2_jax.training import optimizer as optim
from sam2_jax.training import prompt_simulation, step

_CONFIGS = flags.DEFINE_list("configs", ["t", "b+"], "Model sizes (t, s, b+, l) or full config names.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 1024, "Square input size (multiple of 32).")
_NUM_FRAMES = flags.DEFINE_integer("num_frames", 8, "Frames per clip.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 1, "Clips per step.")
_NUM_OBJECTS = flags.DEFINE_integer("num_objects", 3, "Objects per clip.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Our compute dtype (model compute_dtype).")
_REMAT = flags.DEFINE_bool("remat", True, "Rematerialise each frame step in the backward pass (as the 1024 "
                            "training configs do).")
_ITERS = flags.DEFINE_integer("iters", 5, "Timed steps per contender (median reported).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps per contender after compilation.")
_OFFICIAL = flags.DEFINE_bool("official", True, "Also time the official SAM2Train (CPU backend only).")
_MATMUL_SIZE = flags.DEFINE_integer("matmul_size", 4096, "Side of the square matmul timed for the peak.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the weights, the batch and the prompt simulation.")
_PROFILE_DIR = flags.DEFINE_string("profile_dir", None, "If set, a profiler trace of one more JAX step per config is "
                                   "written under <dir>/<config> (with a Perfetto JSON trace).")

# The fixed plan (see the module docstring), in our prompt config and as official SAM2Train fields.
FIXED_PLAN = dict(prob_to_use_pt_input=1.0, num_init_cond_frames=1, rand_init_cond_frames=False,
                  num_frames_to_correct=2, rand_frames_to_correct=False)


def config_name(name: str) -> str:
  return name if name.startswith("sam2") else f"sam2.1_hiera_{name}"


# ------------------------------------------------------------------------------ inputs
def synthetic_batch(batch: int, frames: int, objects: int, size: int, seed: int) -> dict[str, np.ndarray]:
  """Random uint8 frames and one ellipse per object drifting across the clip (pipeline layout)."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (batch, frames, size, size, 3), dtype=np.uint8)
  yy, xx = np.mgrid[:size, :size].astype(np.float32)
  masks = np.zeros((batch, frames, objects, size, size), bool)
  for b in range(batch):
    for o in range(objects):
      centre = rng.uniform(0.25 * size, 0.75 * size, 2)
      radii = rng.uniform(0.08 * size, 0.2 * size, 2)
      drift = rng.uniform(-0.01 * size, 0.01 * size, 2)
      for t in range(frames):
        cy, cx = centre + t * drift
        masks[b, t, o] = ((yy - cy) / radii[0]) ** 2 + ((xx - cx) / radii[1]) ** 2 <= 1.0
  return dict(images=images, masks=masks, obj_valid=np.ones((batch, objects), bool))


# ------------------------------------------------------------------------------ JAX
@dataclasses.dataclass
class JaxStep:
  """A compiled train step with its state, batch and costs."""
  compiled: Any
  state: Any
  batch: dict
  compile_s: float
  flops: float
  unresolved: int
  xla_flops: float
  metrics: Any = None

  def __call__(self) -> None:
    self.state, self.metrics = self.compiled(self.state, self.batch)
    common.block_until_ready((self.state, self.metrics))


def build_jax_step(name: str, data: dict[str, np.ndarray], dtype: str, remat: bool, seed: int) -> JaxStep:
  """Our jitted train step (fixed prompt key, donated state) for config `name` on the batch `data`."""
  size = data["images"].shape[2]
  config = get_model_config(name, image_size=size, compute_dtype=dtype)
  module = SAM2(config)
  params = init_params(config, seed)
  tx = optim.make_optimizer(optim.default_config(), params, total_steps=1000)
  prompts = prompt_simulation.default_config()
  prompts.update(FIXED_PLAN)

  def fixed_key_step(state, batch, remat):
    new_state, metrics = step.train_step(module, tx, state, batch, prompts, remat=remat)
    return new_state.replace(rng=state.rng), metrics

  state = step.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                          rng=jax.random.key(seed))
  batch = {k: jnp.asarray(v) for k, v in data.items()}
  start = time.perf_counter()
  executed, unresolved = flops.step_flops(lambda s, b: fixed_key_step(s, b, False), state, batch)
  print(f"{name} @ {size}: FLOPs counted in {time.perf_counter() - start:.0f} s, compiling", flush=True)
  start = time.perf_counter()
  jitted = jax.jit(lambda s, b: fixed_key_step(s, b, remat), donate_argnums=0)
  compiled = jitted.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return JaxStep(compiled, state, batch, compile_s, executed, unresolved, float((cost or {}).get("flops", np.nan)))


# ------------------------------------------------------------------------------ official
def build_official_step(name: str, data: dict[str, np.ndarray], seed: int):
  """A zero-argument official train step (forward, loss, backward, clipping, AdamW) on `data`."""
  import torch  # pylint: disable=g-import-not-at-top

  torch.manual_seed(seed)
  model = official_training.build_official_train(
      name, data["images"].shape[2], **{f"{k}_for_train": v for k, v in FIXED_PLAN.items()})
  loss_fn = official_training.official_loss()
  opt = torch.optim.AdamW(model.parameters(), lr=5e-6, weight_decay=0.1)
  batch = official_training.official_batch(data)

  def run() -> None:
    torch.manual_seed(seed)
    model.rng = np.random.default_rng(seed)
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(batch), batch.masks)["core_loss"]
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
    opt.step()
    run.loss = float(loss.detach())

  return run


# ------------------------------------------------------------------------------ main
def bench_config(name: str, size: int, peak: float) -> tuple[JaxStep, dict[str, list[float]]]:
  """Builds, compiles and times one config; returns our step and the timings (ms) per contender."""
  data = synthetic_batch(_BATCH_SIZE.value, _NUM_FRAMES.value, _NUM_OBJECTS.value, size, _SEED.value)
  ours = build_jax_step(name, data, _DTYPE.value, _REMAT.value, _SEED.value)
  note = f", {ours.unresolved} conditional(s) with unknown predicates at their costliest" if ours.unresolved else ""
  print(f"{name} @ {size}: compiled in {ours.compile_s:.1f} s; {ours.flops / 1e9:.1f} GFLOP/step executed in matmuls "
        f"and convolutions{note} (XLA cost analysis: {ours.xla_flops / 1e9:.1f}); peak {peak / 1e9:.0f} GFLOP/s",
        flush=True)
  fns = {"jax": ours}
  if _OFFICIAL.value and jax.default_backend() == "cpu":
    fns["official"] = build_official_step(name, data, _SEED.value)
  times = common.time_interleaved(fns, _ITERS.value, warmup=_WARMUP.value, settle=True)
  if _PROFILE_DIR.value:
    directory = f"{_PROFILE_DIR.value}/{name}"
    with jax.profiler.trace(directory, create_perfetto_trace=True):
      ours()
    with gzip.open(f"{directory}/step.hlo.txt.gz", "wt") as f:  # maps the trace's HLO op names to module paths
      f.write(ours.compiled.as_text())
  for contender, ms in times.items():
    print(f"  {contender}: " + ", ".join(f"{t:.0f}" for t in ms) + " ms", flush=True)
  official = f", official {fns['official'].loss:.4f}" if "official" in fns else ""
  print(f"  loss of the last step: jax {float(ours.metrics['loss']):.4f}{official} (different random weights)",
        flush=True)
  return ours, times


def main(argv):
  del argv
  size = _IMAGE_SIZE.value
  print(common.thread_info(), flush=True)
  if _OFFICIAL.value and jax.default_backend() != "cpu":
    print("Official SAM2Train skipped: it runs on the CPU only here.", flush=True)
  print(f"batch {_BATCH_SIZE.value} clip(s) x {_NUM_FRAMES.value} frames x {_NUM_OBJECTS.value} objects at {size}, "
        f"compute {_DTYPE.value}, remat {_REMAT.value}, {_ITERS.value} timed step(s)", flush=True)
  peak = flops.matmul_rate(_DTYPE.value, _MATMUL_SIZE.value)
  results = [(config_name(n), *bench_config(config_name(n), size, peak)) for n in _CONFIGS.value]
  peak = max(peak, flops.matmul_rate(_DTYPE.value, _MATMUL_SIZE.value))  # shared machine: best of before and after
  print(f"\n{_DTYPE.value} matmul {_MATMUL_SIZE.value}^2 on {jax.devices()[0].device_kind}: "
        f"{peak / 1e9:.0f} GFLOP/s (best of before and after)", flush=True)
  header = ["config", "size", "clips", "frames", "objects", "JAX step ms (min-max)", "compile s", "GFLOP/step (XLA)",
            "GFLOP/s", "peak GFLOP/s", "MFU", "official fwd+bwd+AdamW ms (min-max)", "ratio JAX/official"]
  rows = []
  for name, ours, times in results:
    ms = common.median(times["jax"])
    achieved = ours.flops / (1e-3 * ms)
    official = times.get("official")
    rows.append([name, size, _BATCH_SIZE.value, _NUM_FRAMES.value, _NUM_OBJECTS.value,
                 f"{ms:.0f} ({common.spread(times['jax'])})", f"{ours.compile_s:.0f}",
                 f"{ours.flops / 1e9:.0f} ({ours.xla_flops / 1e9:.0f})", f"{achieved / 1e9:.0f}",
                 f"{peak / 1e9:.0f}", f"{100 * achieved / peak:.0f}%",
                 f"{common.median(official):.0f} ({common.spread(official)})" if official else "-",
                 f"{ms / common.median(official):.2f}" if official else "-"])
  common.print_table(header, rows)


if __name__ == "__main__":
  huge_pages.restart_with_huge_pages()
  app.run(main)
