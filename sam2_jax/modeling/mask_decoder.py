"""SAM mask decoder: prompt tokens + image embedding -> mask logits, IoU, object score, SAM tokens."""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from sam2_jax.modeling.layers import Conv, Dense, MLP, PatchConvTranspose, gelu, layer_norm
from sam2_jax.modeling.transformer import TwoWayTransformer

Dtype = Any


class MaskDecoder(nn.Module):
  """The official `MaskDecoder` (with its `TwoWayTransformer`), channels-last.

  Output token order: [obj_score_token (if pred_obj_scores), iou_token, mask_tokens...], then the
  sparse prompt embeddings. Mask token 0 is the single-mask output, tokens 1.. the multimask outputs.
  """
  transformer_dim: int = 256
  num_multimask_outputs: int = 3
  iou_head_depth: int = 3
  iou_head_hidden_dim: int = 256
  use_high_res_features: bool = True
  iou_prediction_use_sigmoid: bool = True
  dynamic_multimask_via_stability: bool = False
  dynamic_multimask_stability_delta: float = 0.05
  dynamic_multimask_stability_thresh: float = 0.98
  pred_obj_scores: bool = True
  pred_obj_scores_mlp: bool = True
  use_multimask_token_for_obj_ptr: bool = True
  dtype: Dtype = jnp.float32
  kernels: str = "auto"

  @property
  def num_mask_tokens(self) -> int:
    return self.num_multimask_outputs + 1

  def setup(self):
    dim = self.transformer_dim
    kw = dict(dtype=self.dtype, kernels=self.kernels)
    self.transformer = TwoWayTransformer(depth=2, embedding_dim=dim, num_heads=8, mlp_dim=2048, **kw)
    self.iou_token = nn.Embed(1, dim)
    self.mask_tokens = nn.Embed(self.num_mask_tokens, dim)
    if self.pred_obj_scores:
      self.obj_score_token = nn.Embed(1, dim)
    # Non-module entries keep their index, so the params are output_upscaling_{0,1,3} as in torch.
    self.output_upscaling = [
        PatchConvTranspose(dim // 4, 2, **kw),
        layer_norm(1e-6),
        gelu,
        PatchConvTranspose(dim // 8, 2, **kw),
        gelu,
    ]
    if self.use_high_res_features:
      self.conv_s0 = Conv(dim // 8, **kw)
      self.conv_s1 = Conv(dim // 4, **kw)
    self.output_hypernetworks_mlps = [
        MLP(dim, dim // 8, num_layers=3, **kw) for _ in range(self.num_mask_tokens)
    ]
    self.iou_prediction_head = MLP(self.iou_head_hidden_dim, self.num_mask_tokens, num_layers=self.iou_head_depth,
                                   sigmoid_output=self.iou_prediction_use_sigmoid, **kw)
    if self.pred_obj_scores:
      if self.pred_obj_scores_mlp:
        self.pred_obj_score_head = MLP(dim, 1, num_layers=3, **kw)
      else:
        self.pred_obj_score_head = Dense(1, **kw)

  def project_high_res_features(self, fpn0: jnp.ndarray, fpn1: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """1x1 projections of the two highest-resolution FPN levels, (B, 4h, 4w, C) and (B, 2h, 2w, C),
    to (B, 4h, 4w, C/8) and (B, 2h, 2w, C/4). Applied once per image in the image path."""
    return self.conv_s0(fpn0), self.conv_s1(fpn1)

  def _upscale(self, src: jnp.ndarray, high_res_features: Sequence[jnp.ndarray] | None) -> jnp.ndarray:
    dc1, ln1, act1, dc2, act2 = self.output_upscaling
    if not self.use_high_res_features:
      return act2(dc2(act1(ln1(dc1(src)))))
    feat_s0, feat_s1 = high_res_features
    x = act1(ln1(dc1(src) + feat_s1))
    return act2(dc2(x) + feat_s0)

  def predict_masks(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                    repeat_image: bool, high_res_features, sparse_mask: jnp.ndarray | None = None):
    """All mask tokens' outputs: masks (B, M+1, 4h, 4w), iou (B, M+1), tokens (B, M+1, C), score (B, 1).

    `sparse_mask` (B, N) marks the prompt tokens that exist (training uses fixed-size prompt buffers).
    """
    tables = [self.iou_token.embedding, self.mask_tokens.embedding]
    if self.pred_obj_scores:
      tables.insert(0, self.obj_score_token.embedding)
    output_tokens = jnp.concatenate(tables, axis=0)
    b = sparse_prompt_embeddings.shape[0]
    output_tokens = jnp.broadcast_to(output_tokens, (b, *output_tokens.shape))
    tokens = jnp.concatenate([output_tokens, sparse_prompt_embeddings.astype(output_tokens.dtype)], axis=1)

    if repeat_image:
      src = jnp.repeat(image_embeddings, b, axis=0)
    else:
      if image_embeddings.shape[0] != b:
        raise ValueError(f"image_embeddings batch {image_embeddings.shape[0]} != prompt batch {b}; "
                         "use repeat_image=True to share one image across prompts.")
      src = image_embeddings
    src = src + dense_prompt_embeddings
    pos_src = jnp.broadcast_to(image_pe, src.shape)

    token_mask = None
    if sparse_mask is not None:
      token_mask = jnp.concatenate([jnp.ones((b, output_tokens.shape[1]), bool), sparse_mask], axis=1)
    hs, keys = self.transformer(src, pos_src, tokens, token_mask)
    s = 1 if self.pred_obj_scores else 0
    iou_token_out = hs[:, s]
    mask_tokens_out = hs[:, s + 1:s + 1 + self.num_mask_tokens]

    upscaled = self._upscale(keys.reshape(src.shape), high_res_features)
    hyper_in = jnp.stack([mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
                         axis=1)
    masks = jnp.einsum("bmc,bhwc->bmhw", hyper_in, upscaled)

    iou_pred = self.iou_prediction_head(iou_token_out)
    if self.pred_obj_scores:
      object_score_logits = self.pred_obj_score_head(hs[:, 0])
    else:
      object_score_logits = jnp.full((iou_pred.shape[0], 1), 10.0, iou_pred.dtype)
    return masks, iou_pred, mask_tokens_out, object_score_logits

  def _stability_scores(self, mask_logits: jnp.ndarray) -> jnp.ndarray:
    """area(logits > delta) / area(logits > -delta) per mask (1 when the latter is empty)."""
    delta = self.dynamic_multimask_stability_delta
    area_i = jnp.sum(mask_logits > delta, axis=(-2, -1)).astype(jnp.float32)
    area_u = jnp.sum(mask_logits > -delta, axis=(-2, -1)).astype(jnp.float32)
    return jnp.where(area_u > 0, area_i / jnp.maximum(area_u, 1.0), 1.0)

  def _dynamic_multimask_via_stability(self, masks: jnp.ndarray, iou_pred: jnp.ndarray):
    """Single-mask output, replaced by the best (highest predicted IoU) multimask output where unstable."""
    best = jnp.argmax(iou_pred[:, 1:], axis=-1) + 1
    best_masks = jnp.take_along_axis(masks, best[:, None, None, None], axis=1)
    best_iou = jnp.take_along_axis(iou_pred, best[:, None], axis=1)
    single_masks, single_iou = masks[:, 0:1], iou_pred[:, 0:1]
    is_stable = self._stability_scores(single_masks) >= self.dynamic_multimask_stability_thresh  # (B, 1)
    return (jnp.where(is_stable[..., None, None], single_masks, best_masks),
            jnp.where(is_stable, single_iou, best_iou))

  def __call__(self, image_embeddings: jnp.ndarray, image_pe: jnp.ndarray, sparse_prompt_embeddings: jnp.ndarray,
               dense_prompt_embeddings: jnp.ndarray, multimask_output: bool, repeat_image: bool,
               high_res_features: Sequence[jnp.ndarray] | None = None, train: bool = False,
               token_mask: jnp.ndarray | None = None):
    """Predicts masks.

    Args:
      image_embeddings: (B or 1, h, w, C).
      image_pe: (h, w, C) or (B, h, w, C), from `PromptEncoder.get_dense_pe`.
      sparse_prompt_embeddings: (B, N, C).
      dense_prompt_embeddings: (B, h, w, C).
      multimask_output: static; return the 3 multimask outputs instead of the single mask.
      repeat_image: static; repeat `image_embeddings` (batch 1) for each of the B prompts.
      high_res_features: [feat_s0 (B or 1, 4h, 4w, C/8), feat_s1 (B or 1, 2h, 2w, C/4)] from
        `project_high_res_features`; required when `use_high_res_features`.
      train: static; disables the dynamic multimask fallback, as the official training mode.
      token_mask: (B, N) marks the prompt tokens that exist (see `predict_masks`).

    Returns:
      masks (B, M, 4h, 4w) logits, iou_pred (B, M), sam_tokens_out (B, M', C) (the tokens for the
      object pointer) and object_score_logits (B, 1). M = 3 with multimask_output, else 1.
    """
    if self.is_initializing() and self.use_high_res_features:
      _, h, w, c = image_embeddings.shape
      self.project_high_res_features(jnp.zeros((1, 4 * h, 4 * w, c)), jnp.zeros((1, 2 * h, 2 * w, c)))
    masks, iou_pred, mask_tokens_out, object_score_logits = self.predict_masks(
        image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, repeat_image,
        high_res_features, token_mask)

    if multimask_output:
      masks, iou_pred = masks[:, 1:], iou_pred[:, 1:]
    elif self.dynamic_multimask_via_stability and not train:
      masks, iou_pred = self._dynamic_multimask_via_stability(masks, iou_pred)
    else:
      masks, iou_pred = masks[:, 0:1], iou_pred[:, 0:1]

    if multimask_output and self.use_multimask_token_for_obj_ptr:
      sam_tokens_out = mask_tokens_out[:, 1:]
    else:
      sam_tokens_out = mask_tokens_out[:, 0:1]
    return masks, iou_pred, sam_tokens_out, object_score_logits
