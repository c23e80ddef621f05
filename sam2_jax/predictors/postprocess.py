"""Mask post-processing on the host: small holes and sprinkles by connected components.

The official code runs these with a CUDA kernel (8-connectivity) and silently skips them on a
CPU-only install; here they run on the CPU with scipy, always.
"""

import numpy as np
from scipy import ndimage

_EIGHT_CONNECTED = np.ones((3, 3), bool)


def small_components(binary: np.ndarray, max_area: float) -> np.ndarray:
  """Pixels of 8-connected components of `binary` (..., H, W) with area <= max_area."""
  out = np.zeros_like(binary, dtype=bool)
  flat_in, flat_out = binary.reshape(-1, *binary.shape[-2:]), out.reshape(-1, *binary.shape[-2:])
  for plane, dst in zip(flat_in, flat_out):
    labels, n = ndimage.label(plane, structure=_EIGHT_CONNECTED)
    if n:
      areas = np.bincount(labels.ravel())
      small = areas <= max_area
      small[0] = False
      dst[...] = small[labels]
  return out


def fill_holes(mask_logits: np.ndarray, max_area: float, threshold: float = 0.0, fill_value: float = 0.1) -> np.ndarray:
  """Background regions (logit <= threshold) of area <= max_area become `fill_value`."""
  if max_area <= 0:
    return mask_logits
  return np.where(small_components(mask_logits <= threshold, max_area), fill_value, mask_logits)


def fill_holes_and_sprinkles(mask_logits: np.ndarray, max_hole_area: float, max_sprinkle_area: float,
                             threshold: float = 0.0) -> np.ndarray:
  """The image predictor's post-processing: holes -> threshold + 10, sprinkles -> threshold - 10.

  Both kinds of region are found on the input logits (as the official `postprocess_masks` does).
  """
  out = fill_holes(mask_logits, max_hole_area, threshold, threshold + 10.0)
  if max_sprinkle_area > 0:
    out = np.where(small_components(mask_logits > threshold, max_sprinkle_area), threshold - 10.0, out)
  return out
