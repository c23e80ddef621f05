"""The fixed-shape memory bank of a video object and the official rules for choosing memories.

The bank is data: a pytree of arrays with a leading object axis B, carried through `lax.scan`.
- conditioning slots: the frames with prompts (memory features, object pointer, frame index);
- a ring of recent memories, slot `frame % ring_size`, long enough for the frames
  t-1, t-2, ... that the official selection visits with temporal stride r;
- a ring of recent object pointers (the last max_obj_ptrs_in_encoder - 1 frames).
Each slot has a validity flag and its frame index. `select_memory` builds the memory sequence of
the official `_prepare_memory_conditioned_features` for frame t with a validity mask instead of
a variable length: slots it would not use are masked, which equals leaving them out.
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections

from sam2_jax.modeling.position_encoding import sine_pe_2d
from sam2_jax.modeling.sam2 import HIDDEN_DIM


def ring_sizes(config: ml_collections.ConfigDict, training: bool = False) -> tuple[int, int]:
  """(memory ring size, pointer ring size) for a config."""
  stride = 1 if training else config.memory_temporal_stride_for_eval
  return (config.num_maskmem - 2) * stride + 1, config.max_obj_ptrs_in_encoder - 1


@flax.struct.dataclass
class MemoryBank:
  """Memories of B objects. Shapes: Kc conditioning slots, Lm memory ring, Lp pointer ring."""
  cond_feats: jnp.ndarray   # (B, Kc, h, w, mem_dim), stored in bfloat16 like the official predictor
  cond_ptrs: jnp.ndarray    # (B, Kc, 256)
  cond_frames: jnp.ndarray  # (B, Kc) int32
  cond_valid: jnp.ndarray   # (B, Kc) bool
  mem_feats: jnp.ndarray    # (B, Lm, h, w, mem_dim)
  mem_frames: jnp.ndarray   # (B, Lm)
  mem_valid: jnp.ndarray    # (B, Lm)
  ptrs: jnp.ndarray         # (B, Lp, 256)
  ptr_frames: jnp.ndarray   # (B, Lp)
  ptr_valid: jnp.ndarray    # (B, Lp)

  @classmethod
  def empty(cls, config: ml_collections.ConfigDict, num_objects: int, num_cond: int, training: bool = False,
            dtype: Any = jnp.bfloat16) -> "MemoryBank":
    size = config.image_size // config.backbone_stride
    lm, lp = ring_sizes(config, training)
    b = num_objects
    feats = lambda n: jnp.zeros((b, n, size, size, config.mem_dim), dtype)
    frames = lambda n: jnp.full((b, n), -1, jnp.int32)
    invalid = lambda n: jnp.zeros((b, n), bool)
    return cls(cond_feats=feats(num_cond), cond_ptrs=jnp.zeros((b, num_cond, HIDDEN_DIM)),
               cond_frames=frames(num_cond), cond_valid=invalid(num_cond),
               mem_feats=feats(lm), mem_frames=frames(lm), mem_valid=invalid(lm),
               ptrs=jnp.zeros((b, lp, HIDDEN_DIM)), ptr_frames=frames(lp), ptr_valid=invalid(lp))

  @property
  def num_cond(self) -> int:
    return self.cond_frames.shape[1]

  def add_cond(self, slot: int | jnp.ndarray, frame_idx, feats, obj_ptr, valid) -> "MemoryBank":
    """Puts a conditioning frame (per-object feats (B, h, w, C), obj_ptr (B, 256)) in `slot` for the objects
    where `valid` (B,) is True; the other objects' slots stay as they were."""
    b = self.cond_frames.shape[0]
    valid = jnp.broadcast_to(jnp.asarray(valid, bool), (b,))
    frame = jnp.broadcast_to(jnp.asarray(frame_idx, jnp.int32), (b,))

    def upd(arr, x):
      ok = jnp.reshape(valid, (b,) + (1,) * (arr.ndim - 2))
      return arr.at[:, slot].set(jnp.where(ok, jnp.asarray(x, arr.dtype), arr[:, slot]))

    return self.replace(cond_feats=upd(self.cond_feats, feats), cond_ptrs=upd(self.cond_ptrs, obj_ptr),
                        cond_frames=upd(self.cond_frames, frame), cond_valid=upd(self.cond_valid, valid))

  def drop_cond(self, dropped: jnp.ndarray) -> "MemoryBank":
    """Frees the conditioning slots where `dropped` (B, Kc) is True."""
    return self.replace(cond_valid=self.cond_valid & ~dropped, cond_frames=jnp.where(dropped, -1, self.cond_frames))

  def resized(self, config: ml_collections.ConfigDict, num_objects: int, num_cond: int) -> "MemoryBank":
    """The bank with `num_objects` rows and `num_cond` conditioning slots: new rows and slots are empty,
    rows and slots beyond the new sizes are dropped."""
    empty = MemoryBank.empty(config, num_objects, num_cond, dtype=self.cond_feats.dtype)
    b, kc = min(num_objects, self.cond_frames.shape[0]), min(num_cond, self.num_cond)
    cond_fields = ("cond_feats", "cond_ptrs", "cond_frames", "cond_valid")
    fields = {}
    for name in self.__dataclass_fields__:
      new, old = getattr(empty, name), getattr(self, name)
      if name in cond_fields:
        fields[name] = new.at[:b, :kc].set(old[:b, :kc])
      else:
        fields[name] = new.at[:b].set(old[:b])
    return MemoryBank(**fields)

  def rows(self, index) -> "MemoryBank":
    """The bank of the objects `index` (a slice or an index array)."""
    return jax.tree.map(lambda x: x[index], self)

  def add_recent(self, frame_idx, feats, obj_ptr, valid, ptr_valid=None) -> "MemoryBank":
    """Writes a tracked (non-conditioning) frame into both rings (slot `frame_idx % ring size`) for the objects
    where `valid` (B,) is True (`ptr_valid`, default `valid`, for the pointer ring); the others keep the slot
    as it was (an older frame, which the frames after this one never look up)."""
    b = self.mem_frames.shape[0]
    frame = jnp.broadcast_to(jnp.asarray(frame_idx, jnp.int32), (b,))
    ptr_valid = valid if ptr_valid is None else ptr_valid
    sm, sp = frame_idx % self.mem_frames.shape[1], frame_idx % self.ptr_frames.shape[1]

    def upd(arr, slot, x, ok):
      ok = jnp.reshape(ok, (b,) + (1,) * (arr.ndim - 2))
      return arr.at[:, slot].set(jnp.where(ok, jnp.asarray(x, arr.dtype), arr[:, slot]))

    return self.replace(
        mem_feats=upd(self.mem_feats, sm, feats, valid), mem_frames=upd(self.mem_frames, sm, frame, valid),
        mem_valid=upd(self.mem_valid, sm, valid, valid), ptrs=upd(self.ptrs, sp, obj_ptr, ptr_valid),
        ptr_frames=upd(self.ptr_frames, sp, frame, ptr_valid), ptr_valid=upd(self.ptr_valid, sp, ptr_valid, ptr_valid))

  def add(self, frame_idx, feats, obj_ptr, as_cond, cond_slot) -> "MemoryBank":
    """A new frame's memory, for all objects: into conditioning slot `cond_slot` where `as_cond` (a traced bool),
    else into the recent rings."""
    valid = jnp.ones(self.cond_frames.shape[:1], bool)
    cond = self.add_cond(cond_slot, frame_idx, feats, obj_ptr, valid)
    recent = self.add_recent(frame_idx, feats, obj_ptr, valid)
    return jax.tree.map(lambda c, r: jnp.where(as_cond, c, r), cond, recent)


def select_cond(frames: jnp.ndarray, valid: jnp.ndarray, frame_idx, max_cond: int) -> jnp.ndarray:
  """Which conditioning slots (B, Kc) the official `select_closest_cond_frames` keeps for frame t."""
  if max_cond == -1 or frames.shape[1] <= max_cond:
    return valid
  big = jnp.iinfo(jnp.int32).max
  before = jnp.where(valid & (frames < frame_idx), frames, -1)
  after = jnp.where(valid & (frames >= frame_idx), frames, big)
  has_before = jnp.any(before >= 0, axis=1, keepdims=True)
  has_after = jnp.any(after < big, axis=1, keepdims=True)
  chosen = (valid & has_before & (frames == before.max(axis=1, keepdims=True))) | (
      valid & has_after & (frames == after.min(axis=1, keepdims=True)))
  num_remain = max_cond - chosen.sum(axis=1, keepdims=True)
  # Rank the others by distance (ties by slot order, like Python's stable sort over the dict).
  dist = jnp.where(valid & ~chosen, jnp.abs(frames - frame_idx), big)
  order = jnp.argsort(dist, axis=1, stable=True)
  rank = jnp.argsort(order, axis=1)
  return chosen | (valid & ~chosen & (rank < num_remain))


def recent_frames(frame_idx: jnp.ndarray, num_maskmem: int, stride: int, reverse: bool) -> jnp.ndarray:
  """The frames (B, num_maskmem - 1) that memory positions t_pos = 1 (oldest) .. num_maskmem - 1 hold
  for frames `frame_idx` (B,), by the official stride rule: the adjacent frame, then every
  `stride`-th frame before it."""
  t_rel = num_maskmem - jnp.arange(1, num_maskmem)
  f = frame_idx[:, None]
  if reverse:
    return jnp.where(t_rel == 1, f + 1, -(-(f + 2) // stride) * stride + (t_rel - 2) * stride)
  return jnp.where(t_rel == 1, f - 1, ((f - 2) // stride) * stride - (t_rel - 2) * stride)


def _take(x: jnp.ndarray, idx: jnp.ndarray) -> jnp.ndarray:
  """x (B, K, ...), idx (B, T) -> (B, T, ...)."""
  return jnp.take_along_axis(x, idx.reshape(*idx.shape, *([1] * (x.ndim - 2))), axis=1)


def _from_ring(ring_frames: jnp.ndarray, ring_valid: jnp.ndarray, ring_values: jnp.ndarray, wanted: jnp.ndarray,
               cond_frames: jnp.ndarray, cond_values: jnp.ndarray, unselected: jnp.ndarray | None
               ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """The ring entries (values (B, T, ...), found (B, T)) of the frames `wanted` (B, T).

  With `unselected` (B, Kc), a conditioning frame that the selection left out stands in for a
  frame missing from the ring (the official code looks frames up among all conditioning outputs).
  """
  slot = wanted % ring_frames.shape[1]
  found = (_take(ring_frames, slot) == wanted) & _take(ring_valid, slot)
  values = _take(ring_values, slot)
  if unselected is not None:
    match = unselected[:, None, :] & (cond_frames[:, None, :] == wanted[:, :, None])  # (B, T, Kc)
    missing = (~found).reshape(*found.shape, *([1] * (values.ndim - 2)))
    values = jnp.where(missing, _take(cond_values, jnp.argmax(match, axis=2)), values)
    found = found | jnp.any(match, axis=2)
  return values, found


def select_memory(module, bank: MemoryBank, frame_idx, num_frames, *, reverse: bool = False,
                  training: bool = False) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, int]:
  """The memory sequence for frame `frame_idx` from the bank (bound SAM2 `module` for its params).

  Returns memory (B, M, mem_dim) float32, its position encoding (B, M, mem_dim), validity (B, M)
  and the (static) number of trailing object-pointer tokens.
  """
  c = module.config
  b, kc = bank.cond_frames.shape
  size = bank.mem_feats.shape[2]
  n = size * size
  frame_idx = jnp.asarray(frame_idx, jnp.int32)
  frame_b = jnp.broadcast_to(frame_idx, (b,))
  stride = 1 if training else c.memory_temporal_stride_for_eval
  selected = select_cond(bank.cond_frames, bank.cond_valid, frame_idx, c.max_cond_frames_in_attn)
  unselected = bank.cond_valid & ~selected if c.max_cond_frames_in_attn != -1 else None

  # Spatial memories: selected conditioning frames, then the recent frames t_pos = 1 (oldest) ...
  recent = recent_frames(frame_b, c.num_maskmem, stride, reverse)
  recent_feats, recent_ok = _from_ring(bank.mem_frames, bank.mem_valid, bank.mem_feats, recent,
                                         bank.cond_frames, bank.cond_feats, unselected)
  feats = jnp.concatenate([bank.cond_feats, recent_feats], axis=1).astype(jnp.float32)
  num_mem_frames = feats.shape[1]
  memory = feats.reshape(b, num_mem_frames * n, c.mem_dim)
  # Temporal encodings: index num_maskmem - 1 for conditioning frames, num_maskmem - 1 - t_pos for recent ones.
  tpos_enc = module.maskmem_tpos_enc.reshape(c.num_maskmem, c.mem_dim)
  tpos_enc = jnp.concatenate([jnp.repeat(tpos_enc[-1:], kc, axis=0), tpos_enc[-2::-1]], axis=0)
  spatial_pe = jnp.asarray(sine_pe_2d(size, size, c.mem_dim)).reshape(n, c.mem_dim)
  memory_pos = jnp.broadcast_to((tpos_enc[:, None] + spatial_pe).reshape(num_mem_frames * n, c.mem_dim),
                                (b, num_mem_frames * n, c.mem_dim))
  memory_valid = jnp.repeat(jnp.concatenate([selected, recent_ok], axis=1), n, axis=1)

  # Object pointers: selected conditioning frames (only past ones in eval), then recent frames.
  max_ptrs = jnp.minimum(num_frames, c.max_obj_ptrs_in_encoder)
  sign = -1 if reverse else 1
  cond_ok = selected
  if not training and c.only_obj_ptrs_in_the_past_for_eval:
    cond_ok = cond_ok & ((bank.cond_frames >= frame_idx) if reverse else (bank.cond_frames <= frame_idx))
  diff = (frame_idx - bank.cond_frames) * sign
  cond_tpos = diff if c.use_signed_tpos_enc_to_obj_ptrs else jnp.abs(frame_idx - bank.cond_frames)
  t_diff = jnp.arange(1, c.max_obj_ptrs_in_encoder)
  wanted = frame_b[:, None] - sign * t_diff
  recent_ptrs, recent_ok = _from_ring(bank.ptr_frames, bank.ptr_valid, bank.ptrs, wanted, bank.cond_frames,
                                         bank.cond_ptrs, unselected)
  recent_ok = recent_ok & (t_diff < max_ptrs) & (wanted >= 0) & (wanted < num_frames)
  ptrs = jnp.concatenate([bank.cond_ptrs, recent_ptrs], axis=1)
  tpos = jnp.concatenate([cond_tpos, jnp.broadcast_to(t_diff, (b, t_diff.shape[0])).astype(cond_tpos.dtype)], axis=1)
  ptr_tokens, ptr_pos = module.obj_ptr_tokens(ptrs, tpos, max_ptrs)
  split = ptr_tokens.shape[1] // ptrs.shape[1]
  ptr_valid = jnp.repeat(jnp.concatenate([cond_ok, recent_ok], axis=1), split, axis=1)

  memory = jnp.concatenate([memory, ptr_tokens.astype(jnp.float32)], axis=1)
  memory_pos = jnp.concatenate([memory_pos, ptr_pos.astype(jnp.float32)], axis=1)
  return memory, memory_pos, jnp.concatenate([memory_valid, ptr_valid], axis=1), ptr_tokens.shape[1]
