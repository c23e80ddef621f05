"""SA-V: one video with its masklets as a `ClipRecord` of its annotated frames.

Raw layout: `sav_<id>.mp4` (24 fps) with `sav_<id>_manual.json` and optionally `sav_<id>_auto.json`. In a
json, "masklet" is a list over the annotated frames (every 4th video frame: annotation i is video frame
4 * i, as in the official `JSONSegmentLoader`; a json with an "fps" key is annotated every 24 // fps frames)
of lists over objects of COCO RLE dicts {size: [H, W], counts}; "masklet_id" names the objects. An object
invisible on a frame has an empty RLE (a None entry is read as an empty mask too).

`parse_annotation` / `load_annotation` need no video; `read_video` decodes the mp4 with PyAV and keeps the
annotated frames, re-encoded as JPEG. Auto masklets get ids offset by `AUTO_ID_OFFSET` so that they never
collide with the manual ones.
"""

import dataclasses
import io
import os

import numpy as np

from sam2_jax.data.records import ClipRecord, encode_rle, rle_from_coco
from sam2_jax.data.sa1b import load_json

SOURCE = "sav"
VIDEO_FPS = 24
ANN_EVERY = 4
AUTO_ID_OFFSET = 1000


@dataclasses.dataclass
class SavAnnotation:
  """The masklets of one SA-V json: masks[i][j] is the RLE counts of object j on video frame frame_indices[i]."""
  video_id: str
  height: int
  width: int
  num_video_frames: int
  frame_indices: list[int]
  object_ids: list[int]
  masks: list[list[str]]


def parse_annotation(content: dict, path: str = "<json>", id_offset: int = 0) -> SavAnnotation:
  """The masklets of an SA-V json's content; object ids are `masklet_id` + `id_offset`."""
  try:
    height, width = int(content["video_height"]), int(content["video_width"])
    masklet = content["masklet"]
    num_objects = len(masklet[0]) if masklet else int(content.get("masklet_num", 0))
    ids = [int(i) + id_offset for i in content.get("masklet_id", range(num_objects))]
    ann_every = VIDEO_FPS // int(content["fps"]) if "fps" in content else ANN_EVERY
    empty = None
    masks = []
    for i, row in enumerate(masklet):
      if len(row) != len(ids):
        raise ValueError(f"annotated frame {i} has {len(row)} masks for {len(ids)} masklet ids")
      counts = []
      for j, rle in enumerate(row):
        if rle is None:
          empty = empty or encode_rle(np.zeros((height, width), bool))
          counts.append(empty)
          continue
        c, h, w = rle_from_coco(rle)
        if (h, w) != (height, width):
          raise ValueError(f"mask of object {ids[j]} on annotated frame {i} has size {(h, w)}, the video is "
                           f"{(height, width)}")
        counts.append(c)
      masks.append(counts)
    return SavAnnotation(video_id=str(content.get("video_id", os.path.basename(path))), height=height, width=width,
                         num_video_frames=int(content.get("video_frame_count", 0)),
                         frame_indices=[i * ann_every for i in range(len(masks))], object_ids=ids, masks=masks)
  except (KeyError, TypeError, IndexError) as e:
    raise ValueError(f"{path!r} is not an SA-V annotation file (missing or malformed {e}).") from e
  except ValueError as e:
    raise ValueError(f"{path!r}: {e}") from e


def load_annotation(path: str, id_offset: int = 0) -> SavAnnotation:
  """`parse_annotation` of a json file; a missing or corrupt file raises ValueError naming it."""
  return parse_annotation(load_json(path), path, id_offset)


def merge(first: SavAnnotation, second: SavAnnotation) -> SavAnnotation:
  """The objects of both annotations of one video (e.g. manual then auto) on their common annotated frames."""
  if (first.height, first.width) != (second.height, second.width):
    raise ValueError(f"{first.video_id}: annotations of sizes {(first.height, first.width)} and "
                     f"{(second.height, second.width)} cannot be merged.")
  shared = set(first.object_ids) & set(second.object_ids)
  if shared:
    raise ValueError(f"{first.video_id}: both annotations use object ids {sorted(shared)}.")
  if first.frame_indices[:len(second.frame_indices)] != second.frame_indices[:len(first.frame_indices)]:
    raise ValueError(f"{first.video_id}: the annotations are not on the same frames.")
  n = min(len(first.frame_indices), len(second.frame_indices))
  return dataclasses.replace(first, frame_indices=first.frame_indices[:n],
                             object_ids=first.object_ids + second.object_ids,
                             masks=[a + b for a, b in zip(first.masks[:n], second.masks[:n])])


def list_videos(folder: str) -> list[str]:
  """Sorted paths of the `sav_*.mp4` files of a raw SA-V folder."""
  if not os.path.isdir(folder):
    raise ValueError(f"SA-V folder {folder!r} does not exist or is not a directory.")
  return sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.startswith("sav_") and n.endswith(".mp4"))


def decode_frames(path: str, frame_indices: list[int], jpeg_quality: int = 95) -> tuple[list[bytes], int, int]:
  """(JPEG bytes of the given video frames, height, width), decoding the video with PyAV up to the last one."""
  import av  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise ValueError(f"Video file {path!r} not found.")
  wanted = set(frame_indices)
  last = max(frame_indices)
  found = {}
  size = None
  decoded = 0
  try:
    with av.open(path) as container:
      stream = container.streams.video[0]
      stream.thread_type = "AUTO"
      for index, frame in enumerate(container.decode(stream)):
        decoded = index + 1
        size = (frame.height, frame.width)
        if index in wanted:
          buffer = io.BytesIO()
          frame.to_image().save(buffer, format="JPEG", quality=jpeg_quality)
          found[index] = buffer.getvalue()
        if index >= last:
          break
  except (av.error.FFmpegError, IndexError) as e:
    raise ValueError(f"Cannot decode video {path!r}: {e}") from e
  if last not in found:
    raise ValueError(f"Video {path!r} has {decoded} frames but the annotations need frame {last}.")
  return [found[i] for i in frame_indices], size[0], size[1]


def annotation_paths(video_path: str) -> tuple[str, str]:
  """(manual, auto) json paths of `sav_<id>.mp4`."""
  stem = os.path.splitext(video_path)[0]
  return f"{stem}_manual.json", f"{stem}_auto.json"


def read_video(video_path: str, include_auto: bool = False, jpeg_quality: int = 95) -> ClipRecord:
  """The record of `sav_<id>.mp4`: its annotated frames as JPEG with the manual (and, when present and
  `include_auto`, auto) masklets."""
  manual_path, auto_path = annotation_paths(video_path)
  ann = load_annotation(manual_path)
  if include_auto and os.path.exists(auto_path):
    ann = merge(ann, load_annotation(auto_path, AUTO_ID_OFFSET))
  if not ann.frame_indices:
    raise ValueError(f"{manual_path!r} has no annotated frames.")
  frames, height, width = decode_frames(video_path, ann.frame_indices, jpeg_quality)
  if (height, width) != (ann.height, ann.width):
    raise ValueError(f"Video {video_path!r} is {height}x{width} (HxW) but its annotations say "
                     f"{ann.height}x{ann.width}.")
  return ClipRecord(source=SOURCE, id=os.path.splitext(os.path.basename(video_path))[0], height=height, width=width,
                    frames=frames, frame_indices=ann.frame_indices, object_ids=ann.object_ids, masks=ann.masks)
