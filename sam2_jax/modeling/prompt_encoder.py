"""SAM prompt encoder: points, boxes and mask prompts -> sparse and dense embeddings."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sam2_jax.modeling.layers import Conv, gelu, layer_norm
from sam2_jax.modeling.position_encoding import PositionEmbeddingRandom

Dtype = Any

NUM_POINT_EMBEDDINGS = 4  # negative click, positive click, box top-left, box bottom-right


class PromptEncoder(nn.Module):
  """Embeds prompts for the mask decoder (the official `PromptEncoder`).

  Point labels: -1 padding / not a point, 0 negative, 1 positive, 2 box top-left, 3 box bottom-right.
  Coordinates are in pixels of the `input_image_size` (H, W) image, as (x, y).
  """
  embed_dim: int = 256
  image_embedding_size: tuple[int, int] = (64, 64)
  input_image_size: tuple[int, int] = (1024, 1024)
  mask_in_chans: int = 16
  dtype: Dtype = jnp.float32
  kernels: str = "auto"

  def setup(self):
    self.pe_layer = PositionEmbeddingRandom(self.embed_dim // 2)
    self.point_embeddings = [nn.Embed(1, self.embed_dim) for _ in range(NUM_POINT_EMBEDDINGS)]
    self.not_a_point_embed = nn.Embed(1, self.embed_dim)
    self.no_mask_embed = nn.Embed(1, self.embed_dim)
    # Non-module entries keep their index, so the params are mask_downscaling_{0,1,3,4,6} as in torch.
    kw = dict(dtype=self.dtype, kernels=self.kernels)
    self.mask_downscaling = [
        Conv(self.mask_in_chans // 4, 2, 2, **kw),
        layer_norm(1e-6),
        gelu,
        Conv(self.mask_in_chans, 2, 2, **kw),
        layer_norm(1e-6),
        gelu,
        Conv(self.embed_dim, **kw),
    ]

  @property
  def mask_input_size(self) -> tuple[int, int]:
    """(H, W) of the mask prompt: 4x the image embedding."""
    return 4 * self.image_embedding_size[0], 4 * self.image_embedding_size[1]

  def get_dense_pe(self) -> jnp.ndarray:
    """Positional encoding of the image embedding grid: (h, w, embed_dim)."""
    return self.pe_layer(self.image_embedding_size)

  def _embed_points(self, coords: jnp.ndarray, labels: jnp.ndarray, pad: bool) -> jnp.ndarray:
    coords = coords.astype(jnp.float32) + 0.5  # pixel centres
    if pad:
      b = coords.shape[0]
      coords = jnp.concatenate([coords, jnp.zeros((b, 1, 2), coords.dtype)], axis=1)
      labels = jnp.concatenate([labels, -jnp.ones((b, 1), labels.dtype)], axis=1)
    emb = self.pe_layer.encode_points(coords, self.input_image_size)
    labels = labels[..., None]
    emb = jnp.where(labels == -1, self.not_a_point_embed.embedding[0], emb)
    for i in range(NUM_POINT_EMBEDDINGS):
      emb = jnp.where(labels == i, emb + self.point_embeddings[i].embedding[0], emb)
    return emb

  def _embed_boxes(self, boxes: jnp.ndarray) -> jnp.ndarray:
    corners = (boxes.astype(jnp.float32) + 0.5).reshape(-1, 2, 2)
    emb = self.pe_layer.encode_points(corners, self.input_image_size)
    offsets = jnp.concatenate([self.point_embeddings[2].embedding, self.point_embeddings[3].embedding], axis=0)
    return emb + offsets

  def _embed_masks(self, masks: jnp.ndarray) -> jnp.ndarray:
    x = masks
    for layer in self.mask_downscaling:
      x = layer(x)
    return x

  def _create_all_params(self):
    """Touches every parameter, so that `init` creates them whatever prompts it is given."""
    self._embed_points(jnp.zeros((1, 1, 2)), jnp.zeros((1, 1), jnp.int32), pad=True)
    self._embed_masks(jnp.zeros((1, *self.mask_input_size, 1)))
    self.no_mask_embed(jnp.zeros((1,), jnp.int32))

  def __call__(self, points: tuple[jnp.ndarray, jnp.ndarray] | None, boxes: jnp.ndarray | None,
               masks: jnp.ndarray | None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Embeds the prompts.

    Args:
      points: (coords (B, N, 2) in pixels, labels (B, N) integers) or None. When `boxes` is None a
        padding point (label -1) is appended.
      boxes: (B, 4) as (x0, y0, x1, y1) in pixels, or None.
      masks: (B, 4h, 4w, 1) mask logits, or None.

    Returns:
      sparse (B, N', embed_dim) and dense (B, h, w, embed_dim) embeddings.
    """
    if self.is_initializing():
      self._create_all_params()
    if points is not None:
      bs = points[0].shape[0]
    elif boxes is not None:
      bs = boxes.shape[0]
    elif masks is not None:
      bs = masks.shape[0]
    else:
      bs = 1
    sparse = [jnp.zeros((bs, 0, self.embed_dim), jnp.float32)]
    if points is not None:
      sparse.append(self._embed_points(points[0], points[1], pad=boxes is None))
    if boxes is not None:
      sparse.append(self._embed_boxes(boxes))
    sparse = jnp.concatenate(sparse, axis=1)

    if masks is not None:
      dense = self._embed_masks(masks)
    else:
      h, w = self.image_embedding_size
      dense = jnp.broadcast_to(self.no_mask_embed.embedding[0], (bs, h, w, self.embed_dim))
    return sparse, dense
