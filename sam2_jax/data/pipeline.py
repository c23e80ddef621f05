"""The training input pipeline: ArrayRecord files of `ClipRecord`s -> augmented, fixed-shape batches (Grain).

Per source (e.g. SA-1B images, SA-V videos), with `grain.MapDataset`: source -> shuffle (a new order every
epoch) -> repeat -> decode + sample + augment (`random_map`, one RNG per element index, so the output does not
depend on threads or workers) -> this process's slice `[process_index::process_count]` -> `IterDataset`:
corrupt or unusable records skipped and counted -> batch. The per-source batch streams are mixed PER BATCH with
`IterDataset.mix` (a deterministic interleave in proportion to the weights, the same on every process, so all
hosts produce the same batch kind at every step), then optionally prefetched by worker processes
(`mp_prefetch`). The iterator of `make_dataset(...)` checkpoints with `get_state()` / `set_state()` (a
JSON-serialisable dict); resuming requires the same config, seed, process count and `num_workers`.

Sampling follows the official `RandomUniformSampler` + `VOSDataset`: `num_frames` consecutive annotated frames
from a uniformly random start (time reversed with `reverse_time_prob`), among the starts whose first frame shows
an object; then a random subset (random order) of at most `max_num_objects` of the objects visible in that
first frame. An object absent from a later frame has an all-False mask there. Image sources sample one frame.

Each batch is a dict of NumPy arrays with a leading per-process batch dimension B (= the source's global
`batch_size` / process_count); T is 1 for image sources and `num_frames` for video sources, O is
`max_num_objects` and S is `resolution`:

  images         uint8 (B, T, S, S, 3)   RGB frames (not normalised)
  masks          bool  (B, T, O, S, S)   object masks; all False for padded objects and absent objects
  obj_valid      bool  (B, O)            False for padding (clips with fewer objects than O)
  object_ids     int32 (B, O)            object ids of the record, -1 for padding
  frame_indices  int32 (B, T)            frame index in the original video of each sampled frame
  source_id      int32 (B,)              index of the source in `source_names(config)` (same for the batch)
  num_skipped    int32 (B,)              records of this source skipped (corrupt or unusable) right before
                                         this example: records read = B + num_skipped.sum() (see DataStats)

A record is skipped when it cannot be read or decoded (ArrayRecord chunk, msgpack, JPEG, RLE, inconsistent
sizes) or cannot give an example (fewer annotated frames than `num_frames`, no object visible in any possible
first frame). If the skipped fraction of a source's records exceeds `max_bad_fraction` (checked once at least
`bad_fraction_min_records` records were read), iteration raises `BadDataError`.
"""

import dataclasses
import glob
import io
import logging
from typing import Any

from absl import flags
import grain
import ml_collections
import msgpack
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from sam2_jax.data import transforms
from sam2_jax.data.records import ClipRecord, decode_rle


class BadDataError(RuntimeError):
  """Too large a fraction of a source's records were corrupt or unusable."""


def get_config() -> ml_collections.ConfigDict:
  """Defaults of the data pipeline (the official SA-1B + SA-V recipe at 1024², 8-frame clips, 3 objects).

  `sources` maps a source name to `paths` (comma-separated ArrayRecord files or glob patterns; empty = the
  source is unused), `video` (clips of `num_frames` frames, else 1-frame images), `batch_size` (GLOBAL number
  of clips per batch of this source, divided among processes) and `weight` (mixing weight of its batches).
  """
  c = ml_collections.ConfigDict()
  c.resolution = 1024
  c.num_frames = 8
  c.max_num_objects = 3
  c.reverse_time_prob = 0.0
  c.shuffle = True
  c.sources = ml_collections.ConfigDict({
      "sa1b": dict(paths="", video=False, batch_size=8, weight=1.0),
      "sav": dict(paths="", video=True, batch_size=8, weight=1.0),
  })
  c.max_bad_fraction = 0.01
  c.bad_fraction_min_records = 100
  c.num_workers = 8  # worker processes of mp_prefetch; 0 = everything in the calling process
  c.worker_buffer_size = 2  # batches buffered per worker
  c.read_threads = 2  # threads decoding examples (per process or worker)
  c.read_buffer_size = 4  # examples decoded ahead (per source, per process or worker)
  c.augment = transforms.default_augment_config()
  return c


def source_names(config: ml_collections.ConfigDict) -> list[str]:
  """All configured source names in `source_id` order (sorted)."""
  return sorted(config.sources.keys())


@dataclasses.dataclass(frozen=True)
class Source:
  """One active data source."""
  name: str
  source_id: int
  paths: tuple[str, ...]
  num_frames: int
  batch_size: int
  weight: float


def active_sources(config: ml_collections.ConfigDict) -> list[Source]:
  """The sources with files and a positive weight, in `source_id` order."""
  out = []
  for source_id, name in enumerate(source_names(config)):
    sc = config.sources[name]
    if not sc.paths or sc.weight <= 0:
      continue
    try:
      paths = expand_paths(sc.paths)
    except ValueError as e:
      raise ValueError(f"Data source {name!r}: {e}") from None
    out.append(Source(name, source_id, tuple(paths), config.num_frames if sc.video else 1, int(sc.batch_size),
                      float(sc.weight)))
  if not out:
    raise ValueError("No data source: set config.sources.<name>.paths (and a positive weight) for at least one of "
                     f"{source_names(config)}.")
  return out


def model_input_shapes(config: ml_collections.ConfigDict) -> dict[str, dict[str, tuple[tuple[int, ...], type]]]:
  """The global (shape, dtype) of the model's inputs (`images`, `masks`, `obj_valid`) in the batches of each source
  with a positive weight, whether or not its files are set: what the train step is compiled for."""
  s, o = config.resolution, config.max_num_objects
  out = {}
  for name in source_names(config):
    sc = config.sources[name]
    if sc.weight > 0:
      b, t = int(sc.batch_size), config.num_frames if sc.video else 1
      out[name] = {"images": ((b, t, s, s, 3), np.uint8), "masks": ((b, t, o, s, s), np.bool_),
                   "obj_valid": ((b, o), np.bool_)}
  return out


def expand_paths(paths: str) -> list[str]:
  """Files named by comma-separated paths or glob patterns (each pattern sorted, must match something)."""
  out = []
  for pattern in (p.strip() for p in paths.split(",")):
    if not pattern:
      continue
    matches = sorted(glob.glob(pattern))
    if not matches:
      raise ValueError(f"No file matches {pattern!r}.")
    out.extend(matches)
  return out


@dataclasses.dataclass(frozen=True)
class _Skip:
  """Stands for a record that gave no example."""
  reason: str


class _TolerantSource:
  """An ArrayRecord data source whose unreadable records come out as `_Skip` instead of raising."""

  def __init__(self, paths: tuple[str, ...]):
    self._source = grain.sources.ArrayRecordDataSource(list(paths))

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> bytes | _Skip:
    try:
      return self._source[index]
    except (RuntimeError, OSError) as e:
      return _Skip(f"unreadable record {index}: {e}")


class _Unusable(ValueError):
  """A well-formed record that cannot give a training example."""


_DECODE_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, OSError, SyntaxError, EOFError,
                  Image.DecompressionBombError, msgpack.exceptions.UnpackException)


class ExampleLoader:
  """`random_map` function: serialized record -> sampled, augmented, padded example (or `_Skip`)."""

  def __init__(self, source: Source, config: ml_collections.ConfigDict):
    self.source_id = source.source_id
    self.num_frames = source.num_frames
    self.max_num_objects = config.max_num_objects
    self.reverse_time_prob = config.reverse_time_prob if source.num_frames > 1 else 0.0
    self.transform = transforms.build_transforms(config.augment, config.resolution)

  def __call__(self, raw: bytes | _Skip, rng: np.random.Generator) -> dict[str, Any] | _Skip:
    if isinstance(raw, _Skip):
      return raw
    try:
      clip, frame_indices, object_ids = self._decode(raw, rng)
    except _DECODE_ERRORS as e:
      return _Skip(f"{type(e).__name__}: {e}")
    clip = self.transform(clip, rng)
    t, n = clip.masks.shape[:2]
    o = self.max_num_objects
    masks = np.zeros((t, o, *clip.masks.shape[2:]), bool)
    masks[:, :n] = clip.masks
    return {
        "images": clip.frames,
        "masks": masks,
        "obj_valid": np.arange(o) < n,
        "object_ids": np.array(object_ids + [-1] * (o - n), np.int32),
        "frame_indices": np.asarray(frame_indices, np.int32),
        "source_id": np.int32(self.source_id),
    }

  def _decode(self, raw: bytes, rng: np.random.Generator) -> tuple[transforms.Clip, list[int], list[int]]:
    record = ClipRecord.deserialize(raw)
    frames = self._sample_frames(record, rng)
    visible = np.flatnonzero(_visible(record, frames[0]))
    chosen = rng.permutation(visible)[:self.max_num_objects].tolist()
    images = np.stack([_decode_jpeg(record.frames[f], record.height, record.width) for f in frames])
    masks = np.zeros((len(frames), len(chosen), record.height, record.width), bool)
    for i, f in enumerate(frames):
      for j, obj in enumerate(chosen):
        counts = record.masks[f][obj]
        if not counts:
          raise ValueError(f"empty RLE string (frame {f}, object {obj})")
        masks[i, j] = decode_rle(counts, record.height, record.width)
    return (transforms.Clip(images, masks), [int(record.frame_indices[f]) for f in frames],
            [int(record.object_ids[o]) for o in chosen])

  def _sample_frames(self, record: ClipRecord, rng: np.random.Generator) -> list[int]:
    """A uniformly random (start, direction) among those whose first frame shows an object."""
    t, n = self.num_frames, len(record.frames)
    if n < t:
      raise _Unusable(f"record {record.id!r} has {n} annotated frames, {t} needed")
    starts = np.arange(n - t + 1)
    p = self.reverse_time_prob
    weights = [(1 - p) * _visible(record, s).any() for s in starts]
    if p > 0:
      weights += [p * _visible(record, s + t - 1).any() for s in starts]
    weights = np.asarray(weights, np.float64)
    if weights.sum() <= 0:
      raise _Unusable(f"record {record.id!r} shows no object in any first frame")
    k = int(rng.choice(len(weights), p=weights / weights.sum()))
    frames = list(range(starts[k % len(starts)], starts[k % len(starts)] + t))
    return frames[::-1] if k >= len(starts) else frames


def _visible(record: ClipRecord, frame: int) -> np.ndarray:
  """(num_objects,) bool: object mask non-empty on `frame` (from the RLE, without decoding)."""
  return np.array([bool(c) and mask_utils.area(_rle(c, record.height, record.width)) > 0
                   for c in record.masks[frame]], bool)


def _rle(counts: str | bytes, height: int, width: int) -> dict[str, Any]:
  return {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def _decode_jpeg(data: bytes, height: int, width: int) -> np.ndarray:
  with Image.open(io.BytesIO(data)) as image:
    rgb = np.asarray(image.convert("RGB"))
  if rgb.shape != (height, width, 3):
    raise ValueError(f"frame of size {rgb.shape[:2]}, record says {(height, width)}")
  return rgb


class _SkipBadIterDataset(grain.IterDataset):
  """Drops `_Skip` elements, writes into each example how many were dropped right before it, and raises
  `BadDataError` when the dropped fraction exceeds the limit."""

  def __init__(self, parent: grain.IterDataset, name: str, max_bad_fraction: float, min_records: int):
    super().__init__(parent)
    self.name = name
    self.max_bad_fraction = max_bad_fraction
    self.min_records = min_records

  def __iter__(self) -> "_SkipBadIterator":
    return _SkipBadIterator(self._parent.__iter__(), self)

  def __str__(self) -> str:
    return f"SkipBadIterDataset({self.name}, max_bad_fraction={self.max_bad_fraction})"


class _SkipBadIterator(grain.DatasetIterator):
  """Iterator of `_SkipBadIterDataset`; its state holds the running counts."""

  def __init__(self, parent: grain.DatasetIterator, ds: _SkipBadIterDataset):
    super().__init__(parent)
    self._ds = ds
    self._seen = 0
    self._skipped = 0

  def __next__(self) -> dict[str, Any]:
    skipped_here = 0
    while True:
      element = next(self._parent)
      self._seen += 1
      if not isinstance(element, _Skip):
        element["num_skipped"] = np.int32(skipped_here)
        return element
      skipped_here += 1
      self._skipped += 1
      logging.warning("Data source %r: skipped a record (%d of %d so far): %s", self._ds.name, self._skipped,
                      self._seen, element.reason)
      if self._seen >= self._ds.min_records and self._skipped > self._ds.max_bad_fraction * self._seen:
        raise BadDataError(
            f"Data source {self._ds.name!r}: {self._skipped} of the {self._seen} records read were corrupt or "
            f"unusable ({self._skipped / self._seen:.1%} > max_bad_fraction {self._ds.max_bad_fraction:.1%}); "
            f"last: {element.reason}. Check or regenerate its ArrayRecord files, or raise max_bad_fraction.")

  def get_state(self) -> dict[str, Any]:
    return {"parent": self._parent.get_state(), "seen": self._seen, "skipped": self._skipped}

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state["parent"])
    self._seen = state["seen"]
    self._skipped = state["skipped"]


def _source_seed(seed: int, source_id: int) -> int:
  return int(np.random.SeedSequence([seed, source_id]).generate_state(1)[0])


def make_source_dataset(source: Source, config: ml_collections.ConfigDict, process_index: int, process_count: int,
                        seed: int) -> grain.IterDataset:
  """The batch stream of one source for this process (see the module docstring)."""
  if source.batch_size % process_count:
    raise ValueError(f"Source {source.name!r}: batch_size {source.batch_size} is not divisible by the "
                     f"{process_count} processes.")
  records = _TolerantSource(source.paths)
  if not len(records):  # an empty source would end the infinite stream at once
    shown = ", ".join(source.paths[:3]) + (f" and {len(source.paths) - 3} more" if len(source.paths) > 3 else "")
    raise ValueError(f"Data source {source.name!r} has no records: its files ({shown}) hold 0 records.")
  ds = grain.MapDataset.source(records).seed(_source_seed(seed, source.source_id))
  if config.shuffle:
    ds = ds.shuffle()
  ds = ds.repeat().random_map(ExampleLoader(source, config))[process_index::process_count]
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=config.read_threads,
                                            prefetch_buffer_size=config.read_buffer_size))
  it = _SkipBadIterDataset(it, source.name, config.max_bad_fraction, config.bad_fraction_min_records)
  return it.batch(source.batch_size // process_count, drop_remainder=True)


def make_dataset(config: ml_collections.ConfigDict, process_index: int = 0, process_count: int = 1,
                 seed: int = 0) -> grain.IterDataset:
  """The infinite, deterministic stream of this process's batches, mixed per batch over the active sources.

  `iter(make_dataset(...))` is a `grain.DatasetIterator` with `get_state()` / `set_state()`.
  """
  if not 0 <= config.max_bad_fraction < 1:
    raise ValueError(f"max_bad_fraction must be in [0, 1), got {config.max_bad_fraction}.")
  sources = active_sources(config)
  streams = [make_source_dataset(s, config, process_index, process_count, seed) for s in sources]
  ds = streams[0] if len(streams) == 1 else grain.IterDataset.mix(streams, [s.weight for s in sources])
  if config.num_workers > 0:
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()  # Grain's multiprocessing reads its absl flags: use their defaults.
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.num_workers,
                                                     per_worker_buffer_size=config.worker_buffer_size))
  return ds


class DataStats:
  """Running per-source counts of records read and skipped, updated from batches (for metrics)."""

  def __init__(self, names: list[str]):
    self.names = list(names)
    self.seen = [0] * len(self.names)
    self.skipped = [0] * len(self.names)

  def update(self, batch: dict[str, np.ndarray]) -> None:
    source_id = int(batch["source_id"][0])
    skipped = int(np.sum(batch["num_skipped"]))
    self.seen[source_id] += len(batch["source_id"]) + skipped
    self.skipped[source_id] += skipped

  def metrics(self) -> dict[str, float]:
    """`data/<source>/{records,skipped}` of the used sources and the overall `data/skipped_fraction`."""
    out = {}
    for name, seen, skipped in zip(self.names, self.seen, self.skipped):
      if seen:
        out[f"data/{name}/records"] = float(seen)
        out[f"data/{name}/skipped"] = float(skipped)
    out["data/skipped_fraction"] = sum(self.skipped) / max(1, sum(self.seen))
    return out

  def get_state(self) -> dict[str, list[int]]:
    return {"seen": list(self.seen), "skipped": list(self.skipped)}

  def set_state(self, state: dict[str, list[int]]) -> None:
    self.seen = list(state["seen"])
    self.skipped = list(state["skipped"])
