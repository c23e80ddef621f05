"""Small building blocks shared by the SAM 2 modules (the official `sam2_utils.py`)."""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

from sam2_jax.modeling import kernels

Dtype = Any


def gelu(x: jnp.ndarray) -> jnp.ndarray:
  """Exact (erf) GELU, as torch.nn.GELU()."""
  return jax.nn.gelu(x, approximate=False)


def layer_norm(eps: float, name: str | None = None) -> nn.LayerNorm:
  """LayerNorm over the last axis with torch's numerics (two-pass variance, float32 statistics)."""
  return nn.LayerNorm(epsilon=eps, use_fast_variance=False, dtype=jnp.float32, name=name)


class Dense(nn.Module):
  """`nn.Dense` (same params: kernel (in, features), bias (features,); same results) through `kernels.dense`."""
  features: int
  dtype: Dtype | None = None
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
    return kernels.dense(x, kernel, self.kernels) + bias


class MLP(nn.Module):
  """`num_layers` Dense layers named layers_0.. with an activation between them."""
  hidden_dim: int
  output_dim: int
  num_layers: int
  activation: Callable[[jnp.ndarray], jnp.ndarray] = nn.relu
  sigmoid_output: bool = False
  dtype: Dtype = jnp.float32
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    for i in range(self.num_layers):
      last = i == self.num_layers - 1
      x = Dense(self.output_dim if last else self.hidden_dim, dtype=self.dtype, kernels=self.kernels,
                name=f"layers_{i}")(x)
      if not last:
        x = self.activation(x)
    return nn.sigmoid(x) if self.sigmoid_output else x


class Conv(nn.Module):
  """2-D convolution with zero padding, through `kernels.conv`.

  Params are those of `nn.Conv(features, (k, k), strides=(s, s), padding=((p, p), (p, p)))`
  (kernel (k, k, C_in, features), bias (features,)), and so is the result.
  """
  features: int
  kernel_size: int = 1
  stride: int = 1
  padding: int = 0
  dtype: Dtype = jnp.float32
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """(..., H, W, C_in) -> (..., (H + 2p - k) / s + 1, (W + 2p - k) / s + 1, features)."""
    k = self.kernel_size
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
    return kernels.conv(x, kernel, self.stride, self.padding, self.kernels) + bias


class DepthwiseConv(nn.Module):
  """Depthwise 2-D convolution ("same" size, stride 1), through `kernels.depthwise_conv`.

  Params are those of `nn.Conv(..., feature_group_count=C)` (kernel (k, k, 1, C), bias (C,)).
  """
  kernel_size: int
  dtype: Dtype = jnp.float32
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    k, c = self.kernel_size, x.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, 1, c))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
    return kernels.depthwise_conv(x, kernel, self.kernels) + bias


class PatchConvTranspose(nn.Module):
  """Transposed convolution whose kernel equals its stride (non-overlapping outputs), through
  `kernels.patch_conv_transpose`.

  Params are those of `nn.ConvTranspose(features, (p, p), strides=(p, p), padding="VALID",
  transpose_kernel=True)` (kernel (p, p, features, C_in): torch's ConvTranspose2d weight permuted
  (2, 3, 1, 0)), bias (features,)), and so is the result.
  """
  features: int
  patch_size: int
  dtype: Dtype = jnp.float32
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """(..., H, W, C_in) -> (..., p H, p W, features)."""
    p = self.patch_size
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (p, p, self.features, x.shape[-1]))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
    return kernels.patch_conv_transpose(x, kernel, self.kernels) + bias
