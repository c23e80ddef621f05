"""Host-side input checks and the model's image preprocessing (shared by the predictors)."""

import jax
import jax.numpy as jnp
import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


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


@jax.jit(static_argnames="size")
def preprocess(image: jnp.ndarray, size: int) -> jnp.ndarray:
  """uint8 (H, W, 3) -> float32 (size, size, 3): bilinear (antialiased) resize and ImageNet normalisation.

  Matches the official image predictor (torchvision ToTensor, Resize((size, size)), Normalize).
  """
  x = image.astype(jnp.float32) / 255.0
  x = jax.image.resize(x, (size, size, 3), "bilinear", antialias=True)
  return (x - IMAGENET_MEAN) / IMAGENET_STD
