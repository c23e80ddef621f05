r"""Converts SA-1B into ArrayRecord shards of 1-frame `ClipRecord`s (original JPEG bytes + COCO RLE masks).

  python data/sa1b_to_arrayrecord.py --input_dir=sa1b_raw --output_dir=records/sa1b --num_shards=64
      from a folder of sa_<id>.jpg + sa_<id>.json (as extracted from the SA-1B tar files);
  python data/sa1b_to_arrayrecord.py --tfds_data_dir=~/tensorflow_datasets --output_dir=records/sa1b
      from a prepared TFDS `segment_anything` build (needs tensorflow_datasets).

Annotations with area <= 0 are dropped (the official loader's rule), images left without any are skipped.
Shards are named sa1b-00000-of-00064.array_record and written all or nothing. Bad flags or input end in one
`error: ...` line and exit status 2, as does a run that would write no record.
"""

import os
import sys

from absl import flags

if __package__ in (None, ""):  # Run as `python data/...py`: make the repository importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sam2_jax import cli  # pylint: disable=g-import-not-at-top
from sam2_jax.data import records  # pylint: disable=g-import-not-at-top
from sam2_jax.data import sa1b  # pylint: disable=g-import-not-at-top


def image_record(jpg_path: str) -> records.ClipRecord | None:
  """The record of one raw image, or None when no annotation is left."""
  record = sa1b.read_image(jpg_path)
  return record if record.object_ids else None


class TfdsRecord:
  """Picklable `index -> record` over a TFDS build; each process opens the data source on first use."""

  def __init__(self, data_dir: str | None, split: str):
    self.data_dir, self.split = data_dir, split
    self._source = None

  def __getstate__(self):
    return {"data_dir": self.data_dir, "split": self.split, "_source": None}

  def source(self):
    if self._source is None:
      self._source = sa1b.tfds_source(self.data_dir, self.split)
    return self._source

  def __call__(self, index: int) -> records.ClipRecord | None:
    record = sa1b.record_from_tfds(self.source()[index])
    return record if record.object_ids else None


def convert(input_dir: str, output_dir: str, num_shards: int, *, name: str = "sa1b", num_workers: int = 0,
            skip_errors: bool = False, progress: bool = True) -> records.ShardStats:
  """Converts a raw SA-1B folder; returns what was written."""
  paths = sa1b.list_images(input_dir)
  if not paths:
    raise ValueError(f"No sa_*.jpg images in {input_dir!r}.")
  return records.write_shards(paths, image_record, output_dir, name, num_shards, num_workers=num_workers,
                              skip_errors=skip_errors, progress=progress)


def convert_tfds(data_dir: str | None, output_dir: str, num_shards: int, *, split: str = "train", name: str = "sa1b",
                 num_workers: int = 0, skip_errors: bool = False, progress: bool = True) -> records.ShardStats:
  """Converts a TFDS `segment_anything` split; returns what was written."""
  reader = TfdsRecord(data_dir, split)
  return records.write_shards(range(len(reader.source())), reader, output_dir, name, num_shards,
                              num_workers=num_workers, skip_errors=skip_errors, progress=progress)


def main() -> None:
  f = flags.FLAGS
  common = dict(name=f.name, num_workers=f.num_workers, skip_errors=f.skip_errors)
  if (f.tfds_data_dir is None) == (f.input_dir is None):
    raise ValueError("Give exactly one of --input_dir (raw sa_*.jpg/json folder) or --tfds_data_dir.")
  if f.tfds_data_dir is not None:
    stats = convert_tfds(f.tfds_data_dir, f.output_dir, f.num_shards, split=f.tfds_split, **common)
  else:
    stats = convert(f.input_dir, f.output_dir, f.num_shards, **common)
  print(f"wrote {stats.written} records to {len(stats.paths)} shards in {f.output_dir} "
        f"({stats.dropped} without objects dropped, {len(stats.errors)} bad inputs skipped)")


if __name__ == "__main__":
  flags.DEFINE_string("input_dir", None, "Folder of sa_<id>.jpg + sa_<id>.json.")
  flags.DEFINE_string("tfds_data_dir", None, "TFDS data_dir holding a prepared segment_anything build.")
  flags.DEFINE_string("tfds_split", "train", "TFDS split.")
  flags.DEFINE_string("output_dir", None, "Where the shards are written.", required=True)
  flags.DEFINE_integer("num_shards", 1, "Number of ArrayRecord files.", lower_bound=1)
  flags.DEFINE_string("name", "sa1b", "Shard file name prefix.")
  flags.DEFINE_integer("num_workers", 0, "Worker processes (0: convert in this process).", lower_bound=0)
  flags.DEFINE_bool("skip_errors", False, "Log and skip unreadable inputs instead of stopping.")
  cli.run(main)
