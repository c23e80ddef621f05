"""eval.py end to end on a small generated DAVIS-layout dataset (random weights)."""

import os
import re
import shutil
import subprocess
import sys

from PIL import Image

from sam2_jax.evaluation import io as vos_io
from tests.images import shapes_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUMMARY = re.compile(r"^J&F=(\d+\.\d) J=(\d+\.\d) F=(\d+\.\d)$")


def make_davis(root, num_videos=2, num_frames=4):
  for v in range(num_videos):
    video = f"video{v}"
    os.makedirs(root / "JPEGImages" / video)
    for t in range(num_frames):
      image = shapes_image(96, 128, seed=10 * v + t, shift=(2 * t, 3 * t))
      Image.fromarray(image).save(root / "JPEGImages" / video / f"{t:05d}.jpg", quality=95)
      masks = {1: image[..., 0] > 200, 2: image[..., 1] > 180}
      vos_io.write_frame_masks(str(root / "Annotations"), video, t, masks, vos_io.DAVIS)


def run_eval(*args):
  return subprocess.run([sys.executable, os.path.join(ROOT, "eval.py"), *args], capture_output=True, text=True,
                        cwd=ROOT)


def test_eval_end_to_end(tmp_path):
  make_davis(tmp_path / "davis")
  out = tmp_path / "preds"
  run = run_eval(f"--data_root={tmp_path / 'davis'}", f"--output_dir={out}", "--config=sam2.1_hiera_t",
                 "--image_size=256", "--visualize")
  assert run.returncode == 0, run.stderr[-3000:]
  summary = run.stdout.strip().splitlines()[-1]
  assert SUMMARY.match(summary), summary
  for v in range(2):
    assert vos_io.frames_in(str(out / f"video{v}")) == [f"{t:05d}" for t in range(4)]
    assert (out / f"video{v}.mp4").stat().st_size > 0
  assert (out / "results.csv").is_file()
  assert not [n for n in os.listdir(out) if n.startswith(".")]  # nothing half-written left behind

  # Scoring alone reproduces the same line; perfect predictions score 100.
  rescore = run_eval(f"--gt_root={tmp_path / 'davis' / 'Annotations'}", f"--pred_root={out}")
  assert rescore.returncode == 0 and rescore.stdout.strip().splitlines()[-1] == summary
  perfect = tmp_path / "perfect"
  shutil.copytree(tmp_path / "davis" / "Annotations", perfect)
  run = run_eval(f"--gt_root={tmp_path / 'davis' / 'Annotations'}", f"--pred_root={perfect}")
  assert run.stdout.strip().splitlines()[-1] == "J&F=100.0 J=100.0 F=100.0"


def test_eval_bad_input(tmp_path):
  run = run_eval(f"--data_root={tmp_path / 'missing'}", f"--output_dir={tmp_path / 'o'}")
  assert run.returncode == 2 and "is not a dataset folder" in run.stderr
  run = run_eval(f"--gt_root={tmp_path}", f"--pred_root={tmp_path / 'nope'}")
  assert run.returncode == 2 and "does not exist" in run.stderr
