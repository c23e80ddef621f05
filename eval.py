r"""Semi-supervised VOS (J, F, J&F), interactive image (mIoU) or interactive video (J&F) segmentation with SAM 2.

Inference and scoring follow the official `tools/vos_inference.py` and SA-V evaluator:

  python eval.py --data_root=DAVIS --checkpoint=sam2.1_hiera_tiny.pt --output_dir=preds
      DAVIS layout: JPEGImages/<video>/*.jpg and palette PNGs Annotations/<video>/*.png.
  python eval.py --data_root=sav_val --checkpoint=... --output_dir=preds
      SA-V layout: JPEGImages_24fps/<video>/*.jpg and Annotations_6fps/<video>/<obj>/*.png.
  python eval.py --gt_root=Annotations --pred_root=preds      # score existing predictions only

The masks of the first annotated frame are the prompts (`add_new_mask`) and one forward
propagation tracks all objects; with --track_object_appearing_later_in_video each object starts
from its first annotated frame instead. Each video streams through `SAM2CameraPredictor`: frames
are read, tracked and their masks written one at a time, so memory stays flat however long the
video (--nostream: `SAM2VideoPredictor`, with the same masks). Predictions go to --output_dir in
the input layout (each video written to a hidden folder, renamed when complete). Every scoring run ends with the line `J&F=<value> J=<value> F=<value>` (percent)
and writes results.csv into the prediction folder. --visualize adds an MP4 per video.

The videos scored are those of --videos, else every ground-truth video; each must have predictions (a
missing one is an error, not a score over the rest), and other videos found in the prediction folder, such
as those left by an earlier run, are not scored. The ground truth is never written to: --output_dir may not
be, lie inside or contain the dataset's annotations or frames folder, nor --pred_root be or lie inside
--gt_root. Bad input (these cases, an unknown --videos name, an unreadable PNG, an --output_dir that cannot
be created, ...) prints one `error: ...` line and exits with status 2; whatever can be checked without a
model is checked before one is built.

Interactive image segmentation (--task=image), on an SA-1B folder (sa_*.jpg + sa_*.json) or a COCO
instances file with its images:

  python eval.py --task=image --data_root=sa1b_folder --checkpoint=... --output_dir=out
  python eval.py --task=image --image_annotations=instances_val2017.json --image_root=val2017 --output_dir=out

simulates clicks as the SAM papers (first at the object's centre, then at the centre of the largest error
region; see sam2_jax/evaluation/clicks.py and image_inference.py) and prompts with the GT box; it ends with
the line `image mIoU@1=<v> mIoU@3=<v> mIoU@5=<v> box_mIoU=<v>` (percent) and writes image_summary.json and
image_results.csv (per object) into --output_dir.

Interactive video segmentation (--task=interactive_video), on a DAVIS- or SA-V-layout --data_root:

  python eval.py --task=interactive_video --data_root=DAVIS --checkpoint=... --output_dir=out

runs the SAM 2 paper's offline and online protocols (--interactive_modes) on each object alone, 3 simulated
clicks per interacted frame, up to --max_interacted_frames frames (see
sam2_jax/evaluation/interactive_video.py); it prints one line per mode,
`interactive mode=<offline|online> J&F@1=<v> ... J&F@8=<v>` (percent), and writes
interactive_video_summary.json (with the annotation time after k frames) and interactive_video.png.
"""

import os
import sys

from sam2_jax import huge_pages

if __name__ == "__main__":
  huge_pages.restart_with_huge_pages()  # first, so that a restart repeats none of the imports below

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags

from sam2_jax import cli
from sam2_jax.evaluation import image_inference
from sam2_jax.evaluation import interactive_video
from sam2_jax.evaluation import io as vos_io
from sam2_jax.evaluation import vos_inference
from sam2_jax.evaluation import vos_metrics
# pylint: enable=g-import-not-at-top,wrong-import-position

flags.DEFINE_enum("task", "video", ["video", "image", "interactive_video"], "video: VOS (J&F); image: interactive "
                  "clicks and boxes (mIoU); interactive_video: the SAM 2 paper's offline and online clicks (J&F).")
flags.DEFINE_string("data_root", None, "Dataset folder in the DAVIS or SA-V layout (--task=image: an SA-1B folder).")
flags.DEFINE_string("output_dir", None, "Where predicted masks (and results.csv) are written.")
flags.DEFINE_string("gt_root", None, "Scoring only: ground-truth annotation folder.")
flags.DEFINE_string("pred_root", None, "Scoring only: prediction folder (same layout as --gt_root).")
flags.DEFINE_string("config", None, "Model config name (default: the checkpoint's, or sam2.1_hiera_b+ for "
                    "random weights).")
flags.DEFINE_string("checkpoint", None, "Official .pt, converted checkpoint, or train.py workdir or step (None: random "
                    "weights).")
flags.DEFINE_integer("image_size", None, "Override of the model's input size.")
flags.DEFINE_list("videos", None, "Only these videos, predicted and scored (default: every annotated video).")
flags.DEFINE_float("score_thresh", 0.0, "Mask logit threshold.")
flags.DEFINE_bool("apply_postprocessing", None, "Official post-processing (default: off for --task=video as in "
                  "vos_inference.py, on for clicks (image, interactive_video) as the official builders).")
flags.DEFINE_bool("track_object_appearing_later_in_video", False, "Start each object at its first annotation.")
flags.DEFINE_bool("stream", True, "VOS: track each video as a stream (SAM2CameraPredictor: frames read, tracked and "
                  "written one at a time, memory flat in the video's length); --nostream holds the video in "
                  "SAM2VideoPredictor. Both give the same masks.")
flags.DEFINE_bool("do_not_skip_first_and_last_frame", False, "Also score the first and last annotated frames.")
flags.DEFINE_bool("visualize", False, "Write an MP4 per video with the predicted masks overlaid.")
flags.DEFINE_integer("num_processes", 1, "Processes for scoring.")
flags.DEFINE_string("image_annotations", None, "--task=image: a COCO instances json (instead of --data_root).")
flags.DEFINE_string("image_root", None, "--task=image: the folder of the images of --image_annotations.")
flags.DEFINE_integer("max_images", None, "--task=image: only the first N images (default: all).")
flags.DEFINE_integer("max_objects_per_image", None, "--task=image: a seeded random subset of N objects per image.")
flags.DEFINE_integer("num_clicks", 5, "--task=image: simulated clicks per object.")
flags.DEFINE_bool("image_mask_input", True, "--task=image: feed the previous low-res logits back with each click.")
flags.DEFINE_list("interactive_modes", list(interactive_video.MODES), "--task=interactive_video: offline, online.")
flags.DEFINE_integer("max_interacted_frames", 8, "--task=interactive_video: most frames clicked on per object.")
FLAGS = flags.FLAGS
RANDOM_WEIGHTS_CONFIG = "sam2.1_hiera_b+"


def check_flags() -> None:
  """Rejects flag values that cannot work, before any data is read or model built."""
  for name in ("num_processes", "max_images", "max_objects_per_image", "num_clicks", "max_interacted_frames"):
    value = FLAGS[name].value
    if value is not None and value < 1:
      raise ValueError(f"--{name} must be at least 1, got {value}.")
  modes = FLAGS.interactive_modes
  if not modes or set(modes) - set(interactive_video.MODES) or len(set(modes)) != len(modes):
    raise ValueError(f"--interactive_modes must name offline and/or online once each, got {','.join(modes)!r}.")


def model_config_name() -> str | None:
  """--config, else the checkpoint's own (None), else the random-weights default (with a warning)."""
  if FLAGS.checkpoint is not None:
    return FLAGS.config
  print("warning: no --checkpoint given, the model has random weights", file=sys.stderr)
  return FLAGS.config or RANDOM_WEIGHTS_CONFIG


def run_inference() -> str:
  """Predicts the videos of --data_root (or --videos) into --output_dir; returns the annotation root."""
  from sam2_jax.predictors.camera import build_sam2_camera_predictor  # pylint: disable=g-import-not-at-top
  from sam2_jax.predictors.video import build_sam2_video_predictor  # pylint: disable=g-import-not-at-top
  layout, frames_dir, ann_root = vos_io.dataset_layout(FLAGS.data_root)
  vos_inference.check_output_dir(FLAGS.output_dir, frames_dir, ann_root)
  videos = vos_inference.select_videos(frames_dir, ann_root, FLAGS.videos)
  cli.make_output_dir(FLAGS.output_dir, "output_dir")
  overrides = {} if FLAGS.image_size is None else {"image_size": FLAGS.image_size}
  build = build_sam2_camera_predictor if FLAGS.stream else build_sam2_video_predictor
  predictor = build(model_config_name(), FLAGS.checkpoint, apply_postprocessing=bool(FLAGS.apply_postprocessing),
                    non_overlap_masks=layout == vos_io.DAVIS, **overrides)
  for video in videos:
    args = (predictor, frames_dir, ann_root, video, FLAGS.track_object_appearing_later_in_video, FLAGS.score_thresh)
    if FLAGS.stream:
      names, masks = vos_inference.stream_video(*args)
    else:
      names, results = vos_inference.predict_video(*args)
      masks = (results[i] for i in range(len(names)))
    vos_inference.write_video_masks(FLAGS.output_dir, video, names, masks, layout)
    if FLAGS.visualize:
      vos_inference.write_overlay_mp4(os.path.join(FLAGS.output_dir, f"{video}.mp4"),
                                      os.path.join(frames_dir, video), FLAGS.output_dir, video)
  return ann_root


def run_image_evaluation() -> None:
  """--task=image: click and box mIoU on an SA-1B folder or a COCO instances file; prints the summary line."""
  from sam2_jax.build_sam import build_sam2  # pylint: disable=g-import-not-at-top
  from sam2_jax.predictors.image import SAM2ImagePredictor  # pylint: disable=g-import-not-at-top
  if not FLAGS.output_dir or not (FLAGS.data_root or FLAGS.image_annotations):
    raise ValueError("--task=image needs --output_dir and --data_root (SA-1B folder) or --image_annotations.")
  if FLAGS.image_annotations:
    if not FLAGS.image_root:
      raise ValueError("--image_annotations needs --image_root (the folder of its images).")
    samples = image_inference.coco_samples(FLAGS.image_annotations, FLAGS.image_root, FLAGS.max_images,
                                           FLAGS.max_objects_per_image)
  else:
    samples = image_inference.sa1b_samples(FLAGS.data_root, FLAGS.max_images, FLAGS.max_objects_per_image)
  cli.make_output_dir(FLAGS.output_dir, "output_dir")
  overrides = {} if FLAGS.image_size is None else {"image_size": FLAGS.image_size}
  postprocessing = True if FLAGS.apply_postprocessing is None else FLAGS.apply_postprocessing
  model = build_sam2(model_config_name(), FLAGS.checkpoint, apply_postprocessing=postprocessing, **overrides)
  predictor = SAM2ImagePredictor(model, mask_threshold=FLAGS.score_thresh)
  summary = image_inference.evaluate(predictor, samples, FLAGS.output_dir, FLAGS.num_clicks, FLAGS.image_mask_input,
                                     batch_size=min(16, FLAGS.max_objects_per_image or 16))
  print(image_inference.summary_line(summary))


def run_interactive_video_evaluation() -> None:
  """--task=interactive_video: the SAM 2 paper's offline and online interactive protocols; one line per mode."""
  from sam2_jax.predictors.video import build_sam2_video_predictor  # pylint: disable=g-import-not-at-top
  if not (FLAGS.data_root and FLAGS.output_dir):
    raise ValueError("--task=interactive_video needs --data_root and --output_dir.")
  _, frames_dir, ann_root = vos_io.dataset_layout(FLAGS.data_root)
  vos_inference.check_output_dir(FLAGS.output_dir, frames_dir, ann_root)
  videos = vos_inference.select_videos(frames_dir, ann_root, FLAGS.videos)
  cli.make_output_dir(FLAGS.output_dir, "output_dir")
  overrides = {} if FLAGS.image_size is None else {"image_size": FLAGS.image_size}
  # Corrected frames become conditioning frames, so that later passes keep the clicks (see interactive_video).
  predictor = build_sam2_video_predictor(model_config_name(), FLAGS.checkpoint,
                                         apply_postprocessing=FLAGS.apply_postprocessing is not False,
                                         add_all_frames_to_correct_as_cond=True, **overrides)
  predictor.progress = False  # many short passes per object
  summary = interactive_video.evaluate(predictor, frames_dir, ann_root, videos, FLAGS.output_dir,
                                       FLAGS.interactive_modes, FLAGS.max_interacted_frames, FLAGS.score_thresh)
  for mode in FLAGS.interactive_modes:
    print(interactive_video.summary_line(summary, mode))


def main():
  check_flags()
  if FLAGS.task == "image":
    run_image_evaluation()
    return
  if FLAGS.task == "interactive_video":
    run_interactive_video_evaluation()
    return
  if FLAGS.gt_root or FLAGS.pred_root:
    if not (FLAGS.gt_root and FLAGS.pred_root):
      raise ValueError("Scoring needs both --gt_root and --pred_root.")
    gt_root, pred_root = FLAGS.gt_root, FLAGS.pred_root
  else:
    if not (FLAGS.data_root and FLAGS.output_dir):
      raise ValueError("Give --data_root and --output_dir (inference + scoring), or --gt_root and --pred_root.")
    gt_root, pred_root = run_inference(), FLAGS.output_dir
  results = vos_metrics.evaluate(gt_root, pred_root, skip_first_and_last=not FLAGS.do_not_skip_first_and_last_frame,
                                 num_processes=FLAGS.num_processes, videos=FLAGS.videos)
  print(vos_metrics.results_csv(results), end="")
  print(results.summary)


if __name__ == "__main__":
  cli.run(main)
