"""Small building blocks shared by the SAM 2 modules (the official `sam2_utils.py`)."""

import functools
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


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul(x: jax.Array, kernel: jax.Array, precision: Any) -> jax.Array:
  """x (..., K) @ kernel (K, N): the product of `Dense`, with its own gradient rule."""
  return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())), precision=precision)


def _matmul_fwd(x, kernel, precision):
  return _matmul(x, kernel, precision), (x, kernel)


def _matmul_bwd(precision, residuals, dy):
  # The same products as autodiff's. In autodiff's form XLA's CPU backend fused the transposed copy
  # that the kernel gradient's product needs into the loops producing the incoming gradient, which
  # then ran with strided reads: the image encoder's forward and backward took 1.3x as long.
  x, kernel = residuals
  dx = jnp.einsum("...n,kn->...k", dy, kernel, precision=precision)
  dkernel = jnp.einsum("...k,...n->kn", x, dy, precision=precision)
  return dx, dkernel


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def _dense_dot_general(lhs, rhs, dimension_numbers, precision=None, **kwargs):
  """`lax.dot_general` as `nn.Dense` calls it, through `_matmul` (any other form goes to lax)."""
  if dimension_numbers == (((lhs.ndim - 1,), (0,)), ((), ())) and rhs.ndim == 2 and not kwargs:
    return _matmul(lhs, rhs, precision)
  return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision, **kwargs)


class Dense(nn.Dense):
  """`nn.Dense` (same params and results) with a gradient rule that is faster on XLA's CPU backend."""
  dot_general: Any = _dense_dot_general


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
      x = Dense(self.output_dim if last else self.hidden_dim, dtype=self.dtype, name=f"layers_{i}")(x)
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


class MatmulConv(nn.Module):
  """2-D convolution (zero padding) as a matmul over its input patches.

  Params are those of `nn.Conv(features, (k, k), strides=(s, s), padding=((p, p), (p, p)))`
  (kernel (k, k, C_in, features), bias (features,)), and so is the result. XLA's CPU backend runs
  the kernel gradient of a convolution (even a 1x1 one) and the input gradient of a strided one on
  a slow generic path; as matmuls, slices and reshapes both are fast. Kernels equal to the stride
  without padding (patchify, 1x1) reshape the input into patches; others gather k * k strided slices.
  """
  features: int
  kernel_size: int = 1
  stride: int = 1
  padding: int = 0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """(..., H, W, C_in) -> (..., (H + 2p - k) / s + 1, (W + 2p - k) / s + 1, features)."""
    k, s, p, c = self.kernel_size, self.stride, self.padding, x.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, c, self.features)).astype(self.dtype)
    bias = self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)
    x = x.astype(self.dtype)
    *lead, h, w, _ = x.shape
    if k == s and p == 0:
      x = x.reshape(*lead, h // k, k, w // k, k, c)
      return jnp.einsum("...hpwqc,pqco->...hwo", x, kernel) + bias
    x = jnp.pad(x, [(0, 0)] * len(lead) + [(p, p), (p, p), (0, 0)])
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    patches = jnp.stack([x[..., i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s, :]
                         for i in range(k) for j in range(k)], axis=-2)
    return jnp.einsum("...hwkc,kco->...hwo", patches, kernel.reshape(k * k, c, self.features)) + bias


class PatchConvTranspose(nn.Module):
  """Transposed convolution whose kernel equals its stride (non-overlapping outputs), as one matmul.

  Params are those of `nn.ConvTranspose(features, (p, p), strides=(p, p), padding="VALID",
  transpose_kernel=True)` (kernel (p, p, features, C_in): torch's ConvTranspose2d weight permuted
  (2, 3, 1, 0)), bias (features,)); output pixel (p i + a, p j + b) is input pixel (i, j) times
  kernel[a, b]. Same result; XLA's CPU backend runs the gradients of this convolution slowly.
  """
  features: int
  patch_size: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """(..., H, W, C_in) -> (..., p H, p W, features)."""
    p, c = self.patch_size, x.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (p, p, self.features, c)).astype(self.dtype)
    bias = self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)
    *lead, h, w, _ = x.shape
    y = jnp.einsum("...hwc,pqoc->...hpwqo", x.astype(self.dtype), kernel)
    return y.reshape(*lead, h * p, w * p, self.features) + bias
