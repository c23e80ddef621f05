"""SAM2CameraPredictor (streaming) against the official offline SAM2VideoPredictor (sam2==1.1.0) propagating
forward, on the same generated frames and perturbed weights; and its flat memory and bad-input errors."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sam2_jax.evaluation import io as vos_io
from sam2_jax.evaluation.vos_inference import predict_video, stream_video
from sam2_jax.predictors.camera import SAM2CameraPredictor
from sam2_jax.predictors.video import SAM2VideoPredictor
from tests.images import shapes_image
from tests.test_eval import make_davis
from tests.video_oracle import (FILL_HOLE_AREA, assert_frame_close, make_model, mask_iou,  # noqa: F401 (fixture)
                                official_hole_filling)
from bench.oracle import torch

NUM_FRAMES = 18   # at least 16: pointer positions are normalised by min(num_frames, 16) - 1
NEW_OBJECT_FRAME = 7
CORRECTION_FRAME = 11


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp("stream")
  for t in range(NUM_FRAMES):
    Image.fromarray(shapes_image(240, 320, seed=t, shift=(3 * t, 4 * t))).save(folder / f"{t:05d}.jpg", quality=95)
  return str(folder)


def read_frames(folder):
  return [np.asarray(Image.open(os.path.join(folder, f)).convert("RGB")) for f in sorted(os.listdir(folder))]


CLICK = dict(points=np.array([[100.0, 100.0]]), labels=np.array([1]))
BOX = np.array([190.0, 110.0, 280.0, 200.0])
NEW_CLICK = dict(points=np.array([[230.0, 60.0]]), labels=np.array([1]))
CORRECTION = dict(points=np.array([[140.0, 130.0]]), labels=np.array([0]))


def official_stream(official, video_dir):
  """What a stream must produce, from the offline predictor: {(frame, step): (frame, obj_ids, logits)}.

  Objects 1 (a click) and 2 (a box) start on frame 0. Object 3 starts on NEW_OBJECT_FRAME: the offline
  predictor then propagates from that frame, so object 3 has no memories of earlier frames, as in a stream
  (the other objects' outputs there are unchanged). A correction click on object 1 at CORRECTION_FRAME is
  followed by propagation from the next frame, as the stream continues after a correction.
  """
  expected = {}
  state = official.init_state(video_dir)
  with torch.inference_mode():
    official.add_new_points_or_box(state, 0, 1, **CLICK)
    expected[0, "prompt"] = official.add_new_points_or_box(state, 0, 2, box=BOX)
    for t, ids, masks in official.propagate_in_video(state):
      expected[t, "track"] = (t, ids, masks)
    expected[NEW_OBJECT_FRAME, "prompt"] = official.add_new_points_or_box(state, NEW_OBJECT_FRAME, 3, **NEW_CLICK)
    for t, ids, masks in official.propagate_in_video(state, start_frame_idx=NEW_OBJECT_FRAME):
      if t > NEW_OBJECT_FRAME:
        expected[t, "track"] = (t, ids, masks)
    expected[CORRECTION_FRAME, "prompt"] = official.add_new_points_or_box(
        state, CORRECTION_FRAME, 1, clear_old_points=False, **CORRECTION)
    for t, ids, masks in official.propagate_in_video(state, start_frame_idx=CORRECTION_FRAME + 1):
      expected[t, "track"] = (t, ids, masks)
  return expected


def test_stream_equals_offline_forward(video_dir, official_hole_filling):
  official, model = make_model(obj_score_bias=6.0, fill_hole_area=FILL_HOLE_AREA)
  expected = official_stream(official, video_dir)
  frames = read_frames(video_dir)
  camera = SAM2CameraPredictor(model, fill_hole_area=FILL_HOLE_AREA)
  check = lambda t, step, got: assert_frame_close((t, *got), expected[t, step], f"frame {t} {step}")

  camera.load_first_frame(frames[0])
  camera.add_new_prompt(0, 1, **CLICK)
  check(0, "prompt", camera.add_new_prompt(0, 2, bbox=BOX))
  for t in range(1, NUM_FRAMES):
    check(t, "track", camera.track(frames[t]))
    if t == NEW_OBJECT_FRAME:
      check(t, "prompt", camera.add_new_prompt(t, 3, **NEW_CLICK))
    if t == CORRECTION_FRAME:
      check(t, "prompt", camera.add_new_prompt(t, 1, clear_old_points=False, **CORRECTION))
  assert camera.obj_ids == [1, 2, 3]
  tracked = [expected[t, "track"][2] for t in range(1, NUM_FRAMES)]
  assert all((m > 0).any() for masks in tracked for m in masks)  # the objects are present
  assert sum(official_hole_filling), "no small holes were filled: the test does not exercise hole filling"


STREAM_SCRIPT = r"""
import sys
import numpy as np
from sam2_jax import build_sam2_camera_predictor

def rss_mb():
  with open("/proc/self/status") as f:
    return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

def frame(t):
  image = np.full((48, 64, 3), 40, np.uint8)
  x, y = 8 + (t % 40), 10 + (t % 20)
  image[y:y + 14, x:x + 14] = (220, 60, 60)
  image[30:44, 40 - (t % 30):54 - (t % 30)] = (60, 200, 80)
  return image

# The demo's narrow Hiera and one memory-attention layer make each frame cheap; the memory bank is the t model's.
camera = build_sam2_camera_predictor("sam2.1_hiera_t", image_size=64, memory_attention={"num_layers": 1},
                                     trunk={"embed_dim": 32, "num_heads": 1, "stages": (1, 1, 2, 1),
                                            "global_att_blocks": (3,), "window_spec": (8, 4, 8, 4)})
camera.load_first_frame(frame(0))
camera.add_new_prompt(0, 1, points=[[14, 16]], labels=[1])
camera.add_new_prompt(0, 2, bbox=[38, 28, 56, 46])
for t in range(1, int(sys.argv[1]) + 1):
  ids, masks = camera.track(frame(t))
  assert ids == [1, 2] and masks.shape == (2, 1, 48, 64)
  if t in (300, int(sys.argv[1])):
    print(f"rss_mb {t} {rss_mb():.1f}", flush=True)
"""


def test_memory_is_flat_over_a_long_stream():
  # A process of its own: its resident memory is the stream's alone (on the CPU backend the device
  # arrays are in it too).
  result = subprocess.run([sys.executable, "-c", STREAM_SCRIPT, "1500"], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  rss = dict(line.split()[1:] for line in result.stdout.splitlines() if line.startswith("rss_mb"))
  assert set(rss) == {"300", "1500"}, result.stdout
  assert float(rss["1500"]) <= 1.1 * float(rss["300"]), rss


def test_bad_inputs():
  _, model = make_model(obj_score_bias=6.0)
  camera = SAM2CameraPredictor(model)
  frame = shapes_image(48, 64)
  with pytest.raises(ValueError, match=r"call load_first_frame\(frame\) before track"):
    camera.track(frame)
  with pytest.raises(ValueError, match=r"call load_first_frame\(frame\) before add_new_prompt"):
    camera.add_new_prompt(0, 1, points=[[1, 1]], labels=[1])
  with pytest.raises(ValueError, match=r"Expected an RGB uint8 frame of shape \(H, W, 3\), got float32"):
    camera.load_first_frame(frame.astype(np.float32))
  camera.load_first_frame(frame)
  with pytest.raises(ValueError, match=r"Expected an RGB uint8 frame of shape \(48, 64, 3\) like the first frame, "
                     r"got uint8 \(48, 65, 3\)"):
    camera.track(np.zeros((48, 65, 3), np.uint8))
  with pytest.raises(ValueError, match="got float64"):
    camera.track(frame.astype(np.float64))
  with pytest.raises(ValueError, match="Prompts go on the current frame 0, got frame_idx=1"):
    camera.add_new_prompt(1, 1, points=[[1, 1]], labels=[1])
  with pytest.raises(ValueError, match="Unknown object id 5"):
    camera.remove_object(5)
  with pytest.raises(ValueError, match="points and labels must be provided together"):
    camera.add_new_prompt(0, 1, points=[[1, 1]])
  with pytest.raises(ValueError, match="either a mask or points/labels/bbox"):
    camera.add_new_prompt(0, 1, bbox=[1, 1, 5, 5], mask=np.ones((48, 64), bool))
  assert camera.obj_ids == []  # nothing was added by the rejected prompts
  camera.load_first_frame(frame, num_frames=2)
  camera.track(frame)
  with pytest.raises(ValueError, match="started as 2 frames long"):
    camera.track(frame)


@pytest.mark.parametrize("later_objects", [False, True])
def test_vos_streamed_equals_offline(tmp_path, later_objects):
  # eval.py's VOS inference both ways, DAVIS layout (non-overlapping masks); object 2 is annotated from frame 1.
  root = tmp_path / "davis"
  make_davis(root, num_videos=1, num_frames=5)
  image = np.asarray(Image.open(root / "JPEGImages" / "video0" / "00000.jpg"))
  vos_io.write_frame_masks(str(root / "Annotations"), "video0", 0, {1: image[..., 0] > 200}, vos_io.DAVIS)
  _, model = make_model(obj_score_bias=6.0)
  args = (str(root / "JPEGImages"), str(root / "Annotations"), "video0", later_objects, 0.0)
  names, offline = predict_video(SAM2VideoPredictor(model, non_overlap_masks=True, progress=False), *args)
  stream_names, streamed = stream_video(SAM2CameraPredictor(model, non_overlap_masks=True), *args)
  streamed = list(streamed)
  assert stream_names == names and len(streamed) == len(names) == 5
  for i in range(5):
    assert sorted(streamed[i]) == sorted(offline[i]) == ([1, 2] if later_objects else [1]), i
    for obj_id, mask in offline[i].items():
      assert mask_iou(streamed[i][obj_id], mask) >= 0.99, (i, obj_id)
  assert offline[4][1].any() and (not later_objects or offline[4][2].any())  # tracked objects are present
