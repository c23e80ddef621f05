"""Hiera trunk of the SAM 2 image encoder (the official `backbones/hieradet.py`).

A hierarchical ViT: a 7x7/4 patch embedding, a windowed absolute position embedding, then four
stages of pre-norm transformer blocks. The first block of stages 2-4 halves the resolution by
max-pooling the queries inside each window and doubles width and heads. Returns the four
stage-end feature maps, channels last, highest resolution first.
"""

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sam2_jax.modeling import kernels
from sam2_jax.modeling.layers import Dense, MLP, gelu, layer_norm, repeating_runs, scan_layers

Dtype = Any

_CUBIC_A = -0.75  # torch's bicubic coefficient


def _cubic_weights(t: np.ndarray) -> np.ndarray:
  """Keys cubic-convolution weights of the 4 taps at offsets -1, 0, 1, 2 for fractions t: (n, 4)."""
  a = _CUBIC_A

  def near(x):  # |x| <= 1
    return ((a + 2) * x - (a + 3)) * x * x + 1

  def far(x):  # 1 < |x| < 2
    return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

  return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


@functools.lru_cache(maxsize=None)
def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
  """(out_size, in_size) matrix of torch's 1-D bicubic resize (align_corners=False).

  Half-pixel source coordinates (not clamped at 0), A = -0.75, out-of-range taps clamped to the
  border sample. `M_h @ X @ M_w.T` equals `F.interpolate(X, mode="bicubic")` for a 2-D X.
  """
  scale = in_size / out_size
  src = scale * (np.arange(out_size, dtype=np.float64) + 0.5) - 0.5
  base = np.floor(src)
  weights = _cubic_weights(src - base)
  taps = np.clip(base[:, None].astype(np.int64) + np.arange(-1, 3)[None, :], 0, in_size - 1)
  m = np.zeros((out_size, in_size), np.float64)
  np.add.at(m, (np.repeat(np.arange(out_size), 4), taps.ravel()), weights.ravel())
  m = m.astype(np.float32)
  m.setflags(write=False)  # cached: shared between callers
  return m


def window_partition(x: jnp.ndarray, window: int) -> tuple[jnp.ndarray, tuple[int, int]]:
  """(B, H, W, C) -> (B * nW, window, window, C), zero-padding H and W up to multiples of window."""
  b, h, w, c = x.shape
  hp, wp = -(-h // window) * window, -(-w // window) * window
  if (hp, wp) != (h, w):
    x = jnp.pad(x, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)))
  x = x.reshape(b, hp // window, window, wp // window, window, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c), (hp, wp)


def window_unpartition(windows: jnp.ndarray, window: int, padded_hw: tuple[int, int],
                       hw: tuple[int, int]) -> jnp.ndarray:
  """Inverse of `window_partition`: (B * nW, window, window, C) -> (B, H, W, C), padding cropped."""
  hp, wp = padded_hw
  h, w = hw
  c = windows.shape[-1]
  x = windows.reshape(-1, hp // window, wp // window, window, window, c)
  x = x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, hp, wp, c)
  return x[:, :h, :w, :]


def _max_pool(x: jnp.ndarray, stride: tuple[int, int]) -> jnp.ndarray:
  """Non-overlapping max pooling of (B, H, W, C) with kernel = stride (floor on odd sizes).

  A max over reshaped windows: the same values as a reduce-window, whose gradient XLA's CPU backend
  runs slowly (a variadic argmax reduce-window over index iotas).
  """
  b, h, w, c = x.shape
  sh, sw = stride
  x = x[:, :h - h % sh, :w - w % sw]
  return jnp.max(x.reshape(b, h // sh, sh, w // sw, sw, c), axis=(2, 4))


class MultiScaleAttention(nn.Module):
  """Multi-head self-attention on (B, H, W, C) tokens; queries optionally max-pooled by q_stride."""
  dim_out: int
  num_heads: int
  q_stride: tuple[int, int] | None = None
  dtype: Dtype = jnp.float32
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    b, h, w, _ = x.shape
    head_dim = self.dim_out // self.num_heads
    qkv = Dense(3 * self.dim_out, dtype=self.dtype, kernels=self.kernels, name="qkv")(x)
    qkv = qkv.reshape(b, h * w, 3, self.num_heads, head_dim)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if self.q_stride:
      q = _max_pool(q.reshape(b, h, w, self.dim_out), self.q_stride)
      h, w = q.shape[1:3]
      q = q.reshape(b, h * w, self.num_heads, head_dim)
    x = kernels.attention(q, k, v, self.kernels)
    x = x.reshape(b, h, w, self.dim_out)
    return Dense(self.dim_out, dtype=self.dtype, kernels=self.kernels, name="proj")(x)


class MultiScaleBlock(nn.Module):
  """Pre-norm Hiera block: (windowed) attention with optional q-pooling, then an MLP.

  When `dim != dim_out` the shortcut is `maxpool(proj(norm1(x)))`. Windowed blocks zero-pad the
  normed tokens to whole windows and attend over the padding without a mask.
  """
  dim: int
  dim_out: int
  num_heads: int
  mlp_ratio: float = 4.0
  drop_path: float = 0.0
  q_stride: tuple[int, int] | None = None
  window_size: int = 0
  dtype: Dtype = jnp.float32
  kernels: str = "auto"

  def _drop_path(self, x: jnp.ndarray, deterministic: bool) -> jnp.ndarray:
    if deterministic or self.drop_path == 0.0:
      return x
    keep = 1.0 - self.drop_path
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return x * (mask.astype(x.dtype) / keep if keep > 0.0 else mask.astype(x.dtype))

  @nn.compact
  def __call__(self, x: jnp.ndarray, deterministic: bool = True) -> jnp.ndarray:
    shortcut = x
    x = layer_norm(1e-6, name="norm1")(x)
    if self.dim != self.dim_out:
      shortcut = Dense(self.dim_out, dtype=self.dtype, kernels=self.kernels, name="proj")(x)
      if self.q_stride:
        shortcut = _max_pool(shortcut, self.q_stride)

    window = self.window_size
    if window > 0:
      x, padded_hw = window_partition(x, window)
    x = MultiScaleAttention(self.dim_out, self.num_heads, self.q_stride, dtype=self.dtype, kernels=self.kernels,
                            name="attn")(x)
    if window > 0:
      h, w = shortcut.shape[1:3]
      if self.q_stride:
        window //= self.q_stride[0]
        padded_hw = (-(-h // window) * window, -(-w // window) * window)
      x = window_unpartition(x, window, padded_hw, (h, w))

    x = shortcut + self._drop_path(x, deterministic)
    y = layer_norm(1e-6, name="norm2")(x)
    y = MLP(int(self.dim_out * self.mlp_ratio), self.dim_out, num_layers=2, activation=gelu,
            dtype=self.dtype, kernels=self.kernels, name="mlp")(y)
    return x + self._drop_path(y, deterministic)


class BlockSpec(NamedTuple):
  """Static layout of one Hiera block."""
  dim: int
  dim_out: int
  num_heads: int
  window_size: int
  q_stride: tuple[int, int] | None
  drop_path: float


class Hiera(nn.Module):
  """Hiera trunk: (B, H, W, 3) image -> the 4 stage-end maps (B, H/4/2^i, W/4/2^i, C_i), i = 0..3.

  H and W must be multiples of 32 (4 for the patch embedding times 8 for the tiled window
  position embedding; the official code asserts the same through its tiling).
  """
  embed_dim: int = 96
  num_heads: int = 1
  stages: tuple[int, ...] = (2, 3, 16, 3)
  global_att_blocks: tuple[int, ...] = (12, 16, 20)
  window_spec: tuple[int, ...] = (8, 4, 14, 7)
  window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14)
  q_pool: int = 3
  q_stride: tuple[int, int] = (2, 2)
  dim_mul: float = 2.0
  head_mul: float = 2.0
  drop_path_rate: float = 0.0
  remat: bool = False  # keep only each block's input for the backward pass, and recompute the rest
  dtype: Dtype = jnp.float32
  kernels: str = "auto"

  @property
  def stage_ends(self) -> list[int]:
    """Index of the last block of each stage."""
    return [int(e) - 1 for e in np.cumsum(self.stages)]

  def block_specs(self) -> list[BlockSpec]:
    """Per-block dims, heads, window size (lagging one block behind the stage), q-pool stride."""
    if len(self.stages) != len(self.window_spec):
      raise ValueError("stages and window_spec must have the same length.")
    stage_ends = self.stage_ends
    q_pool_blocks = [e + 1 for e in stage_ends[:-1]][:self.q_pool]
    depth = sum(self.stages)
    drop_rates = np.linspace(0.0, self.drop_path_rate, depth, dtype=np.float32)
    dim, heads, stage = self.embed_dim, self.num_heads, 0
    specs = []
    for i in range(depth):
      window = 0 if i in self.global_att_blocks else self.window_spec[stage]
      dim_out = dim
      if i - 1 in stage_ends:
        dim_out, heads, stage = int(dim * self.dim_mul), int(heads * self.head_mul), stage + 1
      specs.append(BlockSpec(dim, dim_out, heads, window,
                             tuple(self.q_stride) if i in q_pool_blocks else None, float(drop_rates[i])))
      dim = dim_out
    return specs

  @property
  def channel_list(self) -> tuple[int, ...]:
    """Stage-end widths, lowest resolution first (the neck's `backbone_channel_list`)."""
    specs = self.block_specs()
    return tuple(specs[i].dim_out for i in reversed(self.stage_ends))

  def pos_embed_for(self, pos_embed: jnp.ndarray, pos_embed_window: jnp.ndarray,
                    hw: tuple[int, int]) -> jnp.ndarray:
    """Bicubically resized background embedding plus the tiled window embedding: (1, H, W, C)."""
    h, w = hw
    win_h, win_w = pos_embed_window.shape[2:]
    if h % win_h or w % win_w:
      raise ValueError(f"Token grid {hw} is not a multiple of the window embedding size "
                       f"{(win_h, win_w)}; the image size must be a multiple of {4 * win_h}.")
    m_h = bicubic_matrix(pos_embed.shape[2], h)
    m_w = bicubic_matrix(pos_embed.shape[3], w)
    bkg = jnp.einsum("hi,wj,cij->hwc", m_h, m_w, pos_embed[0], precision=jax.lax.Precision.HIGHEST)
    window = jnp.tile(pos_embed_window[0].transpose(1, 2, 0), (h // win_h, w // win_w, 1))
    return (bkg + window)[None]

  @nn.compact
  def __call__(self, x: jnp.ndarray, deterministic: bool = True) -> list[jnp.ndarray]:
    x = PatchEmbed(self.embed_dim, dtype=self.dtype, name="patch_embed")(x)
    pos_embed = self.param("pos_embed", nn.initializers.zeros_init(),
                           (1, self.embed_dim, *self.window_pos_embed_bkg_spatial_size))
    pos_embed_window = self.param("pos_embed_window", nn.initializers.zeros_init(),
                                  (1, self.embed_dim, self.window_spec[0], self.window_spec[0]))
    x = x + self.pos_embed_for(pos_embed, pos_embed_window, x.shape[1:3]).astype(x.dtype)

    specs = self.block_specs()
    blocks = [MultiScaleBlock(spec.dim, spec.dim_out, spec.num_heads, drop_path=spec.drop_path,
                              q_stride=spec.q_stride, window_size=spec.window_size, dtype=self.dtype,
                              kernels=self.kernels, name=f"blocks_{i}") for i, spec in enumerate(specs)]
    outputs, stage_start = [], 0
    for stage_end in self.stage_ends:  # repeating blocks of a stage run as one scan
      for start, period, repeats in repeating_runs(specs[stage_start:stage_end + 1]):
        run = blocks[stage_start + start:stage_start + start + period * repeats]
        x = scan_layers(run, x, deterministic, period=period, remat=self.remat)
      outputs.append(x)
      stage_start = stage_end + 1
    return outputs


class PatchEmbed(nn.Module):
  """Conv2d(3 -> embed_dim, 7x7, stride 4, padding 3) on a channels-last image."""
  embed_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    return nn.Conv(self.embed_dim, (7, 7), strides=(4, 4), padding=((3, 3), (3, 3)), dtype=self.dtype,
                   name="proj")(x)
