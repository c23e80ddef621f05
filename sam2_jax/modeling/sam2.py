"""The SAM 2 model (the official `SAM2Base`): image features, SAM heads, object pointers, memory encoding.

All methods are pure functions of the params; the video-specific memory bank and track step live
in `memory_bank.py` and `track.py`. Tensors are channels-last: images (B, H, W, 3), features
(B, h, w, C); masks are (B, M, H, W) with M the mask index.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from sam2_jax.modeling import kernels
from sam2_jax.modeling.image_encoder import ImageEncoder
from sam2_jax.modeling.layers import Conv, Dense, MLP
from sam2_jax.modeling.mask_decoder import MaskDecoder
from sam2_jax.modeling.memory_attention import MemoryAttention
from sam2_jax.modeling.memory_encoder import MemoryEncoder
from sam2_jax.modeling.position_encoding import sine_pe_1d
from sam2_jax.modeling.prompt_encoder import PromptEncoder

NO_OBJ_SCORE = -1024.0  # logits of masks where the object is predicted absent
HIDDEN_DIM = 256


def non_overlapping(logits: jax.Array, axis: int = 0) -> jax.Array:
  """The official non-overlap rule over objects on `axis`: at each pixel, every object but the highest-scoring
  one gets a logit of at most -10."""
  num_objects = logits.shape[axis]
  if num_objects < 2:
    return logits
  index_shape = [1] * logits.ndim
  index_shape[axis] = num_objects
  keep = jnp.argmax(logits, axis=axis, keepdims=True) == jnp.arange(num_objects).reshape(index_shape)
  return jnp.where(keep, logits, jnp.minimum(logits, -10.0))


def resize(x: jnp.ndarray, size: tuple[int, int], antialias: bool = False) -> jnp.ndarray:
  """Bilinear resize of (B, M, H, W) maps (half-pixel centres, as torch align_corners=False)."""
  return jax.image.resize(x.astype(jnp.float32), (*x.shape[:-2], *size), "bilinear", antialias=antialias)


def use_multimask(config: ml_collections.ConfigDict, is_init_cond_frame, num_points):
  """Whether the SAM heads give 3 masks (the official `_use_multimask`); Python or traced values."""
  in_range = (config.multimask_min_pt_num <= num_points) & (num_points <= config.multimask_max_pt_num)
  return config.multimask_output_in_sam & (is_init_cond_frame | config.multimask_output_for_tracking) & in_range


class SAM2(nn.Module):
  """SAM 2 with every official sub-module under its official name."""
  config: ml_collections.FrozenConfigDict

  def setup(self):
    c = self.config
    kernels.resolve(c.kernels)  # an unknown setting fails here, whichever method runs first
    dtype = jnp.dtype(c.compute_dtype)
    kw = dict(dtype=dtype, kernels=c.kernels)
    self.image_encoder = ImageEncoder.from_config(c, dtype=dtype)
    self.memory_attention = MemoryAttention(
        d_model=c.memory_attention.d_model, num_layers=c.memory_attention.num_layers,
        dim_feedforward=c.memory_attention.dim_feedforward, kv_in_dim=c.memory_attention.kv_in_dim,
        rope_theta=c.memory_attention.rope_theta, dropout=c.memory_attention.dropout, **kw)
    self.memory_encoder = MemoryEncoder(out_dim=c.mem_dim, in_dim=HIDDEN_DIM, **kw)
    self.sam_prompt_encoder = PromptEncoder(
        embed_dim=HIDDEN_DIM, image_embedding_size=(self.embedding_size, self.embedding_size),
        input_image_size=(c.image_size, c.image_size), mask_in_chans=16, **kw)
    self.sam_mask_decoder = MaskDecoder(
        transformer_dim=HIDDEN_DIM,
        dynamic_multimask_via_stability=c.dynamic_multimask_via_stability,
        dynamic_multimask_stability_delta=c.dynamic_multimask_stability_delta,
        dynamic_multimask_stability_thresh=c.dynamic_multimask_stability_thresh, **kw)
    self.obj_ptr_proj = MLP(HIDDEN_DIM, HIDDEN_DIM, 3, **kw)
    if c.proj_tpos_enc_in_obj_ptrs:
      self.obj_ptr_tpos_proj = Dense(c.mem_dim, **kw)
    self.mask_downsample = Conv(1, 4, 4, **kw)
    init = nn.initializers.normal(0.02)  # torch's trunc_normal_(std=0.02) cuts at +-2, i.e. 100 std
    self.maskmem_tpos_enc = self.param("maskmem_tpos_enc", init, (c.num_maskmem, 1, 1, c.mem_dim))
    self.no_mem_embed = self.param("no_mem_embed", init, (1, 1, HIDDEN_DIM))
    self.no_mem_pos_enc = self.param("no_mem_pos_enc", init, (1, 1, HIDDEN_DIM))
    self.no_obj_ptr = self.param("no_obj_ptr", init, (1, HIDDEN_DIM))
    if c.no_obj_embed_spatial:
      self.no_obj_embed_spatial = self.param("no_obj_embed_spatial", init, (1, c.mem_dim))

  @property
  def embedding_size(self) -> int:
    return self.config.image_size // self.config.backbone_stride

  def __call__(self, images: jnp.ndarray) -> dict[str, jnp.ndarray]:
    """Touches every sub-module once (used by `init`): a click on each image and its memory."""
    feats = self.forward_image(images)
    b = images.shape[0]
    pix = feats["vision_features"]
    out = self.forward_sam_heads(
        pix, jnp.zeros((b, 1, 2)), jnp.ones((b, 1), jnp.int32), None, feats["high_res_features"],
        multimask_output=True)
    mem, mem_pos = self.encode_new_memory(pix, out["high_res_masks"], out["object_score_logits"], True)
    mask_out = self.use_mask_as_output(pix, feats["high_res_features"], out["high_res_masks"] > 0)
    tokens = self.obj_ptr_tokens(out["obj_ptr"][:, None], jnp.zeros((b, 1)))
    conditioned = self.memory_attention(
        pix.reshape(b, -1, HIDDEN_DIM), mem.reshape(b, -1, self.config.mem_dim),
        feats["vision_pos_enc"].reshape(b, -1, HIDDEN_DIM), mem_pos.reshape(b, -1, self.config.mem_dim),
        num_obj_ptr_tokens=0)
    return dict(out, memory=mem, mask_out=mask_out["obj_ptr"], tokens=tokens[0], conditioned=conditioned)

  def forward_image(self, images: jnp.ndarray, deterministic: bool = True) -> dict[str, Any]:
    """Image features of normalised images (B, H, W, 3); `deterministic=False` applies the trunk's drop path.

    Returns `vision_features` (B, h, w, 256) (the lowest-resolution level, before memory),
    `vision_pos_enc` (h, w, 256) for it, and `high_res_features`: the two higher-resolution FPN
    levels already projected by the decoder's conv_s0 / conv_s1, [(B, 4h, 4w, 32), (B, 2h, 2w, 64)].
    """
    out = self.image_encoder(images, deterministic)
    fpn = out["backbone_fpn"]
    feat_s0, feat_s1 = self.sam_mask_decoder.project_high_res_features(fpn[0], fpn[1])
    pos = out["vision_pos_enc"][-1]
    return dict(vision_features=fpn[-1], vision_pos_enc=pos[0] if pos.ndim == 4 else pos,
                high_res_features=[feat_s0, feat_s1])

  def forward_sam_heads(self, backbone_features: jnp.ndarray, point_coords: jnp.ndarray | None,
                        point_labels: jnp.ndarray | None, mask_inputs: jnp.ndarray | None,
                        high_res_features: list[jnp.ndarray], multimask_output: bool | jnp.ndarray,
                        num_points: jnp.ndarray | None = None, train: bool = False,
                        use_mask_inputs: jnp.ndarray | None = None) -> dict[str, jnp.ndarray]:
    """Prompt encoder + mask decoder on (memory-conditioned) features (B, h, w, 256): the official
    `_forward_sam_heads`, for inference and training.

    Points are pixel coordinates in the model's input frame (B, P, 2) with labels (B, P); no points means one
    padding point. With `num_points` (traced: training's fixed-size prompt buffers) only the first `num_points`
    points are prompts, and with none of them the padding point stands alone. `mask_inputs` (B, 1, H', W')
    logits or a mask are resized to the prompt encoder's mask size. `train` is the official training mode: no
    dynamic multimask fallback, `multimask_output` may be traced, and the multimask outputs always hold 3 masks
    (a single-mask output repeated 3 times). Masks of absent objects (object score <= 0) are set to
    NO_OBJ_SCORE; the object pointer is mixed with `no_obj_ptr` accordingly. With `use_mask_inputs` (a traced
    bool, scalar or (B,)), the mask prompt counts only where it is True (elsewhere: no mask prompt).
    """
    b = backbone_features.shape[0]
    token_mask = None
    if point_coords is None:
      point_coords = jnp.zeros((b, 1, 2), jnp.float32)
      point_labels = -jnp.ones((b, 1), jnp.int32)
    elif num_points is not None:
      p = point_labels.shape[1]
      real = jnp.arange(p) < num_points
      point_labels = jnp.where(real, point_labels, -1)
      point_coords = jnp.where(real[..., None], point_coords, 0.0)
      token_mask = jnp.concatenate([jnp.broadcast_to(jnp.arange(p) < jnp.maximum(num_points, 1), (b, p)),
                                    jnp.ones((b, 1), bool)], axis=1)
    mask_prompt = None
    if mask_inputs is not None:
      size = 4 * self.embedding_size
      mask_prompt = mask_inputs.astype(jnp.float32)
      if mask_prompt.shape[-2:] != (size, size):
        mask_prompt = resize(mask_prompt, (size, size), antialias=True)
      mask_prompt = jnp.moveaxis(mask_prompt, 1, -1)
    sparse, dense = self.sam_prompt_encoder((point_coords, point_labels), None, mask_prompt)
    if use_mask_inputs is not None:
      no_mask = self.sam_prompt_encoder(None, None, None)[1]
      dense = jnp.where(jnp.reshape(use_mask_inputs, (-1, 1, 1, 1)), dense, no_mask)
    dense_pe = self.sam_prompt_encoder.get_dense_pe()
    if train:
      masks, ious, tokens, object_score_logits = self.sam_mask_decoder.predict_masks(
          backbone_features, dense_pe, sparse, dense, False, high_res_features, token_mask)
      choose = lambda x: jnp.where(multimask_output, x[:, 1:], jnp.repeat(x[:, :1], 3, axis=1))
      low_res_multimasks, multi_ious = choose(masks), choose(ious).astype(jnp.float32)
      token_idx = jnp.where(multimask_output & self.sam_mask_decoder.use_multimask_token_for_obj_ptr,
                            jnp.argmax(ious[:, 1:], axis=-1) + 1, 0)
      sam_token = jnp.take_along_axis(tokens, token_idx[:, None, None], axis=1)[:, 0]
      ious = multi_ious
    else:
      low_res_multimasks, ious, sam_tokens, object_score_logits = self.sam_mask_decoder(
          backbone_features, dense_pe, sparse, dense, multimask_output=multimask_output, repeat_image=False,
          high_res_features=high_res_features, token_mask=token_mask)
    is_obj_appearing = object_score_logits > 0
    low_res_multimasks = jnp.where(is_obj_appearing[:, :, None, None], low_res_multimasks.astype(jnp.float32),
                                   NO_OBJ_SCORE)
    image_size = self.config.image_size
    high_res_multimasks = resize(low_res_multimasks, (image_size, image_size))
    if train or multimask_output:
      best = jnp.argmax(ious, axis=-1)
      take = lambda x: jnp.take_along_axis(x, best.reshape((b, 1) + (1,) * (x.ndim - 2)), axis=1)
      low_res_masks, high_res_masks = take(low_res_multimasks), take(high_res_multimasks)
      if not train:
        sam_token = take(sam_tokens)[:, 0] if sam_tokens.shape[1] > 1 else sam_tokens[:, 0]
    else:
      low_res_masks, high_res_masks, sam_token = low_res_multimasks, high_res_multimasks, sam_tokens[:, 0]
    obj_ptr = self._mix_no_obj_ptr(self.obj_ptr_proj(sam_token), is_obj_appearing)
    return dict(low_res_multimasks=low_res_multimasks, high_res_multimasks=high_res_multimasks, ious=ious,
                low_res_masks=low_res_masks, high_res_masks=high_res_masks, obj_ptr=obj_ptr,
                object_score_logits=object_score_logits.astype(jnp.float32) if train else object_score_logits)

  def _mix_no_obj_ptr(self, obj_ptr: jnp.ndarray, is_obj_appearing: jnp.ndarray) -> jnp.ndarray:
    lam = is_obj_appearing.astype(jnp.float32)
    return lam * obj_ptr + (1 - lam) * self.no_obj_ptr

  def use_mask_as_output(self, backbone_features: jnp.ndarray, high_res_features: list[jnp.ndarray],
                         mask_inputs: jnp.ndarray) -> dict[str, jnp.ndarray]:
    """A mask prompt (B, 1, H, W) taken as the output itself (logits +-10); the pointer comes from SAM."""
    sam_ptr = self.forward_sam_heads(backbone_features, None, None, self.downsample_mask(mask_inputs),
                                     high_res_features, multimask_output=False)["obj_ptr"]
    return self.mask_as_output(mask_inputs, sam_ptr)

  def downsample_mask(self, mask_inputs: jnp.ndarray) -> jnp.ndarray:
    """The mask prompt (B, 1, H, W) of the mask-as-output path, as SAM's mask input (B, 1, H/4, W/4)."""
    return jnp.moveaxis(self.mask_downsample(jnp.moveaxis(mask_inputs.astype(jnp.float32), 1, -1)), -1, 1)

  def mask_as_output(self, mask_inputs: jnp.ndarray, sam_ptr: jnp.ndarray) -> dict[str, jnp.ndarray]:
    """The outputs of the mask-as-output path for masks (B, 1, H, W) and SAM's pointer on their downsampled
    prompt (`downsample_mask`, no points, one mask)."""
    high_res_masks = mask_inputs.astype(jnp.float32) * 20.0 - 10.0
    h, w = high_res_masks.shape[-2:]
    low_res_masks = resize(high_res_masks, (h // 4, w // 4), antialias=True)
    is_obj_appearing = jnp.any(mask_inputs.reshape(mask_inputs.shape[0], -1) > 0, axis=1)[:, None]
    object_score_logits = 20.0 * is_obj_appearing.astype(jnp.float32) - 10.0
    ious = jnp.ones((mask_inputs.shape[0], 1), jnp.float32)
    return dict(low_res_multimasks=low_res_masks, high_res_multimasks=high_res_masks, ious=ious,
                low_res_masks=low_res_masks, high_res_masks=high_res_masks,
                obj_ptr=self._mix_no_obj_ptr(sam_ptr, is_obj_appearing), object_score_logits=object_score_logits)

  def encode_new_memory(self, pix_feat: jnp.ndarray, pred_masks_high_res: jnp.ndarray,
                        object_score_logits: jnp.ndarray, binarize: bool | jnp.ndarray
                        ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Memory features (B, h, w, mem_dim) and their position encoding (h, w, mem_dim) of a prediction.

    `binarize` (the official `binarize_mask_from_pts_for_mem_enc and is_mask_from_pts` in eval)
    thresholds the mask at 0 instead of taking its sigmoid.
    """
    c = self.config
    masks = pred_masks_high_res.astype(jnp.float32)
    mask_for_mem = jnp.where(binarize, (masks > 0).astype(jnp.float32), jax.nn.sigmoid(masks))
    mask_for_mem = mask_for_mem * c.sigmoid_scale_for_mem_enc + c.sigmoid_bias_for_mem_enc
    out = self.memory_encoder(pix_feat, jnp.moveaxis(mask_for_mem, 1, -1), skip_mask_sigmoid=True)
    features = out["vision_features"]
    if c.no_obj_embed_spatial:
      absent = (object_score_logits <= 0).astype(features.dtype)[:, :, None, None]
      features = features + absent * self.no_obj_embed_spatial[0].astype(features.dtype)
    pos = out["vision_pos_enc"][-1]
    return features, pos[0] if pos.ndim == 4 else pos

  def obj_ptr_tokens(self, obj_ptrs: jnp.ndarray, tpos: jnp.ndarray, max_obj_ptrs: int = 16
                     ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Object pointers (B, N, 256) at signed temporal distances `tpos` (B, N) -> memory tokens.

    Each pointer becomes 256 // mem_dim consecutive tokens of mem_dim; returns (tokens, pos)
    both (B, N * 256 // mem_dim, mem_dim). `max_obj_ptrs` is min(num_frames, max_obj_ptrs_in_encoder).
    """
    c = self.config
    b, n, _ = obj_ptrs.shape
    split = HIDDEN_DIM // c.mem_dim
    if c.add_tpos_enc_to_obj_ptrs:
      tpos_dim = HIDDEN_DIM if c.proj_tpos_enc_in_obj_ptrs else c.mem_dim
      pos = sine_pe_1d(tpos.astype(jnp.float32) / jnp.maximum(max_obj_ptrs - 1, 1), tpos_dim)
      if c.proj_tpos_enc_in_obj_ptrs:
        pos = self.obj_ptr_tpos_proj(pos)
    else:
      pos = jnp.zeros((b, n, c.mem_dim), jnp.float32)
    tokens = obj_ptrs.reshape(b, n * split, c.mem_dim)
    pos = jnp.repeat(pos, split, axis=1)
    return tokens, pos
