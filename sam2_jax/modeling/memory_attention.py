"""Memory attention: conditions the current frame's features on the memory bank (official `memory_attention.py`).

The memory sequence is [spatial memories of F frames, N = h * w tokens each] followed by
`num_obj_ptr_tokens` object-pointer tokens. An optional boolean `memory_mask` (B, M) marks the
valid slots of a fixed-shape bank; invalid keys get no attention weight, which equals leaving them
out of the sequence.
"""

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from sam2_jax.modeling import kernels
from sam2_jax.modeling.layers import Dense, layer_norm, scan_layers
from sam2_jax.modeling.position_encoding import apply_rope, axial_rope_angles

Dtype = Any


class RoPEAttention(nn.Module):
  """Multi-head attention with 2-D axial RoPE on queries and keys (official `RoPEAttention`).

  The queries form a square grid of side sqrt(N). With `rope_k_repeat` (cross-attention to
  memories) the keys' angles are the queries' angles tiled once per memory frame; the last
  `num_k_exclude_rope` keys (object pointers) are not rotated. Key/value input width is inferred.
  Attention goes through `kernels.attention`, except with dropout on its weights (training).
  """
  embedding_dim: int = 256
  num_heads: int = 1
  downsample_rate: int = 1
  dropout: float = 0.0
  rope_theta: float = 10000.0
  rope_k_repeat: bool = False
  dtype: Dtype = jnp.float32
  kernels: str = "auto"

  @nn.compact
  def __call__(self, q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, num_k_exclude_rope: int = 0,
               key_mask: jnp.ndarray | None = None, deterministic: bool = True) -> jnp.ndarray:
    """q (B, N, embedding_dim), k and v (B, M, C_kv), key_mask (B, M) bool -> (B, N, embedding_dim)."""
    internal_dim = self.embedding_dim // self.downsample_rate
    if internal_dim % self.num_heads:
      raise ValueError(f"num_heads {self.num_heads} must divide the internal dim {internal_dim}.")
    head_dim = internal_dim // self.num_heads

    def heads(x):  # (B, L, C) -> (B, heads, L, head_dim)
      return x.reshape(*x.shape[:2], self.num_heads, head_dim).transpose(0, 2, 1, 3)

    kw = dict(dtype=self.dtype, kernels=self.kernels)
    q = heads(Dense(internal_dim, **kw, name="q_proj")(q))
    k = heads(Dense(internal_dim, **kw, name="k_proj")(k))
    v = heads(Dense(internal_dim, **kw, name="v_proj")(v))

    n, m = q.shape[2], k.shape[2]
    side = math.isqrt(n)
    if side * side != n:
      raise ValueError(f"RoPE needs a square query grid, got {n} queries.")
    if n != m and not self.rope_k_repeat:
      raise ValueError(f"{n} queries and {m} keys need rope_k_repeat.")
    num_k_rope = m - num_k_exclude_rope
    if num_k_rope % n:
      raise ValueError(f"{num_k_rope} rotated keys are not a whole number of {n}-token frames.")
    angles = axial_rope_angles(head_dim, side, side, self.rope_theta)
    q = apply_rope(q, angles)
    k_rot = apply_rope(k[:, :, :num_k_rope], np.tile(angles, (num_k_rope // n, 1)))
    k = jnp.concatenate([k_rot, k[:, :, num_k_rope:]], axis=2)

    if deterministic or self.dropout == 0.0:
      out = kernels.attention(*(x.transpose(0, 2, 1, 3) for x in (q, k, v)), self.kernels, key_mask=key_mask,
                              key_block=n)  # memory frames of n tokens, valid or masked as a whole
    else:
      logits = jnp.einsum("bhnd,bhmd->bhnm", q, k, preferred_element_type=jnp.float32) / math.sqrt(head_dim)
      if key_mask is not None:
        logits = jnp.where(key_mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
      weights = nn.softmax(logits, axis=-1)
      weights = nn.Dropout(self.dropout)(weights, deterministic=False).astype(v.dtype)
      out = jnp.einsum("bhnm,bhmd->bhnd", weights, v).transpose(0, 2, 1, 3)
    return Dense(self.embedding_dim, **kw, name="out_proj")(out.reshape(out.shape[0], n, internal_dim))


class MemoryAttentionLayer(nn.Module):
  """Pre-norm layer: RoPE self-attention, RoPE cross-attention to the memory, ReLU MLP.

  As in all official configs, positional encodings enter only the cross-attention keys
  (memory + memory_pos); self-attention and the cross-attention queries use no PE.
  """
  d_model: int = 256
  dim_feedforward: int = 2048
  dropout: float = 0.1
  rope_theta: float = 10000.0
  dtype: Dtype = jnp.float32
  kernels: str = "auto"

  @nn.compact
  def __call__(self, tgt: jnp.ndarray, memory: jnp.ndarray, pos: jnp.ndarray, num_k_exclude_rope: int = 0,
               memory_mask: jnp.ndarray | None = None, deterministic: bool = True) -> jnp.ndarray:
    """tgt (B, N, d_model), memory and pos (B, M, C_mem), memory_mask (B, M) bool -> (B, N, d_model)."""
    def attention(name, rope_k_repeat):
      return RoPEAttention(self.d_model, num_heads=1, dropout=self.dropout, rope_theta=self.rope_theta,
                           rope_k_repeat=rope_k_repeat, dtype=self.dtype, kernels=self.kernels, name=name)

    def dropout(x):
      return nn.Dropout(self.dropout)(x, deterministic=deterministic)

    x = layer_norm(1e-5, name="norm1")(tgt).astype(tgt.dtype)
    tgt = tgt + dropout(attention("self_attn", False)(x, x, x, deterministic=deterministic))

    x = layer_norm(1e-5, name="norm2")(tgt).astype(tgt.dtype)
    x = attention("cross_attn_image", True)(x, memory + pos, memory, num_k_exclude_rope=num_k_exclude_rope,
                                            key_mask=memory_mask, deterministic=deterministic)
    tgt = tgt + dropout(x)

    x = layer_norm(1e-5, name="norm3")(tgt).astype(tgt.dtype)
    x = nn.relu(Dense(self.dim_feedforward, dtype=self.dtype, kernels=self.kernels, name="linear1")(x))
    x = Dense(self.d_model, dtype=self.dtype, kernels=self.kernels, name="linear2")(dropout(x))
    return tgt + dropout(x)


class MemoryAttention(nn.Module):
  """`num_layers` MemoryAttentionLayers (layers_0, ...) and a final LayerNorm (`norm`)."""
  d_model: int = 256
  num_layers: int = 4
  dim_feedforward: int = 2048
  kv_in_dim: int = 64
  dropout: float = 0.1
  rope_theta: float = 10000.0
  dtype: Dtype = jnp.float32
  kernels: str = "auto"

  @nn.compact
  def __call__(self, curr: jnp.ndarray, memory: jnp.ndarray, curr_pos: jnp.ndarray, memory_pos: jnp.ndarray,
               num_obj_ptr_tokens: int = 0, memory_mask: jnp.ndarray | None = None,
               deterministic: bool = True) -> jnp.ndarray:
    """Current-frame features conditioned on the memory.

    Args:
      curr: (B, N, d_model) current-frame tokens, N = h * w a square grid.
      memory: (B, M, kv_in_dim) memory tokens: F frames of N spatial tokens, then `num_obj_ptr_tokens`
        object-pointer tokens (static).
      curr_pos: (B, N, d_model) position encoding of `curr`.
      memory_pos: (B, M, kv_in_dim) position encoding of `memory`.
      num_obj_ptr_tokens: number of trailing pointer tokens, which get no RoPE.
      memory_mask: optional (B, M) bool, False for slots to ignore (whole frames or single pointer
        tokens); the result equals the official one with those slots removed.
      deterministic: disables dropout (needs a "dropout" rng otherwise).

    Returns:
      (B, N, d_model).
    """
    if memory.shape[-1] != self.kv_in_dim:
      raise ValueError(f"memory has {memory.shape[-1]} channels, expected kv_in_dim={self.kv_in_dim}.")
    layers = [MemoryAttentionLayer(self.d_model, self.dim_feedforward, self.dropout, self.rope_theta,
                                   dtype=self.dtype, kernels=self.kernels, name=f"layers_{i}")
              for i in range(self.num_layers)]
    x = scan_layers(layers, curr + 0.1 * curr_pos, memory, memory_pos, num_k_exclude_rope=num_obj_ptr_tokens,
                    memory_mask=memory_mask, deterministic=deterministic)
    return layer_norm(1e-5, name="norm")(x).astype(x.dtype)
