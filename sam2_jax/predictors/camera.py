"""`SAM2CameraPredictor`: segmentation of a live or endless stream of frames with flat memory.

The method names are those of the community real-time predictor (`load_first_frame`,
`add_new_prompt`, `track`), the results those of the official `SAM2VideoPredictor` propagating
forward: a stream is a video whose frames arrive one by one. The state holds only what the
official memory selection can still reach from the frames to come:
- per object, its conditioning frames (the prompted ones; with `max_cond_frames_in_attn` set,
  the older ones are freed once no frame can reach them);
- the last `num_maskmem - 1` frames' memories (under the temporal stride) and the last
  `max_obj_ptrs_in_encoder - 1` object pointers, in the rings of a fixed-shape `MemoryBank`;
- the current frame's image features and per-object outputs, which prompts may still change.
No frames or older outputs are kept, so host and device memory stay flat however long it runs.

Each frame is one jitted call for all objects: the previous frame's memories enter the bank, then
the new frame is encoded and tracked. The current frame's memories enter the bank only when the
next frame arrives, because a correction on the current frame replaces them.

Object pointers are positioned relative to min(num_frames, 16) - 1 in the official code. A stream of
unknown length counts as 16 frames or more, so its outputs equal the offline predictor's on videos of at
least 16 frames; given its length (`load_first_frame(frame, num_frames=...)`), on any video.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sam2_jax import compilation_cache
from sam2_jax.build_sam import SAM2Model
from sam2_jax.modeling import track
from sam2_jax.modeling.memory_bank import MemoryBank, ring_sizes
from sam2_jax.modeling.sam2 import SAM2
from sam2_jax.predictors import postprocess
from sam2_jax.predictors.transforms import normalize
from sam2_jax.predictors.video import (check_fill_hole_area, image_features, predictor_model, prompt_mask,
                                       prompt_memory, prompt_points, prompt_step, video_res)
from sam2_jax.predictors.video_frames import resize_frame

# The length the model is told: any stream of 16 frames or more normalises pointer positions alike.
STREAM_LENGTH = 2**30
_OUTPUTS = ("pred_masks", "obj_ptr", "object_score_logits", "maskmem_features")
_OPTIONS = ("fill_hole_area", "non_overlap_masks", "add_all_frames_to_correct_as_cond")


@functools.partial(jax.jit, static_argnums=0, static_argnames=("video_size", "fill_hole_area", "non_overlap"),
                   donate_argnums=2)
def stream_step(module: SAM2, params, bank: MemoryBank, previous: dict[str, jax.Array], frame: jax.Array,
                frame_idx: jax.Array, num_frames: jax.Array, *, video_size: tuple[int, int], fill_hole_area: int, non_overlap: bool):
  """The previous frame's memories into the bank (`previous["recent"]` (B,): the objects whose output
  there was a tracked one), then all B objects tracked on `frame` (S, S, 3) uint8.

  Returns (bank, image features, outputs, video-resolution mask logits (B, 1, H, W)).
  """
  bank = bank.add_recent(frame_idx - 1, previous["maskmem_features"], previous["obj_ptr"], previous["recent"])
  feats = module.apply({"params": params}, normalize(frame)[None], method=SAM2.forward_image)
  out = module.apply({"params": params}, bank, feats, frame_idx, num_frames, method=track.track_step)
  out = {k: out[k] for k in _OUTPUTS}
  out["pred_masks"] = postprocess.fill_holes_on_device(out["pred_masks"].astype(jnp.float32), fill_hole_area)
  return bank, feats, out, video_res(out["pred_masks"], video_size, non_overlap)


class SAM2CameraPredictor:
  """Tracks objects through a stream of frames; objects may be prompted on whichever frame is current."""

  def __init__(self, model: SAM2Model, fill_hole_area: int = 0, non_overlap_masks: bool = False,
               add_all_frames_to_correct_as_cond: bool = False):
    """
    Args:
      model: from `build_sam2` (use `build_sam2_camera_predictor` for the official defaults).
      fill_hole_area, non_overlap_masks, add_all_frames_to_correct_as_cond: as `SAM2VideoPredictor`.
    """
    compilation_cache.enable()
    self.model = model
    self.fill_hole_area = check_fill_hole_area(fill_hole_area)
    self.non_overlap_masks = non_overlap_masks
    self.add_all_frames_to_correct_as_cond = add_all_frames_to_correct_as_cond
    self.reset_state()

  @property
  def image_size(self) -> int:
    return self.model.image_size

  @property
  def frame_idx(self) -> int | None:
    """The index of the current frame (None before `load_first_frame`)."""
    return self._frame_idx

  @property
  def obj_ids(self) -> list:
    return list(self._obj_ids)

  def reset_state(self) -> None:
    """Forgets the stream: frames, objects, prompts and memories."""
    self._frame_idx = None
    self._num_frames = STREAM_LENGTH
    self._video_hw = None
    self._frame = None      # the current frame at the model's input size, until its features are computed
    self._feats = None
    self._obj_ids = []
    self._bank = None       # memories of frames before the current one; rows: the objects of earlier frames
    self._cond_frames = []  # per bank row: the frame held by each conditioning slot (None: free)
    self._current = None    # the current frame's outputs, a row per object
    self._prompts = {}      # object index -> {"points": (points, labels) or None, "cond": bool}

  # ---------------------------------------------------------------- frames
  def load_first_frame(self, frame: np.ndarray, num_frames: int | None = None) -> None:
    """Starts a stream (forgetting any previous one) at an RGB uint8 (H, W, 3) frame, frame index 0.

    `num_frames`: the stream's length when it is known (a video file), for outputs equal to the offline
    predictor's on videos shorter than 16 frames too.
    """
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
      raise ValueError(f"Expected an RGB uint8 frame of shape (H, W, 3), got {frame.dtype} {frame.shape}.")
    if num_frames is not None and (not isinstance(num_frames, (int, np.integer)) or num_frames < 1):
      raise ValueError(f"num_frames must be a whole number >= 1 (or None for an endless stream), got {num_frames!r}.")
    self.reset_state()
    self._video_hw = frame.shape[:2]
    self._frame_idx = 0
    self._num_frames = STREAM_LENGTH if num_frames is None else int(num_frames)
    self._frame = self._resize(frame)

  def track(self, frame: np.ndarray) -> tuple[list, np.ndarray]:
    """Tracks every object on the next frame; returns (obj_ids, mask logits (O, 1, H, W))."""
    frame = self._check_frame(frame)
    if not self._obj_ids:  # nothing to track: the frame is encoded only if a prompt comes
      self._frame_idx += 1
      self._frame, self._feats = frame, None
      return [], self._no_masks()
    previous = self._commit_prompts()
    self._frame_idx += 1
    self._bank, self._feats, self._current, masks = stream_step(
        self.model.module, self.model.params, self._bank, previous, jnp.asarray(frame),
        jnp.asarray(self._frame_idx, jnp.int32), jnp.asarray(self._num_frames, jnp.int32), video_size=self._video_hw,
        fill_hole_area=self.fill_hole_area, non_overlap=self.non_overlap_masks)
    self._free_unreachable_cond()
    return self.obj_ids, np.asarray(masks)

  # ---------------------------------------------------------------- prompts
  def add_new_prompt(self, frame_idx: int, obj_id, points=None, labels=None, bbox=None, mask=None,
                     clear_old_points: bool = True, normalize_coords: bool = True) -> tuple[list, np.ndarray]:
    """Clicks, a box (x0, y0, x1, y1) or a 2-D mask for an object on the current frame.

    A new `obj_id` starts a new object from this frame; for an object tracked here, the prompt
    corrects its output (clicks are added to the earlier clicks of this frame unless
    `clear_old_points`). Returns (obj_ids, mask logits (O, 1, H, W)) of the current frame.
    """
    if self._frame_idx is None:
      raise ValueError("No frame yet: call load_first_frame(frame) before add_new_prompt.")
    if frame_idx != self._frame_idx:
      raise ValueError(f"Prompts go on the current frame {self._frame_idx}, got frame_idx={frame_idx!r}: a stream "
                       "cannot revisit earlier frames (use SAM2VideoPredictor for that).")
    if mask is not None and (points is not None or labels is not None or bbox is not None):
      raise ValueError("Give either a mask or points/labels/bbox, not both.")
    is_new = obj_id not in self._obj_ids
    obj_idx = len(self._obj_ids) if is_new else self._obj_ids.index(obj_id)
    # Frames an object was tracked on are corrected; its first frame is its initial conditioning frame.
    is_init = is_new or (self._bank is None or obj_idx >= self._bank.cond_frames.shape[0])
    prompt = self._prompts.get(obj_idx, {"points": None})
    if mask is not None:
      mask_inputs, point_inputs = prompt_mask(mask, self._video_hw, self.image_size), None
    else:
      point_inputs = prompt_points(points, labels, bbox, clear_old_points, normalize_coords, self._video_hw,
                                   self.image_size)
      if not clear_old_points and prompt["points"] is not None:
        point_inputs = tuple(np.concatenate([old, new], axis=1) for old, new in zip(prompt["points"], point_inputs))
      mask_inputs = None
    has_output = not is_new
    prev_logits = None
    if point_inputs is not None and has_output:
      prev_logits = jnp.clip(self._current["pred_masks"][obj_idx:obj_idx + 1], -32.0, 32.0)
    bank = None if is_init else self._bank.rows(slice(obj_idx, obj_idx + 1))
    out = prompt_step(self.model.module, self.model.params, bank, self._features(), self._frame_idx, self._num_frames,
                      None if point_inputs is None else point_inputs[0],
                      None if point_inputs is None else point_inputs[1], mask_inputs, prev_logits,
                      is_init_cond_frame=is_init, reverse=False, run_mem_encoder=False,
                      fill_hole_area=self.fill_hole_area)
    row = {k: out[k] for k in _OUTPUTS[:3]}
    row["maskmem_features"] = jnp.zeros((1, *self._memory_shape()), jnp.bfloat16)  # encoded on the next frame
    if is_new:
      self._obj_ids.append(obj_id)
      self._current = row if self._current is None else jax.tree.map(
          lambda a, b: jnp.concatenate([a, b]), self._current, row)
    else:
      self._current = jax.tree.map(lambda a, b: a.at[obj_idx].set(b[0].astype(a.dtype)), self._current, row)
    self._prompts[obj_idx] = {"points": point_inputs, "cond": is_init or self.add_all_frames_to_correct_as_cond}
    return self.obj_ids, np.asarray(video_res(self._current["pred_masks"], self._video_hw, self.non_overlap_masks))

  def remove_object(self, obj_id) -> list:
    """Stops tracking an object; returns the remaining object ids."""
    if obj_id not in self._obj_ids:
      raise ValueError(f"Unknown object id {obj_id!r}; object ids: {self._obj_ids}.")
    obj_idx = self._obj_ids.index(obj_id)
    keep = np.array([i for i in range(len(self._obj_ids)) if i != obj_idx], np.int32)
    self._obj_ids.pop(obj_idx)
    self._current = jax.tree.map(lambda x: x[keep], self._current) if len(keep) else None
    if self._bank is not None and obj_idx < self._bank.cond_frames.shape[0]:
      rows = keep[keep < self._bank.cond_frames.shape[0]]
      self._bank = self._bank.rows(rows) if len(rows) else None
      self._cond_frames.pop(obj_idx)
    self._prompts = {i - (i > obj_idx): p for i, p in self._prompts.items() if i != obj_idx}
    return self.obj_ids

  # ---------------------------------------------------------------- helpers
  def _commit_prompts(self) -> dict[str, jax.Array]:
    """Puts the current frame's prompted outputs into the bank (conditioning ones) or the outputs handed to
    the next step (corrections); returns those outputs, with the mask of objects entering the recent rings."""
    num_objects = len(self._obj_ids)
    current = dict(self._current)
    if self._prompts:
      idx = np.array(sorted(self._prompts), np.int32)
      mem = prompt_memory(self.model.module, self.model.params, self._features(), current["pred_masks"][idx],
                          current["object_score_logits"][idx])
      current["maskmem_features"] = current["maskmem_features"].at[idx].set(mem)
    cond = np.array([self._prompts.get(o, {}).get("cond", False) for o in range(num_objects)])
    slots = self._cond_slots(cond)
    for slot in sorted(set(slots.values())):
      valid = np.array([slots.get(o) == slot for o in range(num_objects)])
      self._bank = self._bank.add_cond(slot, self._frame_idx, current["maskmem_features"], current["obj_ptr"], valid)
    self._prompts = {}
    return dict(maskmem_features=current["maskmem_features"], obj_ptr=current["obj_ptr"], recent=jnp.asarray(~cond))

  def _cond_slots(self, cond: np.ndarray) -> dict[int, int]:
    """Conditioning slots for the objects where `cond`, growing the bank (objects, slots) as needed."""
    num_objects = len(cond)
    self._cond_frames += [[] for _ in range(num_objects - len(self._cond_frames))]
    slots = {}
    for o in np.nonzero(cond)[0]:
      frames = self._cond_frames[o]
      slot = frames.index(None) if None in frames else len(frames)
      frames[slot:slot + 1] = [self._frame_idx]
      slots[int(o)] = slot
    num_cond = max(1, max(len(f) for f in self._cond_frames))
    for frames in self._cond_frames:
      frames += [None] * (num_cond - len(frames))
    if self._bank is None:
      self._bank = MemoryBank.empty(self.model.config, num_objects, num_cond)
    elif self._bank.cond_frames.shape != (num_objects, num_cond):
      self._bank = self._bank.resized(self.model.config, num_objects, num_cond)
    return slots

  def _free_unreachable_cond(self) -> None:
    """With `max_cond_frames_in_attn` set, frees the conditioning frames that no later frame can select: those
    beyond the most recent max_cond_frames_in_attn, once too old to stand in for a recent frame either."""
    max_cond = self.model.config.max_cond_frames_in_attn
    if max_cond == -1:
      return
    if not self._cond_frames:
      return
    reach = max(ring_sizes(self.model.config))
    dropped = np.zeros((len(self._cond_frames), len(self._cond_frames[0])), bool)
    for o, frames in enumerate(self._cond_frames):
      held = sorted((t for t in frames if t is not None), reverse=True)
      for t in held[max_cond:]:
        if self._frame_idx - t > reach:
          slot = frames.index(t)
          frames[slot], dropped[o, slot] = None, True
    if dropped.any():
      self._bank = self._bank.drop_cond(jnp.asarray(dropped))

  def _features(self) -> dict[str, jax.Array]:
    """The current frame's image features."""
    if self._feats is None:
      self._feats = image_features(self.model.module, self.model.params, jnp.asarray(self._frame))
      self._frame = None
    return self._feats

  def _memory_shape(self) -> tuple[int, int, int]:
    size = self.image_size // self.model.config.backbone_stride
    return size, size, self.model.config.mem_dim

  def _check_frame(self, frame) -> np.ndarray:
    if self._frame_idx is None:
      raise ValueError("No stream yet: call load_first_frame(frame) before track(frame).")
    if self._frame_idx + 1 >= self._num_frames:
      raise ValueError(f"The stream was started as {self._num_frames} frames long (load_first_frame's num_frames); "
                       f"frame {self._frame_idx + 1} is past its end.")
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.shape != (*self._video_hw, 3):
      raise ValueError(f"Expected an RGB uint8 frame of shape {(*self._video_hw, 3)} like the first frame, "
                       f"got {frame.dtype} {frame.shape}.")
    return self._resize(frame)

  def _resize(self, frame: np.ndarray) -> np.ndarray:
    return resize_frame(frame, self.image_size)

  def _no_masks(self) -> np.ndarray:
    return np.zeros((0, 1, *self._video_hw), np.float32)


def build_sam2_camera_predictor(config_name: str | None = None, checkpoint=None, apply_postprocessing: bool = True,
                                **overrides) -> SAM2CameraPredictor:
  """A `SAM2CameraPredictor` with the official video predictor's defaults (see `build_sam2_video_predictor`);
  keyword arguments are predictor options (fill_hole_area, non_overlap_masks,
  add_all_frames_to_correct_as_cond) or model config overrides (image_size, compute_dtype, ...)."""
  model, options = predictor_model(config_name, checkpoint, apply_postprocessing, overrides, _OPTIONS)
  return SAM2CameraPredictor(model, **options)
