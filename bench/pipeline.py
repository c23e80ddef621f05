r"""Throughput of the training input pipeline: clips per second, and per CPU core, at the training resolution.

Generates SA-1B-format images and SA-V-format videos at `--size` (`data/synthetic.py`), converts them to
ArrayRecord (`data/*_to_arrayrecord.py`), then reads them with the training pipeline (`sam2_jax.data.pipeline`:
decode, the official augmentations, batching, per-batch mixing) with `--num_workers` worker processes, as train.py
does, and times `--batches` batches after `--warmup` batches. Per source (`sav`: `--num_frames`-frame clips,
`sa1b`: single images), one line:

  pipeline: source=sav workers=8 clips_per_s=.. frames_per_s=.. clips_per_s_per_core=..

where the cores are the workers plus the consuming process, capped at this machine's count.

  .venv/bin/python -m bench.pipeline --num_workers=8 --size=1024        # what one accelerator host needs
  .venv/bin/python -m bench.pipeline --num_workers=1 --size=256 --batches=4 --warmup=1   # a smoke run
"""

import os
import tempfile
import time

from absl import app
from absl import flags

_SIZE = flags.DEFINE_integer("size", 1024, "Image and video size (square) and training resolution.")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 8, "Grain worker processes (0: all in this process).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Clips (or images) per batch.")
_NUM_FRAMES = flags.DEFINE_integer("num_frames", 8, "Frames per video clip.")
_BATCHES = flags.DEFINE_integer("batches", 20, "Timed batches per source.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed batches first (worker start-up).")
_SOURCES = flags.DEFINE_list("sources", ["sav", "sa1b"], "Sources to time.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where the generated data goes (default: a temporary folder); "
                                "reused when it holds a previous run's records.")


def _records(data_dir: str) -> str:
  from data import sa1b_to_arrayrecord, sav_to_arrayrecord, synthetic  # pylint: disable=g-import-not-at-top
  records = os.path.join(data_dir, "records")
  if not os.path.isdir(records):
    synthetic.generate(data_dir, num_images=32, num_videos=8, num_eval_videos=0, size=_SIZE.value,
                       num_frames=4 * _NUM_FRAMES.value, seed=0)  # SA-V annotates every 4th frame
    sa1b_to_arrayrecord.convert(os.path.join(data_dir, "sa1b"), records, 4, progress=False)
    sav_to_arrayrecord.convert(os.path.join(data_dir, "sav"), records, 4, progress=False)
  return records


def main(argv):
  del argv
  from sam2_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as tmp:
    records = _records(_DATA_DIR.value or tmp)
    for source in _SOURCES.value:
      config = pipeline.get_config()
      config.resolution, config.num_frames = _SIZE.value, _NUM_FRAMES.value
      config.num_workers = _NUM_WORKERS.value
      for name in config.sources:
        config.sources[name].weight = 1.0 if name == source else 0.0
        config.sources[name].batch_size = _BATCH_SIZE.value
        config.sources[name].paths = os.path.join(records, f"{name}-*.array_record")
      iterator = iter(pipeline.make_dataset(config, seed=0))
      for _ in range(_WARMUP.value):
        next(iterator)
      start, clips, frames = time.perf_counter(), 0, 0
      for _ in range(_BATCHES.value):
        images = next(iterator)["images"]  # (B, T, S, S, 3)
        clips, frames = clips + images.shape[0], frames + images.shape[0] * images.shape[1]
      elapsed = time.perf_counter() - start
      cores = min(os.cpu_count() or 1, _NUM_WORKERS.value + 1)
      print(f"pipeline: source={source} workers={_NUM_WORKERS.value} clips_per_s={clips / elapsed:.2f} "
            f"frames_per_s={frames / elapsed:.1f} clips_per_s_per_core={clips / elapsed / cores:.3f}", flush=True)


if __name__ == "__main__":
  app.run(main)
