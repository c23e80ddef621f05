"""Masks drawn over frames, and frames written as an MP4 video (the outputs `segment` and `eval.py` show)."""

from collections.abc import Iterable
import os

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


def write_mp4(path: str, frames: Iterable[np.ndarray], fps: int = 24) -> None:
  """Encodes uint8 RGB frames (cropped to even sizes) as an MPEG-4 MP4, atomically."""
  import av  # pylint: disable=g-import-not-at-top
  tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.partial.mp4")
  with av.open(tmp, mode="w") as container:
    stream = None
    for frame in frames:
      if stream is None:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = (frame.shape[0] // 2) * 2, (frame.shape[1] // 2) * 2
        stream.pix_fmt = "yuv420p"
      image = np.ascontiguousarray(frame[:stream.height, :stream.width])
      container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
    container.mux(stream.encode())
  os.replace(tmp, path)
