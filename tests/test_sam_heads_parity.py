"""Parity of the SAM heads (prompt encoder, two-way transformer, mask decoder) with the official code."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sam2_jax.checkpoint.torch import state_dict_to_params
from sam2_jax.modeling.mask_decoder import MaskDecoder
from sam2_jax.modeling.prompt_encoder import PromptEncoder
from bench.oracle import build_official, nchw, rel_err, to_torch, torch

NAME = "sam2.1_hiera_t"
TOL = 1e-4
STABILITY_THRESH = 0.98


def _np(t) -> np.ndarray:
  return t.detach().numpy()


class Heads:
  """Our prompt encoder and mask decoder with the official model's (perturbed) weights."""

  def __init__(self, image_size: int, apply_postprocessing: bool, kernels: str):
    self.official, sd = build_official(NAME, image_size, apply_postprocessing=apply_postprocessing)
    self.h = image_size // 16
    self.pe = PromptEncoder(image_embedding_size=(self.h, self.h), input_image_size=(image_size, image_size),
                            kernels=kernels)
    abstract = jax.eval_shape(self.pe.init, jax.random.PRNGKey(0), None, None, None)
    self.pe_params = {"params": state_dict_to_params(sd, abstract["params"], prefix="sam_prompt_encoder.")}
    self.md = MaskDecoder(dynamic_multimask_via_stability=apply_postprocessing, kernels=kernels)
    h, c = self.h, 256
    init = functools.partial(self.md.init, multimask_output=False, repeat_image=False)
    abstract = jax.eval_shape(init, jax.random.PRNGKey(0), jnp.zeros((1, h, h, c)), jnp.zeros((h, h, c)),
                              jnp.zeros((1, 2, c)), jnp.zeros((1, h, h, c)),
                              high_res_features=[jnp.zeros((1, 4 * h, 4 * h, 32)), jnp.zeros((1, 2 * h, 2 * h, 64))])
    self.md_params = {"params": state_dict_to_params(sd, abstract["params"], prefix="sam_mask_decoder.")}
    self.prompt_encoder = jax.jit(self.pe.apply)
    self.dense_pe = jax.jit(functools.partial(self.pe.apply, method=PromptEncoder.get_dense_pe))
    self.project = jax.jit(functools.partial(self.md.apply, method=MaskDecoder.project_high_res_features))
    self.decoder = jax.jit(self.md.apply, static_argnames=("multimask_output", "repeat_image", "train"))


@functools.lru_cache(maxsize=None)
def heads(image_size: int, apply_postprocessing: bool, kernels: str = "cpu") -> Heads:
  return Heads(image_size, apply_postprocessing, kernels)


def _points(rng, b, n, image_size, labels):
  coords = rng.uniform(0, image_size, (b, n, 2)).astype(np.float32)
  return coords, np.asarray(labels, np.int32).reshape(b, n)


def _boxes(rng, b, image_size):
  xy0 = rng.uniform(0, image_size / 2, (b, 2))
  xy1 = xy0 + rng.uniform(1, image_size / 2, (b, 2))
  return np.concatenate([xy0, xy1], axis=1).astype(np.float32)


def _check_prompt_encoder(hd: Heads, points, boxes, masks):
  sparse, dense = hd.prompt_encoder(hd.pe_params, points, boxes, masks)
  with torch.no_grad():
    ref_sparse, ref_dense = hd.official.sam_prompt_encoder(
        None if points is None else (to_torch(points[0]), to_torch(points[1])),
        None if boxes is None else to_torch(boxes),
        None if masks is None else to_torch(nchw(masks)))
  assert sparse.shape == tuple(ref_sparse.shape)
  if sparse.size:
    assert rel_err(sparse, _np(ref_sparse)) <= TOL
  assert rel_err(nchw(dense), _np(ref_dense)) <= TOL
  return _np(ref_sparse), np.transpose(_np(ref_dense), (0, 2, 3, 1))


def _check_decoder(hd: Heads, image, sparse, dense, fpn0, fpn1, multimask_output, repeat_image, expect_mixed=False):
  """Runs both decoders (high-res features projected by both) and compares all four outputs."""
  dec = hd.official.sam_mask_decoder
  image_pe = hd.dense_pe(hd.pe_params)
  feats = hd.project(hd.md_params, fpn0, fpn1)
  out = hd.decoder(hd.md_params, image, image_pe, sparse, dense, multimask_output=multimask_output,
                   repeat_image=repeat_image, high_res_features=feats)
  with torch.no_grad():
    ref_pe = hd.official.sam_prompt_encoder.get_dense_pe()
    assert rel_err(nchw(image_pe[None]), _np(ref_pe)) <= TOL
    ref_feats = [dec.conv_s0(to_torch(nchw(fpn0))), dec.conv_s1(to_torch(nchw(fpn1)))]
    for f, r in zip(feats, ref_feats):
      assert rel_err(nchw(f), _np(r)) <= TOL
    args = (to_torch(nchw(image)), ref_pe, to_torch(sparse), to_torch(nchw(dense)))
    ref = dec(*args, multimask_output=multimask_output, repeat_image=repeat_image, high_res_features=ref_feats)
    if expect_mixed:
      # The stability fallback must be exercised both ways, far from the threshold.
      all_masks = dec.predict_masks(*args, repeat_image=repeat_image, high_res_features=ref_feats)[0]
      stability = dec._get_stability_scores(all_masks[:, 0:1]).numpy().ravel()  # pylint: disable=protected-access
      assert (stability >= STABILITY_THRESH).any() and (stability < STABILITY_THRESH).any(), stability
      assert np.abs(stability - STABILITY_THRESH).min() > 1e-3, stability
      # Training mode never falls back: always the single-mask token.
      train_masks = hd.decoder(hd.md_params, image, image_pe, sparse, dense, multimask_output=False,
                               repeat_image=repeat_image, high_res_features=feats, train=True)[0]
      assert rel_err(train_masks, _np(all_masks[:, 0:1])) <= TOL
  for name, a, r in zip(("masks", "iou", "tokens", "object_score"), out, ref):
    assert a.shape == tuple(r.shape), name
    err = rel_err(a, _np(r))
    assert err <= TOL, (name, err)


def _decoder_inputs(rng, b_image, b_prompt, h, n_tokens=3, sharp=()):
  """Random decoder inputs; batch elements listed in `sharp` get large-magnitude (stable) masks."""
  image = rng.standard_normal((b_image, h, h, 256)).astype(np.float32)
  sparse = rng.standard_normal((b_prompt, n_tokens, 256)).astype(np.float32)
  dense = rng.standard_normal((b_prompt, h, h, 256)).astype(np.float32)
  fpn0 = rng.standard_normal((b_image, 4 * h, 4 * h, 256)).astype(np.float32)
  fpn1 = rng.standard_normal((b_image, 2 * h, 2 * h, 256)).astype(np.float32)
  for i in sharp:
    fpn0[i] *= 50.0
  return image, sparse, dense, fpn0, fpn1


PROMPT_CASES = ["points", "box_and_points", "box", "mask_and_points", "mask", "none"]


# Both kernel sets; the XLA set (convolutions only in the mask path) on the case that uses most of the encoder.
@pytest.mark.parametrize("case,kernels", [(case, "cpu") for case in PROMPT_CASES] + [("mask_and_points", "xla")])
def test_prompt_encoder(case, kernels):
  hd = heads(512, True, kernels)
  rng = np.random.default_rng(PROMPT_CASES.index(case))
  b, size = 2, 512
  points = boxes = masks = None
  if case == "points":
    points = _points(rng, b, 5, size, [[1, 0, -1, 1, 0], [0, 1, 1, 2, 3]])
  if case == "box_and_points":
    points = _points(rng, b, 3, size, [[1, 0, 1], [-1, 0, 1]])
  if case in ("box_and_points", "box"):
    boxes = _boxes(rng, b, size)
  if case == "mask_and_points":
    points = _points(rng, b, 2, size, [[1, 0], [0, 1]])
  if case in ("mask_and_points", "mask"):
    masks = rng.standard_normal((b, 4 * hd.h, 4 * hd.h, 1)).astype(np.float32) * 5
  sparse, dense = _check_prompt_encoder(hd, points, boxes, masks)
  expected_n = {"points": 6, "box_and_points": 5, "box": 2, "mask_and_points": 3, "mask": 0, "none": 0}[case]
  expected_b = 1 if case == "none" else b
  assert sparse.shape == (expected_b, expected_n, 256)
  assert dense.shape == (expected_b, hd.h, hd.h, 256)


# Both kernel sets; the XLA set on the case that runs most of the decoder (both stability outcomes, training mode).
@pytest.mark.parametrize("apply_postprocessing,multimask_output,kernels", [
    pytest.param(post, multi, k, id=f"{'dynamic' if post else 'static'}-{'multimask' if multi else 'single'}-{k}")
    for post, multi, k in [(True, True, "cpu"), (True, False, "cpu"), (False, True, "cpu"), (False, False, "cpu"),
                           (True, False, "xla")]])
def test_mask_decoder(apply_postprocessing, multimask_output, kernels):
  hd = heads(512, apply_postprocessing, kernels)
  rng = np.random.default_rng(1)
  inputs = _decoder_inputs(rng, 3, 3, hd.h, sharp=(0,))
  _check_decoder(hd, *inputs, multimask_output=multimask_output, repeat_image=False,
                 expect_mixed=apply_postprocessing and not multimask_output)


@pytest.mark.parametrize("multimask_output", [True, False], ids=["multimask", "single"])
def test_mask_decoder_repeat_image(multimask_output):
  """One image (and one set of high-res features) shared by a batch of 3 prompts."""
  hd = heads(512, True)
  rng = np.random.default_rng(2)
  _check_decoder(hd, *_decoder_inputs(rng, 1, 3, hd.h), multimask_output=multimask_output, repeat_image=True)


@pytest.mark.slow
def test_full_size_1024():
  """Prompt encoder -> mask decoder at 1024 (64x64 embedding), dynamic multimask on."""
  hd = heads(1024, True)
  rng = np.random.default_rng(3)
  b = 2
  points = _points(rng, b, 4, 1024, [[1, 0, -1, 1], [1, 1, 0, 0]])
  masks = rng.standard_normal((b, 256, 256, 1)).astype(np.float32) * 5
  sparse, dense = _check_prompt_encoder(hd, points, None, masks)
  image, _, _, fpn0, fpn1 = _decoder_inputs(rng, b, b, hd.h, sharp=(1,))
  for multimask_output in (True, False):
    _check_decoder(hd, image, sparse, dense, fpn0, fpn1, multimask_output=multimask_output, repeat_image=False,
                   expect_mixed=not multimask_output)


def test_masked_prompt_tokens_equal_absent_tokens():
  """Fixed-size prompt buffers (training): masked extra tokens change nothing, to float32 rounding."""
  hd = heads(512, False)
  rng = np.random.default_rng(3)
  h, c = hd.h, 256
  image = rng.normal(size=(2, h, h, c)).astype(np.float32)
  fpn0 = rng.normal(size=(2, 4 * h, 4 * h, c)).astype(np.float32)
  fpn1 = rng.normal(size=(2, 2 * h, 2 * h, c)).astype(np.float32)
  feats = hd.project(hd.md_params, fpn0, fpn1)
  image_pe = hd.dense_pe(hd.pe_params)
  points = _points(rng, 2, 2, 512, [[1, 0], [1, 1]])
  sparse, dense = hd.prompt_encoder(hd.pe_params, points, None, None)  # 2 clicks + the padding point
  extra = jnp.asarray(rng.normal(size=(2, 3, c)).astype(np.float32))
  padded = jnp.concatenate([sparse[:, :1], extra, sparse[:, 1:]], axis=1)
  mask = jnp.array([[True, False, False, False, True, True]] * 2)
  predict = functools.partial(hd.md.apply, method=MaskDecoder.predict_masks, repeat_image=False)
  want = predict(hd.md_params, image, image_pe, sparse, dense, high_res_features=feats)
  got = predict(hd.md_params, image, image_pe, padded, dense, high_res_features=feats, sparse_mask=mask)
  for w, g in zip(want, got):
    assert rel_err(g, w) <= 1e-5
