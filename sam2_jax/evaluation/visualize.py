"""Masks drawn over frames (the overlays `segment` and `eval.py` write)."""

from collections.abc import Iterable

import numpy as np

from sam2_jax.evaluation import io as vos_io


def overlay(frame: np.ndarray, masks: Iterable[tuple[int, np.ndarray]]) -> np.ndarray:
  """uint8 RGB `frame` with each (object id, boolean mask) blended half-way in the id's DAVIS palette colour,
  in the order given."""
  palette = np.frombuffer(vos_io.davis_palette(), np.uint8).reshape(256, 3).astype(np.float32)
  out = np.asarray(frame, np.float32).copy()
  for obj_id, mask in masks:
    out[mask] = 0.5 * out[mask] + 0.5 * palette[obj_id % 256]
  return out.astype(np.uint8)

