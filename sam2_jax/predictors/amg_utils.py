"""Helpers of the automatic mask generator: point grids, crop boxes, RLE, boxes, stability and a jitted NMS.

Host-side helpers work on NumPy; `mask_to_box`, `stability_score` and `nms` are JAX functions with
fixed shapes (padded inputs carry a `valid` mask).
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def build_point_grid(n_per_side: int) -> np.ndarray:
  """(n*n, 2) points (x, y) at the centres of an n x n grid of [0, 1]^2, row by row."""
  offset = 1 / (2 * n_per_side)
  side = np.linspace(offset, 1 - offset, n_per_side)
  xs, ys = np.meshgrid(side, side)
  return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
  """One grid per crop layer; layer i has int(n_per_side / scale_per_layer**i) points a side."""
  return [build_point_grid(int(n_per_side / scale_per_layer**i)) for i in range(n_layers + 1)]


def generate_crop_boxes(im_size: tuple[int, int], n_layers: int, overlap_ratio: float
                        ) -> tuple[list[list[int]], list[int]]:
  """Crop boxes (x0, y0, x1, y1) and their layer: the whole image, then (2^(i+1))^2 overlapping crops per layer i."""
  im_h, im_w = im_size
  boxes, layers = [[0, 0, im_w, im_h]], [0]
  for layer in range(1, n_layers + 1):
    n = 2**layer
    overlap = int(overlap_ratio * min(im_h, im_w) * (2 / n))
    crop_w = int(math.ceil((overlap * (n - 1) + im_w) / n))
    crop_h = int(math.ceil((overlap * (n - 1) + im_h) / n))
    for i in range(n):  # x-major order, as the official generator lists them
      for j in range(n):
        x0, y0 = int((crop_w - overlap) * i), int((crop_h - overlap) * j)
        boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
        layers.append(layer)
  return boxes, layers


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
  """Uncompressed COCO RLE of a bool (H, W) mask: column-major run lengths starting with a background run."""
  h, w = mask.shape
  flat = np.asarray(mask, bool).T.ravel()
  changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
  counts = np.diff(np.concatenate([[0], changes, [h * w]])).tolist()
  if flat.size and flat[0]:
    counts = [0] + counts
  return {"size": [h, w], "counts": counts}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
  """A bool (H, W) mask from an uncompressed RLE."""
  h, w = rle["size"]
  counts = np.asarray(rle["counts"], np.int64)
  values = np.arange(len(counts)) % 2 == 1
  return np.repeat(values, counts).reshape(w, h).T


def area_from_rle(rle: dict[str, Any]) -> int:
  """Foreground pixel count of an uncompressed RLE."""
  return int(sum(rle["counts"][1::2]))


def coco_encode_rle(rle: dict[str, Any]) -> dict[str, Any]:
  """Compressed COCO RLE (pycocotools), with `counts` as a str so that it serialises to JSON."""
  from pycocotools import mask as mask_utils  # pylint: disable=g-import-not-at-top
  h, w = rle["size"]
  out = mask_utils.frPyObjects(rle, h, w)
  out["counts"] = out["counts"].decode("utf-8")
  return out


def box_xyxy_to_xywh(box) -> list[float]:
  """[x0, y0, x1, y1] -> [x0, y0, w, h] as Python floats."""
  x0, y0, x1, y1 = (float(v) for v in box)
  return [x0, y0, x1 - x0, y1 - y0]


def mask_to_box(masks: jnp.ndarray) -> jnp.ndarray:
  """Inclusive pixel boxes (x0, y0, x1, y1) int32 of bool (..., H, W) masks; [0, 0, 0, 0] for an empty mask."""
  h, w = masks.shape[-2:]

  def edges(present, n):  # present: (..., n) bool
    idx = jnp.arange(n, dtype=jnp.int32)
    last = jnp.max(jnp.where(present, idx, -1), axis=-1)
    first = jnp.min(jnp.where(present, idx, n), axis=-1)
    return first, last

  x0, x1 = edges(jnp.any(masks, axis=-2), w)
  y0, y1 = edges(jnp.any(masks, axis=-1), h)
  boxes = jnp.stack([x0, y0, x1, y1], axis=-1)
  return jnp.where((x1 >= x0)[..., None], boxes, 0)


def stability_score(logits: jnp.ndarray, mask_threshold: float, offset: float) -> jnp.ndarray:
  """IoU of the masks thresholded at mask_threshold + offset and at mask_threshold - offset (float32, NaN if empty)."""
  inner = jnp.sum(logits > (mask_threshold + offset), axis=(-2, -1), dtype=jnp.int32)
  outer = jnp.sum(logits > (mask_threshold - offset), axis=(-2, -1), dtype=jnp.int32)
  return inner.astype(jnp.float32) / outer.astype(jnp.float32)


def float32_below(threshold: float) -> np.float32:
  """The largest float32 <= threshold: `x > float32_below(t)` equals `x > t` taken in double precision."""
  t = np.float32(threshold)
  return np.nextafter(t, np.float32(-np.inf)) if float(t) > threshold else t


@jax.jit
def _nms(boxes: jnp.ndarray, scores: jnp.ndarray, valid: jnp.ndarray, iou_threshold: jnp.ndarray
         ) -> tuple[jnp.ndarray, jnp.ndarray]:
  key = jnp.where(valid, -scores, jnp.inf)  # decreasing score, ties in index order, padding last
  order = jnp.argsort(key, stable=True)
  b = boxes[order]
  areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
  idx = jnp.arange(b.shape[0])

  def visit(i, suppressed):
    inter = (jnp.maximum(0.0, jnp.minimum(b[i, 2], b[:, 2]) - jnp.maximum(b[i, 0], b[:, 0]))
             * jnp.maximum(0.0, jnp.minimum(b[i, 3], b[:, 3]) - jnp.maximum(b[i, 1], b[:, 1])))
    overlap = inter / (areas[i] + areas - inter)
    return suppressed | ((overlap > iou_threshold) & (idx > i) & ~suppressed[i])

  suppressed = jax.lax.fori_loop(0, jnp.sum(valid), visit, ~valid[order])
  return order, ~suppressed


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
  """Greedy NMS as torchvision's: indices of the kept boxes, in decreasing score order.

  Equal scores keep their index order (torchvision's CPU kernel sorts with an unstable sort, which orders
  ties arbitrarily beyond 16 boxes).

  Boxes (N, 4) x0, y0, x1, y1 and scores (N,) are float32; they are padded to a power of two (at least 64)
  so that the jitted loop compiles once per size bucket. A box is dropped when its IoU with a kept
  higher-scored box is > iou_threshold (compared as in double precision, as torchvision does).
  """
  n = len(scores)
  if n == 0:
    return np.zeros((0,), np.int64)
  size = max(64, 1 << (n - 1).bit_length())
  pad = lambda x: np.pad(np.asarray(x, np.float32), [(0, size - n)] + [(0, 0)] * (x.ndim - 1))
  valid = np.arange(size) < n
  order, keep = _nms(pad(np.asarray(boxes)), pad(np.asarray(scores)), valid, float32_below(iou_threshold))
  order, keep = np.asarray(order), np.asarray(keep)
  return order[keep].astype(np.int64)
