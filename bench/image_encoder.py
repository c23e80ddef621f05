r"""Image encoder speed: sam2-jax vs the official PyTorch SAM 2 on the same CPU.

Times the same computation on both sides: the official `SAM2Base.forward_image` (Hiera trunk,
FPN neck, and the mask decoder's conv_s0/conv_s1 on the two high-resolution levels) under
`torch.inference_mode`, against our jitted `SAM2.forward_image`, same config and weights (the
official state dict converted with `params_from_state_dict`), batch 1. Compilation and warm-up
runs are excluded; JAX and PyTorch runs are interleaved and the median of `--iters` runs is
reported with the min-max spread. Both frameworks keep their default thread settings (printed).

  .venv/bin/python -m bench.image_encoder --configs=t,b+ --image_size=1024 --iters=10
  .venv/bin/python -m bench.image_encoder --dtypes=float32,bfloat16   # adds our bfloat16 compute

`ratio` is JAX time / PyTorch float32 time (below 1: JAX is faster); `rel err` is
max |ours - official| / max |official| over all outputs (bfloat16 rows are for information).
"""

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


def bench_config(name: str, image_size: int, dtypes: list[str], iters: int, warmup: int, seed: int) -> list[list]:
  """Times one config; returns table rows (one per dtype)."""
  import torch

  model, state_dict = common.build_official(name, image_size, seed)
  image = np.random.default_rng(seed).standard_normal((1, image_size, image_size, 3)).astype(np.float32)
  image_nchw = torch.from_numpy(np.ascontiguousarray(image.transpose(0, 3, 1, 2)))

  def run_torch():
    with torch.inference_mode():
      return model.forward_image(image_nchw)

  fns, errors = {}, {}
  reference = official_outputs(run_torch())
  x = jnp.asarray(image)
  for dtype in dtypes:
    config = get_model_config(name, image_size=image_size, compute_dtype=dtype)
    params = jax.tree.map(jnp.asarray, params_from_state_dict(state_dict, config))
    module = SAM2(config)
    forward = jax.jit(lambda p, x, module=module: module.apply({"params": p}, x, method=SAM2.forward_image))
    compiled = forward.lower(params, x).compile()
    errors[dtype] = max_rel_err(our_outputs(compiled(params, x)), reference)
    fns[f"jax_{dtype}"] = lambda compiled=compiled, params=params: common.block_until_ready(compiled(params, x))
  fns["torch"] = run_torch

  times = common.time_interleaved(fns, iters, warmup)
  t_torch = common.median(times["torch"])
  rows = []
  for dtype in dtypes:
    t_jax = common.median(times[f"jax_{dtype}"])
    rows.append([name, image_size, dtype, f"{t_jax:.0f}", common.spread(times[f"jax_{dtype}"]),
                 f"{t_torch:.0f}", common.spread(times["torch"]), f"{t_jax / t_torch:.2f}",
                 f"{errors[dtype]:.1e}"])
  return rows


def main(argv):
  del argv
  print(common.thread_info(), flush=True)
  print(f"batch 1, {_IMAGE_SIZE.value}x{_IMAGE_SIZE.value}, median of {_ITERS.value} interleaved runs "
        f"after {_WARMUP.value} warm-up runs; torch: float32 forward_image under inference_mode", flush=True)
  header = ["config", "size", "jax dtype", "jax ms", "jax min-max", "torch ms", "torch min-max",
            "ratio jax/torch", "rel err"]
  rows = []
  for name in _CONFIGS.value:
    rows += bench_config(config_name(name), _IMAGE_SIZE.value, _DTYPES.value, _ITERS.value, _WARMUP.value,
                         _SEED.value)
    print(rows[-1], flush=True)
  common.print_table(header, rows)


if __name__ == "__main__":
  huge_pages.restart_with_huge_pages()
  app.run(main)
