"""Generated test images and videos: textured backgrounds with a few smooth shapes."""

import numpy as np


def shapes_image(height: int, width: int, seed: int = 0, shift: tuple[int, int] = (0, 0)) -> np.ndarray:
  """An RGB uint8 image with an ellipse, a rectangle and a triangle over a noisy gradient."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
  base = np.stack([xx / width, yy / height, 0.5 + 0.2 * np.sin(xx / 17.0) * np.cos(yy / 23.0)], -1) * 160
  image = base + rng.normal(0, 12, (height, width, 3))
  dy, dx = shift
  ellipse = ((xx - 0.3 * width - dx) / (0.15 * width)) ** 2 + ((yy - 0.4 * height - dy) / (0.2 * height)) ** 2 < 1
  rect = (np.abs(xx - 0.7 * width - dx) < 0.12 * width) & (np.abs(yy - 0.6 * height - dy) < 0.18 * height)
  tri = (yy - dy > 0.7 * height) & (np.abs(xx - 0.45 * width - dx) < (yy - dy - 0.7 * height) * 0.8)
  image[ellipse] = [220, 40, 40]
  image[rect] = [30, 200, 60]
  image[tri] = [40, 60, 230]
  return np.clip(image, 0, 255).astype(np.uint8)
