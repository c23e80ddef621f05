"""The eight official SAM 2 / SAM 2.1 model configurations.

Usage: `get_config("sam2.1_hiera_t")`, or from absl `--config=sam2_jax/configs.py:sam2.1_hiera_b+`.
Sizes: t (tiny), s (small), b+ (base plus), l (large). The `sam2_*` names are the original
(July 2024) release; `sam2.1_*` add the spatial no-object embedding and signed, projected
temporal encodings of the object pointers.
"""

import ml_collections

_TRUNKS = {
    "t": dict(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2), global_att_blocks=(5, 7, 9),
              window_spec=(8, 4, 14, 7), window_pos_embed_bkg_spatial_size=(7, 7)),
    "s": dict(embed_dim=96, num_heads=1, stages=(1, 2, 11, 2), global_att_blocks=(7, 10, 13),
              window_spec=(8, 4, 14, 7), window_pos_embed_bkg_spatial_size=(7, 7)),
    "b+": dict(embed_dim=112, num_heads=2, stages=(2, 3, 16, 3), global_att_blocks=(12, 16, 20),
               window_spec=(8, 4, 14, 7), window_pos_embed_bkg_spatial_size=(14, 14)),
    "l": dict(embed_dim=144, num_heads=2, stages=(2, 6, 36, 4), global_att_blocks=(23, 33, 43),
              window_spec=(8, 4, 16, 8), window_pos_embed_bkg_spatial_size=(7, 7)),
}

CONFIG_NAMES = tuple(f"{version}_hiera_{size}" for version in ("sam2.1", "sam2") for size in _TRUNKS)


def get_config(name: str = "sam2.1_hiera_t") -> ml_collections.ConfigDict:
  """Returns the model config called `name` (one of `CONFIG_NAMES`)."""
  name = name.removesuffix(".yaml").split("/")[-1]
  if name not in CONFIG_NAMES:
    raise ValueError(f"Unknown SAM 2 config {name!r}; expected one of {', '.join(CONFIG_NAMES)}.")
  version, size = name.split("_hiera_")
  is_21 = version == "sam2.1"
  trunk = _TRUNKS[size]
  dims = [trunk["embed_dim"] * 2**i for i in range(4)]

  c = ml_collections.ConfigDict()
  c.name = name
  c.image_size = 1024
  c.backbone_stride = 16
  c.trunk = ml_collections.ConfigDict(dict(
      trunk, q_pool=3, q_stride=(2, 2), dim_mul=2.0, head_mul=2.0, drop_path_rate=0.0,
      remat=False))  # training: recompute each block in the backward pass (not in the official configs)
  c.neck = ml_collections.ConfigDict(dict(
      d_model=256, backbone_channel_list=tuple(reversed(dims)), fpn_top_down_levels=(2, 3)))
  c.scalp = 1
  c.memory_attention = ml_collections.ConfigDict(dict(
      d_model=256, num_layers=4, dim_feedforward=2048, kv_in_dim=64, rope_theta=10000.0, dropout=0.1))
  c.mem_dim = 64
  c.num_maskmem = 7
  c.sigmoid_scale_for_mem_enc = 20.0
  c.sigmoid_bias_for_mem_enc = -10.0
  c.binarize_mask_from_pts_for_mem_enc = False
  c.max_cond_frames_in_attn = -1
  c.memory_temporal_stride_for_eval = 1
  c.max_obj_ptrs_in_encoder = 16
  c.no_obj_embed_spatial = is_21
  c.add_tpos_enc_to_obj_ptrs = is_21
  c.proj_tpos_enc_in_obj_ptrs = is_21
  c.use_signed_tpos_enc_to_obj_ptrs = is_21
  c.only_obj_ptrs_in_the_past_for_eval = True
  c.multimask_output_in_sam = True
  c.multimask_output_for_tracking = True  # also on frames that are not initial conditioning frames
  c.multimask_min_pt_num = 0
  c.multimask_max_pt_num = 1
  c.non_overlap_masks_for_mem_enc = False
  # Mask decoder post-processing (`apply_postprocessing=True` in the official builders).
  c.dynamic_multimask_via_stability = False
  c.dynamic_multimask_stability_delta = 0.05
  c.dynamic_multimask_stability_thresh = 0.98
  # Numerics: parameters stay float32; `compute_dtype` is the dtype of matmuls and convolutions.
  c.compute_dtype = "float32"
  # How convolutions, dense products and attention are computed (sam2_jax/modeling/kernels.py): "xla" (standard
  # ops, fused attention: for GPUs and TPUs), "cpu" (rewrites faster on XLA's CPU backend), or "auto" (by backend).
  c.kernels = "auto"
  return c
