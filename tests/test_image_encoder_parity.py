"""Parity of the image encoder (Hiera trunk + FPN neck) with the official implementation."""

import jax
import numpy as np
import pytest

from configs.model import get_config
from sam2_jax.checkpoint.torch import state_dict_to_params
from sam2_jax.modeling.hiera import Hiera, bicubic_matrix
from sam2_jax.modeling.image_encoder import ImageEncoder
from tests.oracle import build_official, nchw, rel_err, to_torch, torch

TOL = 1e-4


@pytest.mark.parametrize("in_size,out_size", [(7, 256), (14, 256), (7, 128), (14, 128), (7, 64), (14, 64), (8, 8)])
def test_bicubic_matrix_matches_torch(in_size, out_size):
  x = np.random.default_rng(0).standard_normal((1, 3, in_size, in_size + 1)).astype(np.float32)
  expected = torch.nn.functional.interpolate(to_torch(x), size=(out_size, out_size), mode="bicubic").numpy()
  ours = np.einsum("hi,wj,bcij->bchw", bicubic_matrix(in_size, out_size), bicubic_matrix(in_size + 1, out_size),
                   x.astype(np.float64))
  assert np.max(np.abs(ours - expected)) <= 1e-6


def _run_both(name: str, image_size: int, batch: int):
  model, sd = build_official(name, image_size)
  official_trunk = []
  hook = model.image_encoder.trunk.register_forward_hook(lambda m, i, o: official_trunk.extend(o))
  x = np.random.default_rng(1).standard_normal((batch, image_size, image_size, 3)).astype(np.float32)
  try:
    with torch.no_grad():
      official = model.image_encoder(to_torch(nchw(x)))
  finally:
    hook.remove()

  encoder = ImageEncoder.from_config(get_config(name))
  abstract = jax.eval_shape(encoder.init, jax.random.PRNGKey(0), x)
  params = state_dict_to_params(sd, abstract["params"], prefix="image_encoder.")
  ours, state = jax.jit(lambda p, x: encoder.apply(
      {"params": p}, x, capture_intermediates=lambda m, _: isinstance(m, Hiera)))(params, x)
  ours_trunk = state["intermediates"]["trunk"]["__call__"][0]
  return ours, ours_trunk, official, official_trunk


@pytest.mark.parametrize("name,image_size,batch", [
    ("sam2.1_hiera_t", 1024, 1),
    ("sam2.1_hiera_t", 512, 1),
    ("sam2.1_hiera_b+", 512, 1),
    ("sam2_hiera_s", 256, 2),
])
def test_image_encoder_parity(name, image_size, batch):
  ours, ours_trunk, official, official_trunk = _run_both(name, image_size, batch)
  assert len(ours_trunk) == len(official_trunk) == 4
  for stage, (a, e) in enumerate(zip(ours_trunk, official_trunk)):
    assert rel_err(nchw(a), e.numpy()) <= TOL, f"trunk stage {stage}"
  assert rel_err(nchw(ours["vision_features"]), official["vision_features"].numpy()) <= TOL
  for key in ("backbone_fpn", "vision_pos_enc"):
    assert len(ours[key]) == len(official[key]) == 3
    for level, (a, e) in enumerate(zip(ours[key], official[key])):
      assert rel_err(nchw(a), e.numpy()) <= TOL, f"{key}[{level}]"
  assert ours["vision_features"].shape == (batch, image_size // 16, image_size // 16, 256)
