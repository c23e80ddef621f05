r"""Small synthetic datasets in the real raw formats: SA-1B images, SA-V videos and a DAVIS-layout eval set.

Each clip shows 1-4 textured shapes (ellipses, polygons, stars) with saturated colours over a low-saturation
textured background (gradient, smooth noise, stripes) that pans slowly. The shapes move (bouncing off the
borders), rotate, change scale anisotropically and occlude each other in a fixed depth order; each mask is
the visible part of its shape, and every shape is mostly visible on the first frame. Everything is a
deterministic function of (seed, kind, index): `render_sample` gives the frames and masks that were written.

  python data/synthetic.py --output_dir=/tmp/synth
      /tmp/synth/sa1b/sa_<id>.jpg + sa_<id>.json          (SA-1B layout, COCO RLE masks)
      /tmp/synth/sav/sav_<id>.mp4 + sav_<id>_manual.json  (SA-V layout, masklets every 4th frame, 24 fps)
      /tmp/synth/vos_eval/JPEGImages/<video>/00000.jpg + Annotations/<video>/00000.png  (DAVIS layout)

The eval videos move like the annotated (every 4th) frames of the SA-V videos, the clips training sees.
"""

import io
import json
import os
import sys

import numpy as np
from absl import flags
from PIL import Image
from PIL import ImageDraw
from scipy import ndimage

if __package__ in (None, ""):  # Run as `python data/synthetic.py`: make the repository importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sam2_jax import cli  # pylint: disable=g-import-not-at-top
from sam2_jax.data import sav as sav_reader  # pylint: disable=g-import-not-at-top
from sam2_jax.data.records import encode_rle  # pylint: disable=g-import-not-at-top
from sam2_jax.evaluation import io as vos_io  # pylint: disable=g-import-not-at-top
from sam2_jax.predictors.video_frames import write_mp4  # pylint: disable=g-import-not-at-top

KINDS = {"sa1b": 1, "sav": 2, "vos": 3}
FPS = sav_reader.VIDEO_FPS
ANN_EVERY = sav_reader.ANN_EVERY
MAX_OBJECTS = 4
MIN_SIZE = 32  # Smaller images may leave no room to place the shapes visibly.
JPEG_QUALITY = 92


def sample_rng(seed: int, kind: str, index: int) -> np.random.Generator:
  """The generator of sample `index` of dataset `kind` ("sa1b", "sav" or "vos")."""
  return np.random.default_rng([seed, KINDS[kind], index])


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
  rgb = np.clip(np.abs((h * 6 + np.array([0.0, 4.0, 2.0])) % 6 - 3) - 1, 0, 1)
  return 255 * v * (1 - s + s * rgb)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """A float32 (height, width, 3) low-saturation texture: gradient + smooth noise + stripes + fine noise."""
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) / max(height, width)
  theta = rng.uniform(0, 2 * np.pi)
  ramp = np.cos(theta) * xx + np.sin(theta) * yy
  ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
  c1 = _hsv_to_rgb(rng.uniform(), rng.uniform(0, 0.15), rng.uniform(0.25, 0.55))
  c2 = _hsv_to_rgb(rng.uniform(), rng.uniform(0, 0.15), rng.uniform(0.45, 0.8))
  image = c1 + (c2 - c1) * ramp[..., None]
  cell = max(4, min(height, width) // 12)
  coarse = rng.normal(0, 1, (height // cell + 2, width // cell + 2, 3)).astype(np.float32)
  smooth = ndimage.zoom(coarse, (cell, cell, 1), order=1)[:height, :width]
  image += rng.uniform(8, 20) * smooth.mean(-1, keepdims=True) + 4 * smooth
  phi, freq = rng.uniform(0, np.pi), rng.uniform(4, 14)
  image += rng.uniform(6, 16) * np.sin(2 * np.pi * freq * (np.cos(phi) * xx + np.sin(phi) * yy))[..., None]
  image += rng.normal(0, 5, image.shape)
  return image.astype(np.float32)


def _outline(rng: np.random.Generator, kind: str) -> np.ndarray:
  """Unit-scale outline points (K, 2) as (x, y) of an ellipse, a random polygon or a star."""
  if kind == "ellipse":
    angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    radii = np.ones_like(angles)
  elif kind == "polygon":
    k = int(rng.integers(3, 8))
    angles = np.sort((np.arange(k) + rng.uniform(-0.3, 0.3, k)) * 2 * np.pi / k)
    radii = rng.uniform(0.75, 1.0, k)
  else:
    k = int(rng.integers(5, 8))
    angles = np.arange(2 * k) * np.pi / k
    radii = np.where(np.arange(2 * k) % 2 == 0, 1.0, rng.uniform(0.4, 0.6))
  return np.stack([radii * np.cos(angles), radii * np.sin(angles)], -1)


def _bounce(start: np.ndarray, velocity: np.ndarray, t: float, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
  """Position at time t of a point moving at `velocity` from `start`, reflected inside [lo, hi]."""
  span = np.maximum(hi - lo, 1e-6)
  q = np.mod(start + velocity * t - lo, 2 * span)
  return lo + np.where(q < span, q, 2 * span - q)


class _Shape:
  """One moving, rotating, deforming textured shape."""

  def __init__(self, rng: np.random.Generator, height: int, width: int, hue: float):
    size = np.array([height, width], np.float64)
    self.points = _outline(rng, rng.choice(["ellipse", "polygon", "star"]))
    self.radius = rng.uniform(0.1, 0.2) * min(height, width)
    self.aspect = rng.uniform(0.6, 1.0)
    self.start = rng.uniform(0.15, 0.85, 2) * size
    direction = rng.uniform(0, 2 * np.pi)
    # 6-24% of the image size per second at 24 fps: an object crosses the frame in 4-16 s.
    self.velocity = rng.uniform(0.0025, 0.01) * min(height, width) * np.array([np.sin(direction), np.cos(direction)])
    self.lo, self.hi = 0.1 * size, 0.9 * size
    self.angle0, self.omega = rng.uniform(0, 2 * np.pi), np.deg2rad(rng.uniform(-3, 3))
    self.amp = rng.uniform(0, 0.25, 2)
    self.freq = rng.uniform(1 / 100, 1 / 40, 2)
    self.phase = rng.uniform(0, 2 * np.pi, 2)
    self.colour = _hsv_to_rgb(hue, rng.uniform(0.65, 1.0), rng.uniform(0.7, 1.0))
    self.colour2 = self.colour * rng.uniform(0.45, 0.7)
    self.pattern = int(rng.integers(0, 4))
    self.pattern_freq = rng.uniform(1.5, 3.5)

  def pose(self, t: float) -> tuple[np.ndarray, float, np.ndarray]:
    """(centre (y, x), angle, scale (x, y)) at time t (in video frames)."""
    scale = self.radius * np.array([1.0, self.aspect]) * (1 + self.amp * np.sin(2 * np.pi * self.freq * t + self.phase))
    return _bounce(self.start, self.velocity, t, self.lo, self.hi), self.angle0 + self.omega * t, scale

  def draw(self, t: float, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask, colours) of the whole shape at time t: bool (H, W) and float32 (mask.sum(), 3)."""
    centre, angle, scale = self.pose(t)
    cos, sin = np.cos(angle), np.sin(angle)
    local = self.points * scale
    x = centre[1] + cos * local[:, 0] - sin * local[:, 1]
    y = centre[0] + sin * local[:, 0] + cos * local[:, 1]
    canvas = Image.new("L", (width, height), 0)
    ImageDraw.Draw(canvas).polygon(list(zip(x.tolist(), y.tolist())), fill=1)
    mask = np.asarray(canvas, bool)
    ys, xs = np.nonzero(mask)
    dx, dy = xs - centre[1], ys - centre[0]
    u = (cos * dx + sin * dy) / scale[0]
    v = (-sin * dx + cos * dy) / scale[1]
    f = self.pattern_freq
    if self.pattern == 0:
      on = np.sin(np.pi * f * u) > 0
    elif self.pattern == 1:
      on = (np.floor(f * u) + np.floor(f * v)) % 2 == 0
    elif self.pattern == 2:
      on = (np.mod(f * u, 1) - 0.5) ** 2 + (np.mod(f * v, 1) - 0.5) ** 2 < 0.09
    else:
      on = np.hypot(u, v) < 0.55
    colours = np.where(on[:, None], self.colour, self.colour2) * (1 - 0.15 * np.clip(v, -1, 1))[:, None]
    return mask, colours.astype(np.float32)


def render_clip(rng: np.random.Generator, height: int, width: int, num_frames: int, frame_step: int = 1,
                max_objects: int = MAX_OBJECTS) -> tuple[np.ndarray, np.ndarray]:
  """(frames uint8 (T, H, W, 3), visible masks bool (T, O, H, W)) of a clip; frame i is at time i * frame_step.

  The masks do not overlap (later shapes occlude earlier ones); every shape keeps at least half of its area
  visible on frame 0.
  """
  pad = max(8, int(0.1 * max(height, width)))
  background = _background(rng, height + 2 * pad, width + 2 * pad)
  pan_start, pan_velocity = rng.uniform(0, 2 * pad, 2), rng.uniform(-0.3, 0.3, 2)
  num_objects = int(rng.integers(1, max_objects + 1))
  hue0 = rng.uniform()
  for _ in range(100):
    shapes = [_Shape(rng, height, width, (hue0 + i / num_objects + rng.uniform(-0.05, 0.05)) % 1)
              for i in range(num_objects)]
    full = [s.draw(0, height, width)[0] for s in shapes]
    visible = _visible(full)
    if all(v.sum() >= max(16, 0.5 * f.sum()) for v, f in zip(visible, full)):
      break
  else:
    raise RuntimeError("Could not place the shapes visibly; use a larger image size.")
  frames = np.empty((num_frames, height, width, 3), np.uint8)
  masks = np.empty((num_frames, num_objects, height, width), bool)
  for i in range(num_frames):
    t = i * frame_step
    oy, ox = np.round(_bounce(pan_start, pan_velocity, t, np.zeros(2), np.full(2, 2 * pad))).astype(int)
    image = background[oy:oy + height, ox:ox + width].copy()
    drawn = [s.draw(t, height, width) for s in shapes]
    for mask, colours in drawn:
      image[mask] = colours
    image += 2 * rng.standard_normal(image.shape, dtype=np.float32)
    frames[i] = np.clip(np.round(image), 0, 255).astype(np.uint8)
    masks[i] = np.stack(_visible([mask for mask, _ in drawn]))
  return frames, masks


def _visible(full: list[np.ndarray]) -> list[np.ndarray]:
  """Visible part of each shape when later ones are drawn on top."""
  out, above = [], np.zeros_like(full[0])
  for mask in reversed(full):
    out.append(mask & ~above)
    above |= mask
  return out[::-1]


def render_sample(kind: str, seed: int, index: int, height: int, width: int,
                  num_frames: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """The (frames, masks) that `write_sa1b` / `write_sav` / `write_vos` write for sample `index`.

  For "sav", all `num_frames` video frames (the json annotates every 4th); for "vos", `num_frames` frames
  moving as the annotated frames of an SA-V video; for "sa1b", one frame.
  """
  rng = sample_rng(seed, kind, index)
  if kind == "sa1b":
    return render_clip(rng, height, width, 1)
  return render_clip(rng, height, width, num_frames, frame_step=ANN_EVERY if kind == "vos" else 1)


def _jpeg(frame: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(frame).save(buffer, format="JPEG", quality=JPEG_QUALITY)
  return buffer.getvalue()


def _json_bytes(content: dict) -> bytes:
  return json.dumps(content).encode("utf-8")


def write_sa1b(folder: str, num_images: int, height: int, width: int, seed: int = 0) -> list[str]:
  """Writes `sa_<id>.jpg` + `sa_<id>.json` for ids 1..num_images; returns the image paths."""
  paths = []
  for index in range(num_images):
    frames, masks = render_sample("sa1b", seed, index, height, width)
    rng = np.random.default_rng([seed, KINDS["sa1b"], index, 1])
    image_id = index + 1
    annotations = []
    for j, mask in enumerate(masks[0]):
      ys, xs = np.nonzero(mask)
      k = int(rng.integers(len(ys)))
      annotations.append({
          "id": image_id * 1000 + j,
          "segmentation": {"size": [height, width], "counts": encode_rle(mask)},
          "bbox": [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)],
          "area": int(mask.sum()),
          "predicted_iou": float(rng.uniform(0.85, 1.0)),
          "stability_score": float(rng.uniform(0.9, 1.0)),
          "crop_box": [0.0, 0.0, float(width), float(height)],
          "point_coords": [[float(xs[k]) + 0.5, float(ys[k]) + 0.5]],
      })
    stem = os.path.join(folder, f"sa_{image_id}")
    content = {"image": {"image_id": image_id, "width": width, "height": height,
                         "file_name": f"sa_{image_id}.jpg"}, "annotations": annotations}
    vos_io.atomic_write_bytes(stem + ".json", _json_bytes(content))
    vos_io.atomic_write_bytes(stem + ".jpg", _jpeg(frames[0]))
    paths.append(stem + ".jpg")
  return paths


def _masklet_stats(masks: np.ndarray) -> dict:
  """SA-V per-masklet metadata of annotated-frame masks (T, O, H, W)."""
  num_frames, num_objects, height, width = masks.shape
  areas = masks.reshape(num_frames, num_objects, -1).sum(-1)
  visible = areas > 0
  size_abs = [float(areas[visible[:, j], j].mean()) if visible[:, j].any() else 0.0 for j in range(num_objects)]
  return {
      "masklet_id": list(range(num_objects)),
      "masklet_size_rel": [a / (height * width) for a in size_abs],
      "masklet_size_abs": size_abs,
      "masklet_size_bucket": ["small" if a < 32**2 else "medium" if a < 96**2 else "large" for a in size_abs],
      "masklet_visibility_changes": [int(np.sum(visible[1:, j] != visible[:-1, j])) for j in range(num_objects)],
      "masklet_first_appeared_frame": [float(np.argmax(visible[:, j])) for j in range(num_objects)],
      "masklet_frame_count": [num_frames] * num_objects,
      "masklet_edited_frame_count": [0] * num_objects,
      "masklet_type": ["manual"] * num_objects,
      "masklet_stability_score": [None] * num_objects,
      "masklet_num": num_objects,
  }


def write_sav(folder: str, num_videos: int, height: int, width: int, num_frames: int, seed: int = 0) -> list[str]:
  """Writes `sav_<id>.mp4` + `sav_<id>_manual.json` for ids 1..num_videos; returns the video paths."""
  paths = []
  for index in range(num_videos):
    frames, masks = render_sample("sav", seed, index, height, width, num_frames)
    annotated = masks[::ANN_EVERY]
    video_id = f"sav_{index + 1:06d}"
    rng = np.random.default_rng([seed, KINDS["sav"], index, 1])
    content = {
        "video_id": video_id,
        "video_duration": num_frames / FPS,
        "video_frame_count": float(num_frames),
        "video_height": float(height),
        "video_width": float(width),
        "video_resolution": float(height * width),
        "video_environment": str(rng.choice(["Indoor", "Outdoor"])),
        "video_split": "train",
        "masklet": [[{"size": [height, width], "counts": encode_rle(m)} for m in row] for row in annotated],
        **_masklet_stats(annotated),
    }
    path = os.path.join(folder, video_id + ".mp4")
    vos_io.atomic_write_bytes(os.path.join(folder, video_id + "_manual.json"), _json_bytes(content))
    write_mp4(path, frames, FPS)
    paths.append(path)
  return paths


def write_vos(root: str, num_videos: int, height: int, width: int, num_frames: int, seed: int = 0) -> list[str]:
  """Writes a DAVIS-layout set (`JPEGImages/`, palette PNG `Annotations/`, object ids 1..O); returns video names."""
  names = []
  for index in range(num_videos):
    frames, masks = render_sample("vos", seed, index, height, width, num_frames)
    name = f"synth_{index:04d}"
    for t, frame in enumerate(frames):
      vos_io.atomic_write_bytes(os.path.join(root, "JPEGImages", name, f"{t:05d}.jpg"), _jpeg(frame))
      vos_io.write_frame_masks(os.path.join(root, "Annotations"), name, t,
                               {j + 1: m for j, m in enumerate(masks[t])}, shape=(height, width))
    names.append(name)
  return names


def generate(output_dir: str, num_images: int, num_videos: int, num_eval_videos: int, size: int | tuple[int, int],
             num_frames: int = 48, eval_num_frames: int = 16, seed: int = 0) -> dict[str, str]:
  """Writes all three datasets under `output_dir`; returns their folders {"sa1b", "sav", "vos_eval"}."""
  height, width = (size, size) if isinstance(size, int) else size
  if min(height, width) < MIN_SIZE or height % 2 or width % 2:
    raise ValueError(f"Synthetic image size must be even and at least {MIN_SIZE}, got {height}x{width}.")
  if min(num_images, num_videos, num_eval_videos) < 0 or min(num_frames, eval_num_frames) < 1:
    raise ValueError(f"Synthetic dataset sizes must be >= 0 and frame counts >= 1, got {num_images} images, "
                     f"{num_videos} + {num_eval_videos} videos of {num_frames} and {eval_num_frames} frames.")
  folders = {k: os.path.join(output_dir, k) for k in ("sa1b", "sav", "vos_eval")}
  for folder in folders.values():
    os.makedirs(folder, exist_ok=True)
  write_sa1b(folders["sa1b"], num_images, height, width, seed)
  write_sav(folders["sav"], num_videos, height, width, num_frames, seed)
  write_vos(folders["vos_eval"], num_eval_videos, height, width, eval_num_frames, seed)
  return folders


def main() -> None:
  f = flags.FLAGS
  folders = generate(f.output_dir, f.num_images, f.num_videos, f.num_eval_videos, f.size, f.num_frames,
                     f.eval_num_frames, f.seed)
  print(" ".join(f"{k}={v}" for k, v in folders.items()))


if __name__ == "__main__":
  flags.DEFINE_string("output_dir", None, "Where sa1b/, sav/ and vos_eval/ are written.", required=True)
  flags.DEFINE_integer("num_images", 64, "SA-1B images.")
  flags.DEFINE_integer("num_videos", 32, "SA-V videos.")
  flags.DEFINE_integer("num_eval_videos", 8, "Held-out DAVIS-layout videos.")
  flags.DEFINE_integer("size", 256, "Image and video height and width (even, at least 32).")
  flags.DEFINE_integer("num_frames", 48, "Frames per SA-V video (annotated every 4th).")
  flags.DEFINE_integer("eval_num_frames", 16, "Frames per eval video.")
  flags.DEFINE_integer("seed", 0, "Seed; the datasets are a deterministic function of it.")
  cli.run(main)
