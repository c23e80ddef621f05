"""eval.py end to end on a small generated DAVIS-layout dataset (random weights), and its errors."""

import csv
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


def run_eval(*args, restart: bool = True):
  """eval.py in a subprocess; restart=False skips the huge-pages restart (a second start) for runs without a model."""
  env = None if restart else dict(os.environ, SAM2_JAX_HUGE_PAGES="0")
  return subprocess.run([sys.executable, os.path.join(ROOT, "eval.py"), *args], capture_output=True, text=True,
                        cwd=ROOT, env=env)


def snapshot(root):
  """{relative path: bytes} of every file under `root`."""
  return {os.path.relpath(os.path.join(d, n), root): open(os.path.join(d, n), "rb").read()
          for d, _, names in os.walk(root) for n in names}


def test_eval_end_to_end(tmp_path):
  make_davis(tmp_path / "davis", num_videos=3)
  gt = tmp_path / "davis" / "Annotations"
  out = tmp_path / "preds"
  shutil.copytree(gt / "video2", out / "video2")  # stale predictions of an earlier run, not asked for below
  run = run_eval(f"--data_root={tmp_path / 'davis'}", f"--output_dir={out}", "--config=sam2.1_hiera_t",
                 "--image_size=256", "--visualize", "--videos=video0,video1")
  assert run.returncode == 0, run.stderr[-3000:]
  summary = run.stdout.strip().splitlines()[-1]
  assert SUMMARY.match(summary), summary
  for v in range(2):
    assert vos_io.frames_in(str(out / f"video{v}")) == [f"{t:05d}" for t in range(4)]
    assert (out / f"video{v}.mp4").stat().st_size > 0
  with open(out / "results.csv") as f:
    assert {row["video"] for row in csv.DictReader(f) if row["level"] == "video"} == {"video0", "video1"}
  assert not [n for n in os.listdir(out) if n.startswith(".")]  # nothing half-written left behind

  # Scoring alone reproduces the same line for the same videos; perfect predictions score 100.
  rescore = run_eval(f"--gt_root={gt}", f"--pred_root={out}", "--videos=video1,video0", restart=False)
  assert rescore.returncode == 0 and rescore.stdout.strip().splitlines()[-1] == summary
  perfect = tmp_path / "perfect"
  shutil.copytree(gt, perfect)
  run = run_eval(f"--gt_root={gt}", f"--pred_root={perfect}", restart=False)
  assert run.stdout.strip().splitlines()[-1] == "J&F=100.0 J=100.0 F=100.0"

  # A video without predictions is an error, not a score over the others.
  shutil.rmtree(out / "video1")
  for args in ([], ["--videos=video1"]):
    run = run_eval(f"--gt_root={gt}", f"--pred_root={out}", *args, restart=False)
    assert run.returncode == 2 and "No predictions" in run.stderr and "['video1']" in run.stderr, run.stderr


def test_eval_never_writes_into_the_dataset(tmp_path):
  data_root = tmp_path / "davis"
  make_davis(data_root)
  before = snapshot(data_root)
  ann = data_root / "Annotations"
  os.symlink(ann, tmp_path / "link")
  model = ["--config=sam2.1_hiera_t", "--image_size=64"]
  cases = [(ann, "is the dataset's annotations"), (ann / "video0", "lies inside the dataset's annotations"),
           (tmp_path / "link", "is the dataset's annotations"),
           (data_root, "contains the dataset's annotations"),
           (data_root / "JPEGImages" / "video0", "lies inside the dataset's frames")]
  for out, relation in cases:
    run = run_eval(f"--data_root={data_root}", f"--output_dir={out}", *model, restart=False)
    assert run.returncode == 2 and relation in run.stderr and "could overwrite" in run.stderr, run.stderr
  for pred in (ann, ann / "video1"):
    run = run_eval(f"--gt_root={ann}", f"--pred_root={pred}", restart=False)
    assert run.returncode == 2 and "lies inside the ground-truth folder" in run.stderr, run.stderr
  assert snapshot(data_root) == before


def test_eval_bad_input(tmp_path):
  run = run_eval(f"--data_root={tmp_path / 'missing'}", f"--output_dir={tmp_path / 'o'}", restart=False)
  assert run.returncode == 2 and "is not a VOS dataset folder" in run.stderr
  run = run_eval(f"--gt_root={tmp_path}", f"--pred_root={tmp_path / 'nope'}", restart=False)
  assert run.returncode == 2 and "does not exist" in run.stderr

  data_root = tmp_path / "davis"
  make_davis(data_root, num_frames=3)
  (tmp_path / "file").write_text("")
  ann = data_root / "Annotations"
  pred = tmp_path / "pred"
  shutil.copytree(ann, pred)
  (pred / "video0" / "00001.png").write_text("not a png")
  shutil.rmtree(data_root / "JPEGImages" / "video1")
  out = [f"--data_root={data_root}", f"--output_dir={tmp_path / 'o'}"]
  video0 = [f"--data_root={data_root}", "--videos=video0"]
  cases = [
      (out + ["--videos=video0,nope,video9"], r"Unknown video\(s\) \['nope', 'video9'\]: not video folders of .*"),
      (out, r"Video\(s\) \['video1'\] have annotations .* but no frame folder"),
      (video0 + [f"--output_dir={tmp_path / 'file' / 'o'}"], "cannot create --output_dir .*file/o"),
      (video0 + [f"--output_dir={tmp_path / 'file'}"], "--output_dir .* is a file"),
      (out + ["--num_processes=0"], "--num_processes must be at least 1, got 0"),
      (out + ["stray"], "unexpected arguments: stray"),
      ([f"--data_root={data_root}"], "Give --data_root and --output_dir"),
      ([f"--gt_root={ann}"], "Scoring needs both --gt_root and --pred_root"),
      ([f"--gt_root={ann}", f"--pred_root={pred}"], r"Cannot read mask file .*video0/00001.png"),
      ([f"--gt_root={ann}", f"--pred_root={pred}", "--videos=nope"], r"Unknown video\(s\) \['nope'\]"),
  ]
  for args, message in cases:
    run = run_eval(*args, "--config=sam2.1_hiera_t", "--image_size=64", restart=False)
    assert run.returncode == 2 and re.match(f"error: {message}", run.stderr), (args, run.stderr)
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr  # one line, no traceback
  assert not (tmp_path / "o").exists()  # refused before anything was written
  run = run_eval(f"--gt_root={ann}", f"--pred_root={pred}", "--videos=video1", restart=False)
  assert run.returncode == 0 and run.stdout.strip().splitlines()[-1] == "J&F=100.0 J=100.0 F=100.0"  # 00001 unread

