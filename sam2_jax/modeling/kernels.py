"""How convolutions, dense products and attention are computed, chosen per backend.

The model calls these functions for every convolution, dense product and attention; `kernels` (the
model config field) picks one of two implementations with the same params and the same results:
- "xla": standard XLA ops, for GPUs and TPUs: `lax.conv_general_dilated` / `lax.conv_transpose`
  (cuDNN convolutions on GPUs), `lax.dot_general` with autodiff's gradient, and
  `jax.nn.dot_product_attention`, as cuDNN flash attention on NVIDIA GPUs where its constraints
  hold (bf16/fp16, head dim a multiple of 8 up to 128, or 256 from Hopper on) and XLA's elsewhere.
- "cpu": rewrites that XLA's CPU backend runs faster: convolutions as matmuls over input patches,
  the depthwise convolution as shifted products, the transposed patch convolution as one matmul,
  dense products with a gradient rule of their own, and large attentions over chunks of queries.
- "auto": "cpu" when JAX's default backend is the CPU, "xla" otherwise, decided at trace time. To
  lower for a platform other than the default one (ahead-of-time compilation), name the set.
"""

import contextlib
import functools
from typing import Any, Iterator

import jax
import jax.numpy as jnp
from jax import lax

KERNELS = ("auto", "xla", "cpu")
_NHWC = ("NHWC", "HWIO", "NHWC")


def resolve(kernels: str) -> str:
  """The kernel set, "xla" or "cpu", that the setting `kernels` means on the default backend."""
  if kernels not in KERNELS:
    raise ValueError(f"Unknown kernels {kernels!r}; expected one of {', '.join(map(repr, KERNELS))}.")
  if kernels == "auto":
    return "cpu" if jax.default_backend() == "cpu" else "xla"
  return kernels


# ----------------------------------------------------------------------------- dense products

@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul(x: jax.Array, kernel: jax.Array, precision: Any) -> jax.Array:
  """x (..., K) @ kernel (K, N) with its own gradient rule."""
  return lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())), precision=precision)


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


def dense(x: jax.Array, kernel: jax.Array, kernels: str, precision: Any = None) -> jax.Array:
  """x (..., K) @ kernel (K, N), the product of a dense layer."""
  if resolve(kernels) == "cpu":
    return _matmul(x, kernel, precision)
  return lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())), precision=precision)


# ----------------------------------------------------------------------------- convolutions

def _batched(fn, x: jax.Array) -> jax.Array:
  """Applies an NHWC op to (..., H, W, C) with any number of leading dims."""
  lead = x.shape[:-3]
  y = fn(x.reshape(-1, *x.shape[-3:]))
  return y.reshape(*lead, *y.shape[1:])


def conv(x: jax.Array, kernel: jax.Array, stride: int, padding: int, kernels: str) -> jax.Array:
  """2-D convolution with zero padding: (..., H, W, C_in), kernel (k, k, C_in, C_out) -> (..., H', W', C_out).

  H' = (H + 2 padding - k) // stride + 1. The CPU set multiplies input patches by the kernel: XLA's
  CPU backend runs the kernel gradient of a convolution (even a 1x1 one) and the input gradient of
  a strided one on a slow generic path. Kernels equal to the stride without padding (patchify, 1x1)
  reshape the input into patches; others gather k * k strided slices.
  """
  k, s, p = kernel.shape[0], stride, padding
  if resolve(kernels) == "xla":
    return _batched(lambda x: lax.conv_general_dilated(x, kernel, (s, s), ((p, p), (p, p)), dimension_numbers=_NHWC),
                    x)
  *lead, h, w, c = x.shape
  if k == s and p == 0:
    x = x.reshape(*lead, h // k, k, w // k, k, c)
    return jnp.einsum("...hpwqc,pqco->...hwo", x, kernel)
  x = jnp.pad(x, [(0, 0)] * len(lead) + [(p, p), (p, p), (0, 0)])
  ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
  patches = jnp.stack([x[..., i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s, :]
                       for i in range(k) for j in range(k)], axis=-2)
  return jnp.einsum("...hwkc,kco->...hwo", patches, kernel.reshape(k * k, c, -1))


def depthwise_conv(x: jax.Array, kernel: jax.Array, kernels: str) -> jax.Array:
  """Depthwise 2-D convolution, stride 1, "same" size: (..., H, W, C), kernel (k, k, 1, C) -> (..., H, W, C).

  The CPU set sums k * k shifted products, whose gradient stays elementwise: XLA's CPU backend
  lowers the filter gradient of a grouped convolution as a dense C x C one.
  """
  k, c = kernel.shape[0], x.shape[-1]
  pad = k // 2
  if resolve(kernels) == "xla":
    return _batched(lambda x: lax.conv_general_dilated(x, kernel, (1, 1), ((pad, pad), (pad, pad)),
                                                       dimension_numbers=_NHWC, feature_group_count=c), x)
  h, w = x.shape[-3:-1]
  xp = jnp.pad(x, [(0, 0)] * (x.ndim - 3) + [(pad, pad), (pad, pad), (0, 0)])
  return sum(xp[..., i:i + h, j:j + w, :] * kernel[i, j, 0] for i in range(k) for j in range(k))


def patch_conv_transpose(x: jax.Array, kernel: jax.Array, kernels: str) -> jax.Array:
  """Transposed convolution whose kernel equals its stride p: (..., H, W, C_in) -> (..., p H, p W, C_out).

  `kernel` (p, p, C_out, C_in) is torch's ConvTranspose2d weight permuted (2, 3, 1, 0), as
  `nn.ConvTranspose(transpose_kernel=True)` takes it: output pixel (p i + a, p j + b) is input
  pixel (i, j) times kernel[a, b]. The CPU set computes that as one matmul (XLA's CPU backend
  runs the gradients of this convolution slowly).
  """
  p = kernel.shape[0]
  if resolve(kernels) == "xla":
    return _batched(lambda x: lax.conv_transpose(x, kernel, (p, p), "VALID", dimension_numbers=_NHWC,
                                                 transpose_kernel=True), x)
  *lead, h, w, _ = x.shape
  y = jnp.einsum("...hwc,pqoc->...hpwqo", x, kernel)
  return y.reshape(*lead, h * p, w * p, kernel.shape[2])


# ----------------------------------------------------------------------------- attention

# In the CPU set, attention whose (B, heads, Tq, Tk) float32 scores would exceed this many bytes
# runs over chunks of queries, each chunk's scores staying about `_CHUNK_ROWS` x Tk: on the CPU,
# Hiera's global attention at 1024 (4096 tokens) is about 3x faster this way than with the whole
# score tensor, and memory attention (4096 queries, 7 x 4096 + 64 keys) 1.6x.
_CHUNK_SCORE_BYTES = 16 << 20
_CHUNK_ROWS = 512


def _chunked_attention(q, k, v, key_mask, key_block):
  """Attention over chunks of queries (`lax.map`), heads-first layouts, normalised after the value product.

  With a key mask, each chunk goes over blocks of `key_block` keys with a running softmax, and
  blocks without a valid key are skipped (`lax.cond`): empty memory-bank slots cost nothing.
  """
  b, tq, n, d = q.shape
  tk = k.shape[1]
  chunk = max(1, _CHUNK_ROWS // n)
  num_chunks = -(-tq // chunk)
  q = (q * jnp.asarray(d ** -0.5, q.dtype)).transpose(0, 2, 1, 3)  # (B, N, Tq, D)
  q = jnp.pad(q, ((0, 0), (0, 0), (0, num_chunks * chunk - tq), (0, 0)))
  q = q.reshape(b, n, num_chunks, chunk, d).transpose(2, 0, 1, 3, 4)
  key_mask = jnp.ones((b, tk), bool) if key_mask is None else key_mask
  key_block = min(key_block or tk, tk)
  num_blocks = -(-tk // key_block)
  pad = num_blocks * key_block - tk
  key_mask = jnp.pad(key_mask, ((0, 0), (0, pad))).reshape(b, num_blocks, key_block).transpose(1, 0, 2)
  k_t = jnp.pad(k, ((0, 0), (0, pad), (0, 0), (0, 0))).reshape(b, num_blocks, key_block, n, d).transpose(1, 0, 3, 4, 2)
  v_t = jnp.pad(v, ((0, 0), (0, pad), (0, 0), (0, 0))).reshape(b, num_blocks, key_block, n, d).transpose(1, 0, 3, 2, 4)
  # Blocks with a valid key; the first always, so that a batch element without any stays finite.
  needed = jnp.any(key_mask, axis=(1, 2)).at[0].set(True)
  low = jnp.finfo(jnp.float32).min

  def one_chunk(q_c):  # (B, N, chunk, D)
    def add_block(carry, block):
      k_b, v_b, mask_b, needed_b = block

      def compute(carry):
        top, total, out = carry
        scores = jnp.einsum("bnqd,bndk->bnqk", q_c, k_b, preferred_element_type=jnp.float32)
        scores = jnp.where(mask_b[:, None, None, :], scores, low)
        new_top = jnp.maximum(top, scores.max(axis=-1, keepdims=True))
        weights = jnp.exp(scores - new_top)
        rescale = jnp.exp(top - new_top)
        out = out * rescale + jnp.einsum("bnqk,bnkd->bnqd", weights.astype(v.dtype), v_b,
                                         preferred_element_type=jnp.float32)
        return new_top, total * rescale + weights.sum(axis=-1, keepdims=True), out

      return jax.lax.cond(needed_b, compute, lambda c: c, carry), None

    init = (jnp.full((b, n, chunk, 1), low, jnp.float32), jnp.zeros((b, n, chunk, 1), jnp.float32),
            jnp.zeros((b, n, chunk, d), jnp.float32))
    (_, total, out), _ = lax.scan(add_block, init, (k_t, v_t, key_mask, needed))
    return (out / total).astype(v.dtype)

  out = lax.map(one_chunk, q)  # (chunks, B, N, chunk, D)
  out = out.transpose(1, 0, 3, 2, 4).reshape(b, num_chunks * chunk, n, d)
  return out[:, :tq]


# The compute capability that `assume_gpu` sets while tracing for a GPU on another backend.
_assumed_gpu: str | None = None


@contextlib.contextmanager
def assume_gpu(compute_capability: str) -> Iterator[None]:
  """Traces as for an NVIDIA GPU of `compute_capability` (e.g. "9.0") whatever the default backend.

  For compiling ahead of time for a GPU target on a machine without one: attention then goes to
  cuDNN where that GPU's cuDNN would take it, as it does when traced on the GPU itself.
  """
  global _assumed_gpu
  previous, _assumed_gpu = _assumed_gpu, compute_capability
  try:
    yield
  finally:
    _assumed_gpu = previous


def _gpu_compute_capability() -> str | None:
  """The default device's compute capability when it is an NVIDIA GPU (or one is assumed), else None."""
  if _assumed_gpu is not None:
    return _assumed_gpu
  if jax.default_backend() != "gpu":
    return None
  return getattr(jax.devices()[0], "compute_capability", None)  # absent on ROCm


def _cudnn_supports(q: jax.Array) -> bool:
  """Whether cuDNN flash attention takes these queries on the target GPU (see `_gpu_compute_capability`)."""
  capability = _gpu_compute_capability()
  if capability is None or q.dtype not in (jnp.bfloat16, jnp.float16):
    return False
  head_dim = q.shape[-1]
  max_head_dim = 256 if tuple(map(int, capability.split("."))) >= (9, 0) else 128
  return head_dim % 8 == 0 and head_dim <= max_head_dim


def _valid_keys_first(q, k, v, key_mask, implementation):
  """`jax.nn.dot_product_attention` with masked keys moved behind the valid ones and cut by length.

  A stable sort of each batch element's keys puts the valid ones first; `key_value_seq_lengths`
  then leaves the rest out, which fused kernels skip instead of computing them. Attention does not
  depend on the order of its keys, so this equals masking them.
  """
  order = jnp.argsort(~key_mask, axis=1, stable=True)
  take = lambda x: jnp.take_along_axis(x, order[:, :, None, None], axis=1)
  lengths = key_mask.sum(axis=1, dtype=jnp.int32)
  lengths = jnp.where(lengths == 0, key_mask.shape[1], lengths)  # no valid key: all keys, so the result stays finite
  return jax.nn.dot_product_attention(q, take(k), take(v), key_value_seq_lengths=lengths,
                                      implementation=implementation)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, kernels: str,
              key_mask: jax.Array | None = None, key_block: int | None = None) -> jax.Array:
  """Softmax attention, scale 1/sqrt(D): q (B, Tq, N, D), k and v (B, Tk, N, D) -> (B, Tq, N, D).

  `key_mask` (B, Tk) bool leaves keys out (False), which equals removing them from k and v; where a
  batch element has no valid key the result is finite but meaningless. `key_block` says that the
  mask comes in blocks of that many keys (memory frames): the CPU set skips blocks without a valid
  key. Scores and softmax are float32 whatever the input dtype.
  """
  b, tq, n, _ = q.shape
  tk = k.shape[1]
  kernel_set = resolve(kernels)
  if kernel_set == "cpu" and b * n * tq * tk * 4 > _CHUNK_SCORE_BYTES and tq > max(1, _CHUNK_ROWS // n):
    return _chunked_attention(q, k, v, key_mask, key_block)
  if kernel_set == "xla" and _cudnn_supports(q):
    try:
      if key_mask is None:
        return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
      return _valid_keys_first(q, k, v, key_mask, "cudnn")
    except NotImplementedError:  # shapes that this cuDNN version's flash attention rejects: XLA's attention
      pass
  mask = None if key_mask is None else key_mask[:, None, None, :]
  return jax.nn.dot_product_attention(q, k, v, mask=mask)
