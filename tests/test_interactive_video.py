"""The interactive video protocols (offline, online) on hand-made masks with a scripted predictor, and
`eval.py --task=interactive_video` end to end (random weights) and on bad input."""

import json
import os
import re

import numpy as np
from PIL import Image
import pytest

from sam2_jax.evaluation import interactive_video as iv
from sam2_jax.evaluation import io as vos_io
from tests.test_eval import make_davis, run_eval, snapshot

H = W = 20


def square():
  """The object on every annotated frame: 11 x 11, rows and columns 4..14, centre (x=9, y=9)."""
  m = np.zeros((H, W), bool)
  m[4:15, 4:15] = True
  return m


def with_fp_corner():
  """The object and a 5 x 5 false positive in the bottom-right corner (deepest FP pixel (x=17, y=17))."""
  m = square()
  m[15:, 15:] = True
  return m


def with_fn_hole():
  """The object with a 5 x 5 hole (rows and columns 5..9, centre (x=7, y=7))."""
  m = square()
  m[5:10, 5:10] = False
  return m


def left_part():
  """Columns 4..9 of the object: IoU 66/121; the missed part is 11 x 5, deepest first at (x=12, y=6)."""
  m = square()
  m[:, 10:] = False
  return m


def empty():
  return np.zeros((H, W), bool)


def logits(mask):
  return np.where(mask, 5.0, -5.0).astype(np.float32)[None, None]


class ScriptedPredictor:
  """A stand-in for SAM2VideoPredictor that returns the masks a test chose, and records what it was asked.

  After the n-th click on frame t, `add_new_points_or_box` returns `clicked[(t, n)]`; pass p (counted from 1
  since the last reset) of `propagate_in_video` yields `passes[p][t]` for each frame it visits, in the order
  the real predictor visits them. The protocol never sees the ground truth through it.
  """
  add_all_frames_to_correct_as_cond = True

  def __init__(self, num_frames, clicked, passes):
    self.num_frames, self.clicked, self.passes = num_frames, clicked, passes

  def init_state(self, video_path):
    return {"video_path": video_path}

  def reset_state(self, state):
    state.update(points={}, calls=[], num_passes=0)

  def add_new_points_or_box(self, state, frame_idx, obj_id, points=None, labels=None, clear_old_points=True):
    assert not clear_old_points  # each click is added to the frame's earlier ones
    (x, y), = points
    state["points"].setdefault(frame_idx, []).append((x, y, labels[0]))
    state["calls"].append(("click", frame_idx, (x, y, labels[0])))
    return frame_idx, [obj_id], logits(self.clicked[(frame_idx, len(state["points"][frame_idx]))])

  def propagate_in_video(self, state, start_frame_idx=None, max_frame_num_to_track=None, reverse=False):
    if not reverse:
      state["num_passes"] += 1  # a pass is a forward propagation, then maybe a reverse one
    state["calls"].append(("propagate", start_frame_idx, reverse))
    masks = self.passes[state["num_passes"]]
    order = range(start_frame_idx, -1, -1) if reverse else range(start_frame_idx, self.num_frames)
    for t in order:
      yield t, [7], logits(masks[t])


def clicks_of(state):
  return [c[1:] for c in state["calls"] if c[0] == "click"]


def propagations_of(state):
  return [c[1:] for c in state["calls"] if c[0] == "propagate"]


def test_offline_worst_frame_and_error_centre_clicks():
  # The object appears on frame 1; frame 0's ground truth is empty.
  obj = iv.VideoObject("v", 7, 5, {0: empty(), **{t: square() for t in range(1, 5)}})
  fp_top_left = empty()
  fp_top_left[:5, :5] = True
  half = square()
  half[9:] = False
  clicked = {(1, 1): with_fp_corner(), (1, 2): with_fn_hole(), (1, 3): square(),
             (0, 1): empty(), (3, 1): square()}
  passes = {
      # IoU: frame 0 (a false positive on an empty frame) 0, frames 1-2 1, frame 3 0, frame 4 5/11.
      1: {0: fp_top_left, 1: square(), 2: square(), 3: empty(), 4: half},
      2: {0: empty(), 1: square(), 2: square(), 3: empty(), 4: square()},
      3: {t: obj.gt[t] for t in range(5)},
  }
  predictor = ScriptedPredictor(5, clicked, passes)
  state = predictor.init_state("v")
  run = iv.run_offline(predictor, state, obj, max_interacted_frames=8)
  # Frame 1 first: the GT centre, then the corner false positive (negative), then the hole (positive).
  # Frames 0 and 3 tie at IoU 0: the earlier, 0, gets a negative click at its false positive's centre, which
  # makes it perfect. Frame 3 (empty prediction) then gets its GT centre; after that every frame is perfect.
  assert run.frames == [1, 0, 3]
  assert run.clicks == [[(9, 9, 1), (17, 17, 0), (7, 7, 1)], [(2, 2, 0)], [(9, 9, 1)]]
  assert clicks_of(state) == [(1, c) for c in run.clicks[0]] + [(0, (2, 2, 0)), (3, (9, 9, 1))]
  # Forward and reverse from frame 1 while it is the earliest prompt, then forward only from frame 0.
  assert propagations_of(state) == [(1, False), (1, True), (0, False), (0, False)]
  assert run.jf == [iv.object_jf(obj, passes[p]) for p in (1, 2, 3)]
  assert run.jf[0] < run.jf[1] < run.jf[2] == 100.0

  run = iv.run_offline(predictor, state, obj, max_interacted_frames=2)  # the state is reset
  assert run.frames == [1, 0] and len(run.jf) == 2
  assert propagations_of(state) == [(1, False), (1, True), (0, False)]


def test_online_pauses_at_first_frame_under_threshold():
  obj = iv.VideoObject("v", 7, 6, {t: square() for t in range(6)})
  almost = square()
  almost[4:6] = False  # IoU 99/121 = 0.82: no pause
  clicked = {(0, 1): square(), (3, 1): with_fn_hole(), (3, 2): with_fp_corner(), (3, 3): left_part(),
             (4, 1): square()}
  passes = {
      1: {0: square(), 1: square(), 2: almost, 3: left_part(), 4: empty(), 5: square()},
      # Resumed at frame 3, whose 3 clicks left it under the threshold: no second pause there; frame 4 is next.
      2: {0: None, 1: None, 2: None, 3: left_part(), 4: empty(), 5: square()},
      3: {0: None, 1: None, 2: None, 3: None, 4: square(), 5: square()},
  }
  predictor = ScriptedPredictor(6, clicked, passes)
  state = predictor.init_state("v")
  run = iv.run_online(predictor, state, obj, max_interacted_frames=8)
  # Frame 0: one click (at the centre) makes it perfect. The pass pauses at frame 3 (IoU 0.55 < 0.75, frame 2's
  # 0.82 passes): clicks at the missed part's centre, then the hole's, then the corner false positive (negative).
  assert run.frames == [0, 3, 4]
  assert run.clicks == [[(9, 9, 1)], [(12, 6, 1), (7, 7, 1), (17, 17, 0)], [(9, 9, 1)]]
  assert propagations_of(state) == [(0, False), (3, False), (4, False)]
  # J&F after k frames: the whole video as it ends when the annotator stops after k frames; frames before the
  # resumed one keep the earlier passes' masks.
  after = lambda *sources: {t: passes[p][t] for p, frames in sources for t in frames}
  assert run.jf == [iv.object_jf(obj, passes[1]), iv.object_jf(obj, after((1, range(3)), (2, range(3, 6)))),
                    iv.object_jf(obj, after((1, range(3)), (2, [3]), (3, [4, 5])))]

  run = iv.run_online(predictor, state, obj, max_interacted_frames=2)
  assert run.frames == [0, 3] and len(run.jf) == 2  # frame 4 is bad, but the budget is spent
  assert propagations_of(state) == [(0, False), (3, False)]


def test_annotation_times():
  offline = iv.ObjectRun(frames=[1, 0, 3], clicks=[[(0, 0, 1)] * 3, [(0, 0, 0)], [(0, 0, 1)]])
  # T_exam * 5 / 300 = 0.5 s per viewing of a 5-frame video; one viewing per pass offline, one in all online.
  assert iv.annotation_times("offline", offline, 5) == pytest.approx([1 + 4.5 + 0.5, 6 + 2.5 + 0.5, 9 + 2.5 + 0.5])
  assert iv.annotation_times("online", offline, 5) == pytest.approx([0.5 + 5.5, 6 + 2.5, 8.5 + 2.5])
  assert iv.carry_forward([1.0, 2.0], 4) == [1.0, 2.0, 2.0, 2.0]


def test_evaluate_needs_corrections_as_conditioning_frames(tmp_path):
  predictor = ScriptedPredictor(1, {}, {})
  predictor.add_all_frames_to_correct_as_cond = False  # later passes would re-track the clicked frames
  with pytest.raises(ValueError, match="add_all_frames_to_correct_as_cond=True"):
    iv.evaluate(predictor, str(tmp_path), str(tmp_path), ["v"], str(tmp_path))


def test_read_video_objects(tmp_path):
  for layout, (frames, annotations) in vos_io.DATASET_FOLDERS.items():
    os.makedirs(tmp_path / layout / frames / "v")
    for t in range(8):
      Image.new("RGB", (W, H)).save(tmp_path / layout / frames / "v" / f"{t:05d}.jpg")
    corner = with_fp_corner() & ~square()  # apart from object 1: DAVIS PNGs cannot overlap
    for t in (0, 4):  # annotated every 4th frame; object 2 appears on frame 4, object 3 never
      masks = {1: square(), 2: corner if t else empty(), 3: empty()}
      vos_io.write_frame_masks(str(tmp_path / layout / annotations), "v", t, masks, layout)
    objects = iv.read_video_objects(str(tmp_path / layout / frames), str(tmp_path / layout / annotations), "v")
    assert [(o.obj_id, o.num_frames, sorted(o.gt), o.first_frame) for o in objects] == [(1, 8, [0, 4], 0),
                                                                                        (2, 8, [0, 4], 4)], layout
    assert (objects[0].gt[4] == square()).all() and (objects[1].gt[4] == corner).all() and not objects[1].gt[0].any()


LINE = re.compile(r"^interactive mode=(offline|online)( J&F@\d=\d+\.\d)+$")


def test_eval_interactive_video_end_to_end(tmp_path):
  data_root = tmp_path / "davis"
  make_davis(data_root, num_videos=2, num_frames=6)
  before = snapshot(data_root)
  out = tmp_path / "out"
  run = run_eval("--task=interactive_video", f"--data_root={data_root}", f"--output_dir={out}",
                 "--config=sam2.1_hiera_t", "--image_size=64", "--max_interacted_frames=2", restart=False)
  assert run.returncode == 0, run.stderr[-3000:]
  lines = run.stdout.strip().splitlines()[-2:]
  assert [LINE.match(line).group(1) for line in lines] == ["offline", "online"], lines
  with open(out / iv.SUMMARY_JSON) as f:
    summary = json.load(f)
  assert summary["num_videos"] == 2 and summary["num_objects"] == 4  # two objects per video
  for mode, line in zip(iv.MODES, lines):
    rows, objects = summary["modes"][mode], [o for o in summary["objects"] if o["mode"] == mode]
    assert line == "interactive mode={} J&F@1={:.1f} J&F@2={:.1f}".format(mode, *[r["J&F"] for r in rows])
    assert [r["J&F"] for r in rows] == pytest.approx(np.mean([o["jf"] for o in objects], axis=0))
    times = [r["annotation_time_s"] for r in rows]
    assert times == sorted(times) and times[0] >= iv.T_LOC + iv.T_CLICK
    for o in objects:
      assert 1 <= len(o["interacted_frames"]) <= 2 and len(o["jf"]) == len(o["annotation_time_s"]) == 2
      first = vos_io.read_frame_masks(str(data_root / "Annotations"), o["video"],
                                      o["interacted_frames"][0])[o["object"]]
      x, y, label = o["clicks"][0][0]
      assert label == 1 and first[y, x]  # the first click is on the object
  with Image.open(out / iv.PLOT_PNG) as plot:
    assert plot.format == "PNG" and plot.size[0] > 100
  assert snapshot(data_root) == before


def test_eval_interactive_video_bad_input(tmp_path):
  data_root = tmp_path / "davis"
  make_davis(data_root, num_videos=1, num_frames=2)
  task = ["--task=interactive_video", f"--data_root={data_root}"]
  cases = [
      (task + [f"--output_dir={tmp_path / 'o'}", "--max_interacted_frames=0"],
       "--max_interacted_frames must be at least 1, got 0"),
      (task + [f"--output_dir={tmp_path / 'o'}", "--interactive_modes=offline,bogus"],
       "--interactive_modes must name offline and/or online"),
      (task, "--task=interactive_video needs --data_root and --output_dir"),
      (task + [f"--output_dir={data_root / 'Annotations'}"], "Output folder .* is the dataset's annotations"),
  ]
  for args, message in cases:
    run = run_eval(*args, "--config=sam2.1_hiera_t", "--image_size=64", restart=False)
    assert run.returncode == 2 and re.match(f"error: {message}", run.stderr), (args, run.stderr)
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
  assert not (tmp_path / "o").exists()
