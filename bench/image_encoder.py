r"""Image encoder speed: sam2-jax vs the official PyTorch SAM 2 on the same CPU.

Times the same computation on both sides: the official `SAM2Base.forward_image` (Hiera trunk,
FPN neck, and the mask decoder's conv_s0/conv_s1 on the two high-resolution levels) under
`torch.inference_mode`, against our jitted `SAM2.forward_image`, same config and weights (the
official state dict converted with `params_from_state_dict`), batch 1, the same input image.

Each side is timed as its users run it: every contender (the official model, then ours in each
`--dtypes` compute dtype) runs in a process of its own, one after the other; the official one in
this command's environment, ours restarted with glibc's huge-pages tunable as our command-line
tools do. In each process, compilation and `--warmup` runs are untimed, then the median of
`--iters` runs is reported with the min-max spread. Both frameworks keep their default thread
settings (printed by each process).

  .venv/bin/python -m bench.image_encoder --configs=t,b+ --image_size=1024 --iters=5
  .venv/bin/python -m bench.image_encoder --dtypes=float32,bfloat16   # adds our bfloat16 compute
  .venv/bin/python -m bench.image_encoder --configs=t --image_size=128 --iters=1 --warmup=0   # a smoke run

`ratio` is JAX time / PyTorch float32 time (below 1: JAX is faster); `rel err` is
max |ours - official| / max |official| over all outputs (bfloat16 rows are for information).
"""

import json
import os
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from bench import common
from sam2_jax import huge_pages
from sam2_jax.build_sam import get_model_config, params_from_state_dict
from sam2_jax.modeling.sam2 import SAM2

_CONFIGS = flags.DEFINE_list("configs", ["t", "b+"], "Model sizes (t, s, b+, l) or full config names.")
_VERSION = flags.DEFINE_enum("version", "sam2.1", ["sam2.1", "sam2"], "Config family for short sizes.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 1024, "Square input size (multiple of 32).")
_ITERS = flags.DEFINE_integer("iters", 10, "Timed runs per contender (median reported).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed runs per contender after compilation.")
_DTYPES = flags.DEFINE_list("dtypes", ["float32"], "Our compute dtypes to time (float32, bfloat16).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the weights and the input image.")
_CHILD = flags.DEFINE_string("child", "", "Internal: time one contender (official, or a JAX compute dtype) of "
                             "one config.")
_WEIGHTS = flags.DEFINE_string("weights", "", "Internal: the state dict (.npz) that JAX contenders load.")
_OUT = flags.DEFINE_string("out", "", "Internal: where a contender writes its results (<out>.json, <out>.npz).")

OFFICIAL = "official"
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_name(name: str) -> str:
  return name if name.startswith("sam2") else f"{_VERSION.value}_hiera_{name}"


def official_outputs(out: dict) -> list[np.ndarray]:
  """The official forward_image outputs, channels last: vision features, PE, conv_s0, conv_s1."""
  def nhwc(t):
    return np.transpose(t.float().numpy(), (0, 2, 3, 1))

  fpn = out["backbone_fpn"]
  return [nhwc(out["vision_features"]), nhwc(out["vision_pos_enc"][-1])[0], nhwc(fpn[0]), nhwc(fpn[1])]


def our_outputs(out: dict) -> list[np.ndarray]:
  """Our forward_image outputs in the order of `official_outputs`."""
  s0, s1 = out["high_res_features"]
  return [np.asarray(a, np.float32) for a in (out["vision_features"], out["vision_pos_enc"], s0, s1)]


def max_rel_err(ours: list[np.ndarray], official: list[np.ndarray]) -> float:
  errs = []
  for a, e in zip(ours, official):
    assert a.shape == e.shape, (a.shape, e.shape)
    a, e = a.astype(np.float64), e.astype(np.float64)
    errs.append(np.max(np.abs(a - e)) / max(np.max(np.abs(e)), 1e-12))
  return float(max(errs))


def contender_child(contender: str, name: str) -> None:
  """One contender's process: times `forward_image` of config `name`; writes <out>.json and <out>.npz."""
  print(f"{contender}: {common.thread_info(['torch'] if contender == OFFICIAL else ['jax'])}", flush=True)
  image = np.random.default_rng(_SEED.value).standard_normal((1, _IMAGE_SIZE.value, _IMAGE_SIZE.value, 3))
  image = image.astype(np.float32)
  if contender == OFFICIAL:
    import torch

    from bench import oracle
    model, _ = oracle.build_official(name, _IMAGE_SIZE.value, _SEED.value)
    image_nchw = torch.from_numpy(np.ascontiguousarray(image.transpose(0, 3, 1, 2)))

    def run():
      with torch.inference_mode():
        return model.forward_image(image_nchw)

    outputs = official_outputs(run())
    times = common.time_interleaved({OFFICIAL: run}, _ITERS.value, _WARMUP.value)[OFFICIAL]
  else:
    config = get_model_config(name, image_size=_IMAGE_SIZE.value, compute_dtype=contender)
    with np.load(_WEIGHTS.value) as state_dict:  # the official's weights, saved by the parent: no torch here
      params = jax.tree.map(jnp.asarray, params_from_state_dict(dict(state_dict), config))
    module = SAM2(config)
    x = jnp.asarray(image)
    forward = jax.jit(lambda p, x: module.apply({"params": p}, x, method=SAM2.forward_image))
    compiled = forward.lower(params, x).compile()
    run = lambda: common.block_until_ready(compiled(params, x))
    outputs = our_outputs(run())
    times = common.time_interleaved({contender: run}, _ITERS.value, _WARMUP.value)[contender]
  np.savez(_OUT.value + ".npz", *outputs)
  with open(_OUT.value + ".json", "w") as f:
    json.dump(dict(times=times), f)


def run_contender(contender: str, name: str, out: str, weights: str) -> tuple[list[float], list[np.ndarray]]:
  """Runs `contender_child` in a process of its own; returns its times (ms) and outputs."""
  cmd = [sys.executable, "-m", "bench.image_encoder", f"--child={contender}", f"--configs={name}",
         f"--image_size={_IMAGE_SIZE.value}", f"--iters={_ITERS.value}", f"--warmup={_WARMUP.value}",
         f"--seed={_SEED.value}", f"--weights={weights}", f"--out={out}"]
  proc = subprocess.run(cmd, cwd=_REPO_ROOT, check=False)
  if proc.returncode:
    raise RuntimeError(f"the {contender} contender of {name} failed (exit status {proc.returncode}); its output "
                       "is above.")
  with open(out + ".json") as f:
    times = json.load(f)["times"]
  with np.load(out + ".npz") as outputs:
    return times, [outputs[f"arr_{i}"] for i in range(len(outputs.files))]


def bench_config(name: str) -> list[list]:
  """Times one config, each contender in its own process; returns table rows (one per JAX dtype)."""
  from bench import oracle  # the parent writes the weights; the timed children import only their own side
  with tempfile.TemporaryDirectory() as tmp:
    weights = os.path.join(tmp, "weights.npz")
    np.savez(weights, **oracle.build_official(name, _IMAGE_SIZE.value, _SEED.value)[1])
    t_torch, reference = run_contender(OFFICIAL, name, os.path.join(tmp, OFFICIAL), weights)
    rows = []
    for dtype in _DTYPES.value:
      t_jax, outputs = run_contender(dtype, name, os.path.join(tmp, dtype), weights)
      rows.append([name, _IMAGE_SIZE.value, dtype, f"{common.median(t_jax):.0f}", common.spread(t_jax),
                   f"{common.median(t_torch):.0f}", common.spread(t_torch), f"{common.median(t_jax) / common.median(t_torch):.2f}",
                   f"{max_rel_err(outputs, reference):.1e}"])
  return rows


def main(argv):
  del argv
  if _CHILD.value:
    if _CHILD.value != OFFICIAL:
      huge_pages.restart_with_huge_pages()  # ours runs as our command-line tools do
    contender_child(_CHILD.value, config_name(_CONFIGS.value[0]))
    return
  if not set(_DTYPES.value) <= {"float32", "bfloat16"}:
    raise app.UsageError(f"--dtypes must be float32 and/or bfloat16, got {_DTYPES.value}.")
  print(f"{common.cpu_model()}, cpus={os.cpu_count()}; batch 1, {_IMAGE_SIZE.value}x{_IMAGE_SIZE.value}, median of "
        f"{_ITERS.value} runs after {_WARMUP.value} warm-up runs, each contender in its own process; torch: float32 "
        "forward_image under inference_mode", flush=True)
  header = ["config", "size", "jax dtype", "jax ms", "jax min-max", "torch ms", "torch min-max",
            "ratio jax/torch", "rel err"]
  rows = []
  for name in _CONFIGS.value:
    rows += bench_config(config_name(name))
    print(rows[-1], flush=True)
  common.print_table(header, rows)


if __name__ == "__main__":
  app.run(main)
