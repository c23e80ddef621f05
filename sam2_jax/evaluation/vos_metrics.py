"""Video object segmentation metrics J (region IoU), F (boundary F-measure) and J&F, as the SA-V evaluator.

Semantics follow the official `sav_dataset/sav_evaluator.py` (DAVIS-2017 style metrics):

- J: |P & G| / |P | G| per object and frame; 1 when both masks are empty.
- F: 1-pixel boundary maps (a pixel is on the boundary when it differs from its right, lower or lower-right
  neighbour; last row: right only; last column: lower only; bottom-right pixel never), each dilated by a disk
  of radius ceil(0.008 * ||(H, W)||); precision = share of predicted boundary pixels near the ground truth
  boundary, recall the converse, F = 2PR / (P + R). No predicted boundary: P = 1, R = 0 (both 1 when the
  ground truth has none either); no ground-truth boundary but a predicted one: P = 0, R = 1.
- Frames evaluated: the ground-truth files (sparse annotations), minus the first and last one by default.
  Inside a sequence an object is scored from the first evaluated frame where it appears in the ground truth
  or in the prediction on, and it is reported only when it appears in the ground truth of an evaluated frame.
- Per object: mean over its scored frames, in percent. Global J and F: mean over all objects of all videos;
  J&F = (J + F) / 2.

The disk dilation is computed exactly through a Euclidean feature transform (a pixel is in the dilation when
its nearest boundary pixel lies at squared distance <= r^2), which equals a dilation with
`skimage.morphology.disk(r)` and zero padding (`cv2.dilate` defaults).

Every ground-truth video (or every one of `videos`) must have predictions: a missing video is an error,
never a score over the rest. Predicted videos without ground truth are reported and left out.

Run as `python -m sam2_jax.evaluation.vos_metrics --gt_root=GT --pred_root=PRED [--videos=a,b]`.
"""

import argparse
import csv
import io
import math
import multiprocessing
import os
import sys
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage

from sam2_jax.evaluation import io as vos_io

BOUNDARY_FRACTION = 0.008
RESULTS_CSV = "results.csv"


def boundary_radius(shape: Sequence[int]) -> int:
  """Tolerance (pixels) of the boundary match: ceil(0.008 * diagonal of an (H, W) frame)."""
  height, width = shape
  return math.ceil(BOUNDARY_FRACTION * math.sqrt(height * height + width * width))


def disk(radius: int) -> np.ndarray:
  """(2r+1, 2r+1) bool disk: offsets (dy, dx) with dy^2 + dx^2 <= r^2 (as `skimage.morphology.disk`)."""
  offsets = np.arange(-radius, radius + 1)
  return offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius * radius


def boundary_map(mask: np.ndarray) -> np.ndarray:
  """1-pixel boundary of a 2-D mask, offset half a pixel towards the origin (DAVIS `seg2bmap`)."""
  m = np.asarray(mask, bool)
  out = np.zeros_like(m)
  core = m[:-1, :-1]
  out[:-1, :-1] = (core != m[:-1, 1:]) | (core != m[1:, :-1]) | (core != m[1:, 1:])
  out[-1, :-1] = m[-1, :-1] != m[-1, 1:]
  out[:-1, -1] = m[:-1, -1] != m[1:, -1]
  return out


def dilate(bmap: np.ndarray, radius: int) -> np.ndarray:
  """Binary dilation of a 2-D map by `disk(radius)`, nothing outside the frame."""
  bmap = np.asarray(bmap, bool)
  if not bmap.any():
    return np.zeros_like(bmap)
  nearest = ndimage.distance_transform_edt(~bmap, return_distances=False, return_indices=True)
  grid = np.indices(bmap.shape)
  sq_dist = ((nearest - grid).astype(np.int64) ** 2).sum(axis=0)
  return sq_dist <= radius * radius


def region_similarity(pred: np.ndarray, gt: np.ndarray) -> float:
  """J of one frame: IoU of two bool masks, 1.0 when both are empty."""
  inter = int(np.count_nonzero(pred & gt))
  union = int(np.count_nonzero(pred)) + int(np.count_nonzero(gt)) - inter
  return 1.0 if union == 0 else inter / union


def boundary_f_measure(pred: np.ndarray, gt: np.ndarray, radius: int | None = None) -> float:
  """F of one frame for two bool masks; `radius` defaults to `boundary_radius(pred.shape)`."""
  if radius is None:
    radius = boundary_radius(pred.shape)
  pred_b = boundary_map(pred)
  gt_b = boundary_map(gt)
  n_pred = int(np.count_nonzero(pred_b))
  n_gt = int(np.count_nonzero(gt_b))
  if n_pred == 0 or n_gt == 0:
    return 1.0 if n_pred == n_gt else 0.0
  # Every boundary pixel lies inside the bounding box of both maps, so the dilations can be cropped to it.
  rows = np.flatnonzero((pred_b | gt_b).any(axis=1))
  cols = np.flatnonzero((pred_b | gt_b).any(axis=0))
  box = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
  pred_b, gt_b = pred_b[box], gt_b[box]
  precision = int(np.count_nonzero(pred_b & dilate(gt_b, radius))) / float(n_pred)
  recall = int(np.count_nonzero(gt_b & dilate(pred_b, radius))) / float(n_gt)
  if precision + recall == 0:
    return 0.0
  return 2 * precision * recall / (precision + recall)


def _mean(values: Sequence[float]) -> float:
  return float(np.mean(np.asarray(values, np.float64))) if len(values) else math.nan


@dataclass(frozen=True)
class ObjectScore:
  """J and F (percent) of one object, averaged over its `num_frames` scored frames."""
  j: float
  f: float
  num_frames: int

  @property
  def jf(self) -> float:
    return (self.j + self.f) / 2


class SequenceEvaluator:
  """Accumulates per-object J and F over the evaluated frames of one sequence of label maps.

  An object starts being scored at the first frame where it shows up in the ground truth or the prediction
  (frames before that count for nothing); only objects seen in the ground truth are reported.
  """

  def __init__(self):
    self._in_gt: set[int] = set()
    self._frames: dict[int, tuple[list[float], list[float]]] = {}

  def add_frame(self, pred: np.ndarray, gt: np.ndarray) -> None:
    """Scores one frame; `pred` and `gt` are 2-D integer label maps (0 = background) of one shape."""
    if pred.ndim != 2 or pred.shape != gt.shape:
      raise ValueError(f"Prediction and ground truth must be 2-D of one shape, got {pred.shape} and {gt.shape}.")
    gt_ids = vos_io.nonzero_ids(gt)
    self._in_gt.update(gt_ids)
    for obj_id in gt_ids + vos_io.nonzero_ids(pred):
      self._frames.setdefault(obj_id, ([], []))
    radius = boundary_radius(pred.shape)
    for obj_id, (js, fs) in self._frames.items():
      p = pred == obj_id
      g = gt == obj_id
      if not (p.any() or g.any()):
        js.append(1.0)
        fs.append(1.0)
        continue
      js.append(region_similarity(p, g))
      fs.append(boundary_f_measure(p, g, radius))

  def results(self) -> dict[int, ObjectScore]:
    """{object id: ObjectScore} for the objects found in the ground truth, by id."""
    return {
        obj_id: ObjectScore(_mean(js) * 100, _mean(fs) * 100, len(js))
        for obj_id in sorted(self._in_gt)
        for js, fs in [self._frames[obj_id]]
    }


@dataclass(frozen=True)
class VideoResult:
  """Per-object scores of one video; `j`, `f`, `jf` average its objects (NaN when it has none)."""
  name: str
  layout: str
  objects: dict[int, ObjectScore] = field(default_factory=dict)

  @property
  def j(self) -> float:
    return _mean([s.j for s in self.objects.values()])

  @property
  def f(self) -> float:
    return _mean([s.f for s in self.objects.values()])

  @property
  def jf(self) -> float:
    return (self.j + self.f) / 2


@dataclass(frozen=True)
class VOSResults:
  """Evaluation of a prediction folder: per-video results and the global object-averaged J, F, J&F (percent)."""
  videos: list[VideoResult]
  j: float
  f: float
  jf: float
  csv_path: str | None = None

  @property
  def num_objects(self) -> int:
    return sum(len(v.objects) for v in self.videos)

  @property
  def summary(self) -> str:
    """`J&F=<..> J=<..> F=<..>`, one decimal (the official summary's rounding)."""
    return f"J&F={self.jf:.1f} J={self.j:.1f} F={self.f:.1f}"


def _read_pair(gt_path: str, pred_path: str, binary: bool) -> tuple[np.ndarray, np.ndarray]:
  if not os.path.isfile(pred_path):
    raise ValueError(f"Prediction {pred_path!r} not found (needed for ground truth {gt_path!r}).")
  gt = vos_io.read_label_png(gt_path)
  pred = vos_io.read_label_png(pred_path)
  if gt.shape != pred.shape:
    raise ValueError(
        f"Shape mismatch: ground truth {gt_path!r} is {gt.shape}, prediction {pred_path!r} is {pred.shape}.")
  if binary:
    for path, array in ((gt_path, gt), (pred_path, pred)):
      if len(np.unique(array)) > 2:
        raise ValueError(f"{path!r} holds more than one object; the SA-V layout needs one binary mask per PNG.")
    gt = (gt > 0).astype(np.uint8)
    pred = (pred > 0).astype(np.uint8)
  return gt, pred


def _evaluate_frames(gt_dir: str, pred_dir: str, skip_first_and_last: bool, binary: bool) -> dict[int, ObjectScore]:
  """Scores the PNG frames of one ground-truth folder (a DAVIS video or an SA-V object) against `pred_dir`."""
  frames = vos_io.frames_in(gt_dir)
  if skip_first_and_last:
    frames = frames[1:-1]
  evaluator = SequenceEvaluator()
  for frame in frames:
    name = vos_io.frame_filename(frame)
    gt, pred = _read_pair(os.path.join(gt_dir, name), os.path.join(pred_dir, name), binary)
    evaluator.add_frame(pred, gt)
  return evaluator.results()


def evaluate_video(gt_root: str, pred_root: str, video: str, skip_first_and_last: bool = True) -> VideoResult:
  """Scores one video (either layout; the prediction must use the ground truth's layout)."""
  gt_dir = os.path.join(gt_root, video)
  pred_dir = os.path.join(pred_root, video)
  layout = vos_io.detect_layout(gt_dir)
  if not os.path.isdir(pred_dir) or not os.listdir(pred_dir):
    raise ValueError(f"No predictions for video {video!r} in {pred_root!r}.")
  pred_layout = vos_io.detect_layout(pred_dir)
  if pred_layout != layout:
    raise ValueError(
        f"Layout mismatch for video {video!r}: ground truth is {layout.upper()}, prediction is "
        f"{pred_layout.upper()} (DAVIS: {{video}}/{{frame}}.png; SA-V: {{video}}/{{obj:03d}}/{{frame}}.png).")
  if layout == vos_io.DAVIS:
    return VideoResult(video, layout, _evaluate_frames(gt_dir, pred_dir, skip_first_and_last, binary=False))
  objects = {}
  for obj_id, folder in vos_io.object_folders(gt_dir).items():
    scores = _evaluate_frames(
        os.path.join(gt_dir, folder), os.path.join(pred_dir, folder), skip_first_and_last, binary=True)
    if not scores:
      raise ValueError(
          f"Object {folder!r} of video {video!r} is empty in every evaluated ground-truth frame; the official "
          "evaluator cannot score it either.")
    objects[obj_id] = scores[1]
  return VideoResult(video, layout, objects)


def _evaluate_video_args(args: tuple[str, str, str, bool]) -> VideoResult:
  return evaluate_video(*args)


def _fmt(value: float) -> str:
  return "nan" if math.isnan(value) else f"{value:.6f}"


def results_csv(results: VOSResults) -> str:
  """CSV text: a global row, then for each video a video row followed by its object rows."""
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(["level", "video", "object", "num_frames", "J&F", "J", "F"])
  writer.writerow(["global", "", "", "", _fmt(results.jf), _fmt(results.j), _fmt(results.f)])
  for video in results.videos:
    writer.writerow(["video", video.name, "", "", _fmt(video.jf), _fmt(video.j), _fmt(video.f)])
    for obj_id, score in video.objects.items():
      writer.writerow(["object", video.name, obj_id, score.num_frames, _fmt(score.jf), _fmt(score.j), _fmt(score.f)])
  return buffer.getvalue()


def evaluate(
    gt_root: str,
    pred_root: str,
    skip_first_and_last: bool = True,
    strict: bool = False,
    num_processes: int = 1,
    write_csv: bool = True,
    videos: Sequence[str] | None = None,
) -> VOSResults:
  """Evaluates the predicted masks under `pred_root` against the ground truth under `gt_root`.

  Both folders hold one folder per video, in the DAVIS or the SA-V layout (see `sam2_jax.evaluation.io`).
  The videos scored are `videos` (None or empty: every ground-truth video, as the official evaluator); each
  must have ground truth and predictions, else ValueError names the unknown or missing ones. Predicted videos
  with no ground truth are left out with a warning on stderr (an error with `strict`); predicted videos not
  asked for are ignored. `pred_root` may not be or lie inside `gt_root`.
  `num_processes` > 1 scores videos in a pool of spawned processes (a calling script then needs the usual
  `if __name__ == "__main__":` guard). Unless `write_csv` is False, the scores are written (atomically) to
  `{pred_root}/results.csv`.
  """
  for name, root in (("Ground-truth", gt_root), ("Prediction", pred_root)):
    if not os.path.isdir(root):
      raise ValueError(f"{name} folder {root!r} does not exist or is not a directory.")
  if vos_io.is_within(pred_root, gt_root):
    raise ValueError(f"Prediction folder {pred_root!r} is or lies inside the ground-truth folder {gt_root!r}; "
                     "keep predictions in a separate folder.")
  if num_processes < 1:
    raise ValueError(f"num_processes must be at least 1, got {num_processes}.")
  videos = vos_io.select_videos(gt_root, videos)
  gt_videos = vos_io.list_videos(gt_root)
  pred_videos = vos_io.list_videos(pred_root)
  missing = [v for v in videos if v not in pred_videos]
  if missing:
    raise ValueError(f"No predictions in {pred_root!r} for {len(missing)} of the {len(videos)} videos to score: "
                     f"{missing}.")
  extra = sorted(set(pred_videos) - set(gt_videos))
  if extra and strict:
    raise ValueError(f"strict: predicted videos without ground truth in {gt_root!r}: {extra}.")
  if extra:
    print(f"warning: predicted videos without ground truth in {gt_root!r} are not scored: {extra}", file=sys.stderr)
  jobs = [(gt_root, pred_root, video, skip_first_and_last) for video in videos]
  if num_processes > 1 and len(jobs) > 1:
    context = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(min(num_processes, len(jobs)), mp_context=context) as pool:
      video_results = list(pool.map(_evaluate_video_args, jobs))
  else:
    video_results = [_evaluate_video_args(job) for job in jobs]
  all_j = [s.j for v in video_results for s in v.objects.values()]
  all_f = [s.f for v in video_results for s in v.objects.values()]
  if not all_j:
    raise ValueError(f"No ground-truth object appears in the evaluated frames of {gt_root!r}.")
  j = _mean(all_j)
  f = _mean(all_f)
  results = VOSResults(video_results, j, f, (j + f) / 2)
  if write_csv:
    path = os.path.join(pred_root, RESULTS_CSV)
    vos_io.atomic_write_bytes(path, results_csv(results).encode())
    results = replace(results, csv_path=path)
  return results


def main(argv: Sequence[str] | None = None) -> None:
  """Command line: prints the per-object table and the `J&F=.. J=.. F=..` summary.

  Bad input (a missing video, an unreadable PNG, ...) prints one `error: ...` line and exits with status 2.
  """
  parser = argparse.ArgumentParser(description="J&F evaluation of video object segmentation masks (SA-V rules).")
  parser.add_argument("--gt_root", required=True, help="Folder of ground-truth video folders.")
  parser.add_argument("--pred_root", required=True, help="Folder of predicted video folders (same layout).")
  parser.add_argument("--videos", type=lambda text: [v for v in text.split(",") if v], default=None,
                      help="Comma-separated videos to score (default: every ground-truth video).")
  parser.add_argument("-n", "--num_processes", type=int, default=1, help="Worker processes.")
  parser.add_argument("-s", "--strict", action="store_true", help="Also fail on predicted videos without GT.")
  parser.add_argument(
      "--do_not_skip_first_and_last_frame", action="store_true", help="Also score the first and last GT frames.")
  args = parser.parse_args(argv)
  try:
    results = evaluate(
        args.gt_root, args.pred_root, skip_first_and_last=not args.do_not_skip_first_and_last_frame,
        strict=args.strict, num_processes=args.num_processes, videos=args.videos)
  except ValueError as e:
    print("error: " + " ".join(str(e).split()), file=sys.stderr)
    sys.exit(2)
  print(results_csv(results), end="")
  print(f"Saved {results.csv_path}")
  print(results.summary)


if __name__ == "__main__":
  main()
