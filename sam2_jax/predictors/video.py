"""`SAM2VideoPredictor`: the official video predictor's API and semantics on the JAX model.

Host side (here): prompts, per-object outputs of every frame (low-res logits, object pointer,
score, bfloat16 memory features) for corrections and re-propagation, and the frames as uint8 at
the model's input size. Device side (`modeling/track.py`): one jitted step per prompted frame,
and a `lax.scan` over chunks of frames for propagation, carrying a fixed-shape `MemoryBank` of all
objects at once. A chunk goes up as uint8 and comes back with its outputs and video-resolution
masks (normalisation, hole filling, resizing and the non-overlap constraint run on the device);
the next chunk is dispatched before the previous one is copied out.
"""

import functools
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from sam2_jax import compilation_cache
from sam2_jax.build_sam import SAM2Model, build_sam2
from sam2_jax.modeling import track
from sam2_jax.modeling.memory_bank import MemoryBank, ring_sizes
from sam2_jax.modeling.sam2 import NO_OBJ_SCORE, SAM2, non_overlapping, resize, use_multimask
from sam2_jax.predictors import postprocess
from sam2_jax.predictors.transforms import check_boxes, check_points, normalize
from sam2_jax.predictors.video_frames import VideoFrames

State = dict[str, Any]
_COND, _NON_COND = "cond_frame_outputs", "non_cond_frame_outputs"


@functools.partial(jax.jit, static_argnums=0)
def image_features(module: SAM2, params, frame):
  """`SAM2.forward_image` of one uint8 frame at the model's input size."""
  return module.apply({"params": params}, normalize(frame)[None], method=SAM2.forward_image)


@functools.partial(jax.jit, static_argnums=0, static_argnames=("multimask", "is_init_cond_frame", "reverse",
                                                                "run_mem_encoder", "fill_hole_area"))
def _prompt_step(module: SAM2, params, bank, feats, frame_idx, num_frames, point_coords, point_labels, num_points,
                 mask_inputs, prev_mask_logits, *, multimask: bool | None, is_init_cond_frame: bool, reverse: bool,
                 run_mem_encoder: bool, fill_hole_area: int):
  out = module.apply({"params": params}, bank, feats, frame_idx, num_frames, method=track.track_step,
                     point_coords=point_coords, point_labels=point_labels, num_points=num_points,
                     multimask=multimask, mask_inputs=mask_inputs, prev_mask_logits=prev_mask_logits,
                     is_init_cond_frame=is_init_cond_frame, reverse=reverse, run_mem_encoder=run_mem_encoder)
  pred_masks = postprocess.fill_holes_on_device(out["pred_masks"].astype(jnp.float32), fill_hole_area)
  return dict(out, pred_masks=pred_masks)


def prompt_step(module: SAM2, params, bank, feats, frame_idx, num_frames, point_coords, point_labels, mask_inputs,
                prev_mask_logits, *, is_init_cond_frame: bool, reverse: bool, run_mem_encoder: bool,
                fill_hole_area: int):
  """`track.track_step` on a prompted frame, with the low-res logits hole-filled as the predictor returns them.

  Clicks (1, P, 2) / (1, P) are padded to the next power of two and masked out (`num_points`), so that an
  interactive session compiles one program per power of two rather than one per click count.
  """
  num_points = multimask = None
  if point_coords is not None:
    count = point_coords.shape[1]
    pad = ((0, 0), (0, (1 << max(count - 1, 0).bit_length()) - count))
    point_coords = np.pad(np.asarray(point_coords, np.float32), pad + ((0, 0),))
    point_labels = np.pad(np.asarray(point_labels, np.int32), pad, constant_values=-1)
    num_points, multimask = np.int32(count), bool(use_multimask(module.config, is_init_cond_frame, count))
  return _prompt_step(module, params, bank, feats, frame_idx, num_frames, point_coords, point_labels, num_points,
                      mask_inputs, prev_mask_logits, multimask=multimask, is_init_cond_frame=is_init_cond_frame,
                      reverse=reverse, run_mem_encoder=run_mem_encoder, fill_hole_area=fill_hole_area)


@functools.partial(jax.jit, static_argnums=0)
def prompt_memory(module: SAM2, params, feats, low_res_masks, object_score_logits):
  """The memory of prompted outputs (`track.encode_memory`), encoded when tracking moves past their frame."""
  return module.apply({"params": params}, feats, low_res_masks, object_score_logits, method=track.encode_memory)


@functools.partial(jax.jit, static_argnames=("size", "non_overlap"))
def video_res(masks: jnp.ndarray, size: tuple[int, int], non_overlap: bool) -> jnp.ndarray:
  """(..., B, 1, h, w) logits -> (..., B, 1, H, W) at the video resolution, optionally without overlaps."""
  out = resize(masks, size)
  return non_overlapping(out, axis=-4) if non_overlap else out


@functools.partial(jax.jit, static_argnums=0, static_argnames=("reverse", "video_size", "fill_hole_area",
                                                                "non_overlap"), donate_argnums=2)
def propagate_chunk(module: SAM2, params, bank, frames, frame_indices, is_cond, num_frames, cond_masks, *,
                    reverse: bool, video_size: tuple[int, int], fill_hole_area: int, non_overlap: bool):
  """Tracks a chunk of T frames: the new bank and per-frame outputs, with video-resolution masks.

  frames (T, S, S, 3) uint8 at the model's input size; is_cond (T, B); cond_masks (T, B, 1, h, w):
  the stored low-res logits of conditioning frames, which their video-resolution masks come from.
  """
  bank, ys = module.apply({"params": params}, bank, normalize(frames), frame_indices, is_cond, num_frames,
                          reverse=reverse, method=track.propagate)
  ys["pred_masks"] = postprocess.fill_holes_on_device(ys["pred_masks"].astype(jnp.float32), fill_hole_area)
  low_res = jnp.where(is_cond[:, :, None, None, None], cond_masks, ys["pred_masks"])
  ys["video_res_masks"] = video_res(low_res, video_size, non_overlap)
  return bank, ys



def check_fill_hole_area(value) -> int:
  """A predictor's `fill_hole_area`: a whole number of low-res pixels >= 0."""
  if not isinstance(value, (int, np.integer)) or value < 0:
    raise ValueError(f"fill_hole_area must be a whole number of pixels >= 0, got {value!r}.")
  return int(value)


def prompt_points(points, labels, box, clear_old_points: bool, normalize_coords: bool, video_hw: tuple[int, int],
                  image_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Clicks (N, 2) + labels (N,) and/or a box (x0, y0, x1, y1) in video pixels (or [0, 1] without
  `normalize_coords`) -> points (1, P, 2) in the model's input frame and labels (1, P), the box first
  as the corner labels 2 and 3; raises ValueError on malformed prompts."""
  if (points is None) != (labels is None):
    raise ValueError("points and labels must be provided together.")
  if points is None and box is None:
    raise ValueError("At least one of points or box must be provided.")
  points = np.zeros((0, 2), np.float32) if points is None else np.asarray(points, np.float32)
  labels = np.zeros((0,), np.int32) if labels is None else np.asarray(labels, np.int32)
  if points.ndim == 2:
    points, labels = points[None], labels[None] if labels.ndim == 1 else labels
  if points.ndim != 3 or points.shape[0] != 1 or points.shape[-1] != 2 or labels.shape != points.shape[:2]:
    raise ValueError(f"points must have shape (N, 2) and labels (N,), got {points.shape} and {labels.shape}.")
  check_points(points, labels, "points")
  if box is not None:
    if not clear_old_points:
      raise ValueError("Cannot add a box without clearing old points (a box must come before any click); "
                       "use clear_old_points=True.")
    box = np.asarray(box, np.float32)
    if box.size != 4:
      raise ValueError(f"box must have 4 values x0, y0, x1, y1, got shape {box.shape}.")
    check_boxes(box)
    points = np.concatenate([box.reshape(1, 2, 2), points], axis=1)
    labels = np.concatenate([np.array([[2, 3]], np.int32), labels], axis=1)
  if normalize_coords:
    points = points / np.array([video_hw[1], video_hw[0]], np.float32)
  return points * np.float32(image_size), labels


def prompt_mask(mask, video_hw: tuple[int, int], image_size: int) -> jnp.ndarray:
  """A 2-D mask at the video's (or the model's input) size -> (1, 1, S, S) float32 at the input size."""
  mask = np.asarray(mask)
  if mask.ndim != 2:
    raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}.")
  size = image_size
  if mask.shape not in (tuple(video_hw), (size, size)):
    raise ValueError(f"mask must be the video's size {tuple(video_hw)} (or the model's input size {(size, size)}), "
                     f"got shape {mask.shape}.")
  mask = jnp.asarray(mask.astype(bool), jnp.float32)[None, None]
  if mask.shape[-2:] != (size, size):
    mask = (resize(mask, (size, size), antialias=True) >= 0.5).astype(jnp.float32)
  return mask


class SAM2VideoPredictor:
  """Tracks objects through a video from clicks, boxes or masks on any frames."""

  def __init__(self, model: SAM2Model, fill_hole_area: int = 0, non_overlap_masks: bool = False,
               add_all_frames_to_correct_as_cond: bool = False, chunk_size: int = 8, progress: bool = True):
    """
    Args:
      model: from `build_sam2` (use `build_sam2_video_predictor` for the official defaults).
      fill_hole_area: background holes of at most this many low-res pixels in a predicted mask are
        filled (8-connected components, on the device).
      non_overlap_masks: at each pixel only the highest-scoring object keeps a positive logit.
      add_all_frames_to_correct_as_cond: corrected frames become conditioning frames.
      chunk_size: frames per `lax.scan` call during propagation (a power of two).
      progress: show a progress bar while propagating.
    """
    if chunk_size < 1 or chunk_size & (chunk_size - 1):
      raise ValueError(f"chunk_size must be a power of two, got {chunk_size}.")
    compilation_cache.enable()
    self.model = model
    self.fill_hole_area = check_fill_hole_area(fill_hole_area)
    self.non_overlap_masks = non_overlap_masks
    self.add_all_frames_to_correct_as_cond = add_all_frames_to_correct_as_cond
    self.chunk_size = chunk_size
    self.progress = progress

  @property
  def image_size(self) -> int:
    return self.model.image_size

  # ---------------------------------------------------------------- state
  def init_state(self, video_path, offload_video_to_cpu: bool = True, offload_state_to_cpu: bool = True,
                 async_loading_frames: bool = False) -> State:
    """Loads a video (JPEG folder, video file or uint8 (T, H, W, 3) array) and returns its state.

    Frames and per-frame outputs always live on the host (the offload flags are accepted for API
    compatibility); the device holds one chunk of frames and the memory bank at a time.
    """
    del offload_video_to_cpu, offload_state_to_cpu
    frames = VideoFrames(video_path, self.image_size, async_loading=async_loading_frames)
    state = dict(images=frames, num_frames=len(frames), video_height=frames.video_height,
                 video_width=frames.video_width, cached_features={}, obj_id_to_idx={}, obj_idx_to_id={},
                 obj_ids=[], point_inputs_per_obj={}, mask_inputs_per_obj={}, output_dict_per_obj={},
                 temp_output_dict_per_obj={}, frames_tracked_per_obj={})
    self._features(state, 0)
    return state

  def reset_state(self, inference_state: State) -> None:
    """Removes all prompts, outputs and objects."""
    self._check_state(inference_state)
    for key in ("obj_id_to_idx", "obj_idx_to_id", "point_inputs_per_obj", "mask_inputs_per_obj",
                "output_dict_per_obj", "temp_output_dict_per_obj", "frames_tracked_per_obj"):
      inference_state[key].clear()
    inference_state["obj_ids"] = []

  @staticmethod
  def _check_state(state) -> None:
    if not isinstance(state, dict) or "images" not in state:
      raise ValueError("Expected an inference state from init_state(video_path); call init_state first.")

  def _check_frame(self, state: State, frame_idx: int) -> int:
    self._check_state(state)
    n = state["num_frames"]
    if not isinstance(frame_idx, (int, np.integer)) or not 0 <= frame_idx < n:
      raise ValueError(f"frame_idx {frame_idx!r} is out of range: the video has {n} frames (0..{n - 1}).")
    return int(frame_idx)

  def _obj_id_to_idx(self, state: State, obj_id, create: bool = True) -> int:
    if obj_id in state["obj_id_to_idx"]:
      return state["obj_id_to_idx"][obj_id]
    if not create:
      raise ValueError(f"Unknown object id {obj_id!r}; existing object ids: {state['obj_ids']}.")
    idx = len(state["obj_id_to_idx"])
    state["obj_id_to_idx"][obj_id] = idx
    state["obj_idx_to_id"][idx] = obj_id
    state["obj_ids"] = list(state["obj_id_to_idx"])
    for key in ("point_inputs_per_obj", "mask_inputs_per_obj", "frames_tracked_per_obj"):
      state[key][idx] = {}
    for key in ("output_dict_per_obj", "temp_output_dict_per_obj"):
      state[key][idx] = {_COND: {}, _NON_COND: {}}
    return idx

  def _features(self, state: State, frame_idx: int):
    cache = state["cached_features"]
    if frame_idx not in cache:
      feats = image_features(self.model.module, self.model.params, jnp.asarray(state["images"][frame_idx]))
      state["cached_features"] = cache = {frame_idx: feats}  # the most recent frame only
    return cache[frame_idx]

  # ---------------------------------------------------------------- prompts
  def add_new_points_or_box(self, inference_state: State, frame_idx: int, obj_id, points=None, labels=None,
                            clear_old_points: bool = True, normalize_coords: bool = True, box=None):
    """Adds clicks (and/or a box) for an object on a frame; returns (frame_idx, obj_ids, video-res logits)."""
    state = inference_state
    frame_idx = self._check_frame(state, frame_idx)
    points, labels = prompt_points(points, labels, box, clear_old_points, normalize_coords,
                                   (state["video_height"], state["video_width"]), self.image_size)
    obj_idx = self._obj_id_to_idx(state, obj_id)
    old = state["point_inputs_per_obj"][obj_idx].get(frame_idx) if not clear_old_points else None
    if old is not None:
      points = np.concatenate([old[0], points], axis=1)
      labels = np.concatenate([old[1], labels], axis=1)
    state["point_inputs_per_obj"][obj_idx][frame_idx] = (points, labels)
    state["mask_inputs_per_obj"][obj_idx].pop(frame_idx, None)
    return self._add_prompt(state, frame_idx, obj_idx, points=(points, labels))

  def add_new_mask(self, inference_state: State, frame_idx: int, obj_id, mask):
    """Adds a 2-D mask for an object on a frame; returns (frame_idx, obj_ids, video-res logits)."""
    state = inference_state
    frame_idx = self._check_frame(state, frame_idx)
    mask = prompt_mask(mask, (state["video_height"], state["video_width"]), self.image_size)
    obj_idx = self._obj_id_to_idx(state, obj_id)
    state["mask_inputs_per_obj"][obj_idx][frame_idx] = mask
    state["point_inputs_per_obj"][obj_idx].pop(frame_idx, None)
    return self._add_prompt(state, frame_idx, obj_idx, mask=mask)

  def add_new_points(self, *args, **kwargs):
    """Deprecated alias of `add_new_points_or_box`, as in the official predictor."""
    return self.add_new_points_or_box(*args, **kwargs)

  def _add_prompt(self, state: State, frame_idx: int, obj_idx: int, points=None, mask=None):
    tracked = state["frames_tracked_per_obj"][obj_idx]
    is_init_cond_frame = frame_idx not in tracked
    reverse = False if is_init_cond_frame else tracked[frame_idx]["reverse"]
    is_cond = is_init_cond_frame or self.add_all_frames_to_correct_as_cond
    key = _COND if is_cond else _NON_COND
    outputs, temp = state["output_dict_per_obj"][obj_idx], state["temp_output_dict_per_obj"][obj_idx]
    prev_logits = None
    if points is not None:
      prev = temp[key].get(frame_idx) or outputs[_COND].get(frame_idx) or outputs[_NON_COND].get(frame_idx)
      if prev is not None:
        prev_logits = jnp.clip(jnp.asarray(prev["pred_masks"])[None], -32.0, 32.0)
    bank = None if is_init_cond_frame else self._build_bank(state, [obj_idx], frame_idx, reverse)
    out = prompt_step(self.model.module, self.model.params, bank, self._features(state, frame_idx), frame_idx,
                      state["num_frames"], None if points is None else points[0],
                      None if points is None else points[1], mask, prev_logits,
                      is_init_cond_frame=is_init_cond_frame, reverse=reverse, run_mem_encoder=False,
                      fill_hole_area=self.fill_hole_area)
    temp[key][frame_idx] = self._to_host(out, 0, has_memory=False)
    masks = self._consolidate(state, frame_idx, is_cond)
    return frame_idx, list(state["obj_ids"]), self._video_res(state, masks)

  def clear_all_prompts_in_frame(self, inference_state: State, frame_idx: int, obj_id, need_output: bool = True):
    """Removes an object's prompts on a frame (its output there becomes a tracking output)."""
    state = inference_state
    frame_idx = self._check_frame(state, frame_idx)
    obj_idx = self._obj_id_to_idx(state, obj_id, create=False)
    state["point_inputs_per_obj"][obj_idx].pop(frame_idx, None)
    state["mask_inputs_per_obj"][obj_idx].pop(frame_idx, None)
    temp = state["temp_output_dict_per_obj"][obj_idx]
    temp[_COND].pop(frame_idx, None)
    temp[_NON_COND].pop(frame_idx, None)
    outputs = state["output_dict_per_obj"][obj_idx]
    out = outputs[_COND].pop(frame_idx, None)
    if out is not None:
      outputs[_NON_COND][frame_idx] = out
      state["frames_tracked_per_obj"][obj_idx].pop(frame_idx, None)
    if not need_output:
      return None
    return frame_idx, list(state["obj_ids"]), self._video_res(state, self._consolidate(
        state, frame_idx, self._any_temp_cond(state, frame_idx)))

  @staticmethod
  def _any_temp_cond(state: State, frame_idx: int) -> bool:
    return any(frame_idx in t[_COND] for t in state["temp_output_dict_per_obj"].values())

  def remove_object(self, inference_state: State, obj_id, strict: bool = False, need_output: bool = True):
    """Removes an object; returns (obj_ids, [(frame_idx, video-res logits) of its prompted frames])."""
    state = inference_state
    self._check_state(state)
    updated = []
    if obj_id not in state["obj_id_to_idx"]:
      if strict:
        raise ValueError(f"Cannot remove object id {obj_id!r}: it does not exist; object ids: {state['obj_ids']}.")
      return list(state["obj_ids"]), updated
    if len(state["obj_id_to_idx"]) == 1:
      self.reset_state(state)
      return [], updated
    old_idx = state["obj_id_to_idx"][obj_id]
    input_frames = set(state["point_inputs_per_obj"][old_idx]) | set(state["mask_inputs_per_obj"][old_idx])
    for t in input_frames:
      self.clear_all_prompts_in_frame(state, t, obj_id, need_output=False)
    remaining = [i for i in range(len(state["obj_ids"])) if i != old_idx]
    new_ids = [state["obj_ids"][i] for i in remaining]
    for key in ("point_inputs_per_obj", "mask_inputs_per_obj", "output_dict_per_obj", "temp_output_dict_per_obj",
                "frames_tracked_per_obj"):
      state[key] = {new: state[key][old] for new, old in enumerate(remaining)}
    state["obj_id_to_idx"] = {oid: i for i, oid in enumerate(new_ids)}
    state["obj_idx_to_id"] = dict(enumerate(new_ids))
    state["obj_ids"] = new_ids
    if need_output:
      for t in sorted(input_frames):
        masks = self._consolidate(state, t, self._any_temp_cond(state, t))
        updated.append((t, self._video_res(state, masks)))
    return list(new_ids), updated

  # ---------------------------------------------------------------- propagation
  def propagate_in_video(self, inference_state: State, start_frame_idx: int | None = None,
                         max_frame_num_to_track: int | None = None, reverse: bool = False
                         ) -> Iterator[tuple[int, list, np.ndarray]]:
    """Tracks all objects; yields (frame_idx, obj_ids, video-res mask logits (n_obj, 1, H, W))."""
    state = inference_state
    self._preflight(state)
    num_frames = state["num_frames"]
    if start_frame_idx is None:
      start_frame_idx = min(t for o in state["output_dict_per_obj"].values() for t in o[_COND])
    start_frame_idx = self._check_frame(state, start_frame_idx)
    if max_frame_num_to_track is None:
      max_frame_num_to_track = num_frames
    if reverse:
      end = max(start_frame_idx - max_frame_num_to_track, 0)
      order = list(range(start_frame_idx, end - 1, -1)) if start_frame_idx > 0 else []
    else:
      end = min(start_frame_idx + max_frame_num_to_track, num_frames - 1)
      order = list(range(start_frame_idx, end + 1))
    if not order:
      return
    outputs = [state["output_dict_per_obj"][o] for o in range(len(state["obj_ids"]))]
    chunks = [order[i:i + self.chunk_size] for i in range(0, len(order), self.chunk_size)]
    bank = self._build_bank(state, list(range(len(outputs))), order[0], reverse)
    with tqdm.tqdm(total=len(order), desc="propagate in video", disable=not self.progress) as bar:
      bank, pending = self._dispatch_chunk(state, bank, chunks[0], outputs, reverse)
      for k in range(len(chunks)):
        frames_idx, is_cond, ys = pending
        if k + 1 < len(chunks):  # the device works on the next chunk while this one is copied out and yielded
          bank, pending = self._dispatch_chunk(state, bank, chunks[k + 1], outputs, reverse)
        ys = jax.device_get(ys)
        for i, t in enumerate(frames_idx):
          for o, out in enumerate(outputs):
            if not is_cond[i, o]:
              out[_NON_COND][t] = self._to_host(ys, (i, o))
            state["frames_tracked_per_obj"][o][t] = {"reverse": reverse}
          bar.update(1)
          yield t, list(state["obj_ids"]), ys["video_res_masks"][i]

  def _dispatch_chunk(self, state: State, bank: MemoryBank, frames_idx: list[int], outputs: list[dict],
                      reverse: bool) -> tuple[MemoryBank, tuple[list[int], np.ndarray, dict[str, jax.Array]]]:
    """Enqueues the propagation of one chunk of frames; returns (new bank, (frames, is_cond, outputs))."""
    n = len(frames_idx)
    padded = 1 << (n - 1).bit_length()  # pad the last chunk to a power of two: few compilations
    frames_idx_padded = frames_idx + [frames_idx[-1]] * (padded - n)
    is_cond = np.array([[t in o[_COND] for o in outputs] for t in frames_idx_padded])
    is_cond[n:] = True  # padding frames stay out of the memory bank
    size = self.image_size // 4
    cond_shape = (padded, len(outputs), 1, size, size)
    if is_cond[:n].any():
      cond_masks = np.zeros(cond_shape, np.float32)
      for i, o in zip(*np.nonzero(is_cond[:n])):
        cond_masks[i, o] = outputs[o][_COND][frames_idx[i]]["pred_masks"]
      cond_masks = jnp.asarray(cond_masks)
    else:
      cond_masks = jnp.zeros(cond_shape, jnp.float32)  # made on the device
    frames = np.stack([state["images"][t] for t in frames_idx_padded])
    bank, ys = propagate_chunk(self.model.module, self.model.params, bank, jnp.asarray(frames),
                          jnp.asarray(frames_idx_padded, jnp.int32), jnp.asarray(is_cond), state["num_frames"],
                          cond_masks, reverse=reverse, video_size=(state["video_height"], state["video_width"]),
                          fill_hole_area=self.fill_hole_area, non_overlap=self.non_overlap_masks)
    for x in jax.tree.leaves(ys):
      x.copy_to_host_async()
    return bank, (frames_idx, is_cond, ys)

  def _preflight(self, state: State) -> None:
    """Encodes the memory of prompted frames and moves their outputs out of the temporary store."""
    self._check_state(state)
    if not state["obj_ids"]:
      raise ValueError("No points or masks have been added for any object; add prompts before propagating.")
    for obj_idx in range(len(state["obj_ids"])):
      outputs, temp = state["output_dict_per_obj"][obj_idx], state["temp_output_dict_per_obj"][obj_idx]
      for key in (_NON_COND, _COND):
        for t, out in temp[key].items():
          if out["maskmem_features"] is None:
            mem = prompt_memory(self.model.module, self.model.params, self._features(state, t),
                                 jnp.asarray(out["pred_masks"])[None], jnp.asarray(out["object_score_logits"])[None])
            out["maskmem_features"] = np.asarray(mem[0])
          outputs[key][t] = out
        temp[key].clear()
      for t in outputs[_COND]:
        outputs[_NON_COND].pop(t, None)
      if not outputs[_COND]:
        raise ValueError(f"No points or masks have been added for object id {state['obj_idx_to_id'][obj_idx]!r}; "
                         "add prompts before propagating.")

  # ---------------------------------------------------------------- helpers
  def _build_bank(self, state: State, obj_idxs: list[int], frame_idx: int, reverse: bool) -> MemoryBank:
    """The memory bank of `obj_idxs` just before tracking `frame_idx` in the given direction."""
    config = self.model.config
    outputs = [state["output_dict_per_obj"][o] for o in obj_idxs]
    num_cond = max(1, max(len(o[_COND]) for o in outputs))
    bank = MemoryBank.empty(config, len(obj_idxs), num_cond)
    feats_shape, ptr_shape = bank.cond_feats.shape[2:], bank.cond_ptrs.shape[2:]

    def stacked(entries, key, shape):
      return np.stack([np.zeros(shape, np.float32) if e is None or e[key] is None else e[key] for e in entries])

    for k in range(num_cond):
      cond = [list(o[_COND].items())[k] if k < len(o[_COND]) else (-1, None) for o in outputs]
      entries = [e for _, e in cond]
      bank = bank.add_cond(k, np.array([t for t, _ in cond], np.int32), stacked(entries, "maskmem_features",
                           feats_shape), stacked(entries, "obj_ptr", ptr_shape), np.array([e is not None for e in entries]))
    lm, lp = ring_sizes(config)
    step = -1 if reverse else 1
    for dist in range(max(lm, lp), 0, -1):
      t = frame_idx - step * dist
      entries = [o[_NON_COND].get(t) for o in outputs]
      mem_ok = np.array([e is not None and dist <= lm and e["maskmem_features"] is not None for e in entries])
      ptr_ok = np.array([e is not None and dist <= lp for e in entries])
      if mem_ok.any() or ptr_ok.any():
        bank = bank.add_recent(t, stacked([e if ok else None for e, ok in zip(entries, mem_ok)], "maskmem_features",
                                          feats_shape), stacked(entries, "obj_ptr", ptr_shape), mem_ok, ptr_ok)
    return bank

  @staticmethod
  def _to_host(out, index, has_memory: bool = True) -> dict[str, np.ndarray | None]:
    """One object's output of one frame, as stored on the host."""
    pick = lambda x: np.asarray(x[index])
    return dict(pred_masks=pick(out["pred_masks"]), obj_ptr=pick(out["obj_ptr"]),
                object_score_logits=pick(out["object_score_logits"]),
                maskmem_features=pick(out["maskmem_features"]) if has_memory else None)

  def _consolidate(self, state: State, frame_idx: int, is_cond: bool) -> np.ndarray:
    """Low-res logits (n_obj, 1, h, w) of every object on a frame, NO_OBJ_SCORE where it has none."""
    size = self.image_size // 4
    key = _COND if is_cond else _NON_COND
    masks = np.full((len(state["obj_ids"]), 1, size, size), NO_OBJ_SCORE, np.float32)
    for o in range(len(state["obj_ids"])):
      temp, outputs = state["temp_output_dict_per_obj"][o], state["output_dict_per_obj"][o]
      out = temp[key].get(frame_idx) or outputs[_COND].get(frame_idx) or outputs[_NON_COND].get(frame_idx)
      if out is not None:
        masks[o] = out["pred_masks"]
    return masks

  def _video_res(self, state: State, masks: np.ndarray) -> np.ndarray:
    if not len(masks):
      return np.zeros((0, 1, state["video_height"], state["video_width"]), np.float32)
    return np.asarray(video_res(jnp.asarray(masks), size=(state["video_height"], state["video_width"]),
                                 non_overlap=self.non_overlap_masks))


# Options of the predictor (not of the model) that `build_sam2_video_predictor` accepts.
_PREDICTOR_OPTIONS = ("fill_hole_area", "non_overlap_masks", "add_all_frames_to_correct_as_cond", "chunk_size")


def predictor_model(config_name: str | None, checkpoint, apply_postprocessing: bool, overrides: dict,
                    option_names: tuple[str, ...] = _PREDICTOR_OPTIONS) -> tuple[SAM2Model, dict]:
  """The model and predictor options of a video predictor builder's arguments: `overrides` holds predictor
  options (`option_names`) and model config overrides. `apply_postprocessing` adds the official defaults:
  dynamic multimask via stability, binarized masks for the memory of clicked frames, `fill_hole_area=8`."""
  options = {k: overrides.pop(k) for k in option_names if k in overrides}
  if apply_postprocessing:
    overrides = {"binarize_mask_from_pts_for_mem_enc": True, **overrides}
    options = {"fill_hole_area": 8, **options}
  return build_sam2(config_name, checkpoint, apply_postprocessing=apply_postprocessing, **overrides), options


def build_sam2_video_predictor(config_name: str | None = None, checkpoint=None, apply_postprocessing: bool = True,
                               **overrides) -> SAM2VideoPredictor:
  """A `SAM2VideoPredictor` like the official builder.

  `apply_postprocessing` adds the official defaults: dynamic multimask via stability, binarized
  masks for the memory of clicked frames, and `fill_hole_area=8`. Other keyword arguments are
  predictor options (fill_hole_area, non_overlap_masks, add_all_frames_to_correct_as_cond,
  chunk_size) or model config overrides (image_size, compute_dtype, ...).
  """
  model, options = predictor_model(config_name, checkpoint, apply_postprocessing, overrides)
  return SAM2VideoPredictor(model, **options)
