"""The pure track step of SAM 2 and the scan of it over frames.

`track_step` is the official `SAM2Base.track_step` for B objects sharing one frame's image
features, reading its memories from a fixed-shape `MemoryBank` instead of Python dicts.
`propagate` runs image encoder + track step + memory update over a chunk of frames with
`jax.lax.scan`, so the device holds one bank and one frame at a time, whatever the video length.
All functions take a bound `SAM2` module (use them through `module.apply(..., method=...)`).
"""

from typing import Any

import jax
import jax.numpy as jnp

from sam2_jax.modeling.memory_bank import MemoryBank, select_memory
from sam2_jax.modeling.sam2 import HIDDEN_DIM, SAM2, use_multimask


def conditioned_features(module: SAM2, bank: MemoryBank | None, feats: dict[str, Any], frame_idx, num_frames,
                         is_init_cond_frame, reverse: bool, training: bool = False,
                         deterministic: bool = True) -> jnp.ndarray:
  """Image features of the frame fused with the memories (official `_prepare_memory_conditioned_features`).

  `is_init_cond_frame` may be traced (training decides per frame): both paths are then compiled.
  """
  pix = feats["vision_features"]
  no_memory = lambda: pix + module.no_mem_embed[0].astype(pix.dtype)
  if isinstance(is_init_cond_frame, bool):
    if is_init_cond_frame:
      return no_memory()
    return _read_memory(module, bank, feats, frame_idx, num_frames, reverse, training, deterministic)
  with_memory = lambda: _read_memory(module, bank, feats, frame_idx, num_frames, reverse, training,
                                     deterministic).astype(pix.dtype)
  return jax.lax.cond(is_init_cond_frame, no_memory, with_memory)


def _read_memory(module: SAM2, bank: MemoryBank, feats: dict[str, Any], frame_idx, num_frames, reverse: bool,
                 training: bool, deterministic: bool) -> jnp.ndarray:
  pix = feats["vision_features"]
  b = bank.cond_frames.shape[0]
  pix = jnp.broadcast_to(pix, (b, *pix.shape[1:]))
  h, w = pix.shape[1:3]
  memory, memory_pos, memory_mask, num_ptr_tokens = select_memory(
      module, bank, frame_idx, num_frames, reverse=reverse, training=training)
  pos = jnp.broadcast_to(feats["vision_pos_enc"].reshape(1, h * w, HIDDEN_DIM), (b, h * w, HIDDEN_DIM))
  out = module.memory_attention(pix.reshape(b, h * w, HIDDEN_DIM), memory, pos, memory_pos,
                                num_obj_ptr_tokens=num_ptr_tokens, memory_mask=memory_mask,
                                deterministic=deterministic)
  return out.reshape(b, h, w, HIDDEN_DIM)


def track_step(module: SAM2, bank: MemoryBank | None, feats: dict[str, Any], frame_idx, num_frames, *,
               point_coords: jnp.ndarray | None = None, point_labels: jnp.ndarray | None = None,
               num_points: jnp.ndarray | None = None, multimask: bool | None = None,
               mask_inputs: jnp.ndarray | None = None, prev_mask_logits: jnp.ndarray | None = None,
               is_init_cond_frame: bool = False, reverse: bool = False, run_mem_encoder: bool = True,
               training: bool = False) -> dict[str, jnp.ndarray]:
  """One frame for B objects: SAM heads on memory-conditioned features, then the new memory.

  Args:
    bank: the objects' memories (unused on initial conditioning frames).
    feats: `SAM2.forward_image` of the frame (batch 1, shared by the objects, or B).
    point_coords / point_labels: (B, P, 2) / (B, P) clicks in the model's input frame.
    num_points: with it (traced), only the first `num_points` clicks are prompts and the rest padding, so that one
      program serves any count up to P; `multimask` (static) is then the output choice for that count.
    mask_inputs: (B, 1, H, W) mask prompt: taken as the output directly (mask-as-output path).
    prev_mask_logits: (B, 1, h, w) logits fed to the decoder with new clicks (corrections).
  Returns:
    pred_masks (B, 1, 4h', 4w') low-res logits, pred_masks_high_res, obj_ptr (B, 256),
    object_score_logits (B, 1), ious, and maskmem_features (B, h, w, mem_dim) in bfloat16 when
    `run_mem_encoder`.
  """
  high_res = feats["high_res_features"]
  if mask_inputs is not None:
    b = mask_inputs.shape[0]
    pix = jnp.broadcast_to(feats["vision_features"], (b, *feats["vision_features"].shape[1:]))
    high_res = [jnp.broadcast_to(x, (b, *x.shape[1:])) for x in high_res]
    out = module.use_mask_as_output(pix, high_res, mask_inputs)
  else:
    pix = conditioned_features(module, bank, feats, frame_idx, num_frames, is_init_cond_frame, reverse, training)
    b = pix.shape[0]
    high_res = [jnp.broadcast_to(x, (b, *x.shape[1:])) for x in high_res]
    if multimask is None:
      count = 0 if point_coords is None else point_coords.shape[1]
      multimask = bool(use_multimask(module.config, is_init_cond_frame, count))
    out = module.forward_sam_heads(pix, point_coords, point_labels, prev_mask_logits, high_res, multimask,
                                   num_points=num_points)
  result = dict(pred_masks=out["low_res_masks"], pred_masks_high_res=out["high_res_masks"], obj_ptr=out["obj_ptr"],
                object_score_logits=out["object_score_logits"], ious=out["ious"])
  if run_mem_encoder:
    backbone = jnp.broadcast_to(feats["vision_features"], (b, *feats["vision_features"].shape[1:]))
    binarize = module.config.binarize_mask_from_pts_for_mem_enc and point_coords is not None and not training
    mem, _ = module.encode_new_memory(backbone, out["high_res_masks"], out["object_score_logits"], binarize)
    result["maskmem_features"] = mem.astype(jnp.bfloat16)
  return result


def remember(module: SAM2, bank: MemoryBank, backbone: jnp.ndarray, high_res_masks: jnp.ndarray,
             object_score_logits: jnp.ndarray, obj_ptr: jnp.ndarray, frame_idx, as_cond, cond_slot) -> MemoryBank:
  """Encodes the memory of a frame's final masks (B, 1, H, W) and adds it, with the object pointers, to the
  bank: into conditioning slot `cond_slot` where `as_cond` (may be traced), else into the recent rings."""
  mem, _ = module.encode_new_memory(backbone, high_res_masks, object_score_logits, False)
  return bank.add(frame_idx, mem.astype(bank.mem_feats.dtype), obj_ptr, as_cond, cond_slot)


def encode_memory(module: SAM2, feats: dict[str, Any], low_res_masks: jnp.ndarray, object_score_logits: jnp.ndarray,
                  is_mask_from_pts: bool = True) -> jnp.ndarray:
  """Memory of stored low-res logits (B, 1, h, w), upsampled to the image size (official preflight)."""
  size = module.config.image_size
  high_res = jax.image.resize(low_res_masks.astype(jnp.float32), (*low_res_masks.shape[:2], size, size), "bilinear")
  b = low_res_masks.shape[0]
  backbone = jnp.broadcast_to(feats["vision_features"], (b, *feats["vision_features"].shape[1:]))
  binarize = module.config.binarize_mask_from_pts_for_mem_enc and is_mask_from_pts
  mem, _ = module.encode_new_memory(backbone, high_res, object_score_logits, binarize)
  return mem.astype(jnp.bfloat16)


def propagate(module: SAM2, bank: MemoryBank, images: jnp.ndarray, frame_indices: jnp.ndarray,
              is_cond: jnp.ndarray, num_frames, reverse: bool = False) -> tuple[MemoryBank, dict[str, jnp.ndarray]]:
  """Tracks B objects through a chunk of T frames with `lax.scan`.

  Args:
    images: (T, H, W, 3) normalised frames; frame_indices (T,) their indices in the video.
    is_cond: (T, B) True where the frame is a conditioning frame of the object: its stored output
      is used instead, and it does not enter the recent-memory rings. A frame that is a
      conditioning frame of every object (or padding) is not computed; its outputs are zeros.
  Returns:
    the updated bank and per-frame outputs stacked on a leading T axis.
  """

  def track(bank, image, frame_idx, cond):
    feats = module.forward_image(image[None])
    out = track_step(module, bank, feats, frame_idx, num_frames, reverse=reverse)
    bank = bank.add_recent(frame_idx, out["maskmem_features"], out["obj_ptr"], ~cond)
    return bank, {k: out[k] for k in ("pred_masks", "obj_ptr", "object_score_logits", "maskmem_features")}

  def skip(bank, image, frame_idx, cond):
    shapes = jax.eval_shape(track, bank, image, frame_idx, cond)[1]
    return bank, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

  def step(bank, xs):
    image, frame_idx, cond = xs
    return jax.lax.cond(jnp.all(cond), skip, track, bank, image, frame_idx, cond)

  return jax.lax.scan(step, bank, (images, frame_indices, is_cond))
