"""`python -m sam2_jax.segment`: end to end on an image (prompted and --automatic), a JPEG folder and an mp4
(random weights at image_size 128), and one-line `error:` exits with status 2 for bad arguments."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sam2_jax import segment
from sam2_jax.predictors.video_frames import write_mp4
from tests.images import shapes_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 96, 128  # input size (even, for the mp4), not square
MODEL = ["--config=sam2.1_hiera_t", "--image_size=128"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  root = tmp_path_factory.mktemp("segment")
  frames = np.stack([shapes_image(H, W, seed=t, shift=(2 * t, 3 * t)) for t in range(3)])
  Image.fromarray(frames[0]).save(root / "image.png")
  os.makedirs(root / "frames")
  for t, frame in enumerate(frames):
    Image.fromarray(frame).save(root / "frames" / f"{t:05d}.jpg", quality=95)
  write_mp4(str(root / "video.mp4"), frames)
  Image.fromarray(np.zeros((H // 2, W), np.uint8)).save(root / "mask_wrong_size.png")
  return root


def _segment(*args, model: bool = False):
  """`segment` in a subprocess; model=False: a run that stops at an argument check (no huge-pages restart)."""
  env = dict(os.environ) if model else dict(os.environ, SAM2_JAX_HUGE_PAGES="0")
  return subprocess.run([sys.executable, "-m", "sam2_jax.segment", *map(str, args)], capture_output=True,
                        text=True, cwd=ROOT, env=env, timeout=600)


def _check_mask_png(path, shape):
  with Image.open(path) as image:
    assert image.mode == "P" and image.size == (shape[1], shape[0])
    assert set(np.unique(np.asarray(image)).tolist()) <= {0, 1}


def _mp4_frames(path):
  import av  # pylint: disable=g-import-not-at-top
  with av.open(str(path)) as container:
    return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.mark.parametrize("prompt", ["--points=40,38;90,60,0", "--box=20,20,70,60"])
def test_image(inputs, tmp_path, prompt):
  out = tmp_path / "out"
  run = _segment(f"--input={inputs / 'image.png'}", prompt, f"--output={out}", "--multimask", *MODEL, model=True)
  assert run.returncode == 0, run.stderr
  assert "random weights" in run.stderr
  assert sorted(os.listdir(out)) == ["mask.png", "overlay.png"]
  _check_mask_png(out / "mask.png", (H, W))
  with Image.open(out / "overlay.png") as overlay:
    assert overlay.mode == "RGB" and overlay.size == (W, H)


def test_automatic(inputs, tmp_path):
  out = tmp_path / "out"
  run = _segment(f"--input={inputs / 'image.png'}", "--automatic", "--points_per_side=4", "--pred_iou_thresh=0",
                 "--stability_score_thresh=0", f"--output={out}", *MODEL, model=True)
  assert run.returncode == 0, run.stderr
  with open(out / "masks.json") as f:
    records = json.load(f)
  assert records and [r["area"] for r in records] == sorted((r["area"] for r in records), reverse=True)
  names = [f"mask_{i:03d}.png" for i in range(len(records))]
  assert sorted(os.listdir(out)) == sorted(names + ["masks.json", "overlay.png"])
  for name, record in zip(names, records):
    assert record["file"] == name
    assert set(record) == {"file", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box"}
    with Image.open(out / name) as image:
      assert image.mode == "L" and image.size == (W, H)
      mask = np.asarray(image)
    assert set(np.unique(mask).tolist()) <= {0, 255} and (mask > 0).sum() == record["area"]
  with Image.open(out / "overlay.png") as overlay:
    assert overlay.mode == "RGB" and overlay.size == (W, H)


@pytest.mark.parametrize("video, prompt, frame", [("frames", "--points=40,38;60,50,1", 1),
                                                  ("video.mp4", "--box=20,20,70,60", 0)])
def test_video(inputs, tmp_path, video, prompt, frame):
  out = tmp_path / "out"
  run = _segment(f"--input={inputs / video}", prompt, f"--frame={frame}", f"--output={out}", *MODEL, model=True)
  assert run.returncode == 0, run.stderr
  assert sorted(os.listdir(out)) == ["00000.png", "00001.png", "00002.png", "overlay.mp4"]
  for t in range(3):
    _check_mask_png(out / f"{t:05d}.png", (H, W))
  frames = _mp4_frames(out / "overlay.mp4")
  assert len(frames) == 3 and frames[0].shape == (H, W, 3)


# Flag name -> `segment.run` argument and value type (what absl's flag types do in the command).
_RUN_ARGS = {"input": ("input_path", str), "points": ("points", str), "box": ("box", str), "mask": ("mask", str),
             "frame": ("frame", int), "checkpoint": ("checkpoint", str), "config": ("config", str),
             "image_size": ("image_size", int), "automatic": ("automatic", bool),
             "points_per_side": ("points_per_side", int), "pred_iou_thresh": ("pred_iou_thresh", float),
             "stability_score_thresh": ("stability_score_thresh", float)}


def _run_kwargs(args):
  kwargs = {}
  for arg in args:
    name, _, value = arg[2:].partition("=")
    key, kind = _RUN_ARGS[name]
    kwargs[key] = True if kind is bool else kind(value)
  return kwargs


@pytest.mark.parametrize("args, message", [
    (["--input={root}/image.png", "--points=1,2;x"], "cannot parse point"),
    (["--input={root}/image.png", "--points=1,2,5"], "label"),
    (["--input={root}/image.png", "--box=1,2,3"], "expected 4 numbers"),
    (["--input={root}/image.png", "--box=10,10,5,20"], "empty"),
    (["--input={root}/frames", "--points=1,2", "--frame=3"], "out of range"),
    (["--input={root}/video.mp4", "--points=1,2", "--frame=-1"], "out of range"),
    (["--input={root}/image.png", "--points=1,2", "--frame=1"], "out of range"),
    (["--input={root}/missing.mp4", "--points=1,2"], "does not exist"),
    (["--input={root}/image.png", "--mask={root}/missing.png"], "not found"),
    (["--input={root}/image.png", "--mask={root}/mask_wrong_size.png"], "input is"),
    (["--input={root}/image.png", "--points=1,2", "--box=0,0,5,5"], "exactly one prompt"),
    (["--input={root}/image.png"], "exactly one prompt"),
    (["--input={root}/image.png", "--points=1,2", "--checkpoint={root}/missing.pt"], "does not exist"),
    (["--input={root}/image.png", "--points=1,2", "--checkpoint={root}/frames"], "holds no model"),
    (["--input={root}/image.png", "--box=1,nan,3,4"], "non-finite"),
    (["--input={root}/frames", "--box=10,10,20,5"], "is empty or inverted"),
    (["--points=1,2"], "--input is required"),
    (["--input={root}/frames", "--points=1,2", "--automatic"], "automatic"),
    (["--input={root}/image.png", "--automatic", "--box=0,0,5,5"], "--automatic takes no prompt (got --box)"),
    (["--input={root}/video.mp4", "--automatic"], "--automatic works on images only"),
    (["--input={root}/frames", "--automatic"], "--automatic works on images only"),
    (["--input={root}/image.png", "--automatic", "--points_per_side=0"], "--points_per_side must be at least 1"),
    (["--input={root}/image.png", "--automatic", "--pred_iou_thresh=1.5"], "--pred_iou_thresh must be in [0, 1]"),
    (["--input={root}/image.png", "--points=1,2", "--stability_score_thresh=0.5"], "only be used with --automatic"),
])
def test_bad_arguments(inputs, tmp_path, args, message):
  """Each is refused (in-process, by the function the command runs) before the model is built or --output made."""
  kwargs = {"input_path": None, **_run_kwargs([a.format(root=inputs) for a in args + MODEL])}
  with pytest.raises(ValueError) as error:
    segment.run(output=str(tmp_path / "out"), **kwargs)
  assert message in str(error.value)
  assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("args, message", [
    (["--input={root}/image.png", "--box=10,10,5,20"], "empty"),  # raised by `run`
    (["--input={root}/frames", "--points=1,2", "--frame=a"], "frame"),  # by absl's flag parsing
])
def test_bad_arguments_from_the_command(inputs, tmp_path, args, message):
  """The command turns either kind of error into one `error:` line and exit status 2, and writes nothing."""
  run = _segment(*[a.format(root=inputs) for a in args], f"--output={tmp_path / 'out'}", *MODEL)
  assert run.returncode == 2, run.stderr
  lines = run.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], run.stderr
  assert not os.path.exists(tmp_path / "out")


def test_output_that_cannot_be_created(inputs, tmp_path):
  """An --output below a regular file fails with one error line before the model is built."""
  (tmp_path / "file").write_text("")
  for source in ("image.png", "frames"):
    run = _segment(f"--input={inputs / source}", "--points=40,38", f"--output={tmp_path / 'file' / 'out'}", *MODEL)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot create --output"), run.stderr
