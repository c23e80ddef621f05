"""The two kernel sets of `modeling/kernels.py` compute the same functions; the model has the same params with both."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sam2_jax.build_sam import abstract_params, get_model_config
from sam2_jax.modeling import kernels

TOL = 1e-5
valid_keys_first = kernels._valid_keys_first  # pylint: disable=protected-access


def _normal(seed, *shape):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, dtype=np.float32))


def _close(a, b, tol=TOL):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  assert a.shape == b.shape
  assert np.abs(a - b).max() <= tol * max(np.abs(b).max(), 1e-12)


def test_resolve():
  assert kernels.resolve("auto") == "cpu"  # the tests run on the CPU backend
  assert kernels.resolve("xla") == "xla" and kernels.resolve("cpu") == "cpu"
  with pytest.raises(ValueError, match="Unknown kernels 'gpu'; expected one of 'auto', 'xla', 'cpu'"):
    kernels.resolve("gpu")


def test_model_rejects_unknown_kernels():
  with pytest.raises(ValueError, match="Unknown kernels 'cuda'"):
    abstract_params(get_model_config("sam2.1_hiera_t", image_size=64, kernels="cuda"))


def test_same_params_with_both_sets():
  shapes = [jax.tree.map(lambda x: (x.shape, x.dtype), abstract_params(
      get_model_config("sam2.1_hiera_t", image_size=64, kernels=k))) for k in ("cpu", "xla")]
  assert shapes[0] == shapes[1]


@pytest.mark.parametrize("k,stride,padding", [(1, 1, 0), (2, 2, 0), (4, 4, 0), (3, 2, 1), (3, 1, 1)])
def test_conv(k, stride, padding):
  x, kernel = _normal(0, 2, 3, 16, 16, 5), _normal(1, k, k, 5, 7)  # two leading dims
  f = lambda s: lambda x, w: kernels.conv(x, w, stride, padding, s)
  _close(f("cpu")(x, kernel), f("xla")(x, kernel))
  grads = [jax.grad(lambda x, w, s=s: (f(s)(x, w) ** 2).sum(), argnums=(0, 1))(x, kernel) for s in ("cpu", "xla")]
  for a, b in zip(*grads):
    _close(a, b)


def test_depthwise_conv():
  x, kernel = _normal(0, 2, 9, 11, 6), _normal(1, 7, 7, 1, 6)
  _close(kernels.depthwise_conv(x, kernel, "cpu"), kernels.depthwise_conv(x, kernel, "xla"))


def test_patch_conv_transpose():
  x, kernel = _normal(0, 2, 5, 6, 8), _normal(1, 2, 2, 4, 8)
  cpu, xla = kernels.patch_conv_transpose(x, kernel, "cpu"), kernels.patch_conv_transpose(x, kernel, "xla")
  assert cpu.shape == (2, 10, 12, 4)
  _close(cpu, xla)
  # Output pixel (2i + a, 2j + b) is input pixel (i, j) times kernel[a, b].
  _close(cpu[1, 2 * 3 + 1, 2 * 4], x[1, 3, 4] @ kernel[1, 0].T)


def test_dense_and_its_gradient():
  x, kernel = _normal(0, 3, 4, 5), _normal(1, 5, 6)
  _close(kernels.dense(x, kernel, "cpu"), kernels.dense(x, kernel, "xla"))
  grads = [jax.grad(lambda x, w, s=s: jnp.sin(kernels.dense(x, w, s)).sum(), argnums=(0, 1))(x, kernel)
           for s in ("cpu", "xla")]
  for a, b in zip(*grads):
    _close(a, b)


@pytest.fixture(scope="module")
def attention_case():
  """q, k, v, a key mask, and the attention of each batch element over its valid keys."""
  # Scores of 2 x 2 x 600 x 1800 float32 take the CPU set's chunked path (3 chunks of 256 queries, the last padded).
  b, tq, tk, n, d = 2, 600, 1800, 2, 16
  key_mask = np.ones((b, tk), bool)
  key_mask[0, 100:900] = False
  key_mask[1, ::3] = False
  q, k, v = _normal(0, b, tq, n, d), _normal(1, b, tk, n, d), _normal(2, b, tk, n, d)
  assert b * n * tq * tk * 4 > kernels._CHUNK_SCORE_BYTES  # pylint: disable=protected-access
  expected = jnp.concatenate([jax.nn.dot_product_attention(q[i:i + 1], k[i:i + 1, key_mask[i]], v[i:i + 1, key_mask[i]])
                              for i in range(b)])
  return q, k, v, jnp.asarray(key_mask), expected


@pytest.mark.parametrize("kernel_set", ["cpu", "xla"])
def test_attention(kernel_set, attention_case):
  q, k, v, key_mask, expected = attention_case
  _close(kernels.attention(q, k, v, kernel_set, key_mask=key_mask), expected)
  _close(kernels.attention(q, k, v, kernel_set), jax.nn.dot_product_attention(q, k, v))
  # A batch element without any valid key gets a finite result and leaves the others alone.
  out = kernels.attention(q, k, v, kernel_set, key_mask=key_mask.at[1].set(False))
  assert np.isfinite(np.asarray(out)).all()
  _close(out[0], expected[0])


@pytest.mark.parametrize("key_block", [300, 512])
def test_cpu_attention_over_key_blocks(key_block, attention_case):
  """Key blocks with a running softmax equal plain masking, for blocks aligned with the mask or not."""
  q, k, v, key_mask, expected = attention_case
  key_mask = key_mask.at[:, 1200:1500].set(False)  # blocks 4 (of 300 keys) and 2 (of 512) hold no valid key
  expected = jnp.concatenate([jax.nn.dot_product_attention(q[i:i + 1], k[i:i + 1, key_mask[i]], v[i:i + 1, key_mask[i]])
                              for i in range(q.shape[0])])
  _close(kernels.attention(q, k, v, "cpu", key_mask=key_mask, key_block=key_block), expected)
  loss = lambda kernel_set, block: lambda q, k, v: jnp.sin(
      kernels.attention(q, k, v, kernel_set, key_mask=key_mask, key_block=block)).sum()
  for a, b in zip(jax.grad(loss("cpu", key_block), argnums=(0, 1, 2))(q, k, v),
                  jax.grad(loss("xla", None), argnums=(0, 1, 2))(q, k, v)):
    _close(a, b)
  out = kernels.attention(q, k, v, "cpu", key_mask=jnp.zeros_like(key_mask), key_block=key_block)
  assert np.isfinite(np.asarray(out)).all()


def test_valid_keys_first_equals_masking(attention_case):
  """The fused-attention form of a key mask (valid keys sorted first, cut by length) leaves the masked keys out."""
  q, k, v, key_mask, expected = attention_case
  _close(valid_keys_first(q, k, v, key_mask, "xla"), expected)
  # Gradients reach only the valid keys, as when the masked ones are absent.
  grad_k = jax.grad(lambda k: valid_keys_first(q, k, v, key_mask, "xla").sum())(k)
  assert not np.asarray(grad_k)[~np.asarray(key_mask)].any()
  assert np.isfinite(np.asarray(valid_keys_first(q, k, v, key_mask.at[1].set(False), "xla"))).all()


def test_xla_set_on_an_nvidia_gpu(monkeypatch, attention_case):
  """Where cuDNN takes the shapes, the XLA set asks for it, a key mask as valid keys first; else XLA's attention."""
  q, k, v, key_mask, expected = attention_case
  requested = []
  xla_attention = jax.nn.dot_product_attention

  def fake_attention(*args, implementation=None, **kwargs):  # records the request, computes with XLA's attention
    requested.append((implementation, kwargs.get("key_value_seq_lengths") is not None))
    if implementation == "cudnn" and args[0].shape[-1] == 24:
      raise NotImplementedError("head dim")
    return xla_attention(*args, **kwargs)

  monkeypatch.setattr(jax.nn, "dot_product_attention", fake_attention)
  monkeypatch.setattr(kernels, "_cudnn_supports", lambda q: True)
  _close(kernels.attention(q, k, v, "xla", key_mask=key_mask), expected)
  assert requested == [("cudnn", True)]
  requested.clear()
  kernels.attention(q[..., :8], k[..., :8], v[..., :8], "xla")
  assert requested == [("cudnn", False)]
  requested.clear()
  kernels.attention(jnp.tile(q, 3)[..., :24], jnp.tile(k, 3)[..., :24], jnp.tile(v, 3)[..., :24], "xla")
  assert requested == [("cudnn", False), (None, False)]  # rejected by cuDNN: XLA's attention


def test_cudnn_supports(monkeypatch):
  class Device:
    compute_capability = "8.0"

  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  monkeypatch.setattr(jax, "devices", lambda: [Device()])
  cudnn_supports = kernels._cudnn_supports  # pylint: disable=protected-access
  supports = lambda dtype, head_dim: cudnn_supports(jnp.zeros((1, 4, 1, head_dim), dtype))
  assert supports(jnp.bfloat16, 96) and supports(jnp.float16, 128)
  assert not supports(jnp.float32, 96)  # cuDNN's flash attention is bf16/fp16 only
  assert not supports(jnp.bfloat16, 100) and not supports(jnp.bfloat16, 256)
  Device.compute_capability = "9.0"  # Hopper: head dims up to 256 (memory attention)
  assert supports(jnp.bfloat16, 256)
  monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
  assert not supports(jnp.bfloat16, 96)


def test_assume_gpu_traces_cudnn_attention_on_the_cpu():
  """Under `assume_gpu`, attention is chosen as on that GPU while tracing on the CPU (ahead-of-time compilation)."""
  q = jnp.zeros((1, 16, 2, 64), jnp.bfloat16)
  cudnn_supports = kernels._cudnn_supports  # pylint: disable=protected-access
  assert not cudnn_supports(q)
  with kernels.assume_gpu("8.0"):
    assert cudnn_supports(q) and not cudnn_supports(jnp.zeros((1, 16, 1, 256), jnp.bfloat16))
    with kernels.assume_gpu("9.0"):
      assert cudnn_supports(jnp.zeros((1, 16, 1, 256), jnp.bfloat16))
    assert cudnn_supports(q)
  assert not cudnn_supports(q)
