"""The official video predictor (sam2==1.1.0) and ours on the same perturbed weights, and how their
outputs are compared: the video and camera predictor tests share these."""

import numpy as np
import pytest
import sam2.utils.misc
from scipy import ndimage

from sam2_jax.build_sam import POSTPROCESSING, SAM2Model, get_model_config, params_from_state_dict
from sam2_jax.predictors.video import SAM2VideoPredictor
from bench.oracle import build_official, torch

IMAGE_SIZE = 256
FILL_HOLE_AREA = 8  # the official builder's default


def make_model(obj_score_bias: float, fill_hole_area: int = 0):
  """(the official video predictor, our SAM2Model with its weights and the official post-processing)."""
  official, sd = build_official("sam2.1_hiera_t", image_size=IMAGE_SIZE, video=True, obj_score_bias=obj_score_bias)
  official.fill_hole_area = fill_hole_area  # (a cached model)
  config = get_model_config("sam2.1_hiera_t", image_size=IMAGE_SIZE, binarize_mask_from_pts_for_mem_enc=True,
                            **POSTPROCESSING)
  return official, SAM2Model(config, params_from_state_dict(sd, config))


def make_pair(obj_score_bias, fill_hole_area=0):
  official, model = make_model(obj_score_bias, fill_hole_area)
  return SAM2VideoPredictor(model, fill_hole_area=fill_hole_area, chunk_size=4), official


@pytest.fixture
def official_hole_filling(monkeypatch):
  """The official connected components (a CUDA kernel, absent here) with scipy; yields the small holes seen."""
  small_holes = []

  def connected_components(mask):
    mask = mask.numpy().astype(bool)
    labels, areas = np.zeros(mask.shape, np.int32), np.zeros(mask.shape, np.int32)
    for idx in np.ndindex(mask.shape[:-2]):
      labels[idx], _ = ndimage.label(mask[idx], structure=np.ones((3, 3), bool))
      counts = np.bincount(labels[idx].ravel())
      areas[idx] = np.where(labels[idx] > 0, counts[labels[idx]], 0)
      small_holes.append(int((counts[1:] <= FILL_HOLE_AREA).sum()))
    return torch.from_numpy(labels), torch.from_numpy(areas)

  monkeypatch.setattr(sam2.utils.misc, "get_connected_components", connected_components)
  yield small_holes


def mask_iou(a, b):
  union = np.logical_or(a, b).sum()
  return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def assert_frame_close(got, expected, what):
  """(frame_idx, obj_ids, logits (O, 1, H, W)) of ours against the official's: relative error ≤ 1e-3 and
  mask IoU ≥ 0.99 per object."""
  t_idx, t_ids, t_masks = expected
  idx, ids, masks = got
  assert idx == t_idx and list(ids) == list(t_ids), what
  t_masks = t_masks.numpy() if hasattr(t_masks, "numpy") else t_masks
  assert masks.shape == t_masks.shape, what
  for o in range(masks.shape[0]):
    err = np.abs(masks[o] - t_masks[o]).max() / max(np.abs(t_masks[o]).max(), 1e-6)
    assert err <= 1e-3, f"{what} object {ids[o]}: logits rel err {err:.2e}"
    assert mask_iou(masks[o] > 0, t_masks[o] > 0) >= 0.99, f"{what} object {ids[o]}"


def run_both(ours, official, fn_ours, fn_official, what):
  with torch.inference_mode():
    expected = fn_official(official)
  got = fn_ours(ours)
  if isinstance(expected, tuple):
    assert_frame_close(got, expected, what)
    return got
  expected, got = list(expected), list(got)
  assert [e[0] for e in expected] == [g[0] for g in got], what
  for e, g in zip(expected, got):
    assert_frame_close(g, e, f"{what} frame {e[0]}")
  return got
