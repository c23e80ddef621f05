"""Host-side input checks and the model's image preprocessing (shared by the predictors)."""

import jax
import jax.numpy as jnp
import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def normalize(images):
  """RGB values in 0..255 (..., 3), uint8 or float -> float32 with ImageNet's normalisation, as the official
  models take them. NumPy in, NumPy out; a JAX array in, a JAX array out."""
  return (images.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def as_rgb_uint8(image, what: str = "image") -> np.ndarray:
  """An HWC RGB uint8 array from a NumPy array or a PIL image; ValueError otherwise."""
  if hasattr(image, "convert") and hasattr(image, "size"):  # PIL image
    image = np.asarray(image.convert("RGB"))
  if not isinstance(image, np.ndarray):
    raise ValueError(f"{what} must be a NumPy array (H, W, 3) or a PIL image, got {type(image).__name__}.")
  if image.ndim != 3 or image.shape[-1] != 3 or min(image.shape[:2]) < 1:
    raise ValueError(f"{what} must have shape (H, W, 3) (RGB, channels last), got {image.shape}.")
  if image.dtype != np.uint8:
    raise ValueError(f"{what} must be uint8 with values in [0, 255], got dtype {image.dtype}.")
  return image


# Point labels the prompt encoder knows: padding, background, foreground and the two box corners.
POINT_LABELS = (-1, 0, 1, 2, 3)


def check_points(coords: np.ndarray, labels: np.ndarray, what: str = "point_coords") -> None:
  """Raises ValueError for non-finite coordinates or labels outside `POINT_LABELS`."""
  if not np.all(np.isfinite(coords)):
    raise ValueError(f"{what} must be finite numbers, got NaN or infinity in {np.asarray(coords).tolist()}.")
  unknown = sorted(set(np.asarray(labels).ravel().tolist()) - set(POINT_LABELS))
  if unknown:
    raise ValueError(f"point labels must be 1 (foreground), 0 (background) or -1 (padding), got {unknown}.")


def check_boxes(boxes: np.ndarray, what: str = "box") -> None:
  """Raises ValueError unless every (x0, y0, x1, y1) in `boxes` (..., 4) is finite with x0 < x1 and y0 < y1."""
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  if not np.all(np.isfinite(boxes)):
    raise ValueError(f"{what} must be finite numbers, got NaN or infinity in {boxes.tolist()}.")
  empty = (boxes[:, 0] >= boxes[:, 2]) | (boxes[:, 1] >= boxes[:, 3])
  if empty.any():
    raise ValueError(f"{what} {boxes[np.argmax(empty)].tolist()} is empty or inverted: expected x0 < x1 and y0 < y1.")


@jax.jit(static_argnames="size")
def preprocess(image: jnp.ndarray, size: int) -> jnp.ndarray:
  """uint8 (H, W, 3) -> float32 (size, size, 3): bilinear (antialiased) resize and ImageNet normalisation.

  Matches the official image predictor (torchvision ToTensor, Resize((size, size)), Normalize).
  """
  return normalize(jax.image.resize(image.astype(jnp.float32), (size, size, 3), "bilinear", antialias=True))
