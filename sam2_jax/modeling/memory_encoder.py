"""Memory encoder: fuses a frame's image features and predicted mask into a memory (official `memory_encoder.py`)."""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sam2_jax.modeling.layers import Conv, Dense, DepthwiseConv, gelu, layer_norm
from sam2_jax.modeling.position_encoding import sine_pe_2d

Dtype = Any


class MaskDownSampler(nn.Module):
  """Strided convolutions (each followed by LayerNorm2d and GELU) from a mask to `embed_dim` channels.

  Every stage divides the resolution by `stride` and multiplies the channels by `stride ** 2`; a
  final 1x1 convolution maps to `embed_dim`. Submodules keep the official `nn.Sequential` indices:
  encoder_{3i} (conv), encoder_{3i+1} (norm), and encoder_{3n} (projection).
  """
  embed_dim: int = 256
  kernel_size: int = 3
  stride: int = 2
  padding: int = 1
  total_stride: int = 16
  dtype: Dtype = jnp.float32
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """(B, H, W, 1) mask -> (B, H / total_stride, W / total_stride, embed_dim)."""
    num_layers = int(math.log2(self.total_stride) // math.log2(self.stride))
    if self.stride ** num_layers != self.total_stride:
      raise ValueError(f"total_stride {self.total_stride} is not a power of stride {self.stride}.")
    channels = x.shape[-1]
    for i in range(num_layers):
      channels *= self.stride ** 2
      x = Conv(channels, self.kernel_size, self.stride, self.padding, dtype=self.dtype, kernels=self.kernels,
               name=f"encoder_{3 * i}")(x)
      x = layer_norm(1e-6, name=f"encoder_{3 * i + 1}")(x).astype(x.dtype)
      x = gelu(x)
    return Conv(self.embed_dim, dtype=self.dtype, kernels=self.kernels, name=f"encoder_{3 * num_layers}")(x)


class CXBlock(nn.Module):
  """ConvNeXt block: depthwise conv, LayerNorm2d, pointwise MLP (GELU), layer scale `gamma`, residual."""
  dim: int = 256
  kernel_size: int = 7  # "same" padding (the official padding 3)
  layer_scale_init_value: float = 1e-6
  dtype: Dtype = jnp.float32
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """(B, H, W, dim) -> (B, H, W, dim)."""
    y = DepthwiseConv(self.kernel_size, dtype=self.dtype, kernels=self.kernels, name="dwconv")(x)
    y = layer_norm(1e-6, name="norm")(y).astype(y.dtype)
    y = Dense(4 * self.dim, dtype=self.dtype, kernels=self.kernels, name="pwconv1")(y)
    y = gelu(y)
    y = Dense(self.dim, dtype=self.dtype, kernels=self.kernels, name="pwconv2")(y)
    gamma = self.param("gamma", nn.initializers.constant(self.layer_scale_init_value), (self.dim,))
    return x + gamma.astype(y.dtype) * y


class Fuser(nn.Module):
  """A stack of `num_layers` CXBlocks (layers_0, layers_1, ...)."""
  dim: int = 256
  num_layers: int = 2
  dtype: Dtype = jnp.float32
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """(B, H, W, dim) -> (B, H, W, dim)."""
    for i in range(self.num_layers):
      x = CXBlock(self.dim, dtype=self.dtype, kernels=self.kernels, name=f"layers_{i}")(x)
    return x


class MemoryEncoder(nn.Module):
  """Encodes (image features, mask) of a frame into `out_dim`-channel memory features and their sine PE."""
  out_dim: int = 64
  in_dim: int = 256
  dtype: Dtype = jnp.float32
  kernels: str = "auto"

  @nn.compact
  def __call__(self, pix_feat: jnp.ndarray, masks: jnp.ndarray,
               skip_mask_sigmoid: bool = False) -> dict[str, Any]:
    """Memory of a frame.

    Args:
      pix_feat: (B, h, w, in_dim) image features.
      masks: (B, H, W, 1) mask logits (or, with `skip_mask_sigmoid`, values already in mask space),
        H = 16 h.
      skip_mask_sigmoid: feed `masks` to the downsampler as they are instead of their sigmoid.

    Returns:
      {"vision_features": (B, h, w, out_dim), "vision_pos_enc": [(B, h, w, out_dim)]}.
    """
    if not skip_mask_sigmoid:
      masks = jax.nn.sigmoid(masks)
    kw = dict(dtype=self.dtype, kernels=self.kernels)
    masks = MaskDownSampler(self.in_dim, **kw, name="mask_downsampler")(masks)
    x = Conv(self.in_dim, **kw, name="pix_feat_proj")(pix_feat)
    x = x + masks
    x = Fuser(self.in_dim, **kw, name="fuser")(x)
    if self.out_dim != self.in_dim:
      x = Conv(self.out_dim, **kw, name="out_proj")(x)
    b, h, w, _ = x.shape
    pos = jnp.broadcast_to(jnp.asarray(sine_pe_2d(h, w, self.out_dim), x.dtype), (b, h, w, self.out_dim))
    return {"vision_features": x, "vision_pos_enc": [pos]}
