r"""Host memory of `python -m sam2_jax.segment` streaming a video file, against the video's length.

Writes a generated MP4 of each `--lengths` count (a square and a disc moving over a textured
background, `--height` x `--width`), then runs segment on it from frame 0 with one click, each in a
process of its own as users run it, and reads that process's peak resident set size from the kernel
(`wait4`'s rusage: compilation included). segment streams such runs (`SAM2CameraPredictor`): frames
are decoded, tracked and written one at a time, so the peak should not grow with the length.

  .venv/bin/python -m bench.stream_memory --lengths=500,10000 --image_size=1024   # the README's figure
  .venv/bin/python -m bench.stream_memory --lengths=50,300 --image_size=64        # a smoke run

Prints one line per length and `stream_memory: ratio=<peak of the longest / peak of the shortest>`.
"""

import os
import subprocess
import sys
import tempfile

import numpy as np
from absl import app
from absl import flags

from sam2_jax.predictors.video_frames import write_mp4

flags.DEFINE_list("lengths", ["500", "10000"], "Video lengths in frames.")
flags.DEFINE_integer("image_size", 1024, "Model input size.")
flags.DEFINE_integer("height", 480, "Video height.")
flags.DEFINE_integer("width", 640, "Video width.")
flags.DEFINE_string("config", "sam2.1_hiera_t", "Model config (random weights).")
FLAGS = flags.FLAGS


def frames(n: int, height: int, width: int):
  """A square and a disc moving over a fixed textured background."""
  rng = np.random.default_rng(0)
  background = rng.integers(30, 90, (height, width, 3), dtype=np.uint8)
  yy, xx = np.mgrid[:height, :width]
  for t in range(n):
    image = background.copy()
    x, y = width // 4 + int(width / 8 * np.sin(t / 25)), height // 3 + int(height / 8 * np.cos(t / 30))
    image[y:y + height // 6, x:x + height // 6] = (220, 60, 60)
    cx, cy = 3 * width // 4 - (t % (width // 2)), 2 * height // 3
    image[(xx - cx) ** 2 + (yy - cy) ** 2 < (height // 10) ** 2] = (60, 200, 80)
    yield image


def peak_rss_mb(args: list[str]) -> float:
  """Runs a command; its peak resident set size in MiB (it must succeed)."""
  process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  _, status, usage = os.wait4(process.pid, 0)
  stderr = process.stderr.read().decode()
  if os.waitstatus_to_exitcode(status) != 0:
    raise RuntimeError(f"{' '.join(args)} failed:\n{stderr[-3000:]}")
  return usage.ru_maxrss / 1024


def main(argv):
  del argv
  lengths = sorted(int(n) for n in FLAGS.lengths)
  peaks = {}
  with tempfile.TemporaryDirectory() as tmp:
    for n in lengths:
      video = os.path.join(tmp, f"video_{n}.mp4")
      write_mp4(video, frames(n, FLAGS.height, FLAGS.width))
      x, y = FLAGS.width // 4 + FLAGS.height // 12, FLAGS.height // 3 + FLAGS.height // 12
      peaks[n] = peak_rss_mb([sys.executable, "-m", "sam2_jax.segment", f"--input={video}", f"--points={x},{y}",
                              f"--output={os.path.join(tmp, f'out_{n}')}", f"--config={FLAGS.config}",
                              f"--image_size={FLAGS.image_size}"])
      print(f"stream_memory: frames={n} image_size={FLAGS.image_size} peak_rss_mib={peaks[n]:.0f}", flush=True)
  print(f"stream_memory: ratio={peaks[lengths[-1]] / peaks[lengths[0]]:.3f}")


if __name__ == "__main__":
  app.run(main)
