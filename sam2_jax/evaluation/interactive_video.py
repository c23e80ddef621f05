"""Interactive video segmentation as the SAM 2 paper evaluates it (§6.1.1, appendix E.1.2), offline and online.

Each ground-truth object is tracked on its own (one object per predictor state). On an interacted frame
3 clicks are added one by one (`add_new_points_or_box(..., clear_old_points=False)`), each on the errors
of the prediction the previous one gave, by the rule of `sam2_jax.evaluation.clicks.next_click`: the first
click of the first interacted frame (the object's first non-empty annotation, with no prediction yet) is
at the centre of the ground-truth mask, every other one at the centre of the deeper error region
(positive in the false negatives, negative in the false positives). A perfect frame gets no more clicks.

- offline: after each interacted frame the whole video is propagated from all prompts so far (forward
  from the earliest prompted frame, then in reverse from it when it is not frame 0); the next interacted
  frame is the annotated frame with the lowest IoU to the ground truth (ties: the earliest). Interaction
  ends after `max_interacted_frames` frames, or when every annotated frame is perfect.
- online: one forward pass from the first interacted frame; it pauses at the first annotated frame after
  the last interacted one whose IoU is under 0.75, adds 3 clicks there and resumes, until
  `max_interacted_frames` frames have been interacted with. Frames before the first one stay empty.
  `SAM2VideoPredictor` propagates offline, so a pause is made of two passes: the pass runs to the end of
  the video (its result is the video as it ends when the annotator stops after k frames, scored as
  J&F@k), the clicks are added on the paused frame, and `propagate_in_video(start_frame_idx=paused frame)`
  resumes there. The outputs of earlier frames, the only ones the clicks and the resumed pass read (as
  memory), are those of the pass up to the pause, and every later frame is recomputed, so this equals
  stopping the pass at the paused frame.

Corrected frames must become conditioning frames, else the next pass re-tracks them and drops the clicks
(as the official predictor would): the predictor needs `add_all_frames_to_correct_as_cond=True`, as in
SAM 2's training configs.

J and F are the VOS task's (`vos_metrics.SequenceEvaluator`), over all annotated frames of the object (no
frame is given as ground truth here, so none is skipped); J&F@k is the object's J&F after k interacted
frames (the last value carries forward when fewer were needed), averaged over objects. The annotation
time after k interacted frames (paper: T_loc = 1 s to locate an object on a frame, T_click = 1.5 s per
click, T_exam = 30 s to examine 300 frames), for a video of N frames whose interacted frame i got c_i
clicks:
  offline: sum_{i<=k} (T_loc + c_i T_click) + k * T_exam * N / 300  (the video is examined after each pass
           to find the next frame);
  online:  sum_{i<=k} (T_loc + c_i T_click) + T_exam * N / 300      (one viewing, paused to click),
averaged over objects like J&F.
"""

import dataclasses
import io
import json
import os
from collections.abc import Iterator, Sequence

import numpy as np
from PIL import Image

from sam2_jax.evaluation import clicks
from sam2_jax.evaluation import io as vos_io
from sam2_jax.evaluation import vos_metrics
from sam2_jax.predictors.video_frames import list_jpeg_frames

MODES = ("offline", "online")
CLICKS_PER_FRAME = 3
ONLINE_IOU_THRESHOLD = 0.75
T_LOC, T_CLICK, T_EXAM, EXAM_FRAMES = 1.0, 1.5, 30.0, 300
SUMMARY_JSON = "interactive_video_summary.json"
PLOT_PNG = "interactive_video.png"


@dataclasses.dataclass
class VideoObject:
  """One ground-truth object of a video: its masks on the annotated frames (frame index -> bool (H, W))."""
  video: str
  obj_id: int
  num_frames: int
  gt: dict[int, np.ndarray]

  @property
  def first_frame(self) -> int:
    """The frame of the object's first non-empty annotation."""
    return min(t for t, mask in self.gt.items() if mask.any())


@dataclasses.dataclass
class ObjectRun:
  """One object in one mode: the interacted frames, the clicks (x, y, label) on each, J&F (percent) after each."""
  frames: list[int] = dataclasses.field(default_factory=list)
  clicks: list[list[tuple[int, int, int]]] = dataclasses.field(default_factory=list)
  jf: list[float] = dataclasses.field(default_factory=list)


def read_video_objects(frames_dir: str, ann_root: str, video: str) -> list[VideoObject]:
  """The objects of a video with a non-empty annotation, by id; frames are matched by their integer names."""
  frame_paths = list_jpeg_frames(os.path.join(frames_dir, video))
  index_of = {int(os.path.splitext(os.path.basename(p))[0]): i for i, p in enumerate(frame_paths)}
  with Image.open(frame_paths[0]) as image:
    shape = image.size[::-1]
  sav = vos_io.detect_layout(os.path.join(ann_root, video)) == vos_io.SAV
  frames = {}
  for name in vos_io.list_frames(ann_root, video):
    if int(name) not in index_of:
      raise ValueError(f"Annotated frame {name!r} of video {video!r} has no JPEG frame in "
                       f"{os.path.join(frames_dir, video)!r}.")
    frames[index_of[int(name)]] = masks = vos_io.read_frame_masks(ann_root, video, name)
    for mask in masks.values():
      if mask.shape != shape:
        raise ValueError(f"Annotation {name!r} of video {video!r} is {mask.shape}, its frames are {shape}.")
  gts = {}
  for obj_id in sorted({obj_id for masks in frames.values() for obj_id in masks}):
    # SA-V: the frames with a file for the object; DAVIS: every annotated frame, empty where the id is absent.
    gts[obj_id] = {t: masks.get(obj_id, np.zeros(shape, bool)) for t, masks in sorted(frames.items())
                   if obj_id in masks or not sav}
  return [VideoObject(video, obj_id, len(frame_paths), gt)
          for obj_id, gt in gts.items() if any(m.any() for m in gt.values())]


def object_jf(obj: VideoObject, preds: dict[int, np.ndarray]) -> float:
  """J&F (percent) of `preds` (frame index -> bool mask; missing frames are empty) over the annotated frames."""
  evaluator = vos_metrics.SequenceEvaluator()
  for t, gt in obj.gt.items():
    evaluator.add_frame(preds.get(t, np.zeros_like(gt)).astype(np.uint8), gt.astype(np.uint8))
  return evaluator.results()[1].jf


def _mask(obj_ids: list, logits: np.ndarray, obj_id: int, score_thresh: float) -> np.ndarray:
  """The object's bool mask from a predictor output (n_obj, 1, H, W) of video-resolution logits."""
  return np.asarray(logits[obj_ids.index(obj_id), 0]) > score_thresh


def click_frame(predictor, state, obj: VideoObject, frame: int, pred: np.ndarray | None,
                score_thresh: float = 0.0) -> list[tuple[int, int, int]]:
  """Adds up to 3 clicks on `frame`, each correcting the prediction after the previous ones; returns them.

  `pred` is the current prediction on the frame, None before any (the first click then goes to the GT centre).
  """
  placed = []
  for _ in range(CLICKS_PER_FRAME):
    click = clicks.next_click(obj.gt[frame], pred)
    if click is None:  # the frame is perfect
      break
    x, y, label = click
    _, obj_ids, logits = predictor.add_new_points_or_box(state, frame, obj.obj_id, points=[[x, y]], labels=[label],
                                                         clear_old_points=False)
    pred = _mask(obj_ids, logits, obj.obj_id, score_thresh)
    placed.append(click)
  return placed


def _track(predictor, state, obj: VideoObject, start: int, reverse: bool,
           score_thresh: float) -> Iterator[tuple[int, np.ndarray]]:
  """(frame index, bool mask) of each annotated frame one propagation from `start` yields."""
  for t, obj_ids, logits in predictor.propagate_in_video(state, start_frame_idx=start, reverse=reverse):
    if t in obj.gt:
      yield t, _mask(obj_ids, logits, obj.obj_id, score_thresh)


def run_offline(predictor, state, obj: VideoObject, max_interacted_frames: int = 8,
                score_thresh: float = 0.0) -> ObjectRun:
  """The offline protocol for one object (see the module docstring) on a predictor state it resets."""
  predictor.reset_state(state)
  run, preds, frame = ObjectRun(), None, obj.first_frame
  while len(run.frames) < max_interacted_frames:
    placed = click_frame(predictor, state, obj, frame, None if preds is None else preds[frame], score_thresh)
    run.frames.append(frame)
    run.clicks.append(placed)
    start = min(run.frames)
    preds = dict(_track(predictor, state, obj, start, False, score_thresh))
    if start > 0:
      preds.update(_track(predictor, state, obj, start, True, score_thresh))
    run.jf.append(object_jf(obj, preds))
    ious = {t: clicks.mask_iou(preds.get(t, np.zeros_like(gt)), gt) for t, gt in obj.gt.items()}
    frame = min(ious, key=lambda t: (ious[t], t))  # the worst annotated frame, the earliest on a tie
    if ious[frame] == 1.0:
      break  # every annotated frame is perfect
  return run


def run_online(predictor, state, obj: VideoObject, max_interacted_frames: int = 8, score_thresh: float = 0.0,
               iou_threshold: float = ONLINE_IOU_THRESHOLD) -> ObjectRun:
  """The online protocol for one object (see the module docstring) on a predictor state it resets."""
  predictor.reset_state(state)
  run, preds, frame, pred = ObjectRun(), {}, obj.first_frame, None
  while True:
    run.clicks.append(click_frame(predictor, state, obj, frame, pred, score_thresh))
    run.frames.append(frame)
    pause = None
    for t, mask in _track(predictor, state, obj, frame, False, score_thresh):
      preds[t] = mask  # frames before `frame` keep the outputs of the passes before the pause
      if (pause is None and t > frame and len(run.frames) < max_interacted_frames
          and clicks.mask_iou(mask, obj.gt[t]) < iou_threshold):
        pause = t
    run.jf.append(object_jf(obj, preds))
    if pause is None:
      return run
    frame, pred = pause, preds[pause]


def annotation_times(mode: str, run: ObjectRun, num_frames: int) -> list[float]:
  """Seconds of simulated annotation after each interacted frame of `run` (formula: module docstring)."""
  exam = T_EXAM * num_frames / EXAM_FRAMES
  total, times = (exam if mode == "online" else 0.0), []
  for placed in run.clicks:
    total += T_LOC + len(placed) * T_CLICK + (exam if mode == "offline" else 0.0)
    times.append(total)
  return times


def carry_forward(values: Sequence[float], length: int) -> list[float]:
  """`values` extended to `length` by repeating the last one."""
  return list(values) + [values[-1]] * (length - len(values))


RUNNERS = {"offline": run_offline, "online": run_online}


def evaluate(predictor, frames_dir: str, ann_root: str, videos: Sequence[str], output_dir: str,
             modes: Sequence[str] = MODES, max_interacted_frames: int = 8, score_thresh: float = 0.0) -> dict:
  """Runs `modes` on every object of `videos`; writes the JSON summary and the plot; returns the summary.

  The summary: per mode, rows {"interacted_frames": k, "J&F": .., "annotation_time_s": ..} (means over
  objects), and per object its interacted frames, clicks, J&F@k and time@k.
  """
  if not getattr(predictor, "add_all_frames_to_correct_as_cond", False):
    raise ValueError("Interactive video evaluation needs a predictor built with "
                     "add_all_frames_to_correct_as_cond=True (else later passes drop the corrections).")
  unknown = [m for m in modes if m not in RUNNERS]
  if unknown or not modes or max_interacted_frames < 1:
    raise ValueError(f"modes must be a non-empty subset of {MODES} (got {list(modes)}) and max_interacted_frames "
                     f"at least 1 (got {max_interacted_frames}).")
  objects = []
  for video in videos:
    video_objects = read_video_objects(frames_dir, ann_root, video)
    if not video_objects:
      continue
    state = predictor.init_state(os.path.join(frames_dir, video))
    for obj in video_objects:
      for mode in modes:
        run = RUNNERS[mode](predictor, state, obj, max_interacted_frames, score_thresh)
        objects.append(dict(video=video, object=obj.obj_id, mode=mode, num_frames=obj.num_frames,
                            interacted_frames=run.frames, clicks=[[list(c) for c in p] for p in run.clicks],
                            jf=carry_forward(run.jf, max_interacted_frames),
                            annotation_time_s=carry_forward(annotation_times(mode, run, obj.num_frames),
                                                            max_interacted_frames)))
  if not objects:
    raise ValueError(f"No annotated object in the videos {list(videos)} of {ann_root!r}.")
  summary = {"num_videos": len(videos), "num_objects": len(objects) // len(modes),
             "max_interacted_frames": max_interacted_frames, "clicks_per_frame": CLICKS_PER_FRAME,
             "online_iou_threshold": ONLINE_IOU_THRESHOLD,
             "time_model_s": {"T_loc": T_LOC, "T_click": T_CLICK, "T_exam_per_300_frames": T_EXAM}, "modes": {}}
  for mode in modes:
    rows = [o for o in objects if o["mode"] == mode]
    jf = np.mean([o["jf"] for o in rows], axis=0)
    times = np.mean([o["annotation_time_s"] for o in rows], axis=0)
    summary["modes"][mode] = [{"interacted_frames": k + 1, "J&F": float(jf[k]), "annotation_time_s": float(times[k])}
                              for k in range(max_interacted_frames)]
  summary["objects"] = objects
  vos_io.atomic_write_bytes(os.path.join(output_dir, SUMMARY_JSON), json.dumps(summary, indent=2).encode())
  vos_io.atomic_write_bytes(os.path.join(output_dir, PLOT_PNG), plot_png(summary))
  return summary


def summary_line(summary: dict, mode: str) -> str:
  """`interactive mode=<mode> J&F@1=.. ... J&F@K=..` (percent, one decimal)."""
  values = " ".join(f"J&F@{row['interacted_frames']}={row['J&F']:.1f}" for row in summary["modes"][mode])
  return f"interactive mode={mode} {values}"


def plot_png(summary: dict) -> bytes:
  """A PNG of J&F against interacted frames and against annotation time, one curve per mode."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, (ax_frames, ax_time) = plt.subplots(1, 2, figsize=(10, 3.5))
  for mode, rows in summary["modes"].items():
    jf = [r["J&F"] for r in rows]
    ax_frames.plot([r["interacted_frames"] for r in rows], jf, "o-", label=mode)
    ax_time.plot([r["annotation_time_s"] for r in rows], jf, "o-", label=mode)
  ax_frames.set(xlabel="interacted frames", ylabel="J&F (%)", title="J&F after k interacted frames",
                xticks=range(1, summary["max_interacted_frames"] + 1))
  ax_time.set(xlabel="annotation time (s)", ylabel="J&F (%)", title="J&F against annotation time")
  for ax in (ax_frames, ax_time):
    ax.legend()
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=80)
  plt.close(fig)
  return buffer.getvalue()
