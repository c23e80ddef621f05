"""Parity of the image encoder (Hiera trunk + FPN neck) with the official implementation."""

import functools

import jax
import numpy as np
import pytest

from sam2_jax.configs import get_config
from sam2_jax.checkpoint.torch import state_dict_to_params
from sam2_jax.modeling.hiera import Hiera, bicubic_matrix
from sam2_jax.modeling.image_encoder import ImageEncoder
from bench.oracle import build_official, nchw, rel_err, to_torch, torch

TOL = 1e-4


@pytest.mark.parametrize("in_size,out_size", [(7, 256), (14, 256), (7, 128), (14, 128), (7, 64), (14, 64), (8, 8)])
def test_bicubic_matrix_matches_torch(in_size, out_size):
  x = np.random.default_rng(0).standard_normal((1, 3, in_size, in_size + 1)).astype(np.float32)
  expected = torch.nn.functional.interpolate(to_torch(x), size=(out_size, out_size), mode="bicubic").numpy()
  ours = np.einsum("hi,wj,bcij->bchw", bicubic_matrix(in_size, out_size), bicubic_matrix(in_size + 1, out_size),
                   x.astype(np.float64))
  assert np.max(np.abs(ours - expected)) <= 1e-6


def _encoder(name: str, kernels: str, remat: bool = False) -> ImageEncoder:
  config = get_config(name)
  config.kernels = kernels
  config.trunk.remat = remat
  return ImageEncoder.from_config(config)


def _run_both(name: str, image_size: int, batch: int, kernels: str):
  model, sd = build_official(name, image_size)
  official_trunk = []
  hook = model.image_encoder.trunk.register_forward_hook(lambda m, i, o: official_trunk.extend(o))
  x = np.random.default_rng(1).standard_normal((batch, image_size, image_size, 3)).astype(np.float32)
  try:
    with torch.no_grad():
      official = model.image_encoder(to_torch(nchw(x)))
  finally:
    hook.remove()

  encoder = _encoder(name, kernels)
  abstract = jax.eval_shape(encoder.init, jax.random.PRNGKey(0), x)
  params = state_dict_to_params(sd, abstract["params"], prefix="image_encoder.")
  ours, state = jax.jit(lambda p, x: encoder.apply(
      {"params": p}, x, capture_intermediates=lambda m, _: isinstance(m, Hiera)))(params, x)
  ours_trunk = state["intermediates"]["trunk"]["__call__"][0]
  return ours, ours_trunk, official, official_trunk


# Both kernel sets; the XLA set (slower on this CPU) on the smallest case.
@pytest.mark.parametrize("name,image_size,batch,kernels", [
    ("sam2.1_hiera_t", 1024, 1, "cpu"),
    ("sam2.1_hiera_t", 512, 1, "cpu"),
    ("sam2.1_hiera_b+", 512, 1, "cpu"),
    ("sam2_hiera_s", 256, 2, "cpu"),
    ("sam2_hiera_s", 256, 2, "xla"),
])
def test_image_encoder_parity(name, image_size, batch, kernels):
  ours, ours_trunk, official, official_trunk = _run_both(name, image_size, batch, kernels)
  assert len(ours_trunk) == len(official_trunk) == 4
  for stage, (a, e) in enumerate(zip(ours_trunk, official_trunk)):
    assert rel_err(nchw(a), e.numpy()) <= TOL, f"trunk stage {stage}"
  assert rel_err(nchw(ours["vision_features"]), official["vision_features"].numpy()) <= TOL
  for key in ("backbone_fpn", "vision_pos_enc"):
    assert len(ours[key]) == len(official[key]) == 3
    for level, (a, e) in enumerate(zip(ours[key], official[key])):
      assert rel_err(nchw(a), e.numpy()) <= TOL, f"{key}[{level}]"
  assert ours["vision_features"].shape == (batch, image_size // 16, image_size // 16, 256)


@functools.lru_cache(maxsize=None)
def _official_gradients(name: str, image_size: int):
  """Input, output weights and the official parameter gradients of a random linear function of the outputs."""
  model, sd = build_official(name, image_size)
  x = np.random.default_rng(2).standard_normal((2, image_size, image_size, 3)).astype(np.float32)
  official = model.image_encoder
  official.zero_grad(set_to_none=True)
  out = official(to_torch(nchw(x)))
  maps = [out["vision_features"], *out["backbone_fpn"]]
  weights = [np.random.default_rng(3 + i).standard_normal(tuple(m.shape)).astype(np.float32) for i, m in enumerate(maps)]
  sum((m * to_torch(w)).sum() for m, w in zip(maps, weights)).backward()
  grads = {k: (p.grad if p.grad is not None else torch.zeros_like(p)).numpy().copy()
           for k, p in official.named_parameters()}
  official.zero_grad(set_to_none=True)
  return sd, x, weights, grads


@pytest.mark.parametrize("kernels, remat", [("cpu", False), ("xla", False), ("xla", True)])
def test_image_encoder_gradient_parity(kernels, remat):
  """Parameter gradients of a random linear function of the outputs equal the official autograd's (also with
  the trunk's blocks recomputed in the backward pass, as the 1024 training configs run it)."""
  name = "sam2.1_hiera_t"
  sd, x, weights, grads = _official_gradients(name, 128)
  encoder = _encoder(name, kernels, remat)
  abstract = jax.eval_shape(encoder.init, jax.random.PRNGKey(0), x)["params"]
  params = state_dict_to_params(sd, abstract, prefix="image_encoder.")
  expected = state_dict_to_params(grads, abstract)
  nhwc = [np.transpose(w, (0, 2, 3, 1)) for w in weights]

  def loss(p):
    o = encoder.apply({"params": p}, x)
    return sum((m * w).sum() for m, w in zip([o["vision_features"], *o["backbone_fpn"]], nhwc))

  ours = jax.jit(jax.grad(loss))(params)
  flat_ours = dict(jax.tree_util.tree_leaves_with_path(ours))
  for path, e in jax.tree_util.tree_leaves_with_path(expected):
    a, e = np.asarray(flat_ours[path]), np.asarray(e)
    if not e.any():  # parameters that do not reach the outputs (the dropped lowest-resolution neck level)
      assert not a.any(), jax.tree_util.keystr(path)
    else:
      assert rel_err(a, e) <= TOL, jax.tree_util.keystr(path)


def test_drop_path_only_when_not_deterministic():
  """The trunk's drop path (official DropPath: one keep/drop draw per sample and block) acts only in training."""
  from sam2_jax.build_sam import get_model_config  # pylint: disable=g-import-not-at-top
  from sam2_jax.modeling.sam2 import SAM2  # pylint: disable=g-import-not-at-top
  trunk = {"embed_dim": 32, "num_heads": 1, "stages": (1, 1, 2, 1), "global_att_blocks": (3,), "window_spec": (8, 4, 8, 4)}
  plain = SAM2(get_model_config("sam2.1_hiera_t", image_size=64, trunk=trunk))
  dropping = SAM2(get_model_config("sam2.1_hiera_t", image_size=64, trunk=dict(trunk, drop_path_rate=0.5)))
  image = jax.random.normal(jax.random.key(0), (1, 64, 64, 3))
  images = jax.numpy.concatenate([image, image])
  params = jax.jit(functools.partial(plain.init, method=SAM2.forward_image))(jax.random.key(1), image)["params"]

  @functools.partial(jax.jit, static_argnums=(0, 1))
  def apply(module, deterministic, key):
    return module.apply({"params": params}, images, deterministic, method=SAM2.forward_image,
                        rngs={"dropout": key})["vision_features"]

  def features(module, deterministic, key=2):
    return np.asarray(apply(module, deterministic, jax.random.key(key)))

  reference = features(plain, True)
  np.testing.assert_array_equal(features(dropping, True), reference)
  np.testing.assert_array_equal(features(plain, False), reference)
  trained = features(dropping, False)
  np.testing.assert_array_equal(features(dropping, False), trained)  # same key, same draws
  assert not np.allclose(trained, reference, atol=1e-3)
  assert not np.allclose(features(dropping, False, key=3), trained, atol=1e-3)
  assert not np.allclose(trained[0], trained[1], atol=1e-3)  # each sample draws its own blocks
