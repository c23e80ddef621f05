"""SAM2AutomaticMaskGenerator against the official generator (sam2==1.1.0) on the same weights, and its helpers.

The perturbed random weights get two edits (given to both models) so that masks follow the image's shapes
instead of noise: the decoder's transposed-conv kernels are averaged over their 2x2 taps (no checkerboard)
and the hypernetworks' last layers are scaled by 30 (logits of a few units, so that stability scores spread).
"""

import copy

import numpy as np
import pytest
import sam2.automatic_mask_generator as official_amg
import sam2.utils.amg as official_utils
import torchvision.ops as torchvision_ops
from scipy import ndimage

from sam2_jax import SAM2AutomaticMaskGenerator
from sam2_jax.build_sam import POSTPROCESSING, SAM2Model, get_model_config, params_from_state_dict
from sam2_jax.predictors import amg_utils
from tests.images import shapes_image
from bench.oracle import build_official, torch

SIZE = 256
H, W = 240, 320
# points_per_batch 24 does not divide 64 points: the last batch is padded.
BASE = dict(points_per_side=8, points_per_batch=24, pred_iou_thresh=0.45, stability_score_thresh=0.5)


def sharpened_state_dict(sd: dict) -> dict:
  sd = dict(sd)
  for key, value in sd.items():
    if key.startswith("sam_mask_decoder.output_upscaling") and value.ndim == 4:
      sd[key] = np.broadcast_to(value.mean(axis=(2, 3), keepdims=True), value.shape).copy()
    if key.startswith("sam_mask_decoder.output_hypernetworks_mlps") and key.endswith("layers.2.weight"):
      sd[key] = value * 30.0
  return sd


@pytest.fixture(scope="module")
def models():
  official, sd = build_official("sam2.1_hiera_t", image_size=SIZE, obj_score_bias=4.0)
  sd = sharpened_state_dict(sd)
  official = copy.deepcopy(official)  # build_official caches its model: leave that one untouched
  official.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
  config = get_model_config("sam2.1_hiera_t", image_size=SIZE, **POSTPROCESSING)
  return SAM2Model(config, params_from_state_dict(sd, config)), official


@pytest.fixture(scope="module")
def image():
  return shapes_image(H, W, seed=1)


def blobs_image() -> np.ndarray:
  """Four coloured ellipses, one inside each crop of the first crop layer, on a dark noisy background."""
  rng = np.random.default_rng(0)
  image = 30.0 + rng.normal(0, 10, (H, W, 3))
  yy, xx = np.mgrid[0:H, 0:W]
  for (cy, cx), color in zip([(60, 70), (180, 60), (50, 250), (185, 255)],
                             [[220, 40, 40], [30, 200, 60], [40, 60, 230], [230, 230, 40]]):
    image[((yy - cy) / 22.0) ** 2 + ((xx - cx) / 28.0) ** 2 < 1] = color
  return np.clip(image, 0, 255).astype(np.uint8)


def official_generator(official, **kwargs):
  generator = official_amg.SAM2AutomaticMaskGenerator(official, **kwargs)
  s = SIZE  # the official image predictor hard-codes the feature sizes of a 1024 input
  generator.predictor._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
  return generator


def scipy_connected_components(mask):
  """The official CUDA kernel's output ((N, 1, H, W) labels and per-pixel component areas), 8-connected."""
  masks = mask.numpy().astype(bool)
  labels, areas = np.zeros(masks.shape, np.int32), np.zeros(masks.shape, np.int32)
  for i in range(masks.shape[0]):
    lab, _ = ndimage.label(masks[i, 0], structure=np.ones((3, 3)))
    labels[i, 0] = lab
    areas[i, 0] = np.where(lab > 0, np.bincount(lab.ravel())[lab], 0)
  return torch.from_numpy(labels), torch.from_numpy(areas)


def run_both(models, image, **kwargs):
  ours_model, official = models
  with torch.no_grad():
    expected = official_generator(official, **kwargs).generate(image)
  return SAM2AutomaticMaskGenerator(ours_model, **kwargs).generate(image), expected


def as_mask(record):
  seg = record["segmentation"]
  if isinstance(seg, np.ndarray):
    return seg
  if isinstance(seg["counts"], str):
    from pycocotools import mask as mask_utils  # pylint: disable=g-import-not-at-top
    return mask_utils.decode(seg).astype(bool)
  return amg_utils.rle_to_mask(seg)


def assert_same_records(got, expected):
  assert len(got) == len(expected) > 0
  by_iou = lambda records: sorted(records, key=lambda r: -r["predicted_iou"])
  for ours, theirs in zip(by_iou(got), by_iou(expected)):
    assert sorted(ours) == sorted(theirs)
    a, b = as_mask(ours), as_mask(theirs)
    assert a.shape == b.shape == (H, W)
    assert np.logical_and(a, b).sum() / np.logical_or(a, b).sum() >= 0.99
    assert abs(ours["predicted_iou"] - theirs["predicted_iou"]) <= 1e-3
    assert abs(ours["stability_score"] - theirs["stability_score"]) <= 1e-3
    assert ours["bbox"] == theirs["bbox"] and ours["crop_box"] == theirs["crop_box"]
    assert ours["point_coords"] == theirs["point_coords"]
    assert abs(ours["area"] - theirs["area"]) <= 1e-3 * theirs["area"]
    assert ours["area"] == a.sum()
    if isinstance(theirs["segmentation"], dict):
      assert type(ours["segmentation"]["counts"]) is type(theirs["segmentation"]["counts"])
      assert ours["segmentation"]["size"] == theirs["segmentation"]["size"]


def test_thresholds_keep_some_and_filter_some(models, image):
  """The test settings are meaningful: the filters drop some of the 192 candidates and NMS some more."""
  model, _ = models
  count = lambda **kw: len(SAM2AutomaticMaskGenerator(model, **{**BASE, **kw}).generate(image))
  unfiltered = count(pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
  filtered = count(box_nms_thresh=1.0)
  assert 0 < filtered < unfiltered
  assert 0 < count() < filtered


@pytest.mark.parametrize("case", [
    dict(output_mode="binary_mask", box_nms_thresh=0.9),
    dict(output_mode="uncompressed_rle", box_nms_thresh=0.95, multimask_output=False, pred_iou_thresh=0.4,
         stability_score_thresh=0.3),
    dict(output_mode="coco_rle", use_m2m=True, box_nms_thresh=0.9),
], ids=["binary_mask", "uncompressed_rle_single_mask", "coco_rle_m2m"])
def test_matches_official(models, image, case):
  got, expected = run_both(models, image, **{**BASE, **case})
  assert_same_records(got, expected)


def test_crops_match_official(models):
  """Crop layer 1 on an image where masks survive inside the crops (in 4 x 4 points per crop)."""
  got, expected = run_both(models, blobs_image(), crop_n_layers=1, crop_n_points_downscale_factor=2, **BASE)
  assert_same_records(got, expected)
  assert len({tuple(r["crop_box"]) for r in got}) >= 3


def test_min_mask_region_area_matches_official(models, image, monkeypatch):
  """The official hole/sprinkle removal needs its CUDA kernel: give it a scipy one so that it runs."""
  import sam2.utils.misc  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(sam2.utils.misc, "get_connected_components", scipy_connected_components)
  kwargs = {**BASE, "box_nms_thresh": 0.9}
  got, expected = run_both(models, image, min_mask_region_area=20, **kwargs)
  assert_same_records(got, expected)
  unprocessed = SAM2AutomaticMaskGenerator(models[0], **kwargs).generate(image)
  assert [r["bbox"] for r in unprocessed] != [r["bbox"] for r in got]  # the post-processing changed something


def test_point_grids_and_crop_boxes():
  for args in [(8, 0, 1), (16, 2, 2), (5, 1, 1)]:
    ours, theirs = amg_utils.build_all_layer_point_grids(*args), official_utils.build_all_layer_point_grids(*args)
    assert len(ours) == len(theirs) and all(np.array_equal(a, b) for a, b in zip(ours, theirs))
  for args in [((240, 320), 1, 512 / 1500), ((1000, 777), 2, 0.3), ((64, 64), 0, 0.5)]:
    assert amg_utils.generate_crop_boxes(*args) == official_utils.generate_crop_boxes(*args)


def test_rle_boxes_and_stability():
  rng = np.random.default_rng(0)
  masks = rng.random((5, 13, 17)) > 0.6
  masks[1] = False
  masks[2] = True
  masks[3, :, :] = False
  masks[3, 4:9, 2:3] = True
  expected_rles = official_utils.mask_to_rle_pytorch(torch.from_numpy(masks))
  for mask, expected in zip(masks, expected_rles):
    rle = amg_utils.mask_to_rle(mask)
    assert rle == expected
    assert np.array_equal(amg_utils.rle_to_mask(rle), official_utils.rle_to_mask(expected))
    assert amg_utils.area_from_rle(rle) == official_utils.area_from_rle(expected) == mask.sum()
    assert amg_utils.coco_encode_rle(rle) == official_utils.coco_encode_rle(expected)
  assert np.array_equal(np.asarray(amg_utils.mask_to_box(masks)),
                        official_utils.batched_mask_to_box(torch.from_numpy(masks)).numpy())
  logits = rng.normal(0, 2, (6, 20, 24)).astype(np.float32)
  logits[0] = -5.0  # empty at both cut-offs: NaN in both
  np.testing.assert_array_equal(np.asarray(amg_utils.stability_score(logits, 0.0, 1.0)),
                                official_utils.calculate_stability_score(torch.from_numpy(logits), 0.0, 1.0).numpy())
  assert amg_utils.box_xyxy_to_xywh(np.array([3, 4, 10, 20])) == [3.0, 4.0, 7.0, 16.0]


@pytest.mark.parametrize("n, threshold", [(0, 0.7), (1, 0.7), (50, 0.7), (300, 0.5), (200, 0.3)])
def test_nms_matches_torchvision(n, threshold):
  rng = np.random.default_rng(n)
  xy = rng.integers(0, 60, (n, 2))
  boxes = np.concatenate([xy, xy + rng.integers(0, 30, (n, 2))], axis=1).astype(np.float32)  # some empty
  scores = rng.permutation(n).astype(np.float32) / max(n, 1)
  expected = torchvision_ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold).numpy()
  np.testing.assert_array_equal(amg_utils.nms(boxes, scores, threshold), expected)


def test_nms_ties_keep_index_order():
  boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32)
  np.testing.assert_array_equal(amg_utils.nms(boxes, np.array([1, 2, 2, 2], np.float32), 0.7), [1, 2])
  # IoU 2/3 in float32 (0.66666669) equals float32(0.66666666) but is above the double 0.66666666: dropped.
  pair = np.array([[0, 0, 2, 1], [0, 0, 3, 1]], np.float32)
  expected = torchvision_ops.nms(torch.from_numpy(pair), torch.tensor([1.0, 0.0]), 0.66666666).numpy()
  assert expected.tolist() == [0]
  np.testing.assert_array_equal(amg_utils.nms(pair, np.array([1, 0], np.float32), 0.66666666), expected)


def test_bad_arguments(models):
  model, _ = models
  with pytest.raises(ValueError, match="exactly one of points_per_side and point_grids"):
    SAM2AutomaticMaskGenerator(model, points_per_side=None)
  with pytest.raises(ValueError, match="exactly one of points_per_side and point_grids"):
    SAM2AutomaticMaskGenerator(model, point_grids=[amg_utils.build_point_grid(4)])
  with pytest.raises(ValueError, match="output_mode"):
    SAM2AutomaticMaskGenerator(model, output_mode="png")
  with pytest.raises(ValueError, match="2 crop layers"):
    SAM2AutomaticMaskGenerator(model, points_per_side=None, point_grids=[amg_utils.build_point_grid(4)],
                               crop_n_layers=1)
  with pytest.raises(ValueError, match="uint8"):
    SAM2AutomaticMaskGenerator(model).generate(np.zeros((8, 8, 3), np.float32))
