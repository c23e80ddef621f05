"""The one record format of all training data: a clip of JPEG frames with COCO-RLE object masks.

SA-1B images are 1-frame clips, SA-V videos clips of their annotated (every 4th) frames, VOS
folders (DAVIS / MOSE) clips of their annotated frames. A record is a msgpack map:

  source        "sa1b" | "sav" | "vos"
  id            str (image / video id)
  height, width int (original resolution)
  frames        [bytes]: JPEG of each frame
  frame_indices [int]: each frame's index in the original video (0 for images)
  object_ids    [int]
  masks         [[str]]: masks[frame][object], COCO compressed RLE counts of an (height, width) mask

ArrayRecord files hold one serialized record per entry.
"""

import dataclasses
from typing import Sequence

import msgpack
import numpy as np
from pycocotools import mask as mask_utils

SOURCES = ("sa1b", "sav", "vos")


@dataclasses.dataclass
class ClipRecord:
  """A decoded-header record; frames stay JPEG bytes and masks RLE until used."""
  source: str
  id: str
  height: int
  width: int
  frames: list[bytes]
  frame_indices: list[int]
  object_ids: list[int]
  masks: list[list[str]]

  def __post_init__(self):
    if self.source not in SOURCES:
      raise ValueError(f"Unknown record source {self.source!r}; expected one of {SOURCES}.")
    if len(self.frames) != len(self.frame_indices) or len(self.frames) != len(self.masks):
      raise ValueError(f"Record {self.id!r}: {len(self.frames)} frames, {len(self.frame_indices)} frame indices and "
                       f"{len(self.masks)} mask rows must match.")
    if any(len(row) != len(self.object_ids) for row in self.masks):
      raise ValueError(f"Record {self.id!r}: every mask row needs one RLE per object ({len(self.object_ids)}).")

  def serialize(self) -> bytes:
    return msgpack.packb(dataclasses.asdict(self), use_bin_type=True)

  @classmethod
  def deserialize(cls, data: bytes) -> "ClipRecord":
    try:
      fields = msgpack.unpackb(data, raw=False)
      return cls(**fields)
    except (ValueError, TypeError, msgpack.exceptions.ExtraData, msgpack.exceptions.UnpackException) as e:
      raise ValueError(f"Corrupt clip record: {e}") from e

  def decode_mask(self, frame: int, obj: int) -> np.ndarray:
    """The (height, width) bool mask of object number `obj` on frame number `frame`."""
    return decode_rle(self.masks[frame][obj], self.height, self.width)


def encode_rle(mask: np.ndarray) -> str:
  """COCO compressed RLE counts string of a 2-D bool mask."""
  rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, np.uint8)))
  return rle["counts"].decode("ascii")


def decode_rle(counts: str | bytes, height: int, width: int) -> np.ndarray:
  counts = counts.encode("ascii") if isinstance(counts, str) else counts
  return mask_utils.decode({"size": [height, width], "counts": counts}).astype(bool)


def rle_from_coco(segmentation: dict) -> tuple[str, int, int]:
  """(counts string, height, width) of a COCO RLE dict (compressed or uncompressed counts)."""
  h, w = segmentation["size"]
  if isinstance(segmentation["counts"], list):
    segmentation = mask_utils.frPyObjects(segmentation, h, w)
  counts = segmentation["counts"]
  return (counts.decode("ascii") if isinstance(counts, bytes) else counts), h, w


def write_array_record(path: str, records: Sequence[ClipRecord]) -> None:
  """Writes records to one ArrayRecord file (through a temporary name, renamed when complete)."""
  import os  # pylint: disable=g-import-not-at-top
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  tmp = f"{path}.partial"
  writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
  try:
    for record in records:
      writer.write(record.serialize())
  finally:
    writer.close()
  os.replace(tmp, path)
