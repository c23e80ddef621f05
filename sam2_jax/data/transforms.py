"""Host-side training augmentations of a clip, with the semantics of the official SAM 2 video transforms.

A clip is `frames` uint8 (T, H, W, 3) and `masks` bool (T, O, H, W). Every transform is a callable
`transform(clip, rng) -> clip` drawing its randomness from an explicit `np.random.Generator`. Images are
processed with PIL exactly as the official pipeline does on its PIL frames (bilinear affine warp and resize,
`ImageEnhance` colour adjustments, ITU-R 601 grayscale); masks with nearest warp and an antialiased
bilinear resize thresholded at one half (the official code resizes uint8 0/1 masks bilinearly with rounding).

The default recipe (`build_transforms`) is the one of the official SA-1B / SA-V / MOSE training configs:
horizontal flip (p 0.5) -> affine (rotation ±25°, x-shear ±20°, skipped when an object of the first frame
would vanish) -> square resize -> colour jitter (same for the whole clip) -> grayscale (p 0.05) -> colour
jitter (drawn per frame). All transforms except the per-frame jitter use one draw for the whole clip.
"""

import dataclasses
import math
from typing import Callable, Sequence

import ml_collections
import numpy as np
from PIL import Image, ImageEnhance

IMAGE_MEAN_FILL = (123, 116, 103)


@dataclasses.dataclass
class Clip:
  """Frames uint8 (T, H, W, 3) and object masks bool (T, O, H, W) of one training example."""
  frames: np.ndarray
  masks: np.ndarray

  def __post_init__(self):
    t, h, w, c = self.frames.shape
    if c != 3 or self.frames.dtype != np.uint8:
      raise ValueError(f"frames must be uint8 (T, H, W, 3), got {self.frames.dtype} {self.frames.shape}.")
    if self.masks.dtype != bool or self.masks.ndim != 4 or (self.masks.shape[0], *self.masks.shape[2:]) != (t, h, w):
      raise ValueError(f"masks must be bool (T, O, H, W) matching frames {self.frames.shape}, got "
                       f"{self.masks.dtype} {self.masks.shape}.")


Transform = Callable[[Clip, np.random.Generator], Clip]


class Compose:
  """Applies transforms in order."""

  def __init__(self, transforms: Sequence[Transform]):
    self.transforms = list(transforms)

  def __call__(self, clip: Clip, rng: np.random.Generator) -> Clip:
    for transform in self.transforms:
      clip = transform(clip, rng)
    return clip


class RandomHorizontalFlip:
  """Mirrors the whole clip (frames and masks) left-right with probability `p`."""

  def __init__(self, p: float = 0.5):
    self.p = p

  def __call__(self, clip: Clip, rng: np.random.Generator) -> Clip:
    if rng.random() >= self.p:
      return clip
    return Clip(np.ascontiguousarray(clip.frames[:, :, ::-1]), np.ascontiguousarray(clip.masks[..., ::-1]))


def inverse_affine_matrix(angle: float, shear_x: float, center: tuple[float, float]) -> tuple[float, ...]:
  """PIL `Image.AFFINE` coefficients (output pixel -> input pixel) of a rotation then x-shear about `center`.

  `angle` and `shear_x` are in degrees with torchvision's `F.affine` conventions (no translation, scale 1):
  the forward linear map is R(angle) @ [[1, -tan(shear_x)], [0, 1]] in (x, y) image coordinates.
  """
  rot, shear = math.radians(angle), math.radians(shear_x)
  forward = np.array([[math.cos(rot), -math.sin(rot)], [math.sin(rot), math.cos(rot)]]) @ np.array(
      [[1.0, -math.tan(shear)], [0.0, 1.0]])
  inv = np.linalg.inv(forward)
  c = np.asarray(center, np.float64)
  offset = c - inv @ c
  return (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1])


class RandomAffine:
  """One random rotation in ±`degrees` and x-shear in ±`shear` for the whole clip, about the frame centre.

  Frames are warped bilinearly with the `fill` colour outside, masks with nearest neighbour and 0 outside.
  If a first-frame object mask becomes empty, new parameters are drawn, up to `num_tries` draws in all;
  if all fail the clip is returned unchanged (the official transform's `num_tentatives`, default 1).
  """

  def __init__(self, degrees: float = 25.0, shear: float = 20.0, fill: Sequence[int] = IMAGE_MEAN_FILL,
               num_tries: int = 1):
    self.degrees = degrees
    self.shear = shear
    self.fill = tuple(int(v) for v in fill)
    self.num_tries = num_tries

  def __call__(self, clip: Clip, rng: np.random.Generator) -> Clip:
    t, h, w, _ = clip.frames.shape
    for _ in range(self.num_tries):
      angle = rng.uniform(-self.degrees, self.degrees)
      shear = rng.uniform(-self.shear, self.shear)
      matrix = inverse_affine_matrix(angle, shear, (w * 0.5, h * 0.5))
      first = np.array([_warp_mask(m, matrix) for m in clip.masks[0]], bool).reshape(clip.masks[0].shape)
      if all(m.any() for m in first):
        break
    else:
      return clip
    masks = np.empty_like(clip.masks)
    masks[0] = first
    for i in range(1, t):
      for j in range(clip.masks.shape[1]):
        masks[i, j] = _warp_mask(clip.masks[i, j], matrix)
    frames = np.stack([
        np.asarray(Image.fromarray(f).transform((w, h), Image.AFFINE, matrix, Image.BILINEAR, fillcolor=self.fill))
        for f in clip.frames])
    return Clip(frames, masks)


def _warp_mask(mask: np.ndarray, matrix: tuple[float, ...]) -> np.ndarray:
  h, w = mask.shape
  image = Image.fromarray(mask.astype(np.uint8) * 255)
  return np.asarray(image.transform((w, h), Image.AFFINE, matrix, Image.NEAREST, fillcolor=0)) > 127


def resize_frame(frame: np.ndarray, size: int) -> np.ndarray:
  """A (H, W, 3) uint8 frame resized to (size, size) with PIL's (antialiased) bilinear filter."""
  if frame.shape[:2] == (size, size):
    return frame
  return np.asarray(Image.fromarray(frame).resize((size, size), Image.BILINEAR))


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
  """A (H, W) bool mask resized to (size, size): antialiased bilinear on 0/255, kept where >= 128."""
  if mask.shape == (size, size):
    return mask
  return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.BILINEAR)) >= 128


class SquareResize:
  """Resizes every frame and mask to (resolution, resolution), aspect ratio not preserved."""

  def __init__(self, resolution: int):
    self.resolution = resolution

  def __call__(self, clip: Clip, rng: np.random.Generator) -> Clip:
    del rng
    s = self.resolution
    t, o = clip.masks.shape[:2]
    frames = np.stack([resize_frame(f, s) for f in clip.frames])
    masks = np.stack([resize_mask(m, s) for m in clip.masks.reshape(t * o, *clip.masks.shape[2:])])
    return Clip(frames, masks.reshape(t, o, s, s))


class ColorJitter:
  """Brightness, contrast and saturation factors drawn uniformly in [max(0, 1 - x), 1 + x], applied in a
  random order; one draw for the whole clip if `consistent`, else one per frame. No hue change."""

  def __init__(self, brightness: float, contrast: float, saturation: float, consistent: bool):
    self.ranges = [(max(0.0, 1 - x), 1 + x) for x in (brightness, contrast, saturation)]
    self.consistent = consistent

  def _draw(self, rng: np.random.Generator) -> list[tuple[int, float]]:
    order = rng.permutation(3)
    factors = [rng.uniform(lo, hi) for lo, hi in self.ranges]
    return [(int(i), factors[i]) for i in order]

  def __call__(self, clip: Clip, rng: np.random.Generator) -> Clip:
    params = self._draw(rng) if self.consistent else None
    frames = np.stack([adjust_colors(f, params if self.consistent else self._draw(rng)) for f in clip.frames])
    return Clip(frames, clip.masks)


_ENHANCERS = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)


def adjust_colors(frame: np.ndarray, ops: Sequence[tuple[int, float]]) -> np.ndarray:
  """Applies (op, factor) pairs, op 0 brightness / 1 contrast / 2 saturation, with PIL's ImageEnhance."""
  image = Image.fromarray(frame)
  for op, factor in ops:
    image = _ENHANCERS[op](image).enhance(factor)
  return np.asarray(image)


class RandomGrayscale:
  """Converts the whole clip to 3-channel grayscale (PIL "L" luma) with probability `p`."""

  def __init__(self, p: float = 0.05):
    self.p = p

  def __call__(self, clip: Clip, rng: np.random.Generator) -> Clip:
    if rng.random() >= self.p:
      return clip
    gray = np.stack([np.asarray(Image.fromarray(f).convert("L")) for f in clip.frames])
    return Clip(np.repeat(gray[..., None], 3, axis=-1), clip.masks)


def default_augment_config() -> ml_collections.ConfigDict:
  """Augmentation parameters of the official training configs; `enabled=False` keeps only the resize."""
  return ml_collections.ConfigDict(dict(
      enabled=True,
      hflip_prob=0.5,
      affine_degrees=25.0,
      affine_shear=20.0,
      affine_num_tries=1,
      affine_fill=IMAGE_MEAN_FILL,
      clip_jitter=(0.1, 0.03, 0.03),  # brightness, contrast, saturation; one draw per clip
      grayscale_prob=0.05,
      frame_jitter=(0.1, 0.05, 0.05),  # one draw per frame
  ))


def build_transforms(config: ml_collections.ConfigDict, resolution: int) -> Compose:
  """The training transform chain of `config` (see `default_augment_config`) ending at `resolution`²."""
  if not config.enabled:
    return Compose([SquareResize(resolution)])
  return Compose([
      RandomHorizontalFlip(config.hflip_prob),
      RandomAffine(config.affine_degrees, config.affine_shear, config.affine_fill, config.affine_num_tries),
      SquareResize(resolution),
      ColorJitter(*config.clip_jitter, consistent=True),
      RandomGrayscale(config.grayscale_prob),
      ColorJitter(*config.frame_jitter, consistent=False),
  ])
