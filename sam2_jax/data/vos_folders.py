"""DAVIS / MOSE-style video folders (fine-tuning data): one video as a `ClipRecord` of its annotated frames.

Layout: `{root}/JPEGImages/{video}/{frame}.jpg` with masks `{root}/Annotations/{video}/{frame}.png` (palette
PNGs whose values are object ids, as the official `PNGRawDataset` reads them), or the SA-V style
`{root}/JPEGImages_24fps/...` with `{root}/Annotations_6fps/{video}/{obj:03d}/{frame}.png`. The frames are
those with an annotation; an object without a mask on a frame gets an empty one. JPEG bytes are kept as
they are; frame names must be integers (`00042` -> frame index 42).
"""

import os

import numpy as np

from sam2_jax.data.records import ClipRecord, encode_rle
from sam2_jax.data.sa1b import check_jpeg
from sam2_jax.evaluation import io as vos_io

SOURCE = "vos"
JPEG_EXTENSIONS = (".jpg", ".jpeg", ".JPG", ".JPEG")


def find_folders(root: str) -> tuple[str, str]:
  """(frames folder, annotations folder) of a dataset root in the DAVIS or SA-V layout."""
  return vos_io.dataset_layout(root)[1:]


def list_videos(annotations_dir: str) -> list[str]:
  """Sorted names of the annotated videos."""
  return vos_io.list_videos(annotations_dir)


def _jpeg_path(folder: str, name: str) -> str:
  for ext in JPEG_EXTENSIONS:
    path = os.path.join(folder, name + ext)
    if os.path.isfile(path):
      return path
  raise ValueError(f"Frame {os.path.join(folder, name)}.jpg not found (it has an annotation).")


def read_video(frames_dir: str, annotations_dir: str, video: str) -> ClipRecord:
  """The record of one video: its annotated frames (JPEG bytes) and every object's mask on each of them."""
  names = vos_io.list_frames(annotations_dir, video)
  if not names:
    raise ValueError(f"No annotation PNGs in {os.path.join(annotations_dir, video)!r}.")
  try:
    frame_indices = [int(n) for n in names]
  except ValueError:
    raise ValueError(f"Annotation names in {os.path.join(annotations_dir, video)!r} must be frame numbers "
                     f"(e.g. 00000.png), got {names[:3]}.") from None
  frames, rows, shape = [], [], None
  for name in names:
    masks = vos_io.read_frame_masks(annotations_dir, video, name)
    if masks:
      frame_shape = next(iter(masks.values())).shape
    else:  # A DAVIS frame without objects.
      frame_shape = vos_io.read_label_png(os.path.join(annotations_dir, video, vos_io.frame_filename(name))).shape
    if shape is None:
      shape = frame_shape
    elif frame_shape != shape:
      raise ValueError(f"Annotation {name} of {video!r} is {frame_shape}, earlier ones are {shape}.")
    path = _jpeg_path(os.path.join(frames_dir, video), name)
    with open(path, "rb") as f:
      data = f.read()
    check_jpeg(data, shape[0], shape[1], path)
    frames.append(data)
    rows.append({obj_id: encode_rle(mask) for obj_id, mask in masks.items()})
  object_ids = sorted({obj_id for row in rows for obj_id in row})
  empty = encode_rle(np.zeros(shape, bool))
  masks = [[row.get(obj_id, empty) for obj_id in object_ids] for row in rows]
  return ClipRecord(source=SOURCE, id=video, height=shape[0], width=shape[1], frames=frames,
                    frame_indices=frame_indices, object_ids=object_ids, masks=masks)

