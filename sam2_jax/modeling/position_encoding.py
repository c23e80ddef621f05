"""Position encodings: 2-D sine (FPN neck, memory), random Fourier (prompts), 1-D sine, axial RoPE."""

import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


def sine_pe_2d(height: int, width: int, num_pos_feats: int, temperature: float = 10000.0) -> np.ndarray:
  """Normalised 2-D sine encoding of an (H, W) grid, channels last: (H, W, num_pos_feats).

  The first half of the channels encodes y, the second x; sin and cos are interleaved.
  """
  half = num_pos_feats // 2
  scale = np.float32(2 * math.pi)
  y = np.arange(1, height + 1, dtype=np.float32) / (np.float32(height) + np.float32(1e-6)) * scale
  x = np.arange(1, width + 1, dtype=np.float32) / (np.float32(width) + np.float32(1e-6)) * scale
  dim_t = np.arange(half, dtype=np.float32)
  dim_t = np.float32(temperature) ** (2 * (dim_t // 2) / np.float32(half))

  def encode(pos):
    p = pos[:, None] / dim_t
    return np.stack([np.sin(p[:, 0::2]), np.cos(p[:, 1::2])], axis=2).reshape(len(pos), half)

  pos_y = np.broadcast_to(encode(y)[:, None, :], (height, width, half))
  pos_x = np.broadcast_to(encode(x)[None, :, :], (height, width, half))
  return np.concatenate([pos_y, pos_x], axis=-1).astype(np.float32)


def sine_pe_1d(positions: jnp.ndarray, dim: int, temperature: float = 10000.0) -> jnp.ndarray:
  """1-D sine encoding `[sin(p / t_i), cos(p / t_i)]` of `positions` (...,) -> (..., dim)."""
  half = dim // 2
  dim_t = jnp.arange(half, dtype=jnp.float32)
  dim_t = temperature ** (2 * (dim_t // 2) / half)
  p = positions[..., None] / dim_t
  return jnp.concatenate([jnp.sin(p), jnp.cos(p)], axis=-1)


class PositionEmbeddingRandom(nn.Module):
  """Random-Fourier position encoding of the prompt encoder (a fixed Gaussian matrix)."""
  num_pos_feats: int = 128

  def setup(self):
    # A buffer in the official model: initialised with randn, always loaded from the checkpoint.
    self.positional_encoding_gaussian_matrix = self.param(
        "positional_encoding_gaussian_matrix", nn.initializers.normal(1.0), (2, self.num_pos_feats))

  def encode(self, coords: jnp.ndarray) -> jnp.ndarray:
    """Encodes coordinates normalised to [0, 1]: (..., 2) -> (..., 2 * num_pos_feats)."""
    coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix.astype(jnp.float32)
    coords = 2 * np.pi * coords
    return jnp.concatenate([jnp.sin(coords), jnp.cos(coords)], axis=-1)

  def __call__(self, size: tuple[int, int]) -> jnp.ndarray:
    """Dense encoding of an (h, w) grid of pixel centres: (h, w, C)."""
    h, w = size
    y = (jnp.arange(h, dtype=jnp.float32) + 0.5) / h
    x = (jnp.arange(w, dtype=jnp.float32) + 0.5) / w
    grid = jnp.stack(jnp.meshgrid(x, y, indexing="xy"), axis=-1)
    return self.encode(grid)

  def encode_points(self, coords: jnp.ndarray, image_size: tuple[int, int]) -> jnp.ndarray:
    """Encodes pixel coordinates (..., 2) in an image of size (H, W)."""
    h, w = image_size
    coords = coords.astype(jnp.float32) / jnp.array([w, h], jnp.float32)
    return self.encode(coords)


def axial_rope_angles(dim: int, end_x: int, end_y: int, theta: float = 10000.0) -> np.ndarray:
  """Rotation angles of the 2-D axial RoPE: (end_x * end_y, dim // 2).

  Token t sits at x = t % end_x, y = t // end_x; the first dim // 4 pairs rotate with x,
  the rest with y.
  """
  freqs = 1.0 / (np.float32(theta) ** (np.arange(0, dim, 4)[: dim // 4].astype(np.float32) / np.float32(dim)))
  t = np.arange(end_x * end_y, dtype=np.float32)
  t_x, t_y = t % end_x, np.floor(t / end_x)
  return np.concatenate([np.outer(t_x, freqs), np.outer(t_y, freqs)], axis=-1).astype(np.float32)


def apply_rope(x: jnp.ndarray, angles: np.ndarray | jnp.ndarray) -> jnp.ndarray:
  """Rotates interleaved channel pairs (0,1), (2,3), ... of x (..., N, D) by angles (N, D // 2).

  Computed in float32 and cast back to x's dtype, as the official complex-valued version.
  """
  dtype = x.dtype
  x = x.astype(jnp.float32).reshape(*x.shape[:-1], -1, 2)
  xp = np if isinstance(angles, np.ndarray) else jnp  # NumPy angles: cos and sin become constants
  cos, sin = xp.cos(angles), xp.sin(angles)
  a, b = x[..., 0], x[..., 1]
  out = jnp.stack([a * cos - b * sin, a * sin + b * cos], axis=-1)
  return out.reshape(*out.shape[:-2], -1).astype(dtype)
