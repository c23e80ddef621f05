r"""Segments an image or tracks one object through a video from a point, box or mask prompt, or segments
everything in an image (--automatic).

  python -m sam2_jax.segment --checkpoint=sam2.1_hiera_tiny.pt --input=video.mp4 \
      --points="210,350;250,220,0" --frame=0 --output=out/
  python -m sam2_jax.segment --checkpoint=sam2.1_hiera_tiny.pt --input=photo.jpg --automatic --output=out/

Prompts (exactly one kind, none with --automatic), in pixels of the input:
  --points="x,y[,label];..."  clicks, label 1 (foreground, the default) or 0 (background);
  --box="x0,y0,x1,y1"         a box;
  --mask=PNG                  a mask PNG of the input's size (non-zero pixels = object).

An input is an image (a .jpg/.jpeg/.png file) or a video (a .mp4/.mov/.webm/.avi/.mkv file or a folder of
JPEG frames named by index). A video is tracked forwards from the prompted `--frame` and, when it
is not the first, backwards too. Written files:
  image: {output}/mask.png (palette PNG, object id 1) and {output}/overlay.png;
  video: {output}/{frame:05d}.png for every frame and {output}/overlay.mp4;
  --automatic (an image, no prompt): {output}/mask_{i:03d}.png per mask (largest first), masks.json, overlay.png.
Bad arguments print one `error: ...` line to stderr and exit with status 2.
"""

import dataclasses
import json
import os
import sys
from typing import Any, Iterator

from sam2_jax import huge_pages

if __name__ == "__main__":
  huge_pages.restart_with_huge_pages()  # first, so that a restart repeats none of the imports below

# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
from absl import flags
from PIL import Image

from sam2_jax import (SAM2AutomaticMaskGenerator, SAM2ImagePredictor, build_sam2, build_sam2_camera_predictor,
                      build_sam2_video_predictor)
from sam2_jax import cli
from sam2_jax.build_sam import find_sam2_jax_checkpoint
from sam2_jax.evaluation import io as vos_io
from sam2_jax.evaluation import visualize
from sam2_jax.modeling.sam2 import resize
from sam2_jax.predictors.transforms import check_boxes
from sam2_jax.predictors.video_frames import VIDEO_EXTENSIONS, decode_video, iter_video, list_jpeg_frames, write_mp4
# pylint: enable=g-import-not-at-top,wrong-import-position

DEFAULT_CONFIG = "sam2.1_hiera_t"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
OBJ_ID = 1
MASK_LOGIT = 10.0  # |logit| given to a mask prompt's pixels on images (the decoder's mask input is logits)


@dataclasses.dataclass
class Prompt:
  """One object's prompt in input pixels: clicks, a box or a mask."""
  points: np.ndarray | None = None  # (N, 2) float32 x, y
  labels: np.ndarray | None = None  # (N,) int32
  box: np.ndarray | None = None  # (4,) float32
  mask: np.ndarray | None = None  # (H, W) bool


def _numbers(text: str, what: str) -> list[float]:
  try:
    values = [float(v) for v in text.split(",")]
  except ValueError:
    raise ValueError(f"cannot parse {what} {text!r}: expected comma-separated numbers.") from None
  if not all(np.isfinite(values)):
    raise ValueError(f"{what} {text!r} has a non-finite value.")
  return values


def parse_points(text: str) -> tuple[np.ndarray, np.ndarray]:
  """'x,y[,label];...' -> (coords (N, 2) float32, labels (N,) int32); a missing label is 1."""
  coords, labels = [], []
  for item in text.split(";"):
    if not item.strip():
      continue
    values = _numbers(item, "point")
    if len(values) not in (2, 3):
      raise ValueError(f"cannot parse point {item!r}: expected x,y or x,y,label.")
    label = values[2] if len(values) == 3 else 1.0
    if label not in (0.0, 1.0):
      raise ValueError(f"point {item!r} has label {label:g}: labels are 1 (foreground) or 0 (background).")
    coords.append(values[:2])
    labels.append(int(label))
  if not coords:
    raise ValueError(f"--points={text!r} holds no point: expected 'x,y[,label];...'.")
  return np.array(coords, np.float32), np.array(labels, np.int32)


def parse_box(text: str) -> np.ndarray:
  """'x0,y0,x1,y1' -> (4,) float32, with x0 < x1 and y0 < y1."""
  values = _numbers(text, "box")
  if len(values) != 4:
    raise ValueError(f"cannot parse box {text!r}: expected 4 numbers x0,y0,x1,y1, got {len(values)}.")
  check_boxes(values, "--box")
  return np.array(values, np.float32)


def input_kind(path: str) -> str:
  """'image' for a .jpg/.jpeg/.png file, 'video' for a video file or a folder of JPEG frames."""
  if os.path.isdir(path):
    return "video"
  if not os.path.isfile(path):
    raise ValueError(f"input {path!r} does not exist.")
  ext = os.path.splitext(path)[1].lower()
  if ext in IMAGE_EXTENSIONS:
    return "image"
  if ext in VIDEO_EXTENSIONS:
    return "video"
  raise ValueError(f"unsupported input {path!r}: expected an image ({', '.join(IMAGE_EXTENSIONS)}), a video "
                   f"({', '.join(VIDEO_EXTENSIONS)}) or a folder of JPEG frames.")


def read_mask(path: str, shape: tuple[int, int]) -> np.ndarray:
  """A single-channel mask PNG as a bool (H, W) array (non-zero = object); it must be `shape`."""
  mask = vos_io.read_label_png(path) != 0
  if mask.shape != tuple(shape):
    raise ValueError(f"mask {path!r} is {mask.shape[1]}x{mask.shape[0]} but the input is {shape[1]}x{shape[0]}.")
  return mask


def parse_prompt(points: str | None, box: str | None, mask: str | None, shape: tuple[int, int]) -> Prompt:
  """The prompt of exactly one of --points, --box, --mask, checked against an input of `shape` (H, W)."""
  given = [name for name, value in (("--points", points), ("--box", box), ("--mask", mask)) if value is not None]
  if len(given) != 1:
    raise ValueError(f"give exactly one prompt of --points, --box, --mask (got {', '.join(given) or 'none'}).")
  if mask is not None:
    return Prompt(mask=read_mask(mask, shape))
  if box is not None:
    return Prompt(box=parse_box(box))
  coords, labels = parse_points(points)
  return Prompt(points=coords, labels=labels)


def _open_image(path: str) -> np.ndarray:
  try:
    with Image.open(path) as image:
      return np.asarray(image.convert("RGB"))
  except (OSError, SyntaxError) as e:
    raise ValueError(f"cannot read image {path!r}: {e}") from e


class _Video:
  """A video input: its size now; its RGB frames decoded lazily, or all at once for the offline predictor."""

  def __init__(self, path: str):
    self.path = path
    self._decoded = None
    if os.path.isdir(path):
      self._paths = list_jpeg_frames(path)
      self.num_frames = len(self._paths)
      first = _open_image(self._paths[0])
    else:
      self._paths, self.num_frames = None, None  # counted when decoded
      first = next(iter_video(path), None)
      if first is None:
        raise ValueError(f"video {path!r} has no frames.")
    self.height, self.width = first.shape[:2]

  def frames(self) -> Iterator[np.ndarray]:
    """The frames in order, one in memory at a time."""
    return (_open_image(p) for p in self._paths) if self._paths is not None else iter_video(self.path)

  def decode_all(self) -> list[np.ndarray] | str:
    """What `SAM2VideoPredictor.init_state` takes: the frame folder, or every decoded frame of a file."""
    if self._paths is not None:
      return self.path
    if self._decoded is None:
      self._decoded = decode_video(self.path)
      self.num_frames = len(self._decoded)
    return self._decoded


def _write_png(path: str, image: np.ndarray) -> None:
  tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.partial.png")
  Image.fromarray(image).save(tmp)
  os.replace(tmp, path)


def _model_args(checkpoint: str | None, config: str | None, image_size: int | None) -> tuple:
  if checkpoint is None:
    print("warning: no --checkpoint given: the model has random weights and its masks are meaningless.",
          file=sys.stderr)
    config = config or DEFAULT_CONFIG
  overrides = {} if image_size is None else {"image_size": image_size}
  return config, checkpoint, overrides


def segment_image(image: np.ndarray, prompt: Prompt, output: str, checkpoint: str | None = None,
                  config: str | None = None, image_size: int | None = None, multimask: bool = False) -> list[str]:
  """Predicts one mask; writes mask.png and overlay.png in `output` and returns their paths."""
  config, checkpoint, overrides = _model_args(checkpoint, config, image_size)
  predictor = SAM2ImagePredictor(build_sam2(config, checkpoint, **overrides))
  predictor.set_image(image)
  mask_input = None
  if prompt.mask is not None:
    model = predictor.model
    size = 4 * (model.image_size // model.config.backbone_stride)
    low_res = np.asarray(resize(prompt.mask.astype(np.float32)[None, None], (size, size), antialias=True))
    mask_input = (2.0 * low_res[0] - 1.0) * MASK_LOGIT
  masks, ious, _ = predictor.predict(prompt.points, prompt.labels, prompt.box, mask_input,
                                     multimask_output=multimask)
  mask = masks[int(np.argmax(ious))] > 0
  os.makedirs(output, exist_ok=True)
  paths = vos_io.write_frame_masks(output, "", "mask", {OBJ_ID: mask})
  paths.append(os.path.join(output, "overlay.png"))
  _write_png(paths[-1], visualize.overlay(image, [(OBJ_ID, mask)]))
  return paths


def check_automatic_options(points_per_side: int | None, pred_iou_thresh: float | None,
                            stability_score_thresh: float | None) -> dict[str, Any]:
  """The generator's keyword arguments from the --automatic options (None: the official default)."""
  if points_per_side is not None and points_per_side < 1:
    raise ValueError(f"--points_per_side must be at least 1, got {points_per_side}.")
  options = dict(points_per_side=points_per_side, pred_iou_thresh=pred_iou_thresh,
                 stability_score_thresh=stability_score_thresh)
  for name in ("pred_iou_thresh", "stability_score_thresh"):
    if options[name] is not None and not 0.0 <= options[name] <= 1.0:
      raise ValueError(f"--{name} must be in [0, 1], got {options[name]:g}.")
  return {k: v for k, v in options.items() if v is not None}


def segment_automatic(image: np.ndarray, output: str, checkpoint: str | None = None, config: str | None = None,
                      image_size: int | None = None, **generator_kwargs) -> list[str]:
  """Segments everything; writes one PNG per mask (largest first), masks.json and overlay.png."""
  config, checkpoint, overrides = _model_args(checkpoint, config, image_size)
  generator = SAM2AutomaticMaskGenerator(build_sam2(config, checkpoint, **overrides), **generator_kwargs)
  records = sorted(generator.generate(image), key=lambda r: -r["area"])
  os.makedirs(output, exist_ok=True)
  paths, entries = [], []
  for i, record in enumerate(records):
    mask = record["segmentation"]
    paths.append(os.path.join(output, f"mask_{i:03d}.png"))
    _write_png(paths[-1], mask.astype(np.uint8) * 255)
    entries.append({"file": os.path.basename(paths[-1]),
                    **{k: v for k, v in record.items() if k != "segmentation"}})
  paths.append(os.path.join(output, "masks.json"))
  tmp = os.path.join(output, ".masks.json.partial")
  with open(tmp, "w") as f:  # one mask per line
    f.write("[\n" + ",\n".join(json.dumps(entry) for entry in entries) + "\n]\n")
  os.replace(tmp, paths[-1])
  paths.append(os.path.join(output, "overlay.png"))
  _write_png(paths[-1], visualize.overlay(image, ((1 + i % 255, r["segmentation"]) for i, r in enumerate(records))))
  return paths


def segment_video(video: _Video, prompt: Prompt, frame: int, output: str, checkpoint: str | None = None,
                  config: str | None = None, image_size: int | None = None) -> list[str]:
  """Tracks the prompted object through `video`; writes a mask PNG per frame and overlay.mp4.

  From frame 0 the video streams (`SAM2CameraPredictor`): frames are decoded, tracked and written one at
  a time, so memory stays flat however long the video. From a later frame it is tracked both ways with
  `SAM2VideoPredictor`, which holds every frame.
  """
  config, checkpoint, overrides = _model_args(checkpoint, config, image_size)
  os.makedirs(output, exist_ok=True)
  paths = []

  def overlays(masks: Iterator[tuple[int, np.ndarray, np.ndarray]]) -> Iterator[np.ndarray]:
    for i, image, mask in masks:  # each mask PNG is written as soon as its frame is tracked
      paths.extend(vos_io.write_frame_masks(output, "", i, {OBJ_ID: mask}))
      yield visualize.overlay(image, [(OBJ_ID, mask)])

  if frame == 0:
    masks = _stream(video, prompt, build_sam2_camera_predictor(config, checkpoint, **overrides))
  else:
    masks = _offline(video, prompt, frame, build_sam2_video_predictor(config, checkpoint, **overrides))
  write_mp4(os.path.join(output, "overlay.mp4"), overlays(masks))
  return paths + [os.path.join(output, "overlay.mp4")]


def _stream(video: _Video, prompt: Prompt, camera) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
  """(frame index, frame, mask) of each frame, prompted on frame 0, streaming."""
  for i, image in enumerate(video.frames()):
    if i == 0:
      camera.load_first_frame(image, num_frames=video.num_frames)
      if prompt.mask is not None:
        obj_ids, logits = camera.add_new_prompt(0, OBJ_ID, mask=prompt.mask)
      else:
        obj_ids, logits = camera.add_new_prompt(0, OBJ_ID, points=prompt.points, labels=prompt.labels,
                                                bbox=prompt.box)
    else:
      obj_ids, logits = camera.track(image)
    yield i, image, logits[obj_ids.index(OBJ_ID), 0] > 0


def _offline(video: _Video, prompt: Prompt, frame: int, predictor) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
  """(frame index, frame, mask) of each frame, tracked forwards and backwards from the prompted `frame`."""
  source = video.decode_all()
  state = predictor.init_state(source)
  if prompt.mask is not None:
    predictor.add_new_mask(state, frame, OBJ_ID, prompt.mask)
  else:
    predictor.add_new_points_or_box(state, frame, OBJ_ID, points=prompt.points, labels=prompt.labels, box=prompt.box)
  masks = {}
  for run in (predictor.propagate_in_video(state), predictor.propagate_in_video(state, frame, reverse=True)):
    for i, obj_ids, logits in run:
      masks[i] = logits[obj_ids.index(OBJ_ID), 0] > 0
  for i, image in enumerate(source if isinstance(source, list) else video.frames()):
    yield i, image, masks[i]


def run(input_path: str | None, output: str | None, points: str | None = None, box: str | None = None,
        mask: str | None = None, frame: int = 0, checkpoint: str | None = None, config: str | None = None,
        image_size: int | None = None, multimask: bool = False, automatic: bool = False,
        points_per_side: int | None = None, pred_iou_thresh: float | None = None,
        stability_score_thresh: float | None = None) -> list[str]:
  """Checks every argument (before building the model), segments, and returns the paths written."""
  if not input_path:
    raise ValueError("--input is required.")
  if not output:
    raise ValueError("--output is required.")
  if os.path.isfile(output):
    raise ValueError(f"--output {output!r} is a file, not a directory.")
  if image_size is not None and (image_size < 64 or image_size % 32):
    raise ValueError(f"--image_size must be a multiple of 32 (at least 64), got {image_size}.")
  if checkpoint is not None:
    find_sam2_jax_checkpoint(checkpoint)
  if automatic:
    prompts = [name for name, value in (("--points", points), ("--box", box), ("--mask", mask)) if value is not None]
    if prompts:
      raise ValueError(f"--automatic takes no prompt (got {', '.join(prompts)}).")
    generator_kwargs = check_automatic_options(points_per_side, pred_iou_thresh, stability_score_thresh)
  else:
    given = [name for name, value in (("--points_per_side", points_per_side), ("--pred_iou_thresh", pred_iou_thresh),
                                      ("--stability_score_thresh", stability_score_thresh)) if value is not None]
    if given:
      raise ValueError(f"{', '.join(given)} can only be used with --automatic.")
  kind = input_kind(input_path)
  if automatic and kind != "image":
    raise ValueError(f"--automatic works on images only; {input_path!r} is a video.")
  if kind == "image":
    if frame != 0:
      raise ValueError(f"--frame={frame} is out of range: an image has only frame 0.")
    image = _open_image(input_path)
    if automatic:
      cli.make_output_dir(output, "output")
      return segment_automatic(image, output, checkpoint, config, image_size, **generator_kwargs)
    prompt = parse_prompt(points, box, mask, image.shape[:2])
    cli.make_output_dir(output, "output")
    return segment_image(image, prompt, output, checkpoint, config, image_size, multimask)
  video = _Video(input_path)
  if frame != 0 and video.num_frames is None:
    video.decode_all()  # counts the frames of a file
  if frame != 0 and not 0 <= frame < video.num_frames:
    raise ValueError(f"--frame={frame} is out of range: the video has {video.num_frames} frames "
                     f"(0..{video.num_frames - 1}).")
  prompt = parse_prompt(points, box, mask, (video.height, video.width))
  cli.make_output_dir(output, "output")
  return segment_video(video, prompt, frame, output, checkpoint, config, image_size)


def define_flags() -> None:
  """The command's flags (defined when it runs, so that importing this module defines none)."""
  flags.DEFINE_string("checkpoint", None, "Official .pt checkpoint, a converted sam2_jax directory, or a "
                      "train.py workdir or step (default: random weights, with a warning).")
  flags.DEFINE_string("config", None, "Config name (default: inferred from --checkpoint, else sam2.1_hiera_t).")
  flags.DEFINE_integer("image_size", None, "Model input size override (a multiple of 32).")
  flags.DEFINE_string("input", None, "Image file, video file or folder of JPEG frames.")
  flags.DEFINE_string("points", None, 'Clicks "x,y[,label];..." (label 1 foreground, 0 background).')
  flags.DEFINE_string("box", None, 'Box "x0,y0,x1,y1".')
  flags.DEFINE_string("mask", None, "Mask PNG of the input's size (non-zero = object).")
  flags.DEFINE_integer("frame", 0, "Video frame the prompt is on.")
  flags.DEFINE_string("output", None, "Output directory (created if needed).")
  flags.DEFINE_bool("multimask", False, "Images: predict three masks and keep the best-scored one.")
  flags.DEFINE_bool(
      "automatic", False, "Images only, no prompt: segment everything (SAM2AutomaticMaskGenerator). Writes "
      "mask_000.png, mask_001.png, ... (one 0/255 PNG per mask, largest first, so overlapping masks stay whole), "
      "masks.json (per mask: file, area, bbox XYWH, predicted_iou, stability_score, point_coords, crop_box) and "
      "overlay.png (each mask in its own colour).")
  flags.DEFINE_integer("points_per_side", None, "--automatic: grid points per side (default 32).")
  flags.DEFINE_float("pred_iou_thresh", None, "--automatic: minimum predicted IoU (default 0.8).")
  flags.DEFINE_float("stability_score_thresh", None, "--automatic: minimum stability score (default 0.95).")


def main():
  f = flags.FLAGS
  paths = run(f.input, f.output, f.points, f.box, f.mask, f.frame, f.checkpoint, f.config, f.image_size, f.multimask,
              f.automatic, f.points_per_side, f.pred_iou_thresh, f.stability_score_thresh)
  print(f"Wrote {len(paths)} files to {f.output}")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
