r"""Converts a DAVIS / MOSE-style VOS folder (fine-tuning data) into ArrayRecord shards of `ClipRecord`s.

  python data/vos_to_arrayrecord.py --input_dir=MOSE/train --output_dir=records/mose --num_shards=8 \
      --video_list=MOSE_sample_train_list.txt

The input folder holds JPEGImages/<video>/<frame>.jpg with palette PNG Annotations/<video>/<frame>.png
(object ids as pixel values), or the SA-V layout JPEGImages_24fps/ + Annotations_6fps/<video>/<obj>/.
The annotated frames are kept with their original JPEG bytes. Shards are named
vos-00000-of-00008.array_record and written all or nothing. Bad flags or input end in one `error: ...` line
and exit status 2, as does a run that would write no record.
"""

import functools
import os
import sys

from absl import flags

if __package__ in (None, ""):  # Run as `python data/...py`: make the repository importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sam2_jax import cli  # pylint: disable=g-import-not-at-top
from sam2_jax.data import records  # pylint: disable=g-import-not-at-top
from sam2_jax.data import vos_folders  # pylint: disable=g-import-not-at-top


def video_record(frames_dir: str, annotations_dir: str, video: str) -> records.ClipRecord | None:
  """The record of one video, or None when it has no object."""
  record = vos_folders.read_video(frames_dir, annotations_dir, video)
  return record if record.object_ids else None


def read_video_list(path: str) -> list[str]:
  """Video names of a list file, one per line (blank lines ignored)."""
  if not os.path.isfile(path):
    raise ValueError(f"Video list {path!r} not found or not a file.")
  try:
    with open(path) as f:
      videos = [line.strip() for line in f if line.strip()]
  except UnicodeDecodeError as e:
    raise ValueError(f"Video list {path!r} is not a text file: {e}") from e
  if not videos:
    raise ValueError(f"Video list {path!r} names no video.")
  return videos


def convert(input_dir: str, output_dir: str, num_shards: int, *, videos: list[str] | None = None, name: str = "vos",
            num_workers: int = 0, skip_errors: bool = False, progress: bool = True) -> records.ShardStats:
  """Converts the videos of a VOS folder (all, or `videos`); returns what was written."""
  frames_dir, annotations_dir = vos_folders.find_folders(input_dir)
  available = vos_folders.list_videos(annotations_dir)
  if videos is None:
    videos = available
  missing = sorted(set(videos) - set(available))
  if missing:
    raise ValueError(f"Videos without annotations in {annotations_dir!r}: {missing[:5]}.")
  if not videos:
    raise ValueError(f"No annotated videos in {annotations_dir!r}.")
  to_record = functools.partial(video_record, frames_dir, annotations_dir)
  return records.write_shards(videos, to_record, output_dir, name, num_shards, num_workers=num_workers,
                              skip_errors=skip_errors, progress=progress)


def main() -> None:
  f = flags.FLAGS
  videos = read_video_list(f.video_list) if f.video_list else None
  stats = convert(f.input_dir, f.output_dir, f.num_shards, videos=videos, name=f.name, num_workers=f.num_workers,
                  skip_errors=f.skip_errors)
  print(f"wrote {stats.written} records to {len(stats.paths)} shards in {f.output_dir} "
        f"({stats.dropped} without objects dropped, {len(stats.errors)} bad inputs skipped)")


if __name__ == "__main__":
  flags.DEFINE_string("input_dir", None, "Dataset root with JPEGImages/ + Annotations/.", required=True)
  flags.DEFINE_string("output_dir", None, "Where the shards are written.", required=True)
  flags.DEFINE_integer("num_shards", 1, "Number of ArrayRecord files.", lower_bound=1)
  flags.DEFINE_string("video_list", None, "Optional file of video names to convert, one per line.")
  flags.DEFINE_string("name", "vos", "Shard file name prefix.")
  flags.DEFINE_integer("num_workers", 0, "Worker processes (0: convert in this process).", lower_bound=0)
  flags.DEFINE_bool("skip_errors", False, "Log and skip unreadable inputs instead of stopping.")
  cli.run(main)
