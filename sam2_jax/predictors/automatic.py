"""`SAM2AutomaticMaskGenerator`: masks for a whole image from a grid of point prompts (the official API)."""

import functools
import importlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sam2_jax.build_sam import SAM2Model
from sam2_jax.modeling.sam2 import resize
from sam2_jax.predictors import amg_utils
from sam2_jax.predictors import postprocess
from sam2_jax.predictors.image import SAM2ImagePredictor, _predict
from sam2_jax.predictors.transforms import as_rgb_uint8

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
EDGE_TOLERANCE = 20  # pixels: a box this close to a crop edge (not an image edge) is dropped


@functools.partial(jax.jit, static_argnames=("crop_hw", "pred_iou_thresh", "stability_score_thresh",
                                             "stability_score_offset", "mask_threshold"))
def _select(low_res, iou, valid, crop_box, orig_box, *, crop_hw, pred_iou_thresh, stability_score_thresh,
            stability_score_offset, mask_threshold):
  """Upsamples (N, h, w) logits to the crop, scores and filters them: (masks, boxes, stability, keep)."""
  logits = resize(low_res[:, None], crop_hw)[:, 0]
  keep = valid
  if pred_iou_thresh > 0:
    keep &= iou > pred_iou_thresh
  stability = amg_utils.stability_score(logits, mask_threshold, stability_score_offset)
  if stability_score_thresh > 0:
    keep &= stability >= stability_score_thresh
  masks = logits > mask_threshold
  boxes = amg_utils.mask_to_box(masks)
  in_image = boxes + jnp.tile(crop_box[:2], 2)
  near = lambda edge: jnp.abs(in_image - edge) <= EDGE_TOLERANCE
  keep &= ~jnp.any(near(crop_box) & ~near(orig_box), axis=-1)
  return masks, boxes, stability, keep


def _take(data: dict[str, Any], idx: np.ndarray) -> dict[str, Any]:
  return {k: [v[i] for i in idx] if isinstance(v, list) else v[idx] for k, v in data.items()}


def _concat(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
  return {k: [x for p in parts for x in p[k]] if isinstance(parts[0][k], list)
          else np.concatenate([p[k] for p in parts]) for k in parts[0]}


class SAM2AutomaticMaskGenerator:
  """Segments everything in an image from a grid of single-click prompts.

  Masks are filtered by predicted IoU and stability score, those whose box touches an inner crop edge are
  dropped, and duplicates are removed by box NMS within each crop, then across crops (smaller crops win).
  Each batch of points is decoded and filtered by jitted functions of fixed shapes (the last batch padded).
  The arguments are the official ones. `min_mask_region_area` > 0 removes holes and islands up to that
  area from the low-resolution mask logits (as the official generator does through its image predictor,
  where it needs the CUDA extension; here it always runs, with scipy).
  """

  def __init__(self, model: SAM2Model, points_per_side: int | None = 32, points_per_batch: int = 64,
               pred_iou_thresh: float = 0.8, stability_score_thresh: float = 0.95,
               stability_score_offset: float = 1.0, mask_threshold: float = 0.0, box_nms_thresh: float = 0.7,
               crop_n_layers: int = 0, crop_nms_thresh: float = 0.7, crop_overlap_ratio: float = 512 / 1500,
               crop_n_points_downscale_factor: int = 1, point_grids: Sequence[np.ndarray] | None = None,
               min_mask_region_area: float = 0, output_mode: str = "binary_mask", use_m2m: bool = False,
               multimask_output: bool = True):
    if (points_per_side is None) == (point_grids is None):
      raise ValueError("Give exactly one of points_per_side and point_grids.")
    if point_grids is None:
      self.point_grids = amg_utils.build_all_layer_point_grids(points_per_side, crop_n_layers,
                                                               crop_n_points_downscale_factor)
    else:
      self.point_grids = [np.asarray(g, np.float64) for g in point_grids]
      if len(self.point_grids) < crop_n_layers + 1:
        raise ValueError(f"point_grids has {len(self.point_grids)} grids for {crop_n_layers + 1} crop layers.")
    if output_mode not in OUTPUT_MODES:
      raise ValueError(f"Unknown output_mode {output_mode!r}; expected one of {', '.join(OUTPUT_MODES)}.")
    if output_mode == "coco_rle":
      importlib.import_module("pycocotools.mask")  # fail early when pycocotools is missing
    if points_per_batch < 1:
      raise ValueError(f"points_per_batch must be positive, got {points_per_batch}.")
    self.predictor = SAM2ImagePredictor(model, max_hole_area=min_mask_region_area,
                                        max_sprinkle_area=min_mask_region_area)
    self.points_per_batch = points_per_batch
    self.pred_iou_thresh = pred_iou_thresh
    self.stability_score_thresh = stability_score_thresh
    self.stability_score_offset = stability_score_offset
    self.mask_threshold = mask_threshold
    self.box_nms_thresh = box_nms_thresh
    self.crop_n_layers = crop_n_layers
    self.crop_nms_thresh = crop_nms_thresh
    self.crop_overlap_ratio = crop_overlap_ratio
    self.min_mask_region_area = min_mask_region_area
    self.output_mode = output_mode
    self.use_m2m = use_m2m
    self.multimask_output = multimask_output

  def generate(self, image) -> list[dict[str, Any]]:
    """Masks of an RGB uint8 (H, W, 3) image (or PIL image), as the official list of records.

    Each record has `segmentation` (bool (H, W) array, or an RLE dict per `output_mode`), `area` (int),
    `bbox` (XYWH), `predicted_iou`, `point_coords` ([[x, y]]), `stability_score` and `crop_box` (XYWH).
    """
    image = as_rgb_uint8(image)
    orig_hw = image.shape[:2]
    crop_boxes, layers = amg_utils.generate_crop_boxes(orig_hw, self.crop_n_layers, self.crop_overlap_ratio)
    data = _concat([self._process_crop(image, box, layer, orig_hw) for box, layer in zip(crop_boxes, layers)])
    if len(crop_boxes) > 1:  # across crops, prefer masks from smaller crops
      cb = data["crop_boxes"]
      scores = np.float32(1.0) / ((cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1])).astype(np.float32)
      data = _take(data, amg_utils.nms(data["boxes"], scores, self.crop_nms_thresh))
    return [self._record(data, i) for i in range(len(data["rles"]))]

  def _record(self, data: dict[str, Any], i: int) -> dict[str, Any]:
    rle = data["rles"][i]
    if self.output_mode == "binary_mask":
      segmentation = amg_utils.rle_to_mask(rle)
    elif self.output_mode == "coco_rle":
      segmentation = amg_utils.coco_encode_rle(rle)
    else:
      segmentation = rle
    return {"segmentation": segmentation, "area": amg_utils.area_from_rle(rle),
            "bbox": amg_utils.box_xyxy_to_xywh(data["boxes"][i]), "predicted_iou": float(data["iou_preds"][i]),
            "point_coords": [data["points"][i].tolist()], "stability_score": float(data["stability_score"][i]),
            "crop_box": amg_utils.box_xyxy_to_xywh(data["crop_boxes"][i])}

  def _process_crop(self, image: np.ndarray, crop_box: list[int], layer: int, orig_hw: tuple[int, int]
                    ) -> dict[str, Any]:
    x0, y0, x1, y1 = crop_box
    crop = image[y0:y1, x0:x1]
    crop_hw = crop.shape[:2]
    self.predictor.set_image(crop)
    wh = np.array(crop_hw[::-1], np.float32)
    points = (self.point_grids[layer] * np.array(crop_hw[::-1])).astype(np.float32)
    coords = points / wh * np.float32(self.model.image_size)  # the model's input frame
    step = self.points_per_batch
    data = _concat([self._process_batch(points[s:s + step], coords[s:s + step], crop_box, crop_hw, orig_hw)
                    for s in range(0, len(points), step)])
    self.predictor.reset_predictor()
    data = _take(data, amg_utils.nms(data["boxes"], data["iou_preds"], self.box_nms_thresh))
    data["boxes"] = data["boxes"] + np.array([x0, y0, x0, y0])
    data["points"] = data["points"] + np.array([x0, y0], np.float32)
    data["crop_boxes"] = np.tile(np.array(crop_box, np.int64), (len(data["rles"]), 1))
    return data

  @property
  def model(self) -> SAM2Model:
    return self.predictor.model

  def _decode(self, coords: np.ndarray, mask_input, multimask_output: bool):
    feats = self.predictor._features  # pylint: disable=protected-access
    labels = np.ones(coords.shape[:2], np.int32)
    low_res, iou = _predict(self.model.module, self.model.params, feats["image_embed"], feats["high_res_feats"],
                            coords, labels, mask_input, multimask_output=multimask_output)
    return low_res.reshape(-1, *low_res.shape[-2:]), iou.reshape(-1)

  def _process_batch(self, points: np.ndarray, coords: np.ndarray, crop_box: list[int], crop_hw: tuple[int, int],
                     orig_hw: tuple[int, int]) -> dict[str, Any]:
    n, size = len(points), self.points_per_batch  # the last batch is padded to the full size
    coords = np.pad(coords, ((0, size - n), (0, 0)))[:, None]
    low_res, iou = self._decode(coords, None, self.multimask_output)
    per_point = len(iou) // size
    valid = np.repeat(np.arange(size) < n, per_point)
    if self.use_m2m:  # refine each mask once, with its own logits as the mask prompt
      low_res, iou = self._decode(np.repeat(coords, per_point, axis=0), jnp.clip(low_res, -32.0, 32.0)[:, None],
                                  False)
    predictor = self.predictor
    if predictor.max_hole_area > 0 or predictor.max_sprinkle_area > 0:
      low_res = postprocess.fill_holes_and_sprinkles(np.asarray(low_res), predictor.max_hole_area,
                                                     predictor.max_sprinkle_area, predictor.mask_threshold)
    masks, boxes, stability, keep = _select(
        low_res, iou, valid, np.array(crop_box, np.int32), np.array([0, 0, orig_hw[1], orig_hw[0]], np.int32),
        crop_hw=tuple(crop_hw), pred_iou_thresh=float(self.pred_iou_thresh),
        stability_score_thresh=float(self.stability_score_thresh),
        stability_score_offset=float(self.stability_score_offset), mask_threshold=float(self.mask_threshold))
    idx = np.flatnonzero(np.asarray(keep))
    masks = np.asarray(masks)[idx]
    x0, y0, x1, y1 = crop_box
    full = np.zeros(orig_hw, bool)
    rles = []
    for mask in masks:
      full[y0:y1, x0:x1] = mask
      rles.append(amg_utils.mask_to_rle(full))
    return {"rles": rles, "boxes": np.asarray(boxes)[idx].astype(np.int64), "iou_preds": np.asarray(iou)[idx],
            "stability_score": np.asarray(stability)[idx],
            "points": np.repeat(points, per_point, axis=0)[idx]}
