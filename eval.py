r"""Semi-supervised video object segmentation: run SAM 2 on a dataset, then score J, F and J&F.

Inference and scoring follow the official `tools/vos_inference.py` and SA-V evaluator:

  python eval.py --data_root=DAVIS --checkpoint=sam2.1_hiera_tiny.pt --output_dir=preds
      DAVIS layout: JPEGImages/<video>/*.jpg and palette PNGs Annotations/<video>/*.png.
  python eval.py --data_root=sav_val --checkpoint=... --output_dir=preds
      SA-V layout: JPEGImages_24fps/<video>/*.jpg and Annotations_6fps/<video>/<obj>/*.png.
  python eval.py --gt_root=Annotations --pred_root=preds      # score existing predictions only

The masks of the first annotated frame are the prompts (`add_new_mask`) and one forward
propagation tracks all objects; with --track_object_appearing_later_in_video each object starts
from its first annotated frame instead and the per-object results are merged. Predictions go
to --output_dir in the input layout (each video written to a hidden folder, renamed when
complete). Every scoring run ends with the line `J&F=<value> J=<value> F=<value>` (percent)
and writes results.csv into the prediction folder. --visualize adds an MP4 per video.
"""

import os
import shutil
import sys

import numpy as np
from absl import app
from absl import flags

from sam2_jax.evaluation import io as vos_io
from sam2_jax.evaluation import vos_metrics
from sam2_jax.predictors.video_frames import list_jpeg_frames

flags.DEFINE_string("data_root", None, "Dataset folder in the DAVIS or SA-V layout.")
flags.DEFINE_string("output_dir", None, "Where predicted masks (and results.csv) are written.")
flags.DEFINE_string("gt_root", None, "Scoring only: ground-truth annotation folder.")
flags.DEFINE_string("pred_root", None, "Scoring only: prediction folder (same layout as --gt_root).")
flags.DEFINE_string("config", "sam2.1_hiera_b+", "Model config name.")
flags.DEFINE_string("checkpoint", None, "Official .pt or converted checkpoint (None: random weights).")
flags.DEFINE_integer("image_size", None, "Override of the model's input size.")
flags.DEFINE_list("videos", None, "Only these videos (default: all).")
flags.DEFINE_float("score_thresh", 0.0, "Mask logit threshold.")
flags.DEFINE_bool("apply_postprocessing", False, "Official post-processing (off in vos_inference.py by default).")
flags.DEFINE_bool("track_object_appearing_later_in_video", False, "Start each object at its first annotation.")
flags.DEFINE_bool("do_not_skip_first_and_last_frame", False, "Also score the first and last annotated frames.")
flags.DEFINE_bool("visualize", False, "Write an MP4 per video with the predicted masks overlaid.")
flags.DEFINE_integer("num_processes", 1, "Processes for scoring.")
FLAGS = flags.FLAGS

LAYOUT_FOLDERS = {vos_io.DAVIS: ("JPEGImages", "Annotations"), vos_io.SAV: ("JPEGImages_24fps", "Annotations_6fps")}


def dataset_layout(data_root: str) -> tuple[str, str, str]:
  """(layout, frames folder, annotations folder) of a dataset root."""
  for layout, (frames, annotations) in LAYOUT_FOLDERS.items():
    if os.path.isdir(os.path.join(data_root, frames)) and os.path.isdir(os.path.join(data_root, annotations)):
      return layout, os.path.join(data_root, frames), os.path.join(data_root, annotations)
  raise ValueError(f"{data_root!r} is not a dataset folder: expected JPEGImages/ + Annotations/ (DAVIS) or "
                   "JPEGImages_24fps/ + Annotations_6fps/ (SA-V).")


def first_masks(ann_root: str, video: str) -> dict[int, tuple[int, np.ndarray]]:
  """{object id: (frame index, mask)} of each object's first non-empty annotation."""
  found = {}
  for name in vos_io.list_frames(ann_root, video):
    for obj_id, mask in vos_io.read_frame_masks(ann_root, video, name).items():
      if obj_id not in found and mask.any():
        found[obj_id] = (int(name), mask)
  return found


def predict_video(predictor, frames_dir: str, ann_root: str, video: str, later_objects: bool,
                  score_thresh: float) -> tuple[list[str], dict[int, dict[int, np.ndarray]]]:
  """Runs the tracker on one video; returns (frame names, {frame: {obj_id: bool mask}})."""
  frame_paths = list_jpeg_frames(os.path.join(frames_dir, video))
  names = [os.path.splitext(os.path.basename(p))[0] for p in frame_paths]
  index_of = {int(n): i for i, n in enumerate(names)}
  prompts = first_masks(ann_root, video)
  if not prompts:
    raise ValueError(f"Video {video!r} has no annotated object in {ann_root!r}.")
  state = predictor.init_state(os.path.join(frames_dir, video))
  h, w = state["video_height"], state["video_width"]
  logits = {i: {} for i in range(len(names))}
  if later_objects:
    groups = [{obj_id: p} for obj_id, p in sorted(prompts.items())]
  else:
    first = min(t for t, _ in prompts.values())
    groups = [{obj_id: (t, m) for obj_id, (t, m) in prompts.items() if t == first}]
  for group in groups:
    predictor.reset_state(state)
    for obj_id, (t, mask) in group.items():
      if mask.shape != (h, w):
        raise ValueError(f"Annotation of object {obj_id} in {video!r} is {mask.shape}, frames are {(h, w)}.")
      predictor.add_new_mask(state, index_of[t], obj_id, mask)
    for i, obj_ids, masks in predictor.propagate_in_video(state):
      for obj_id, m in zip(obj_ids, masks):
        logits[i][obj_id] = m[0]
  all_ids = sorted({o for per_frame in logits.values() for o in per_frame})
  results = {}
  for i in range(len(names)):
    stack = np.stack([logits[i].get(o, np.full((h, w), -1024.0, np.float32)) for o in all_ids])
    if later_objects and predictor.non_overlap_masks and len(all_ids) > 1:
      keep = np.argmax(stack, axis=0)[None] == np.arange(len(all_ids))[:, None, None]
      stack = np.where(keep, stack, np.minimum(stack, -10.0))
    results[i] = {o: stack[k] > score_thresh for k, o in enumerate(all_ids)}
  return names, results


def write_video_masks(out_root: str, video: str, names, results, layout: str, shape) -> None:
  """Writes a video's predictions into a hidden folder, then renames it into place."""
  tmp_root = os.path.join(out_root, f".{video}.partial")
  shutil.rmtree(tmp_root, ignore_errors=True)
  os.makedirs(tmp_root)
  for i, name in enumerate(names):
    vos_io.write_frame_masks(tmp_root, "", name, results[i], layout, shape=shape)
  final = os.path.join(out_root, video)
  shutil.rmtree(final, ignore_errors=True)
  os.replace(tmp_root, final)


def write_overlay_mp4(path: str, frames_dir: str, names, results, fps: int = 24) -> None:
  """An MP4 of the frames with each object's mask blended in its DAVIS palette colour."""
  import av  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  palette = np.frombuffer(vos_io.davis_palette(), np.uint8).reshape(256, 3).astype(np.float32)
  tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.partial.mp4")
  with av.open(tmp, mode="w") as container:
    stream = None
    for i, name in enumerate(names):
      frame = np.asarray(Image.open(os.path.join(frames_dir, f"{name}.jpg")).convert("RGB"), np.float32)
      for obj_id, mask in results[i].items():
        frame[mask] = 0.5 * frame[mask] + 0.5 * palette[obj_id % 256]
      if stream is None:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = (frame.shape[0] // 2) * 2, (frame.shape[1] // 2) * 2
        stream.pix_fmt = "yuv420p"
      image = frame[:stream.height, :stream.width].astype(np.uint8)
      container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
    container.mux(stream.encode())
  os.replace(tmp, path)


def run_inference() -> str:
  """Predicts every video of --data_root into --output_dir; returns the annotation root."""
  from sam2_jax.predictors.video import build_sam2_video_predictor  # pylint: disable=g-import-not-at-top
  layout, frames_dir, ann_root = dataset_layout(FLAGS.data_root)
  overrides = {} if FLAGS.image_size is None else {"image_size": FLAGS.image_size}
  if FLAGS.checkpoint is None:
    print("warning: no --checkpoint given, the model has random weights", file=sys.stderr)
  predictor = build_sam2_video_predictor(FLAGS.config, FLAGS.checkpoint, apply_postprocessing=FLAGS.apply_postprocessing,
                                         non_overlap_masks=layout == vos_io.DAVIS, **overrides)
  videos = FLAGS.videos or vos_io.list_videos(ann_root)
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  for video in videos:
    names, results = predict_video(predictor, frames_dir, ann_root, video,
                                   FLAGS.track_object_appearing_later_in_video, FLAGS.score_thresh)
    state_shape = next(iter(results[0].values())).shape
    write_video_masks(FLAGS.output_dir, video, names, results, layout, state_shape)
    if FLAGS.visualize:
      write_overlay_mp4(os.path.join(FLAGS.output_dir, f"{video}.mp4"), os.path.join(frames_dir, video), names,
                        results)
  return ann_root


def main(argv):
  del argv
  if FLAGS.gt_root or FLAGS.pred_root:
    if not (FLAGS.gt_root and FLAGS.pred_root):
      raise app.UsageError("Scoring needs both --gt_root and --pred_root.")
    gt_root, pred_root = FLAGS.gt_root, FLAGS.pred_root
  else:
    if not (FLAGS.data_root and FLAGS.output_dir):
      raise app.UsageError("Give --data_root and --output_dir (inference + scoring), or --gt_root and --pred_root.")
    gt_root, pred_root = run_inference(), FLAGS.output_dir
  results = vos_metrics.evaluate(gt_root, pred_root, skip_first_and_last=not FLAGS.do_not_skip_first_and_last_frame,
                                 num_processes=FLAGS.num_processes)
  print(vos_metrics.results_csv(results), end="")
  print(results.summary)


if __name__ == "__main__":
  try:
    app.run(main)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
