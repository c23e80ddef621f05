"""Small building blocks shared by the SAM 2 modules (the official `sam2_utils.py`)."""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def gelu(x: jnp.ndarray) -> jnp.ndarray:
  """Exact (erf) GELU, as torch.nn.GELU()."""
  return jax.nn.gelu(x, approximate=False)


def layer_norm(eps: float, name: str | None = None) -> nn.LayerNorm:
  """LayerNorm over the last axis with torch's numerics (two-pass variance, float32 statistics)."""
  return nn.LayerNorm(epsilon=eps, use_fast_variance=False, dtype=jnp.float32, name=name)


class MLP(nn.Module):
  """`num_layers` Dense layers named layers_0.. with an activation between them."""
  hidden_dim: int
  output_dim: int
  num_layers: int
  activation: Callable[[jnp.ndarray], jnp.ndarray] = nn.relu
  sigmoid_output: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    for i in range(self.num_layers):
      last = i == self.num_layers - 1
      x = nn.Dense(self.output_dim if last else self.hidden_dim, dtype=self.dtype, name=f"layers_{i}")(x)
      if not last:
        x = self.activation(x)
    return nn.sigmoid(x) if self.sigmoid_output else x


class DepthwiseConv(nn.Module):
  """Depthwise 2-D convolution ("same" size, stride 1) as a sum of shifted products.

  Params are those of `nn.Conv(..., feature_group_count=C)` (kernel (k, k, 1, C), bias (C,)). The
  shifted-sum form computes the same result, and its gradient stays a cheap elementwise product:
  XLA's CPU backend lowers the filter gradient of a grouped convolution as a dense C x C one.
  """
  kernel_size: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    k, c = self.kernel_size, x.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, 1, c)).astype(self.dtype)
    bias = self.param("bias", nn.initializers.zeros, (c,)).astype(self.dtype)
    h, w = x.shape[-3:-1]
    pad = k // 2
    xp = jnp.pad(x.astype(self.dtype), [(0, 0)] * (x.ndim - 3) + [(pad, pad), (pad, pad), (0, 0)])
    out = sum(xp[..., i:i + h, j:j + w, :] * kernel[i, j, 0] for i in range(k) for j in range(k))
    return out + bias
