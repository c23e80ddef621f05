"""J / F / J&F against an independent re-derivation of the SA-V evaluator rules, and the PNG folder I/O."""

import csv
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from sam2_jax.evaluation import io as vos_io
from sam2_jax.evaluation import vos_metrics as vm

TOL = 1e-6
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------------------------------------
# Reference computation, written from the rules (not from the implementation under test).


def ref_boundary(mask):
  """A pixel is a boundary pixel when one of its right, lower and lower-right neighbours exists and differs."""
  mask = np.asarray(mask, np.int8)
  h, w = mask.shape
  padded = np.full((h + 1, w + 1), -1, np.int8)
  padded[:h, :w] = mask
  out = np.zeros((h, w), bool)
  for dy, dx in ((0, 1), (1, 0), (1, 1)):
    neighbour = padded[dy:dy + h, dx:dx + w]
    out |= (neighbour != -1) & (neighbour != mask)
  return out


def ref_radius(shape):
  return math.ceil(0.008 * math.hypot(*shape))


def ref_matched(points, targets, radius):
  """How many of `points` lie within Euclidean distance `radius` of some point of `targets` (brute force)."""
  if not len(points) or not len(targets):
    return 0
  hits = 0
  for start in range(0, len(points), 256):
    chunk = points[start:start + 256]
    sq = ((chunk[:, None, :] - targets[None, :, :]) ** 2).sum(-1)
    hits += int((sq.min(axis=1) <= radius * radius).sum())
  return hits


def ref_j(pred, gt):
  pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
  if not pred.any() and not gt.any():
    return 1.0
  return np.logical_and(pred, gt).sum() / np.logical_or(pred, gt).sum()


def ref_f(pred, gt):
  radius = ref_radius(pred.shape)
  pb, gb = np.argwhere(ref_boundary(pred)), np.argwhere(ref_boundary(gt))
  if not len(pb) and not len(gb):
    return 1.0
  if not len(pb) or not len(gb):
    return 0.0
  precision = ref_matched(pb, gb, radius) / len(pb)
  recall = ref_matched(gb, pb, radius) / len(gb)
  return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def ref_sequence(pairs):
  """{object: (J%, F%, frames)} for a list of (pred labels, gt labels): an object counts from its first
  appearance in either map; only objects seen in the ground truth are reported."""
  in_gt, scores = set(), {}
  for pred, gt in pairs:
    gt_ids = set(np.unique(gt).tolist()) - {0}
    in_gt |= gt_ids
    for obj in sorted(gt_ids | (set(np.unique(pred).tolist()) - {0})):
      scores.setdefault(obj, [])
    for obj, rows in scores.items():
      rows.append((ref_j(pred == obj, gt == obj), ref_f(pred == obj, gt == obj)))
  return {o: (100 * np.mean([r[0] for r in scores[o]]), 100 * np.mean([r[1] for r in scores[o]]), len(scores[o]))
          for o in in_gt}


# ----------------------------------------------------------------------------------------------------------
# Generated masks.


def blob(rng, shape):
  h, w = shape
  yy, xx = np.mgrid[:h, :w]
  cy, cx = rng.uniform(-0.1, 1.1) * h, rng.uniform(-0.1, 1.1) * w
  ry, rx = rng.uniform(0.5, max(h / 2, 1)), rng.uniform(0.5, max(w / 2, 1))
  return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def random_mask(rng, shape):
  kind = rng.integers(8)
  if kind == 0:
    return np.zeros(shape, bool)
  if kind == 1:
    return np.ones(shape, bool)
  if kind == 2:
    m = np.zeros(shape, bool)
    m[rng.integers(shape[0]), rng.integers(shape[1])] = True
    return m
  if kind == 3 and shape[0] * shape[1] <= 1200:
    return rng.random(shape) < 0.3
  return blob(rng, shape) | (blob(rng, shape) if kind == 4 else False)


def perturbed(rng, mask):
  kind = rng.integers(5)
  if kind == 0:
    return mask.copy()
  if kind == 1:
    return np.zeros_like(mask)
  if kind == 2:
    return random_mask(rng, mask.shape)
  out = np.roll(mask, tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
  if kind == 4:
    out[rng.integers(mask.shape[0]), :] ^= True
  return out


def labels_of(masks, shape):
  """Non-overlapping label map, lowest id on top (independent of the writer)."""
  labels = np.zeros(shape, np.uint8)
  for obj in sorted(masks, reverse=True):
    labels[masks[obj]] = obj
  return labels


SHAPES = [(24, 31), (40, 56), (75, 100), (150, 200), (1, 12), (9, 1)]


def make_dataset(root, rng, num_videos=4, frame_step=4):
  """Videos of (gt, pred) per-object masks; objects appear late, predictions miss, spill and invent objects.

  Returns {video: (shape, [(frame name, gt masks, pred masks)])}.
  """
  data = {}
  for v in range(num_videos):
    shape = SHAPES[v % len(SHAPES)]
    num_frames = int(rng.integers(3, 7))
    first = {obj: int(rng.integers(0, num_frames - 1)) for obj in range(1, int(rng.integers(2, 5)))}
    frames = []
    for t in range(num_frames):
      gt = {o: random_mask(rng, shape) if t >= first[o] else np.zeros(shape, bool) for o in first}
      for o in first:
        while t == max(first[o], 1) and not gt[o].any():  # visible in some frame, also when skipping the ends
          gt[o] = random_mask(rng, shape)
      pred = {o: perturbed(rng, m) for o, m in gt.items()}
      if rng.random() < 0.4:
        pred[7] = random_mask(rng, shape)  # an object only in the prediction
      frames.append((f"{frame_step * t:05d}", gt, pred))
    data[f"video_{v}"] = (shape, frames)
  return data


def write_davis(data, gt_root, pred_root):
  for video, (shape, frames) in data.items():
    for name, gt, pred in frames:
      vos_io.write_frame_masks(gt_root, video, name, gt, vos_io.DAVIS, shape=shape)
      vos_io.write_frame_masks(pred_root, video, name, pred, vos_io.DAVIS, shape=shape)


def write_sav(data, gt_root, pred_root):
  for video, (shape, frames) in data.items():
    for name, gt, pred in frames:
      vos_io.write_frame_masks(gt_root, video, name, gt, vos_io.SAV)
      vos_io.write_frame_masks(pred_root, video, name, {o: pred[o] for o in gt}, vos_io.SAV)


def ref_davis(data, skip):
  out = {}
  for video, (shape, frames) in data.items():
    pairs = [(labels_of(pred, shape), labels_of(gt, shape)) for _, gt, pred in frames]
    out[video] = ref_sequence(pairs[1:-1] if skip else pairs)
  return out


def ref_sav(data, skip):
  out = {}
  for video, (shape, frames) in data.items():
    out[video] = {}
    for obj in frames[0][1]:
      pairs = [(pred[obj].astype(np.uint8), gt[obj].astype(np.uint8)) for _, gt, pred in frames]
      scores = ref_sequence(pairs[1:-1] if skip else pairs)
      if scores:
        out[video][obj] = scores[1]
  return out


def assert_matches(results, ref):
  assert [v.name for v in results.videos] == sorted(ref)
  all_j, all_f = [], []
  for video in results.videos:
    assert sorted(video.objects) == sorted(ref[video.name]), video.name
    for obj, score in video.objects.items():
      j, f, n = ref[video.name][obj]
      assert abs(score.j - j) <= TOL and abs(score.f - f) <= TOL and score.num_frames == n, (video.name, obj)
      assert score.jf == pytest.approx((j + f) / 2, abs=TOL)
      all_j.append(j)
      all_f.append(f)
  assert results.j == pytest.approx(np.mean(all_j), abs=TOL)
  assert results.f == pytest.approx(np.mean(all_f), abs=TOL)
  assert results.jf == pytest.approx((np.mean(all_j) + np.mean(all_f)) / 2, abs=TOL)
  assert results.summary == f"J&F={results.jf:.1f} J={results.j:.1f} F={results.f:.1f}"


# ----------------------------------------------------------------------------------------------------------
# Frame-level metrics.


def test_disk_and_radius():
  assert vm.disk(0).tolist() == [[True]]
  assert vm.disk(1).astype(int).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
  assert vm.disk(8).sum() == sum(1 for y in range(-8, 9) for x in range(-8, 9) if x * x + y * y <= 64)
  for shape in [(480, 854), (1080, 1920), (75, 100), (24, 31), (1, 12)]:
    assert vm.boundary_radius(shape) == ref_radius(shape)
  assert vm.boundary_radius((480, 854)) == 8 and vm.boundary_radius((75, 100)) == 1


def test_boundary_map():
  rng = np.random.default_rng(0)
  for shape in [(1, 1), (1, 9), (7, 1), (2, 2), (13, 17), (40, 33)]:
    for _ in range(10):
      mask = random_mask(rng, shape) if rng.random() < 0.5 else rng.random(shape) < 0.5
      np.testing.assert_array_equal(vm.boundary_map(mask), ref_boundary(mask))
  corner = np.zeros((5, 6), bool)
  corner[-1, -1] = True  # seen only by its left, upper and upper-left neighbours
  assert np.argwhere(vm.boundary_map(corner)).tolist() == [[3, 4], [3, 5], [4, 4]]
  assert not vm.boundary_map(np.ones((5, 6), bool)).any()


def test_dilate():
  rng = np.random.default_rng(1)
  for shape in [(1, 10), (11, 1), (20, 27), (33, 18)]:
    for radius in [0, 1, 2, 5, 9]:
      bmap = rng.random(shape) < 0.04
      out = vm.dilate(bmap, radius)
      np.testing.assert_array_equal(out, ndimage.binary_dilation(bmap, structure=vm.disk(radius)))
      points = np.argwhere(bmap)
      brute = np.zeros(shape, bool)
      for y, x in np.ndindex(*shape):
        brute[y, x] = ref_matched(np.array([[y, x]]), points, radius) == 1
      np.testing.assert_array_equal(out, brute)
  assert not vm.dilate(np.zeros((4, 5), bool), 3).any()


def test_frame_metrics():
  rng = np.random.default_rng(2)
  for shape in [(24, 31), (75, 100), (150, 200), (1, 12)]:
    for _ in range(25):
      gt = random_mask(rng, shape)
      pred = perturbed(rng, gt)
      assert abs(vm.region_similarity(pred, gt) - ref_j(pred, gt)) <= TOL
      assert abs(vm.boundary_f_measure(pred, gt) - ref_f(pred, gt)) <= TOL
  empty, full = np.zeros((30, 40), bool), np.ones((30, 40), bool)
  box = np.zeros((30, 40), bool)
  box[5:20, 8:30] = True
  assert vm.region_similarity(empty, empty) == 1.0 and vm.boundary_f_measure(empty, empty) == 1.0
  assert vm.region_similarity(empty, box) == 0.0 and vm.boundary_f_measure(empty, box) == 0.0  # P=1, R=0
  assert vm.region_similarity(box, empty) == 0.0 and vm.boundary_f_measure(box, empty) == 0.0  # P=0, R=1
  assert vm.boundary_f_measure(full, full) == 1.0  # a full mask has no boundary
  assert vm.region_similarity(box, box) == 1.0 and vm.boundary_f_measure(box, box) == 1.0
  shifted = np.roll(box, 1, axis=1)  # within the 1-pixel tolerance of a 30x40 frame
  assert vm.boundary_f_measure(shifted, box) == 1.0 and vm.region_similarity(shifted, box) < 1.0


def test_sequence_bookkeeping():
  shape = (20, 30)
  box = np.zeros(shape, np.uint8)
  box[4:12, 5:20] = 1
  empty = np.zeros(shape, np.uint8)
  ev = vm.SequenceEvaluator()
  ev.add_frame(empty, empty)  # nothing seen yet: no frame counted for anyone
  ev.add_frame(box * 3, empty)  # object 3 predicted before it appears: J = F = 0 from here on
  ev.add_frame(box * 3, box * 3)
  ev.add_frame(empty, box * 2)  # object 2 missed; object 3 now absent from both: J = F = 1
  ev.add_frame(box * 9, empty)  # object 9 exists only in the prediction: never reported
  res = ev.results()
  assert sorted(res) == [2, 3]
  assert (res[3].j, res[3].f, res[3].num_frames) == (75.0, 75.0, 4)
  assert (res[2].j, res[2].f, res[2].num_frames) == (50.0, 50.0, 2)
  with pytest.raises(ValueError, match="one shape"):
    ev.add_frame(empty, np.zeros((20, 31), np.uint8))


# ----------------------------------------------------------------------------------------------------------
# Folder evaluation.


@pytest.mark.parametrize("skip", [True, False])
def test_evaluate_davis(tmp_path, skip):
  data = make_dataset(tmp_path, np.random.default_rng(3 + skip))
  gt_root, pred_root = str(tmp_path / "gt"), str(tmp_path / "pred")
  write_davis(data, gt_root, pred_root)
  results = vm.evaluate(gt_root, pred_root, skip_first_and_last=skip)
  assert_matches(results, ref_davis(data, skip))
  assert all(v.layout == vos_io.DAVIS for v in results.videos)

  with open(results.csv_path) as f:
    rows = list(csv.DictReader(f))
  assert results.csv_path == os.path.join(pred_root, "results.csv")
  assert [r["level"] for r in rows].count("object") == results.num_objects
  assert [r["video"] for r in rows if r["level"] == "video"] == sorted(data)
  assert float(rows[0]["J&F"]) == pytest.approx(results.jf, abs=1e-6) and rows[0]["level"] == "global"
  first = results.videos[0]
  video_row = next(r for r in rows if r["level"] == "video" and r["video"] == first.name)
  assert float(video_row["J"]) == pytest.approx(np.mean([s.j for s in first.objects.values()]), abs=1e-6)
  assert not [n for n in os.listdir(pred_root) if n.startswith(".")]


@pytest.mark.parametrize("skip", [True, False])
def test_evaluate_sav(tmp_path, skip):
  rng = np.random.default_rng(5 + skip)
  data = make_dataset(tmp_path, rng, num_videos=5)
  for _, frames in data.values():  # SA-V objects may overlap
    for _, gt, pred in frames:
      gt[1] = gt[1] | gt[2] if 2 in gt else gt[1]
  gt_root, pred_root = str(tmp_path / "gt"), str(tmp_path / "pred")
  write_sav(data, gt_root, pred_root)
  ref = ref_sav(data, skip)
  results = vm.evaluate(gt_root, pred_root, skip_first_and_last=skip, num_processes=1 if skip else 2)
  assert_matches(results, ref)
  assert all(v.layout == vos_io.SAV for v in results.videos)


def test_sav_objects_with_own_frames(tmp_path):
  """Each SA-V object folder is evaluated on its own frame list (first and last of that list skipped)."""
  rng = np.random.default_rng(7)
  shape = (40, 56)
  gt_root, pred_root = str(tmp_path / "gt"), str(tmp_path / "pred")
  per_obj = {1: range(0, 6), 4: range(2, 9)}
  ref = {}
  for obj, ts in per_obj.items():
    pairs = []
    for t in ts:
      gt = blob(rng, shape)
      pred = perturbed(rng, gt)
      vos_io.write_frame_masks(gt_root, "v", t, {obj: gt}, vos_io.SAV)
      vos_io.write_frame_masks(pred_root, "v", t, {obj: pred}, vos_io.SAV)
      pairs.append((pred.astype(np.uint8), gt.astype(np.uint8)))
    ref[obj] = ref_sequence(pairs[1:-1])[1]
  assert vos_io.list_frames(gt_root, "v") == [f"{t:05d}" for t in range(9)]
  assert vos_io.list_frames(gt_root, "v", 4) == [f"{t:05d}" for t in range(2, 9)]
  assert_matches(vm.evaluate(gt_root, pred_root, write_csv=False), {"v": ref})


def test_layouts_agree(tmp_path):
  """Non-overlapping objects stored in both layouts with the same frames score the same."""
  data = make_dataset(tmp_path, np.random.default_rng(8), num_videos=3)
  for shape, frames in data.values():
    for _, gt, pred in frames:
      for masks in (gt, pred):
        labels = labels_of(masks, shape)
        masks.update({o: labels == o for o in masks})
  write_davis(data, str(tmp_path / "dg"), str(tmp_path / "dp"))
  for shape, frames in data.values():
    for _, gt, pred in frames:
      pred.pop(7, None)
  write_sav(data, str(tmp_path / "sg"), str(tmp_path / "sp"))
  for skip in (True, False):
    davis = vm.evaluate(str(tmp_path / "dg"), str(tmp_path / "dp"), skip_first_and_last=skip)
    sav = vm.evaluate(str(tmp_path / "sg"), str(tmp_path / "sp"), skip_first_and_last=skip)
    assert [v.objects for v in davis.videos] == [v.objects for v in sav.videos]
    assert (davis.j, davis.f) == (sav.j, sav.f)


def test_missing_stale_and_chosen_videos(tmp_path, capsys):
  data = make_dataset(tmp_path, np.random.default_rng(9), num_videos=3)
  gt_root, pred_root = str(tmp_path / "gt"), str(tmp_path / "pred")
  write_davis(data, gt_root, pred_root)
  full = vm.evaluate(gt_root, pred_root, strict=True, write_csv=False)
  assert [v.name for v in full.videos] == ["video_0", "video_1", "video_2"]
  shutil.rmtree(os.path.join(pred_root, "video_1"))
  for strict in (False, True):  # a missing video is an error, never a score over the others
    with pytest.raises(ValueError, match=r"No predictions in .*pred' for 1 of the 3 videos to score: \['video_1'\]"):
      vm.evaluate(gt_root, pred_root, strict=strict)
  with pytest.raises(ValueError, match=r"for 1 of the 1 videos to score: \['video_1'\]"):
    vm.evaluate(gt_root, pred_root, videos=["video_1"])
  chosen = vm.evaluate(gt_root, pred_root, videos=["video_2", "video_0", "video_2"])
  assert [v.name for v in chosen.videos] == ["video_0", "video_2"]
  assert chosen.videos[1].objects == full.videos[2].objects
  with open(chosen.csv_path) as f:
    assert {r["video"] for r in csv.DictReader(f) if r["level"] == "video"} == {"video_0", "video_2"}
  only = vm.evaluate(gt_root, pred_root, videos=["video_2"], write_csv=False)  # video_0 is stale here
  assert [v.name for v in only.videos] == ["video_2"] and only.j == pytest.approx(full.videos[2].j)
  with pytest.raises(ValueError, match=r"Unknown video\(s\) \['nope', 'x'\]: not video folders of .*gt' "
                     r"\(it has 3: video_0, video_1, video_2\)"):
    vm.evaluate(gt_root, pred_root, videos=["video_0", "nope", "x", "nope"])

  shutil.copytree(os.path.join(pred_root, "video_0"), os.path.join(pred_root, "extra"))
  capsys.readouterr()
  assert vm.evaluate(gt_root, pred_root, videos=["video_0"], write_csv=False).videos[0].name == "video_0"
  err = capsys.readouterr().err
  assert "warning: predicted videos without ground truth in" in err and "not scored: ['extra']" in err
  with pytest.raises(ValueError, match=r"strict: predicted videos without ground truth in .*: \['extra'\]"):
    vm.evaluate(gt_root, pred_root, videos=["video_0"], strict=True)


def test_cli(tmp_path, capsys):
  data = make_dataset(tmp_path, np.random.default_rng(10), num_videos=2)
  write_davis(data, str(tmp_path / "gt"), str(tmp_path / "pred"))
  shutil.copytree(tmp_path / "gt", tmp_path / "gt_copy")
  vm.main([f"--gt_root={tmp_path / 'gt'}", f"--pred_root={tmp_path / 'gt_copy'}", "--do_not_skip_first_and_last_frame"])
  assert capsys.readouterr().out.strip().splitlines()[-1] == "J&F=100.0 J=100.0 F=100.0"
  shutil.rmtree(tmp_path / "gt_copy" / "video_1")
  vm.main([f"--gt_root={tmp_path / 'gt'}", f"--pred_root={tmp_path / 'gt_copy'}", "--videos=video_0"])
  assert capsys.readouterr().out.strip().splitlines()[-1] == "J&F=100.0 J=100.0 F=100.0"

  def cli(*args):
    return subprocess.run([sys.executable, "-m", "sam2_jax.evaluation.vos_metrics", *args], capture_output=True,
                          text=True, cwd=ROOT)
  gt = f"--gt_root={tmp_path / 'gt'}"
  for args, message in (
      ([gt, f"--pred_root={tmp_path / 'gt_copy'}"], r"No predictions in .* \['video_1'\]"),
      ([gt, f"--pred_root={tmp_path / 'gt_copy'}", "--videos=video_0,zz"], r"Unknown video\(s\) \['zz'\]"),
      ([gt, f"--pred_root={tmp_path / 'gt' / 'video_0'}"], r"Prediction folder .* lies inside the ground-truth"),
      ([gt, f"--pred_root={tmp_path / 'gt_copy'}", "-n", "0"], "num_processes must be at least 1, got 0"),
  ):
    run = cli(*args)
    assert run.returncode == 2 and re.match(f"error: {message}", run.stderr), run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr


# ----------------------------------------------------------------------------------------------------------
# Errors.


def test_errors(tmp_path):
  shape = (20, 30)
  box = np.zeros(shape, bool)
  box[3:9, 4:20] = True
  gt_root, pred_root = str(tmp_path / "gt"), str(tmp_path / "pred")
  for t in range(3):
    vos_io.write_frame_masks(gt_root, "a", t, {1: box}, vos_io.DAVIS)
  with pytest.raises(ValueError, match="Ground-truth folder .* does not exist"):
    vm.evaluate(str(tmp_path / "nope"), pred_root)
  with pytest.raises(ValueError, match="Prediction folder .* does not exist"):
    vm.evaluate(gt_root, str(tmp_path / "nope"))
  os.makedirs(pred_root)
  with pytest.raises(ValueError, match=r"No predictions in .* for 1 of the 1 videos to score: \['a'\]"):
    vm.evaluate(gt_root, pred_root)
  with pytest.raises(ValueError, match="is or lies inside the ground-truth folder"):
    vm.evaluate(gt_root, gt_root)
  with pytest.raises(ValueError, match="num_processes must be at least 1"):
    vm.evaluate(gt_root, str(tmp_path), num_processes=0)
  with pytest.raises(ValueError, match="holds no video folder"):
    vm.evaluate(pred_root, gt_root)

  for t in range(3):  # SA-V predictions for DAVIS ground truth
    vos_io.write_frame_masks(pred_root, "a", t, {1: box}, vos_io.SAV)
  with pytest.raises(ValueError, match="Layout mismatch .* ground truth is DAVIS, prediction is SAV"):
    vm.evaluate(gt_root, pred_root)
  with pytest.raises(ValueError, match="Layout mismatch .* ground truth is SAV, prediction is DAVIS"):
    vm.evaluate(pred_root, gt_root)

  pred_root = str(tmp_path / "pred2")
  vos_io.write_frame_masks(pred_root, "a", 0, {1: box}, vos_io.DAVIS)
  vos_io.write_frame_masks(pred_root, "a", 1, {1: np.ones((20, 31), bool)}, vos_io.DAVIS)
  with pytest.raises(ValueError, match="Shape mismatch"):
    vm.evaluate(gt_root, pred_root)
  vos_io.write_frame_masks(pred_root, "a", 1, {1: box}, vos_io.DAVIS)
  with pytest.raises(ValueError, match="00002.png.* not found"):
    vm.evaluate(gt_root, pred_root, skip_first_and_last=False)
  assert vm.evaluate(gt_root, pred_root).j == 100.0  # the missing frame is the skipped last one

  Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(os.path.join(pred_root, "a", "00001.png"))
  with pytest.raises(ValueError, match="single-channel"):
    vm.evaluate(gt_root, pred_root)
  path = os.path.join(pred_root, "a", "00001.png")
  for content in (b"not a png", open(os.path.join(gt_root, "a", "00001.png"), "rb").read()[:60]):
    with open(path, "wb") as f:
      f.write(content)  # text, then a truncated PNG
    with pytest.raises(ValueError, match=r"Cannot read mask file .*pred2/a/00001.png"):
      vm.evaluate(gt_root, pred_root)
    with pytest.raises(ValueError, match=r"Cannot read mask file .*pred2/a/00001.png"):  # as ground truth too
      vm.evaluate(pred_root, gt_root, skip_first_and_last=False)

  sav_gt, sav_pred = str(tmp_path / "sg"), str(tmp_path / "sp")
  for t in range(3):
    vos_io.write_frame_masks(sav_gt, "a", t, {1: box}, vos_io.SAV)
    three_values = box.astype(np.uint8) * np.arange(30, dtype=np.uint8) % 3
    vos_io.write_label_png(os.path.join(sav_pred, "a", "001", f"{t:05d}.png"), three_values)
  with pytest.raises(ValueError, match="more than one object"):
    vm.evaluate(sav_gt, sav_pred)

  empty_gt = str(tmp_path / "eg")
  for t in range(3):
    vos_io.write_frame_masks(empty_gt, "a", t, {1: box if t == 0 else np.zeros(shape, bool)}, vos_io.SAV)
  with pytest.raises(ValueError, match="empty in every evaluated"):
    vm.evaluate(empty_gt, sav_gt)
  empty_davis = str(tmp_path / "ed")
  for t in range(3):
    vos_io.write_frame_masks(empty_davis, "a", t, {1: box} if t == 0 else {}, vos_io.DAVIS, shape=shape)
  with pytest.raises(ValueError, match="No ground-truth object"):
    vm.evaluate(empty_davis, gt_root)


# ----------------------------------------------------------------------------------------------------------
# PNG I/O.


def test_davis_round_trip(tmp_path):
  root = str(tmp_path)
  a = np.zeros((6, 8), bool)
  a[1:4, 1:5] = True
  b = np.zeros((6, 8), bool)
  b[2:6, 3:8] = True
  paths = vos_io.write_frame_masks(root, "vid", 12, {5: b, 2: a})
  assert paths == [os.path.join(root, "vid", "00012.png")]
  with Image.open(paths[0]) as image:
    assert image.mode == "P"
    assert bytes(image.getpalette()) == vos_io.davis_palette()
    labels = np.array(image)
  assert labels[2, 3] == 2 and labels[3, 6] == 5 and labels[0, 0] == 0  # the lower id wins the overlap
  masks = vos_io.read_frame_masks(root, "vid", 12)
  assert sorted(masks) == [2, 5]
  np.testing.assert_array_equal(masks[2], a)
  np.testing.assert_array_equal(masks[5], b & ~a)
  vos_io.write_frame_masks(root, "vid", "frame_b", {}, shape=(6, 8))
  assert vos_io.read_frame_masks(root, "vid", "frame_b") == {}
  assert vos_io.detect_layout(os.path.join(root, "vid")) == vos_io.DAVIS
  assert vos_io.list_videos(root) == ["vid"]
  assert vos_io.list_frames(root, "vid") == ["00012", "frame_b"]
  assert vos_io.list_objects(root, "vid") == [2, 5]
  palette = np.frombuffer(vos_io.davis_palette(), np.uint8).reshape(256, 3)
  assert palette[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
  assert palette[8].tolist() == [64, 0, 0] and palette[255].tolist() == [224, 224, 192]
  with pytest.raises(ValueError, match="1..255"):
    vos_io.write_frame_masks(root, "vid", 0, {256: a})
  with pytest.raises(ValueError, match="one 2-D shape"):
    vos_io.write_frame_masks(root, "vid", 0, {1: a, 2: np.zeros((6, 9), bool)})
  with pytest.raises(ValueError, match="one 2-D shape"):
    vos_io.write_frame_masks(root, "vid", 0, {})


def test_sav_round_trip(tmp_path):
  root = str(tmp_path)
  rng = np.random.default_rng(11)
  masks = {1: rng.random((7, 9)) < 0.5, 12: rng.random((7, 9)) < 0.5, 3: np.zeros((7, 9), bool)}
  paths = vos_io.write_frame_masks(root, "v", 4, masks, vos_io.SAV)
  assert paths == [os.path.join(root, "v", f"{o:03d}", "00004.png") for o in (1, 3, 12)]
  with Image.open(paths[0]) as image:
    assert image.mode == "P" and set(np.unique(np.array(image))) <= {0, 1}
  back = vos_io.read_frame_masks(root, "v", 4)
  assert sorted(back) == [1, 3, 12]
  for obj, mask in masks.items():
    np.testing.assert_array_equal(back[obj], mask)
  vos_io.write_frame_masks(root, "v", 8, {3: masks[1]}, vos_io.SAV)
  assert sorted(vos_io.read_frame_masks(root, "v", 8)) == [3]
  assert vos_io.detect_layout(os.path.join(root, "v")) == vos_io.SAV
  assert vos_io.list_objects(root, "v") == [1, 3, 12]
  assert vos_io.list_frames(root, "v") == ["00004", "00008"]
  assert vos_io.list_frames(root, "v", obj_id=12) == ["00004"]
  with pytest.raises(ValueError, match="Unknown layout"):
    vos_io.write_frame_masks(root, "v", 4, masks, "coco")
  os.makedirs(os.path.join(root, "v", "person"))
  with pytest.raises(ValueError, match="must be integers"):
    vos_io.list_objects(root, "v")


def test_atomic_writes(tmp_path, monkeypatch):
  path = str(tmp_path / "out" / "x.png")
  vos_io.write_label_png(path, np.ones((3, 4), np.uint8))
  before = open(path, "rb").read()
  # A leftover hidden temporary file changes neither the layout nor the frame list.
  open(str(tmp_path / "out" / ".x.png.deadbeef.tmp"), "wb").close()
  assert vos_io.detect_layout(str(tmp_path / "out")) == vos_io.DAVIS
  assert vos_io.frames_in(str(tmp_path / "out")) == ["x"]
  os.remove(str(tmp_path / "out" / ".x.png.deadbeef.tmp"))

  def failing_replace(src, dst):
    raise OSError("disk full")

  monkeypatch.setattr(os, "replace", failing_replace)
  with pytest.raises(OSError, match="disk full"):
    vos_io.write_label_png(path, np.zeros((3, 4), np.uint8))
  monkeypatch.undo()
  assert open(path, "rb").read() == before  # the complete old file is untouched
  assert os.listdir(str(tmp_path / "out")) == ["x.png"]  # and no temporary file is left
  with pytest.raises(ValueError, match="2-D uint8"):
    vos_io.write_label_png(path, np.ones((3, 4), np.int32))
  with pytest.raises(ValueError, match="not found"):
    vos_io.read_label_png(str(tmp_path / "missing.png"))
