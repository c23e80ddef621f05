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

ArrayRecord files hold one serialized record per entry. Converters write shards named
`{name}-{shard:05d}-of-{num_shards:05d}.array_record` (`shard_path`, `write_shards`).
"""

import dataclasses
import functools
import logging
import multiprocessing
import os
import re
from typing import Any, Callable, Sequence

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


class _Writer:
  """An ArrayRecord writer whose failures (reported by array_record as RuntimeError) are OSErrors naming the file."""

  def __init__(self, path: str):
    from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
    self.path = path
    self._writer = array_record_module.ArrayRecordWriter(path, "group_size:1")
    if not self._writer.ok():
      self._writer = None
      raise OSError(f"Cannot create {path!r}.")

  def write(self, data: bytes) -> None:
    try:
      self._writer.write(data)
    except RuntimeError as e:
      raise OSError(f"Cannot write {self.path!r}: {e}") from e

  def close(self) -> None:
    if self._writer is None:
      return
    writer, self._writer = self._writer, None
    try:
      writer.close()
    except RuntimeError as e:
      raise OSError(f"Cannot write {self.path!r}: {e}") from e


def _remove(path: str) -> None:
  if os.path.lexists(path):
    os.remove(path)


def write_array_record(path: str, records: Sequence[ClipRecord]) -> None:
  """Writes records to one ArrayRecord file (through a temporary name, renamed when complete)."""
  tmp = f"{path}.partial"
  writer = _Writer(tmp)
  try:
    for record in records:
      writer.write(record.serialize())
    writer.close()
    os.replace(tmp, path)
  except BaseException:
    writer.close()
    _remove(tmp)
    raise


def shard_path(output_dir: str, name: str, shard: int, num_shards: int) -> str:
  """`{output_dir}/{name}-{shard:05d}-of-{num_shards:05d}.array_record`."""
  return os.path.join(output_dir, f"{name}-{shard:05d}-of-{num_shards:05d}.array_record")


@dataclasses.dataclass
class ShardStats:
  """What `write_shards` did: records written, items dropped (no record), error messages of skipped items."""
  written: int = 0
  dropped: int = 0
  errors: list[str] = dataclasses.field(default_factory=list)
  paths: list[str] = dataclasses.field(default_factory=list)


def _convert(to_record: Callable[[Any], "ClipRecord | None"], item: Any) -> tuple["ClipRecord | None", str | None]:
  """(record or None, None), or (None, message) for a bad input: an unreadable file is one too (OSError)."""
  try:
    return to_record(item), None
  except (ValueError, OSError) as e:
    return None, str(e)


def write_shards(
    items: Sequence[Any],
    to_record: Callable[[Any], "ClipRecord | None"],
    output_dir: str,
    name: str,
    num_shards: int,
    *,
    num_workers: int = 0,
    skip_errors: bool = False,
    progress: bool = True,
) -> ShardStats:
  """Converts `items` with `to_record` and streams the records into `num_shards` ArrayRecord files.

  Shard k holds the records of the k-th contiguous slice of `items`, in order. All or nothing: every shard
  is written under a temporary name (`.partial`) and they are renamed only once all are complete, so the
  shard files exist only after a whole successful run. `to_record` returns None to drop an item (it has
  no objects) and raises ValueError (or OSError) on bad input: that stops the run (the message should
  name the file) unless `skip_errors`, which logs and counts it instead. A run that would write no record
  at all raises ValueError, as does an `output_dir` holding `name` shards of another shard count. With
  `num_workers` > 0 the items are converted in that many processes (`to_record` must be picklable).
  """
  import tqdm  # pylint: disable=g-import-not-at-top
  if not items:
    raise ValueError(f"No input items to write for {name!r}.")
  if num_shards < 1:
    raise ValueError(f"num_shards must be >= 1, got {num_shards}.")
  if num_workers < 0:
    raise ValueError(f"num_workers must be >= 0, got {num_workers}.")
  if not name or os.sep in name:
    raise ValueError(f"Shard name {name!r} must be a plain file name prefix.")
  num_shards = min(num_shards, len(items))
  try:
    os.makedirs(output_dir, exist_ok=True)
  except OSError as e:
    raise ValueError(f"Cannot create the output folder {output_dir!r}: {e.strerror}.") from e
  bounds = [len(items) * k // num_shards for k in range(num_shards + 1)]
  stats = ShardStats(paths=[shard_path(output_dir, name, k, num_shards) for k in range(num_shards)])
  shard_name = re.compile(re.escape(name) + r"-\d+-of-\d+\.array_record")
  others = sorted(n for n in os.listdir(output_dir)
                  if shard_name.fullmatch(n) and os.path.join(output_dir, n) not in stats.paths)
  if others:  # A glob over the folder would mix them with this run's shards.
    raise ValueError(f"{output_dir!r} already holds {len(others)} {name!r} shards of a run with another shard count "
                     f"({others[0]}, ...): remove them or choose another output folder.")
  tmps = [f"{path}.partial" for path in stats.paths]
  renamed = []
  convert = functools.partial(_convert, to_record)
  pool = multiprocessing.Pool(num_workers) if num_workers > 0 else None
  results = pool.imap(convert, items) if pool else map(convert, items)
  bar = tqdm.tqdm(total=len(items), desc=name, unit="item", disable=not progress)
  try:
    for shard, tmp in enumerate(tmps):
      writer = _Writer(tmp)
      try:
        for _ in range(bounds[shard], bounds[shard + 1]):
          record, error = next(results)
          bar.update()
          if error is not None:
            if not skip_errors:
              raise ValueError(error)
            logging.warning("Skipped: %s", error)
            stats.errors.append(error)
          elif record is None:
            stats.dropped += 1
          else:
            writer.write(record.serialize())
            stats.written += 1
      finally:
        writer.close()
    if not stats.written:
      first = f" (first: {stats.errors[0]})" if stats.errors else ""
      raise ValueError(f"No records written to {output_dir!r}: of {len(items)} inputs, {stats.dropped} without "
                       f"objects were dropped and {len(stats.errors)} bad inputs skipped{first}.")
    for tmp, path in zip(tmps, stats.paths):
      os.replace(tmp, path)
      renamed.append(path)
  except BaseException:
    for path in tmps + renamed:
      _remove(path)
    raise
  finally:
    bar.close()
    if pool:
      pool.terminate()
  return stats
