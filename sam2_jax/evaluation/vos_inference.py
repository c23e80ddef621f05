"""Semi-supervised VOS inference as the official `tools/vos_inference.py`: first-frame masks as
prompts, one propagation (or one per object for objects appearing later), PNGs in the input layout."""

import os
import shutil
from collections.abc import Iterable, Iterator

import numpy as np
from PIL import Image

from sam2_jax.evaluation import io as vos_io
from sam2_jax.evaluation import visualize
from sam2_jax.modeling.sam2 import NO_OBJ_SCORE, non_overlapping
from sam2_jax.predictors.video_frames import list_jpeg_frames, write_mp4

def check_output_dir(output_dir: str, frames_dir: str, ann_root: str) -> None:
  """Refuses an output folder that is, lies inside or contains the dataset's frames or annotations folder."""
  for what, folder in (("annotations", ann_root), ("frames", frames_dir)):
    if vos_io.is_within(output_dir, folder):
      relation = "is" if vos_io.is_within(folder, output_dir) else "lies inside"
    elif vos_io.is_within(folder, output_dir):
      relation = "contains"
    else:
      continue
    raise ValueError(f"Output folder {output_dir!r} {relation} the dataset's {what} folder {folder!r}: predictions "
                     f"written there could overwrite the {what}; choose a folder outside the dataset.")


def select_videos(frames_dir: str, ann_root: str, videos: list[str] | None = None) -> list[str]:
  """The videos to predict: `videos` (None or empty: every annotated one), each with annotations and frames."""
  videos = vos_io.select_videos(ann_root, videos)
  no_frames = [v for v in videos if not os.path.isdir(os.path.join(frames_dir, v))]
  if no_frames:
    raise ValueError(f"Video(s) {no_frames} have annotations in {ann_root!r} but no frame folder in {frames_dir!r}.")
  return videos


def first_masks(ann_root: str, video: str) -> dict[int, tuple[int, np.ndarray]]:
  """{object id: (frame index, mask)} of each object's first non-empty annotation."""
  found = {}
  for name in vos_io.list_frames(ann_root, video):
    for obj_id, mask in vos_io.read_frame_masks(ann_root, video, name).items():
      if obj_id not in found and mask.any():
        found[obj_id] = (int(name), mask)
  return found


def video_prompts(frames_dir: str, ann_root: str, video: str, later_objects: bool
                  ) -> tuple[list[str], list[str], dict[int, dict[int, np.ndarray]]]:
  """(frame paths, frame names, {frame index: {obj_id: mask}}) of a video's prompts: the masks of the first
  annotated frame, or with `later_objects` each object's first annotation."""
  frame_paths = list_jpeg_frames(os.path.join(frames_dir, video))
  names = [os.path.splitext(os.path.basename(p))[0] for p in frame_paths]
  index_of = {int(n): i for i, n in enumerate(names)}
  prompts = first_masks(ann_root, video)
  if not prompts:
    raise ValueError(f"Video {video!r} has no annotated object in {ann_root!r}.")
  unmatched = sorted({t for t, _ in prompts.values()} - set(index_of))
  if unmatched:
    raise ValueError(f"Prompt frame(s) {unmatched} of video {video!r} in {ann_root!r} have no JPEG frame in "
                     f"{os.path.join(frames_dir, video)!r}.")
  first = min(t for t, _ in prompts.values())
  by_frame = {}
  for obj_id, (t, mask) in sorted(prompts.items()):
    if later_objects or t == first:
      by_frame.setdefault(index_of[t], {})[obj_id] = mask
  return frame_paths, names, by_frame


def _check_prompt(video: str, obj_id: int, mask: np.ndarray, shape: tuple[int, int]) -> None:
  if mask.shape != shape:
    raise ValueError(f"Annotation of object {obj_id} in {video!r} is {mask.shape}, frames are {shape}.")


def predict_video(predictor, frames_dir: str, ann_root: str, video: str, later_objects: bool,
                  score_thresh: float) -> tuple[list[str], dict[int, dict[int, np.ndarray]]]:
  """Runs `SAM2VideoPredictor` on one video; returns (frame names, {frame: {obj_id: bool mask}})."""
  _, names, prompts = video_prompts(frames_dir, ann_root, video, later_objects)
  state = predictor.init_state(os.path.join(frames_dir, video))
  h, w = state["video_height"], state["video_width"]
  logits = {i: {} for i in range(len(names))}
  groups = [{t: {o: m}} for t, per_frame in prompts.items() for o, m in per_frame.items()] if later_objects else [
      prompts]
  for group in groups:
    predictor.reset_state(state)
    for t, per_frame in group.items():
      for obj_id, mask in per_frame.items():
        _check_prompt(video, obj_id, mask, (h, w))
        predictor.add_new_mask(state, t, obj_id, mask)
    for i, obj_ids, masks in predictor.propagate_in_video(state):
      for obj_id, m in zip(obj_ids, masks):
        logits[i][obj_id] = m[0]
  all_ids = sorted({o for per_frame in logits.values() for o in per_frame})
  results = {}
  for i in range(len(names)):
    stack = np.stack([logits[i].get(o, np.full((h, w), NO_OBJ_SCORE, np.float32)) for o in all_ids])
    if later_objects and predictor.non_overlap_masks:
      stack = np.asarray(non_overlapping(stack))
    results[i] = {o: stack[k] > score_thresh for k, o in enumerate(all_ids)}
  return names, results


def stream_video(camera, frames_dir: str, ann_root: str, video: str, later_objects: bool,
                 score_thresh: float) -> tuple[list[str], Iterator[dict[int, np.ndarray]]]:
  """`predict_video` as a stream (`SAM2CameraPredictor`): frames are read, tracked and handed on one at a
  time; each object starts on its prompt frame. Returns (frame names, an iterator of {obj_id: bool mask}
  per frame, every prompted object in each, empty before it starts)."""
  frame_paths, names, prompts = video_prompts(frames_dir, ann_root, video, later_objects)
  all_ids = sorted({o for per_frame in prompts.values() for o in per_frame})

  def masks() -> Iterator[dict[int, np.ndarray]]:
    for i, path in enumerate(frame_paths):
      image = np.asarray(Image.open(path).convert("RGB"))
      if i == 0:
        camera.load_first_frame(image, num_frames=len(frame_paths))
        obj_ids, logits = [], None
      else:
        obj_ids, logits = camera.track(image)
      for obj_id, mask in prompts.get(i, {}).items():
        _check_prompt(video, obj_id, mask, image.shape[:2])
        obj_ids, logits = camera.add_new_prompt(i, obj_id, mask=mask)
      found = {o: logits[k, 0] > score_thresh for k, o in enumerate(obj_ids)}
      empty = np.zeros(image.shape[:2], bool)
      yield {o: found.get(o, empty) for o in all_ids}

  return names, masks()


def write_video_masks(out_root: str, video: str, names: list[str], masks: Iterable[dict[int, np.ndarray]],
                      layout: str, shape: tuple[int, int] | None = None) -> None:
  """Writes a video's predictions ({obj_id: mask} per frame, in order; consumed as they come) into a hidden
  folder, then renames it into place (`shape`: the frames' (H, W), for frames without objects)."""
  tmp_root = os.path.join(out_root, f".{video}.partial")
  shutil.rmtree(tmp_root, ignore_errors=True)
  os.makedirs(tmp_root)
  for name, frame_masks in zip(names, masks, strict=True):
    vos_io.write_frame_masks(tmp_root, "", name, frame_masks, layout, shape=shape)
  final = os.path.join(out_root, video)
  shutil.rmtree(final, ignore_errors=True)
  os.replace(tmp_root, final)


def copy_first_frame(ann_root: str, video: str, names: list[str]) -> dict[int, dict[int, np.ndarray]]:
  """The baseline every tracker must beat: each object's first annotated mask on every later frame."""
  prompts = first_masks(ann_root, video)
  index_of = {int(n): i for i, n in enumerate(names)}
  empty = {o: np.zeros_like(m) for o, (_, m) in prompts.items()}
  return {i: {o: (m if i >= index_of[t] else empty[o]) for o, (t, m) in prompts.items()} for i in range(len(names))}


def write_overlay_mp4(path: str, frames_dir: str, pred_root: str, video: str, fps: int = 24) -> None:
  """An MP4 of a video's frames with each object's predicted mask (read back from `pred_root`) blended in its
  DAVIS palette colour."""
  names = vos_io.list_frames(pred_root, video)
  frames = (np.asarray(Image.open(os.path.join(frames_dir, f"{name}.jpg")).convert("RGB")) for name in names)
  write_mp4(path, (visualize.overlay(frame, vos_io.read_frame_masks(pred_root, video, name).items())
                   for name, frame in zip(names, frames)), fps)


def evaluate_tracker(predictor, data_root: str, output_dir: str, max_videos: int | None = None,
                     score_thresh: float = 0.0) -> tuple[float, float]:
  """(J&F of `predictor`, J&F of copying the first frame) in percent on a VOS dataset folder."""
  from sam2_jax.evaluation import vos_metrics  # pylint: disable=g-import-not-at-top
  layout, frames_dir, ann_root = vos_io.dataset_layout(data_root)
  check_output_dir(output_dir, frames_dir, ann_root)
  videos = select_videos(frames_dir, ann_root)[:max_videos]
  scores = []
  for kind in ("model", "copy_first_frame"):
    out = os.path.join(output_dir, kind)
    os.makedirs(out, exist_ok=True)
    for video in videos:
      if kind == "model":
        names, results = predict_video(predictor, frames_dir, ann_root, video, False, score_thresh)
      else:
        names = [os.path.splitext(os.path.basename(p))[0] for p in list_jpeg_frames(os.path.join(frames_dir, video))]
        results = copy_first_frame(ann_root, video, names)
      shape = next(iter(results[0].values())).shape
      write_video_masks(out, video, names, (results[i] for i in range(len(names))), layout, shape)
    scores.append(vos_metrics.evaluate(ann_root, out, videos=videos).jf)
  return scores[0], scores[1]
