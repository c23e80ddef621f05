"""SAM2ImagePredictor end to end against the official predictor (sam2==1.1.0) on the same weights."""

import numpy as np
import pytest
import sam2.sam2_image_predictor as official_predictor

from sam2_jax import SAM2ImagePredictor, build_sam2
from sam2_jax.build_sam import POSTPROCESSING, SAM2Model, get_model_config, params_from_state_dict
from tests.images import shapes_image
from bench.oracle import build_official, torch


def mask_iou(a, b):
  a, b = np.asarray(a, bool), np.asarray(b, bool)
  union = np.logical_or(a, b).sum()
  return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def make_pair(name, **official_kwargs):
  official, sd = build_official(name, image_size=1024, **official_kwargs)
  config = get_model_config(name, **POSTPROCESSING)
  ours = SAM2Model(config, params_from_state_dict(sd, config))
  return SAM2ImagePredictor(ours), official_predictor.SAM2ImagePredictor(official)


def assert_same(ours, theirs, iou_tol=1e-4):
  masks, ious, low = ours
  t_masks, t_ious, t_low = theirs
  assert masks.shape == t_masks.shape and masks.dtype == t_masks.dtype
  np.testing.assert_allclose(ious, t_ious, atol=iou_tol)
  scale = np.abs(t_low).max()
  assert np.abs(low - t_low).max() <= 1e-3 * scale
  for m, t in zip(masks.reshape(-1, *masks.shape[-2:]), t_masks.reshape(-1, *t_masks.shape[-2:])):
    assert mask_iou(m, t) >= 0.999


PROMPTS = {
    "one_click": dict(point_coords=np.array([[250.0, 190.0]]), point_labels=np.array([1])),
    "clicks": dict(point_coords=np.array([[250.0, 190.0], [420.0, 300.0], [100.0, 40.0]]),
                   point_labels=np.array([1, 1, 0])),
    "box": dict(box=np.array([300.0, 200.0, 520.0, 380.0])),
    "box_and_click": dict(box=np.array([300.0, 200.0, 520.0, 380.0]), point_coords=np.array([[410.0, 290.0]]),
                          point_labels=np.array([0])),
    "batched_boxes": dict(box=np.array([[300.0, 200.0, 520.0, 380.0], [90.0, 60.0, 300.0, 330.0]])),
}


@pytest.fixture(scope="module")
def predictors_t():
  ours, theirs = make_pair("sam2.1_hiera_t", obj_score_bias=4.0)
  image = shapes_image(480, 640, seed=1)
  ours.set_image(image)
  theirs.set_image(image)
  return ours, theirs


def test_embedding_matches(predictors_t):
  ours, theirs = predictors_t
  emb, t_emb = ours.get_image_embedding(), theirs.get_image_embedding().numpy()
  assert np.abs(emb - t_emb).max() <= 1e-4 * np.abs(t_emb).max()


@pytest.mark.parametrize("prompt", sorted(PROMPTS))
@pytest.mark.parametrize("multimask", [True, False])
def test_predict_matches_official(predictors_t, prompt, multimask):
  ours, theirs = predictors_t
  kwargs = dict(PROMPTS[prompt], multimask_output=multimask)
  with torch.no_grad():
    expected = theirs.predict(**kwargs)
  assert_same(ours.predict(**kwargs), expected)


def test_mask_input_and_logits(predictors_t):
  ours, theirs = predictors_t
  with torch.no_grad():
    _, _, t_low = theirs.predict(**PROMPTS["one_click"], multimask_output=False)
    expected = theirs.predict(point_coords=np.array([[260.0, 200.0]]), point_labels=np.array([1]),
                              mask_input=t_low, multimask_output=False, return_logits=True)
  got = ours.predict(point_coords=np.array([[260.0, 200.0]]), point_labels=np.array([1]), mask_input=t_low,
                     multimask_output=False, return_logits=True)
  assert np.abs(got[0] - expected[0]).max() <= 1e-3 * np.abs(expected[0]).max()
  assert_same(((got[0] > 0).astype(np.float32), got[1], got[2]),
              ((expected[0] > 0).astype(np.float32), expected[1], expected[2]))


def test_sam2_config_and_batch_of_images():
  """A SAM 2 (2.0) config, object score left as initialised, through set_image_batch/predict_batch."""
  ours, theirs = make_pair("sam2_hiera_s", seed=3)
  images = [shapes_image(300, 400, seed=2), shapes_image(256, 256, seed=5, shift=(10, -20))]
  ours.set_image_batch(images)
  theirs.set_image_batch(images)
  kwargs = dict(point_coords_batch=[np.array([[120.0, 120.0]]), np.array([[60.0, 90.0], [200.0, 150.0]])],
                point_labels_batch=[np.array([1]), np.array([1, 0])], multimask_output=True)
  with torch.no_grad():
    expected = theirs.predict_batch(**kwargs)
  got = ours.predict_batch(**kwargs)
  for i in range(2):
    assert_same((got[0][i], got[1][i], got[2][i]), (expected[0][i], expected[1][i], expected[2][i]))


def test_bad_inputs():
  predictor = SAM2ImagePredictor(build_sam2("sam2.1_hiera_t", image_size=256))
  with pytest.raises(ValueError, match="before predict"):
    predictor.predict(point_coords=np.zeros((1, 2)), point_labels=np.ones(1))
  with pytest.raises(ValueError, match=r"shape \(H, W, 3\)"):
    predictor.set_image(np.zeros((32, 32), np.uint8))
  with pytest.raises(ValueError, match="uint8"):
    predictor.set_image(np.zeros((32, 32, 3), np.float32))
  predictor.set_image(shapes_image(64, 96))
  with pytest.raises(ValueError, match="point_labels must be given"):
    predictor.predict(point_coords=np.zeros((1, 2)))
  with pytest.raises(ValueError, match=r"point_coords must have shape \(N, 2\)"):
    predictor.predict(point_coords=np.zeros((3,)), point_labels=np.ones(3))
  with pytest.raises(ValueError, match="point_labels must have shape"):
    predictor.predict(point_coords=np.zeros((2, 2)), point_labels=np.ones(3))
  with pytest.raises(ValueError, match=r"box must have shape \(4,\)"):
    predictor.predict(box=np.zeros(3))
  with pytest.raises(ValueError, match="point_coords must be finite numbers"):
    predictor.predict(point_coords=np.array([[np.nan, 3.0]]), point_labels=np.ones(1))
  with pytest.raises(ValueError, match=r"point labels must be 1 \(foreground\), 0 \(background\).*got \[5\]"):
    predictor.predict(point_coords=np.zeros((1, 2)), point_labels=np.array([5]))
  with pytest.raises(ValueError, match=r"box \[40.0, 10.0, 20.0, 30.0\] is empty or inverted"):
    predictor.predict(box=np.array([40.0, 10.0, 20.0, 30.0]))
  with pytest.raises(ValueError, match="box must be finite numbers"):
    predictor.predict(box=np.array([[0.0, 0.0, 20.0, 30.0], [0.0, np.inf, 5.0, 5.0]]))
  with pytest.raises(ValueError, match="mask_input must have shape"):
    predictor.predict(mask_input=np.zeros((1, 32, 32)))
  with pytest.raises(ValueError, match="predict_batch needs images"):
    predictor.predict_batch()


def test_bfloat16_compute_agrees_with_float32():
  _, sd = build_official("sam2.1_hiera_t", image_size=512, obj_score_bias=4.0)
  image = shapes_image(300, 400, seed=7)
  outputs = {}
  for dtype in ("float32", "bfloat16"):
    config = get_model_config("sam2.1_hiera_t", image_size=512, compute_dtype=dtype, **POSTPROCESSING)
    predictor = SAM2ImagePredictor(SAM2Model(config, params_from_state_dict(sd, config)))
    predictor.set_image(image)
    outputs[dtype] = predictor.predict(box=np.array([250.0, 140.0, 340.0, 250.0]), multimask_output=False)
  (m32, iou32, _), (m16, iou16, _) = outputs["float32"], outputs["bfloat16"]
  assert m32.any() and mask_iou(m32, m16) >= 0.95
  np.testing.assert_allclose(iou16, iou32, atol=0.05)
