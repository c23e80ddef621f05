"""Two-way transformer of the SAM mask decoder (tokens <-> image cross-attention)."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sam2_jax.modeling import kernels
from sam2_jax.modeling.layers import Dense, MLP, layer_norm

Dtype = Any

LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm default, used by the two-way transformer


class Attention(nn.Module):
  """Multi-head attention with q/k/v projected to `embedding_dim // downsample_rate` channels."""
  embedding_dim: int
  num_heads: int
  downsample_rate: int = 1
  dtype: Dtype = jnp.float32
  kernels: str = "auto"

  def setup(self):
    internal_dim = self.embedding_dim // self.downsample_rate
    if internal_dim % self.num_heads:
      raise ValueError(f"num_heads={self.num_heads} must divide the internal dim {internal_dim}.")
    self.q_proj = Dense(internal_dim, dtype=self.dtype, kernels=self.kernels)
    self.k_proj = Dense(internal_dim, dtype=self.dtype, kernels=self.kernels)
    self.v_proj = Dense(internal_dim, dtype=self.dtype, kernels=self.kernels)
    self.out_proj = Dense(self.embedding_dim, dtype=self.dtype, kernels=self.kernels)

  def _split_heads(self, x: jnp.ndarray) -> jnp.ndarray:
    return x.reshape(*x.shape[:-1], self.num_heads, x.shape[-1] // self.num_heads)

  def __call__(self, q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray,
               key_mask: jnp.ndarray | None = None) -> jnp.ndarray:
    """q (B, Nq, C), k and v (B, Nk, C) -> (B, Nq, C); `key_mask` (B, Nk) bool leaves keys out."""
    q = self._split_heads(self.q_proj(q))
    k = self._split_heads(self.k_proj(k))
    v = self._split_heads(self.v_proj(v))
    out = kernels.attention(q, k, v, self.kernels, key_mask=key_mask)
    return self.out_proj(out.reshape(*out.shape[:-2], -1))


class TwoWayAttentionBlock(nn.Module):
  """Token self-attention, token->image attention, token MLP, image->token attention."""
  embedding_dim: int
  num_heads: int
  mlp_dim: int = 2048
  attention_downsample_rate: int = 2
  skip_first_layer_pe: bool = False
  dtype: Dtype = jnp.float32
  kernels: str = "auto"

  def setup(self):
    dim, heads, rate = self.embedding_dim, self.num_heads, self.attention_downsample_rate
    kw = dict(dtype=self.dtype, kernels=self.kernels)
    self.self_attn = Attention(dim, heads, **kw)
    self.norm1 = layer_norm(LAYER_NORM_EPS)
    self.cross_attn_token_to_image = Attention(dim, heads, downsample_rate=rate, **kw)
    self.norm2 = layer_norm(LAYER_NORM_EPS)
    self.mlp = MLP(self.mlp_dim, dim, num_layers=2, activation=nn.relu, **kw)
    self.norm3 = layer_norm(LAYER_NORM_EPS)
    self.norm4 = layer_norm(LAYER_NORM_EPS)
    self.cross_attn_image_to_token = Attention(dim, heads, downsample_rate=rate, **kw)

  def __call__(self, queries: jnp.ndarray, keys: jnp.ndarray, query_pe: jnp.ndarray,
               key_pe: jnp.ndarray, token_mask: jnp.ndarray | None = None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """queries (B, N, C), keys (B, HW, C) and their PEs -> updated (queries, keys)."""
    if self.skip_first_layer_pe:
      # The first layer's self-attention has no PE and no residual connection.
      queries = self.self_attn(queries, queries, queries, key_mask=token_mask)
    else:
      q = queries + query_pe
      queries = queries + self.self_attn(q, q, queries, key_mask=token_mask)
    queries = self.norm1(queries)

    k = keys + key_pe
    queries = self.norm2(queries + self.cross_attn_token_to_image(queries + query_pe, k, keys))
    queries = self.norm3(queries + self.mlp(queries))

    q = queries + query_pe
    keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries, key_mask=token_mask))
    return queries, keys


class TwoWayTransformer(nn.Module):
  """Stack of `TwoWayAttentionBlock`s plus a final token->image attention."""
  depth: int = 2
  embedding_dim: int = 256
  num_heads: int = 8
  mlp_dim: int = 2048
  attention_downsample_rate: int = 2
  dtype: Dtype = jnp.float32
  kernels: str = "auto"

  def setup(self):
    self.layers = [
        TwoWayAttentionBlock(self.embedding_dim, self.num_heads, self.mlp_dim, self.attention_downsample_rate,
                             skip_first_layer_pe=i == 0, dtype=self.dtype, kernels=self.kernels)
        for i in range(self.depth)
    ]
    self.final_attn_token_to_image = Attention(self.embedding_dim, self.num_heads,
                                               downsample_rate=self.attention_downsample_rate, dtype=self.dtype,
                                               kernels=self.kernels)
    self.norm_final_attn = layer_norm(LAYER_NORM_EPS)

  def __call__(self, image_embedding: jnp.ndarray, image_pe: jnp.ndarray, point_embedding: jnp.ndarray,
               token_mask: jnp.ndarray | None = None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Runs the transformer.

    Args:
      image_embedding: (B, h, w, C).
      image_pe: (B, h, w, C) or broadcastable to it (e.g. (1, h, w, C)).
      point_embedding: (B, N, C) tokens, also used as their own PE.
      token_mask: optional (B, N) bool; False tokens are left out of every attention over tokens,
        so the other tokens' outputs equal those computed without them (fixed-shape prompts).

    Returns:
      queries (B, N, C) and keys (B, h*w, C).
    """
    b, h, w, c = image_embedding.shape
    keys = image_embedding.reshape(b, h * w, c)
    key_pe = jnp.broadcast_to(image_pe, image_embedding.shape).reshape(b, h * w, c)
    queries = point_embedding
    for layer in self.layers:
      queries, keys = layer(queries, keys, point_embedding, key_pe, token_mask)
    attn_out = self.final_attn_token_to_image(queries + point_embedding, keys + key_pe, keys)
    queries = self.norm_final_attn(queries + attn_out)
    return queries, keys
