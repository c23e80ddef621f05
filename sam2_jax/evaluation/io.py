"""Reading and writing video object segmentation masks as PNG folders.

Two layouts are supported, the ones the official SA-V evaluator accepts:

- DAVIS: `{root}/{video}/{frame}.png`, one single-channel (palette) PNG per frame whose pixel values are
  object ids (0 = background). Objects cannot overlap.
- SA-V: `{root}/{video}/{obj:03d}/{frame}.png`, one binary PNG per object and frame (0 = background, any
  other value = object). Objects may overlap.

Every write goes to a hidden temporary file in the destination folder first and is then renamed over the
final name, so a reader never sees a half-written PNG. Entries whose name starts with "." are ignored by the
readers.
"""

import io
import os
import uuid
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

DAVIS = "davis"
SAV = "sav"
LAYOUTS = (DAVIS, SAV)
PNG = ".png"
# A dataset root holds a frames folder and an annotations folder, named by layout.
DATASET_FOLDERS = {DAVIS: ("JPEGImages", "Annotations"), SAV: ("JPEGImages_24fps", "Annotations_6fps")}


def dataset_layout(data_root: str) -> tuple[str, str, str]:
  """(layout, frames folder, annotations folder) of a dataset root in the DAVIS or SA-V layout."""
  for layout, (frames, annotations) in DATASET_FOLDERS.items():
    if os.path.isdir(os.path.join(data_root, frames)) and os.path.isdir(os.path.join(data_root, annotations)):
      return layout, os.path.join(data_root, frames), os.path.join(data_root, annotations)
  raise ValueError(f"{data_root!r} is not a VOS dataset folder: expected JPEGImages/ + Annotations/ (DAVIS) or "
                   "JPEGImages_24fps/ + Annotations_6fps/ (SA-V).")


def davis_palette() -> bytes:
  """The 256-colour DAVIS 2017 (PASCAL VOC) palette as 768 RGB bytes: id 1 red, 2 green, 3 olive, ..."""
  out = bytearray()
  for index in range(256):
    rgb = [0, 0, 0]
    code = index
    for bit in range(7, -1, -1):
      for channel in range(3):
        rgb[channel] |= ((code >> channel) & 1) << bit
      code >>= 3
    out.extend(rgb)
  return bytes(out)


def frame_filename(frame: int | str) -> str:
  """File name of a frame: an int is zero-padded to 5 digits (`7` -> `00007.png`), a str is used as is."""
  if isinstance(frame, (int, np.integer)):
    return f"{int(frame):05d}{PNG}"
  return f"{frame}{PNG}"


def _entries(folder: str) -> list[str]:
  """Sorted names in `folder`, hidden ones (temporary files included) left out."""
  return sorted(name for name in os.listdir(folder) if not name.startswith("."))


def _png_files(folder: str) -> list[str]:
  """Sorted PNG file names in `folder` (sorted by file name, as the official evaluator orders frames)."""
  return [n for n in _entries(folder) if n.endswith(PNG) and os.path.isfile(os.path.join(folder, n))]


def frames_in(folder: str) -> list[str]:
  """Frame names (PNG file names without `.png`) in one folder, sorted by file name."""
  return [n[: -len(PNG)] for n in _png_files(folder)]


def list_videos(root: str) -> list[str]:
  """Sorted names of the video folders in `root`."""
  if not os.path.isdir(root):
    raise ValueError(f"Mask folder {root!r} does not exist or is not a directory.")
  return [n for n in _entries(root) if os.path.isdir(os.path.join(root, n))]


def select_videos(root: str, videos: Sequence[str] | None = None) -> list[str]:
  """The video folders of `root` named in `videos` (None or empty: all), in `root`'s order.

  Raises ValueError listing the names that are not video folders of `root`, or when `root` has none.
  """
  available = list_videos(root)
  if not available:
    raise ValueError(f"{root!r} holds no video folder.")
  if not videos:
    return available
  wanted = set(videos)
  unknown = [v for v in dict.fromkeys(videos) if v not in available]
  if unknown:
    shown = ", ".join(available[:5]) + (", ..." if len(available) > 5 else "")
    raise ValueError(f"Unknown video(s) {unknown}: not video folders of {root!r} (it has {len(available)}: {shown}).")
  return [v for v in available if v in wanted]


def is_within(path: str, root: str) -> bool:
  """True when `path` is `root` or lies inside it, symbolic links resolved."""
  path, root = os.path.realpath(path), os.path.realpath(root)
  return os.path.commonpath([path, root]) == root


def detect_layout(video_dir: str) -> str:
  """`DAVIS` when every entry of `video_dir` is a PNG file (the official rule), else `SAV`."""
  if not os.path.isdir(video_dir):
    raise ValueError(f"Video folder {video_dir!r} does not exist or is not a directory.")
  names = _entries(video_dir)
  if all(n.endswith(PNG) and os.path.isfile(os.path.join(video_dir, n)) for n in names):
    return DAVIS
  return SAV


def object_folders(video_dir: str) -> dict[int, str]:
  """SA-V layout: {object id: folder name} for the object sub-folders of `video_dir`, in folder-name order."""
  folders = {}
  for name in _entries(video_dir):
    path = os.path.join(video_dir, name)
    if not os.path.isdir(path):
      raise ValueError(f"{path!r}: an SA-V video folder may hold only object sub-folders.")
    try:
      obj_id = int(name)
    except ValueError:
      raise ValueError(f"{path!r}: object folder names must be integers such as '001'.") from None
    if obj_id in folders:
      raise ValueError(f"{video_dir!r}: folders {folders[obj_id]!r} and {name!r} name the same object.")
    folders[obj_id] = name
  return folders


def list_frames(root: str, video: str, obj_id: int | None = None) -> list[str]:
  """Frame names (file names without `.png`) of a video, sorted by file name.

  SA-V layout: the frames of object `obj_id`, or the union over all objects when it is None.
  """
  video_dir = os.path.join(root, video)
  if detect_layout(video_dir) == DAVIS:
    return frames_in(video_dir)
  folders = object_folders(video_dir)
  if obj_id is not None:
    if obj_id not in folders:
      raise ValueError(f"{video_dir!r} has no folder for object {obj_id}.")
    folders = {obj_id: folders[obj_id]}
  names = sorted({n for folder in folders.values() for n in _png_files(os.path.join(video_dir, folder))})
  return [n[: -len(PNG)] for n in names]


def list_objects(root: str, video: str) -> list[int]:
  """Sorted object ids of a video: its object folders (SA-V) or the ids found in any frame (DAVIS)."""
  video_dir = os.path.join(root, video)
  if detect_layout(video_dir) == SAV:
    return sorted(object_folders(video_dir))
  ids = set()
  for name in _png_files(video_dir):
    ids.update(nonzero_ids(read_label_png(os.path.join(video_dir, name))))
  return sorted(ids)


def nonzero_ids(labels: np.ndarray) -> list[int]:
  """Sorted distinct non-zero values of a label array, as Python ints."""
  values = np.unique(labels)
  return [int(v) for v in values[values != 0]]


def read_label_png(path: str) -> np.ndarray:
  """The raw 2-D pixel values of a single-channel PNG (palette indices for palette PNGs)."""
  if not os.path.isfile(path):
    raise ValueError(f"Mask file {path!r} not found.")
  try:
    with Image.open(path) as image:
      array = np.array(image)
  except Exception as e:  # PIL raises several types for truncated or non-image data.
    raise ValueError(f"Cannot read mask file {path!r}: {e}") from e
  if array.ndim != 2:
    raise ValueError(f"{path!r}: expected a single-channel (palette or grayscale) PNG, got shape {array.shape}.")
  if array.dtype == bool:
    array = array.astype(np.uint8)
  return array


def read_frame_masks(root: str, video: str, frame: int | str) -> dict[int, np.ndarray]:
  """One frame's masks as {object id: bool (H, W) array}.

  DAVIS layout: the ids present in the frame. SA-V layout: every object that has a file for this frame
  (its mask may be empty).
  """
  video_dir = os.path.join(root, video)
  name = frame_filename(frame)
  if detect_layout(video_dir) == DAVIS:
    labels = read_label_png(os.path.join(video_dir, name))
    return {obj_id: labels == obj_id for obj_id in nonzero_ids(labels)}
  masks = {}
  for obj_id, folder in object_folders(video_dir).items():
    path = os.path.join(video_dir, folder, name)
    if os.path.isfile(path):
      masks[obj_id] = read_label_png(path) > 0
  return masks


def labels_from_masks(masks: Mapping[int, np.ndarray], shape: tuple[int, int] | None = None) -> np.ndarray:
  """Paints per-object masks into one uint8 label map; lower ids are painted last and win overlaps."""
  shapes = {np.shape(m) for m in masks.values()}
  if shape is not None:
    shapes.add(tuple(shape))
  if len(shapes) != 1:
    raise ValueError(f"Masks must share one 2-D shape (or give `shape` for an empty frame); got {sorted(shapes)}.")
  (out_shape,) = shapes
  if len(out_shape) != 2:
    raise ValueError(f"Masks must be 2-D, got shape {out_shape}.")
  labels = np.zeros(out_shape, np.uint8)
  for obj_id in sorted(masks, reverse=True):
    if not 1 <= obj_id <= 255:
      raise ValueError(f"Object ids must be in 1..255 for a palette PNG, got {obj_id}.")
    labels[np.asarray(masks[obj_id], bool)] = obj_id
  return labels


def atomic_write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` through a hidden temporary file in the same folder and an atomic rename."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
  try:
    with open(tmp, "xb") as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_label_png(path: str, labels: np.ndarray, palette: bytes | None = None) -> None:
  """Writes a 2-D uint8 label array as a palette PNG (DAVIS palette by default), atomically."""
  labels = np.asarray(labels)
  if labels.ndim != 2 or labels.dtype != np.uint8:
    raise ValueError(f"Expected a 2-D uint8 label array, got {labels.dtype} {labels.shape}.")
  image = Image.fromarray(labels)
  image.putpalette(davis_palette() if palette is None else palette)
  buffer = io.BytesIO()
  image.save(buffer, format="PNG")
  atomic_write_bytes(path, buffer.getvalue())


def write_frame_masks(
    root: str,
    video: str,
    frame: int | str,
    masks: Mapping[int, np.ndarray],
    layout: str = DAVIS,
    *,
    shape: tuple[int, int] | None = None,
    palette: bytes | None = None,
) -> list[str]:
  """Writes one frame's {object id: (H, W) bool mask} in `layout`; returns the paths written.

  DAVIS: one palette PNG `{root}/{video}/{frame}.png` (lower ids win overlaps; `shape` is needed when
  `masks` is empty). SA-V: one 0/1 palette PNG per object, `{root}/{video}/{obj:03d}/{frame}.png`.
  """
  name = frame_filename(frame)
  video_dir = os.path.join(root, video)
  if layout == DAVIS:
    path = os.path.join(video_dir, name)
    write_label_png(path, labels_from_masks(masks, shape), palette)
    return [path]
  if layout != SAV:
    raise ValueError(f"Unknown layout {layout!r}; expected one of {LAYOUTS}.")
  paths = []
  for obj_id in sorted(masks):
    if obj_id < 0:
      raise ValueError(f"Object ids must be non-negative, got {obj_id}.")
    mask = np.asarray(masks[obj_id])
    if mask.ndim != 2:
      raise ValueError(f"Masks must be 2-D, got shape {mask.shape} for object {obj_id}.")
    path = os.path.join(video_dir, f"{obj_id:03d}", name)
    write_label_png(path, mask.astype(bool).astype(np.uint8), palette)
    paths.append(path)
  return paths
