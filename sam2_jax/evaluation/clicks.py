"""Simulated clicks for interactive image segmentation evaluation (pure NumPy functions).

The rule is RITM's (`isegm/inference/clicker.py`), which the SAM papers follow and the official
`sample_one_point_from_error_center` implements: each click goes to the pixel farthest from the
boundary of the error region, the maximum of the Euclidean distance transform of the false-negative
(FN = GT and not prediction) and false-positive (FP = prediction and not GT) masks, each padded by one
pixel so that the image border counts as boundary. The larger maximum picks the region, so the
"largest" error region is the one with the largest inscribed distance (not the largest area); it is
taken over the whole FN (or FP) mask, i.e. over its component with the deepest point. The click is
positive in FN, negative in FP; on a tie the click is negative (RITM's strict `>`). Among pixels at the
same maximal distance, the first in row-major order (smallest y, then x) wins. The first click is the
same rule with an empty prediction: the centre of the object. Coordinates are integer pixel (x, y).
Pixels clicked before are not excluded (as in the official sampler; RITM's clicker excludes them).

A perfect prediction (no FN and no FP pixel) gives no click (`None`); the evaluation then keeps the
prediction for the remaining clicks (the official sampler would click at (0, 0) instead).
"""

import numpy as np
from scipy import ndimage


def boundary_distance(region: np.ndarray) -> np.ndarray:
  """Distance of each pixel of a 2-D bool region to the nearest pixel outside it or beyond the image border."""
  return ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]


def next_click(gt: np.ndarray, pred: np.ndarray | None = None) -> tuple[int, int, int] | None:
  """The click (x, y, label) correcting `pred` towards `gt` (2-D bool masks); None if they are equal.

  label 1: positive click in the false-negative region; 0: negative click in the false-positive one.
  `pred` None (no prediction yet) gives the first click, at the centre of `gt`.
  """
  gt = np.asarray(gt, bool)
  pred = np.zeros_like(gt) if pred is None else np.asarray(pred, bool)
  fn = boundary_distance(gt & ~pred)
  fp = boundary_distance(pred & ~gt)
  fn_max, fp_max = fn.max(initial=0.0), fp.max(initial=0.0)
  if fn_max == 0 and fp_max == 0:
    return None
  positive = fn_max > fp_max
  y, x = np.unravel_index(np.argmax(fn if positive else fp), gt.shape)
  return int(x), int(y), int(positive)


def mask_box(mask: np.ndarray) -> np.ndarray:
  """The bounding box x0, y0, x1, y1 (inclusive pixel indices, as the official samplers) of a non-empty mask."""
  ys, xs = np.nonzero(mask)
  return np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
  """Intersection over union of two bool masks (1.0 when both are empty)."""
  union = np.logical_or(pred, gt).sum()
  return float(np.logical_and(pred, gt).sum() / union) if union else 1.0
