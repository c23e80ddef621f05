"""SAM2VideoPredictor against the official one (sam2==1.1.0) on generated frames and the same weights."""

import jax
import numpy as np
import pytest
from PIL import Image

from sam2_jax.predictors import video
from sam2_jax.predictors.postprocess import fill_holes, fill_holes_and_sprinkles, fill_holes_on_device
from sam2_jax.predictors.video import SAM2VideoPredictor, video_res
from tests.images import shapes_image
from tests.video_oracle import (FILL_HOLE_AREA, IMAGE_SIZE, official_hole_filling, make_pair,  # noqa: F401 (fixture)
                                run_both)
from bench.oracle import build_official, torch

NUM_FRAMES = 10


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp("video")
  for t in range(NUM_FRAMES):
    Image.fromarray(shapes_image(240, 320, seed=t, shift=(3 * t, 4 * t))).save(folder / f"{t:05d}.jpg", quality=95)
  return str(folder)


def test_two_objects_click_box_correction_reverse(video_dir, official_hole_filling):
  # With the official builder's hole filling (`non_overlap_masks` is checked on its own below: holes of
  # two objects filled with the same score make near-ties that either side may break).
  ours, official = make_pair(obj_score_bias=6.0, fill_hole_area=FILL_HOLE_AREA)
  s_ours, s_off = ours.init_state(video_dir), official.init_state(video_dir)
  pair = lambda f, what: run_both(ours, official, lambda p: f(p, s_ours), lambda p: f(p, s_off), what)

  pair(lambda p, s: p.add_new_points_or_box(s, 2, 1, points=np.array([[100.0, 100.0]]), labels=np.array([1])),
       "click on frame 2")
  pair(lambda p, s: p.add_new_points_or_box(s, 2, 7, box=np.array([190.0, 110.0, 280.0, 200.0])), "box on frame 2")
  # Clicks on the box: 3 and then 4 points run one program (clicks are padded to a power of two and masked).
  pair(lambda p, s: p.add_new_points_or_box(s, 2, 7, points=np.array([[230.0, 150.0]]), labels=np.array([1]),
                                            clear_old_points=False), "box and a click on frame 2")
  compiled = video._prompt_step._cache_size()  # pylint: disable=protected-access
  pair(lambda p, s: p.add_new_points_or_box(s, 2, 7, points=np.array([[200.0, 190.0]]), labels=np.array([0]),
                                            clear_old_points=False), "box and two clicks on frame 2")
  assert video._prompt_step._cache_size() == compiled  # pylint: disable=protected-access
  out = pair(lambda p, s: p.propagate_in_video(s), "forward")
  assert [t for t, _, _ in out] == list(range(2, NUM_FRAMES))
  assert all((m > 0).any() for _, _, masks in out for m in masks)  # the objects are present

  pair(lambda p, s: p.add_new_points_or_box(s, 6, 1, points=np.array([[140.0, 130.0]]), labels=np.array([0]),
                                            clear_old_points=False), "correction on frame 6")
  pair(lambda p, s: p.propagate_in_video(s, start_frame_idx=2, max_frame_num_to_track=5), "forward again")
  pair(lambda p, s: p.propagate_in_video(s, reverse=True), "reverse")
  pair(lambda p, s: p.add_new_mask(s, 4, 3, np.asarray(shapes_image(240, 320, seed=4, shift=(12, 16))[..., 0] > 200)),
       "mask for a new object on frame 4")
  # (From frame 0 the official predictor fails here: object 3 would have memories but no pointer yet.)
  pair(lambda p, s: p.propagate_in_video(s, start_frame_idx=4), "all objects after a new one")
  assert sum(official_hole_filling), "no small holes were filled: the test does not exercise hole filling"


def test_absent_object(video_dir):
  ours, official = make_pair(obj_score_bias=-6.0)
  s_ours, s_off = ours.init_state(video_dir), official.init_state(video_dir)
  pair = lambda f, what: run_both(ours, official, lambda p: f(p, s_ours), lambda p: f(p, s_off), what)
  pair(lambda p, s: p.add_new_points_or_box(s, 0, 5, points=np.array([[100.0, 100.0]]), labels=np.array([1])),
       "click")
  out = pair(lambda p, s: p.propagate_in_video(s, max_frame_num_to_track=7), "forward")
  assert len(out) == 8
  assert all((masks == -1024.0).all() for _, _, masks in out)  # absent: NO_OBJ_SCORE everywhere


def test_bad_inputs(video_dir, tmp_path):
  ours, _ = make_pair(obj_score_bias=6.0)
  with pytest.raises(ValueError, match="does not exist"):
    ours.init_state(str(tmp_path / "missing"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="No JPEG frames"):
    ours.init_state(str(tmp_path / "empty"))
  corrupt = tmp_path / "corrupt"
  corrupt.mkdir()
  Image.fromarray(shapes_image(64, 64)).save(corrupt / "00000.jpg")
  (corrupt / "00001.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
  with pytest.raises(ValueError, match="Cannot read frame .*00001.jpg"):
    ours.init_state(str(corrupt))
  with pytest.raises(ValueError, match="uint8 \\(T, H, W, 3\\)"):
    ours.init_state(np.zeros((2, 8, 8), np.uint8))
  with pytest.raises(ValueError, match="call init_state first"):
    ours.add_new_points_or_box({}, 0, 1, points=[[1, 1]], labels=[1])
  state = ours.init_state(video_dir)
  with pytest.raises(ValueError, match=r"frame_idx 10 is out of range: the video has 10 frames \(0..9\)"):
    ours.add_new_points_or_box(state, 10, 1, points=[[1, 1]], labels=[1])
  with pytest.raises(ValueError, match="points and labels must be provided together"):
    ours.add_new_points_or_box(state, 0, 1, points=[[1, 1]])
  with pytest.raises(ValueError, match="Unknown object id 4"):
    ours.clear_all_prompts_in_frame(state, 0, 4)
  with pytest.raises(ValueError, match="add prompts before propagating"):
    next(ours.propagate_in_video(state))
  with pytest.raises(ValueError, match="mask must be 2-D"):
    ours.add_new_mask(state, 0, 1, np.zeros((2, 2, 2)))
  h, w = state["video_height"], state["video_width"]
  with pytest.raises(ValueError, match=rf"mask must be the video's size \({h}, {w}\).*got shape \({h}, {w + 1}\)"):
    ours.add_new_mask(state, 0, 1, np.zeros((h, w + 1), bool))
  with pytest.raises(ValueError, match="points must be finite numbers"):
    ours.add_new_points_or_box(state, 0, 1, points=[[np.nan, 1]], labels=[1])
  with pytest.raises(ValueError, match="is empty or inverted"):
    ours.add_new_points_or_box(state, 0, 1, box=[10, 10, 5, 20])
  assert not state["obj_ids"]  # nothing was added by the rejected prompts
  with pytest.raises(ValueError, match="fill_hole_area must be a whole number of pixels >= 0, got -1"):
    SAM2VideoPredictor(ours.model, fill_hole_area=-1)


def test_fill_holes_matches_connected_components():
  logits = np.full((1, 1, 12, 12), 5.0, np.float32)
  logits[0, 0, 2:4, 2:4] = -3.0      # a 4-pixel hole
  logits[0, 0, 6:10, 6:10] = -3.0    # a 16-pixel hole
  logits[0, 0, 0:2, 10:12] = -1.0    # 4 pixels touching the border are a hole too (a background component)
  filled = fill_holes(logits, max_area=8)
  assert (filled[0, 0, 2:4, 2:4] == 0.1).all() and (filled[0, 0, 0:2, 10:12] == 0.1).all()
  assert (filled[0, 0, 6:10, 6:10] == -3.0).all()
  sprinkles = -np.ones((1, 1, 8, 8), np.float32)
  sprinkles[0, 0, 1, 1] = sprinkles[0, 0, 2, 2] = 4.0   # diagonal neighbours: one 8-connected sprinkle of 2
  out = fill_holes_and_sprinkles(sprinkles, 0, 2)
  assert (out[0, 0, 1, 1] == -10.0) and (out[0, 0, 2, 2] == -10.0)
  # Both kinds of region come from the input logits (the official order): a 1-pixel hole inside an
  # 8-pixel ring is filled, and the ring alone is a sprinkle of 8 <= 8 that is removed, but the filled
  # hole pixel (not foreground in the input) stays at threshold + 10.
  ring = -np.ones((1, 1, 7, 7), np.float32)
  ring[0, 0, 2:5, 2:5] = 3.0
  ring[0, 0, 3, 3] = -3.0
  out = fill_holes_and_sprinkles(ring, 1, 8)
  assert out[0, 0, 3, 3] == 10.0 and (out[0, 0, 2, 2:5] == -10.0).all() and (out > 0).sum() == 1


def test_video_res_non_overlap_matches_official():
  official, _ = build_official("sam2.1_hiera_t", image_size=IMAGE_SIZE, video=True, obj_score_bias=6.0)
  logits = np.random.default_rng(0).normal(0, 4, (2, 3, 1, 16, 16)).astype(np.float32)  # (T, objects, 1, h, w)
  got = np.asarray(video_res(logits, size=(40, 56), non_overlap=True))
  for t in range(2):
    with torch.inference_mode():
      expected = official._apply_non_overlapping_constraints(torch.nn.functional.interpolate(
          torch.from_numpy(logits[t]), size=(40, 56), mode="bilinear", align_corners=False))
    np.testing.assert_allclose(got[t], expected.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("max_area", [1, 3, 8, 40])
def test_fill_holes_on_device_matches_host(max_area):
  rng = np.random.default_rng(max_area)
  fill = jax.jit(fill_holes_on_device, static_argnums=1)
  for density in (0.3, 0.6, 0.85):  # background fraction: many small components to one large one
    logits = np.where(rng.random((2, 3, 1, 24, 31)) < density, -rng.random((2, 3, 1, 24, 31)), 2.0)
    logits = logits.astype(np.float32)
    np.testing.assert_array_equal(np.asarray(fill(logits, max_area)), fill_holes(logits, max_area))
