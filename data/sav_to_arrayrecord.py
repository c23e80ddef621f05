r"""Converts SA-V into ArrayRecord shards of `ClipRecord`s: the annotated frames (JPEG) with their masklets.

  python data/sav_to_arrayrecord.py --input_dir=sav_train/sav_000 --output_dir=records/sav --num_shards=16

The input folder holds sav_<id>.mp4 with sav_<id>_manual.json (and sav_<id>_auto.json, used with
--include_auto; auto object ids are offset by 1000). Each mp4 is decoded with PyAV and only the annotated
frames are kept (every 4th: video frame f <-> masklet index f // 4), re-encoded as JPEG. Shards are named
sav-00000-of-00016.array_record and written all or nothing. Bad flags or input end in one `error: ...` line
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
from sam2_jax.data import sav  # pylint: disable=g-import-not-at-top


def video_record(video_path: str, include_auto: bool = False, jpeg_quality: int = 95) -> records.ClipRecord | None:
  """The record of one video, or None when it has no masklet."""
  record = sav.read_video(video_path, include_auto=include_auto, jpeg_quality=jpeg_quality)
  return record if record.object_ids else None


def convert(input_dir: str, output_dir: str, num_shards: int, *, include_auto: bool = False, jpeg_quality: int = 95,
            name: str = "sav", num_workers: int = 0, skip_errors: bool = False,
            progress: bool = True) -> records.ShardStats:
  """Converts a raw SA-V folder; returns what was written."""
  paths = sav.list_videos(input_dir)
  if not paths:
    raise ValueError(f"No sav_*.mp4 videos in {input_dir!r}.")
  to_record = functools.partial(video_record, include_auto=include_auto, jpeg_quality=jpeg_quality)
  return records.write_shards(paths, to_record, output_dir, name, num_shards, num_workers=num_workers,
                              skip_errors=skip_errors, progress=progress)


def main() -> None:
  f = flags.FLAGS
  stats = convert(f.input_dir, f.output_dir, f.num_shards, include_auto=f.include_auto, jpeg_quality=f.jpeg_quality,
                  name=f.name, num_workers=f.num_workers, skip_errors=f.skip_errors)
  print(f"wrote {stats.written} records to {len(stats.paths)} shards in {f.output_dir} "
        f"({stats.dropped} without masklets dropped, {len(stats.errors)} bad inputs skipped)")


if __name__ == "__main__":
  flags.DEFINE_string("input_dir", None, "Folder of sav_<id>.mp4 + sav_<id>_manual.json.", required=True)
  flags.DEFINE_string("output_dir", None, "Where the shards are written.", required=True)
  flags.DEFINE_integer("num_shards", 1, "Number of ArrayRecord files.", lower_bound=1)
  flags.DEFINE_bool("include_auto", False, "Also add the auto masklets (sav_<id>_auto.json) when present.")
  flags.DEFINE_integer("jpeg_quality", 95, "JPEG quality of the re-encoded frames.", lower_bound=1, upper_bound=100)
  flags.DEFINE_string("name", "sav", "Shard file name prefix.")
  flags.DEFINE_integer("num_workers", 0, "Worker processes (0: convert in this process).", lower_bound=0)
  flags.DEFINE_bool("skip_errors", False, "Log and skip unreadable inputs instead of stopping.")
  cli.run(main)
