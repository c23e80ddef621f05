"""`SAM2ImagePredictor`: the official image predictor's API on the JAX model (NumPy in and out)."""

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sam2_jax import compilation_cache
from sam2_jax.build_sam import SAM2Model
from sam2_jax.modeling.sam2 import SAM2, resize
from sam2_jax.predictors import postprocess
from sam2_jax.predictors.transforms import as_rgb_uint8, check_boxes, check_points, preprocess


def _embed(module: SAM2, images: jnp.ndarray) -> dict[str, Any]:
  feats = module.forward_image(images)
  return dict(image_embed=feats["vision_features"] + module.no_mem_embed[0],
              high_res_feats=feats["high_res_features"])


def _decode(module: SAM2, image_embed, high_res_feats, coords, labels, mask_input, multimask_output: bool):
  points = None if coords is None else (coords, labels)
  masks = None if mask_input is None else jnp.moveaxis(mask_input, 1, -1)
  sparse, dense = module.sam_prompt_encoder(points, None, masks)
  batched = coords is not None and coords.shape[0] > 1
  low_res, iou, _, _ = module.sam_mask_decoder(
      image_embed, module.sam_prompt_encoder.get_dense_pe(), sparse, dense,
      multimask_output=multimask_output, repeat_image=batched, high_res_features=high_res_feats)
  return low_res.astype(jnp.float32), iou.astype(jnp.float32)


@functools.partial(jax.jit, static_argnums=(0,), static_argnames="multimask_output")
def _predict(module: SAM2, params, image_embed, high_res_feats, coords, labels, mask_input,
             multimask_output: bool):
  return module.apply({"params": params}, image_embed, high_res_feats, coords, labels, mask_input,
                      multimask_output, method=_decode)


_upsample = jax.jit(resize, static_argnames=("size", "antialias"))


@functools.partial(jax.jit, static_argnums=(0,))
def embed_images(module: SAM2, params, images):
  """The image predictor's compiled program: the embedding and high-res features of preprocessed images
  (B, S, S, 3), as `preprocess` makes them."""
  return module.apply({"params": params}, images, method=_embed)


class SAM2ImagePredictor:
  """Computes an image embedding once, then predicts masks from point, box and mask prompts."""

  def __init__(self, sam_model: SAM2Model, mask_threshold: float = 0.0, max_hole_area: float = 0.0,
               max_sprinkle_area: float = 0.0):
    if not isinstance(sam_model, SAM2Model):
      raise ValueError(f"SAM2ImagePredictor expects a model from sam2_jax.build_sam2, got {type(sam_model).__name__}.")
    compilation_cache.enable()
    self.model = sam_model
    self.mask_threshold = mask_threshold
    self.max_hole_area = max_hole_area
    self.max_sprinkle_area = max_sprinkle_area
    self.reset_predictor()

  def reset_predictor(self) -> None:
    """Forgets the current image(s)."""
    self._is_image_set = False
    self._is_batch = False
    self._features = None
    self._orig_hw: list[tuple[int, int]] = []

  def _set(self, images: list[np.ndarray]) -> None:
    size = self.model.image_size
    batch = jnp.stack([preprocess(jnp.asarray(im), size=size) for im in images])
    self._features = embed_images(self.model.module, self.model.params, batch)
    self._orig_hw = [im.shape[:2] for im in images]
    self._is_image_set = True

  def set_image(self, image) -> None:
    """Embeds one RGB image: a uint8 (H, W, 3) array or a PIL image."""
    self.reset_predictor()
    self._set([as_rgb_uint8(image)])

  def set_image_batch(self, image_list: Sequence[np.ndarray]) -> None:
    """Embeds a list of RGB uint8 (H, W, 3) arrays for `predict_batch`."""
    self.reset_predictor()
    if not isinstance(image_list, (list, tuple)) or not image_list:
      raise ValueError("set_image_batch expects a non-empty list of (H, W, 3) uint8 arrays.")
    self._set([as_rgb_uint8(im, f"image_list[{i}]") for i, im in enumerate(image_list)])
    self._is_batch = True

  def get_image_embedding(self) -> np.ndarray:
    """The image embedding (B, 256, h, w) (channels first, as the official predictor returns it)."""
    self._check_image_set("get_image_embedding")
    return np.moveaxis(np.asarray(self._features["image_embed"]), -1, 1)

  def _check_image_set(self, what: str) -> None:
    if not self._is_image_set:
      raise ValueError(f"An image must be set with set_image(...) before {what}().")

  def predict(self, point_coords: np.ndarray | None = None, point_labels: np.ndarray | None = None,
              box: np.ndarray | None = None, mask_input: np.ndarray | None = None,
              multimask_output: bool = True, return_logits: bool = False, normalize_coords: bool = True
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masks for prompts on the current image.

    Args:
      point_coords: (N, 2) or (B, N, 2) points (x, y), in pixels of the original image when
        `normalize_coords`, else in the model's input frame (image_size).
      point_labels: (N,) or (B, N): 1 foreground, 0 background.
      box: (4,) or (B, 4) boxes x0, y0, x1, y1.
      mask_input: (1, 256, 256) or (B, 1, 256, 256) low-res logits from a previous prediction.
      multimask_output: three masks per prompt instead of one.
      return_logits: return mask logits instead of booleans.
    Returns:
      masks (C, H, W) (0/1 float32, or logits), IoU predictions (C,), low-res logits (C, 256, 256); with B prompts each
      gets a leading B axis.
    """
    self._check_image_set("predict")
    if self._is_batch and len(self._orig_hw) > 1:
      raise ValueError("Several images are set: use predict_batch(...) after set_image_batch(...).")
    masks, iou, low_res = self._predict_one(0, point_coords, point_labels, box, mask_input, multimask_output,
                                            return_logits, normalize_coords)
    squeeze = lambda x: x[0] if x.shape[0] == 1 else x
    return squeeze(masks), squeeze(iou), squeeze(low_res)

  def predict_batch(self, point_coords_batch=None, point_labels_batch=None, box_batch=None,
                    mask_input_batch=None, multimask_output: bool = True, return_logits: bool = False,
                    normalize_coords: bool = True) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """`predict` for each image of `set_image_batch`, with per-image prompt lists; returns lists."""
    self._check_image_set("predict_batch")
    if not self._is_batch:
      raise ValueError("predict_batch needs images set with set_image_batch(...).")
    n = len(self._orig_hw)
    for name, value in (("point_coords_batch", point_coords_batch), ("point_labels_batch", point_labels_batch),
                        ("box_batch", box_batch), ("mask_input_batch", mask_input_batch)):
      if value is not None and len(value) != n:
        raise ValueError(f"{name} has {len(value)} entries for {n} images.")
    pick = lambda xs, i: None if xs is None else xs[i]
    outs = [self._predict_one(i, pick(point_coords_batch, i), pick(point_labels_batch, i), pick(box_batch, i),
                              pick(mask_input_batch, i), multimask_output, return_logits, normalize_coords)
            for i in range(n)]
    squeeze = lambda x: x[0] if x.shape[0] == 1 else x
    return tuple([squeeze(o[k]) for o in outs] for k in range(3))

  def _predict_one(self, idx, point_coords, point_labels, box, mask_input, multimask_output, return_logits,
                   normalize_coords):
    coords, labels = self._prep_prompts(point_coords, point_labels, box, normalize_coords, self._orig_hw[idx])
    if mask_input is not None:
      mask_input = np.asarray(mask_input, np.float32)
      if mask_input.ndim == 3:
        mask_input = mask_input[None]
      size = 4 * (self.model.image_size // self.model.config.backbone_stride)
      if mask_input.ndim != 4 or mask_input.shape[1:] != (1, size, size):
        raise ValueError(f"mask_input must have shape (1, {size}, {size}) or (B, 1, {size}, {size}), "
                         f"got {mask_input.shape}.")
    take = lambda x: x[idx:idx + 1]
    feats = self._features
    low_res, iou = _predict(self.model.module, self.model.params, take(feats["image_embed"]),
                            [take(f) for f in feats["high_res_feats"]], coords, labels, mask_input,
                            multimask_output=bool(multimask_output))
    low_res = np.asarray(low_res)
    filled = postprocess.fill_holes_and_sprinkles(low_res, self.max_hole_area, self.max_sprinkle_area,
                                                  self.mask_threshold)
    masks = np.asarray(_upsample(filled, size=tuple(self._orig_hw[idx])))
    if not return_logits:  # 0/1 float32, as the official predictor returns them
      masks = (masks > self.mask_threshold).astype(np.float32)
    return masks, np.asarray(iou), np.clip(low_res, -32.0, 32.0)

  def _prep_prompts(self, point_coords, point_labels, box, normalize_coords, orig_hw):
    """Prompts -> (coords (B, N, 2) in the model's frame, labels (B, N)); boxes become two points first."""
    size = np.float32(self.model.image_size)
    h, w = orig_hw

    def to_model_frame(xy):
      xy = xy.copy()
      if normalize_coords:
        xy[..., 0] = xy[..., 0] / np.float32(w)
        xy[..., 1] = xy[..., 1] / np.float32(h)
      return xy * size

    coords = labels = None
    if point_coords is not None:
      if point_labels is None:
        raise ValueError("point_labels must be given with point_coords (one label per point).")
      coords = np.asarray(point_coords, np.float32)
      labels = np.asarray(point_labels)
      if coords.ndim not in (2, 3) or coords.shape[-1] != 2:
        raise ValueError(f"point_coords must have shape (N, 2) or (B, N, 2), got {coords.shape}.")
      if coords.ndim == 2:
        coords, labels = coords[None], labels[None]
      if labels.shape != coords.shape[:-1]:
        raise ValueError(f"point_labels must have shape {coords.shape[:-1]} to match point_coords, got "
                         f"{np.asarray(point_labels).shape}.")
      check_points(coords, labels)
      coords, labels = to_model_frame(coords), labels.astype(np.int32)
    elif point_labels is not None:
      raise ValueError("point_labels were given without point_coords.")
    if box is not None:
      box = np.asarray(box, np.float32)
      if box.shape[-1] != 4 or box.ndim not in (1, 2):
        raise ValueError(f"box must have shape (4,) or (B, 4) as x0, y0, x1, y1, got {box.shape}.")
      check_boxes(box)
      box_coords = to_model_frame(box.reshape(-1, 2, 2))
      box_labels = np.tile(np.array([[2, 3]], np.int32), (len(box_coords), 1))
      if coords is not None:
        if len(coords) != len(box_coords):
          raise ValueError(f"{len(box_coords)} boxes and {len(coords)} point sets: the batch sizes must match.")
        coords = np.concatenate([box_coords, coords], axis=1)
        labels = np.concatenate([box_labels, labels], axis=1)
      else:
        coords, labels = box_coords, box_labels
    return coords, labels
