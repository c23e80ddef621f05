"""Small building blocks shared by the SAM 2 modules (the official `sam2_utils.py`)."""

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype

from sam2_jax.modeling import kernels

Dtype = Any


def gelu(x: jnp.ndarray) -> jnp.ndarray:
  """Exact GELU, x / 2 (1 + erf(x / sqrt 2)), computed in float32 as torch.nn.GELU() computes it.

  `lax.erf` is one HLO op, which GPU compilers expand only when emitting code; `jax.nn.gelu` goes
  through erfc, whose polynomial expansion makes XLA's GPU fusion pass several times slower.
  """
  x32 = x.astype(jnp.float32)
  return (0.5 * x32 * (1.0 + jax.lax.erf(x32 * np.float32(1 / np.sqrt(2))))).astype(x.dtype)


def layer_norm(eps: float, name: str | None = None) -> nn.LayerNorm:
  """LayerNorm over the last axis with torch's numerics (two-pass variance, float32 statistics)."""
  return nn.LayerNorm(epsilon=eps, use_fast_variance=False, dtype=jnp.float32, name=name)


def scan_layers(layers: Sequence[nn.Module], x: jnp.ndarray, *args, period: int = 1, remat: bool = False,
                **kwargs) -> jnp.ndarray:
  """`layers[-1](... layers[0](x, *args, **kwargs) ...)` as one `lax.scan` over the layers' stacked params.

  `layers` are submodules of the calling module that repeat with `period`: `layers[i]` and
  `layers[i + period]` have equal definitions but for their names. Their params stay one subtree
  per layer (the official state dict's `layers.0`, `layers.1`, ...). The program holds one copy of
  the `period` layers instead of one per layer, which keeps compile times down. While the params
  are being initialised the layers run one by one, creating them. Each layer gets its own
  "dropout" rng when the caller has one. With `remat`, a differentiated program keeps only each
  period's input and recomputes the rest in the backward pass.
  """
  first = layers[0]
  if first.is_initializing() or (len(layers) == period and not remat):
    for layer in layers:
      x = layer(x, *args, **kwargs)
    return x
  if len(layers) % period:
    raise ValueError(f"{len(layers)} layers are not a whole number of periods of {period}.")
  repeats = len(layers) // period
  stack = lambda trees: jax.tree.map(lambda *p: jnp.stack(p), *trees)
  params = [stack([layer.variables["params"] for layer in layers[j::period]]) for j in range(period)]
  has_rng = first.has_rng("dropout")
  rngs = (jax.random.split(first.make_rng("dropout"), (repeats, period)) if has_rng
          else jnp.zeros((repeats, period)))
  layer_defs = [layer.clone(parent=None, name=None) for layer in layers[:period]]

  def body(x, per_repeat):
    params, rng = per_repeat
    for j, layer_def in enumerate(layer_defs):
      x = layer_def.apply({"params": params[j]}, x, *args, **kwargs, rngs={"dropout": rng[j]} if has_rng else None)
    return x, None

  if remat:
    body = jax.checkpoint(body)
    if repeats == 1:  # one period: no scan (its layers may change the shape of x)
      return body(x, jax.tree.map(lambda a: a[0], (params, rngs)))[0]
  return jax.lax.scan(body, x, (params, rngs))[0]


def repeating_runs(keys: Sequence[Any]) -> list[tuple[int, int, int]]:
  """Splits `keys` into runs (start, period, repeats) of a pattern repeated back to back, greedily
  from the left, each run covering as many keys as it can (the shortest period on ties).

  [a, b, c, b, c, b, c, d] -> [(0, 1, 1), (1, 2, 3), (7, 1, 1)].
  """
  runs, i, n = [], 0, len(keys)
  while i < n:
    best = (1, 1)
    for period in range(1, (n - i) // 2 + 1):
      repeats = 1
      while keys[i + repeats * period:i + (repeats + 1) * period] == keys[i:i + period]:
        repeats += 1
      if repeats > 1 and period * repeats > best[0] * best[1]:
        best = (period, repeats)
    runs.append((i, *best))
    i += best[0] * best[1]
  return runs


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
