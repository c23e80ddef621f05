"""The official implementation (`sam2==1.1.0`, PyTorch on the CPU) with perturbed random weights: the oracle
of the parity tests and the reference contender of the benchmarks.

The oracle is required: without it the tests that use it fail at import instead of being skipped.

Random initialisation leaves many tensors at exactly 0 or 1 (biases, tokens, norm scales, layer
scales), where a wrong parameter mapping can still give the right answer. `build_official`
perturbs every tensor of the state dict so that each one matters.
"""

import functools

import numpy as np
import sam2.build_sam as sam2_build
import torch

OBJ_SCORE_BIAS = "sam_mask_decoder.pred_obj_score_head.layers.2.bias"


def official_config_path(name: str) -> str:
  version = "sam2.1" if name.startswith("sam2.1") else "sam2"
  return f"configs/{version}/{name}.yaml"


def perturb_state_dict(sd: dict, seed: int = 0, obj_score_bias: float | None = None) -> dict:
  """Adds noise to every tensor; norm scales stay near 1, zero tensors become non-zero."""
  gen = torch.Generator().manual_seed(seed)
  out = {}
  for key, t in sd.items():
    t = t.detach().float().clone()
    std = float(t.std()) if t.numel() > 1 else 0.0
    scale = max(std, 0.05) * 0.5
    out[key] = t + scale * torch.randn(t.shape, generator=gen)
  if obj_score_bias is not None:
    out[OBJ_SCORE_BIAS] = out[OBJ_SCORE_BIAS] + obj_score_bias
  return out


@functools.lru_cache(maxsize=4)
def build_official(name: str = "sam2.1_hiera_t", image_size: int = 1024, seed: int = 0,
                   obj_score_bias: float | None = None, video: bool = False,
                   apply_postprocessing: bool = True, **extra):
  """Returns (official model in eval mode, its perturbed state dict as {key: np.ndarray})."""
  torch.manual_seed(seed)
  builder = sam2_build.build_sam2_video_predictor if video else sam2_build.build_sam2
  overrides = [f"++model.image_size={image_size}"] + [f"++model.{k}={v}" for k, v in extra.items()]
  model = builder(official_config_path(name), ckpt_path=None, device="cpu",
                  hydra_overrides_extra=overrides, apply_postprocessing=apply_postprocessing)
  if video:
    model.fill_hole_area = 0  # the builder's post-processing would set 8 (and its CUDA kernel is absent here)
  sd = perturb_state_dict(model.state_dict(), seed=seed, obj_score_bias=obj_score_bias)
  model.load_state_dict(sd, strict=True)
  model.eval()
  return model, {k: v.numpy() for k, v in sd.items()}


def to_torch(x: np.ndarray):
  return torch.from_numpy(np.ascontiguousarray(x))


def nchw(x) -> np.ndarray:
  """NHWC JAX array -> NCHW NumPy array."""
  return np.transpose(np.asarray(x), (0, 3, 1, 2))


def rel_err(actual, expected) -> float:
  """max |a - e| / max |e|: one number that is scale-free and strict on the largest values."""
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  assert actual.shape == expected.shape, (actual.shape, expected.shape)
  return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-12))
