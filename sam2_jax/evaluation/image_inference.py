"""Interactive image segmentation evaluation: simulated clicks and GT boxes with `SAM2ImagePredictor`.

Per object, as in the SAM papers' interactive evaluation: the first click at the object's centre with
multimask output (the mask with the highest predicted IoU is kept), then each further click at the
centre of the largest error region (sam2_jax.evaluation.clicks) with single-mask output, the previous
low-res logits fed back as the mask input (`mask_input=False` turns that off). The box prompt is the
GT mask's bounding box, single-mask output. IoU is measured at the image's resolution; mIoU@k is the
mean over all objects of the IoU after k clicks (percent).

Each image is embedded once; its objects are prompted together, `batch_size` at a time, each batch padded
to `batch_size` by repeating an object, so that the decoder compiles once per prompt shape. An object
whose prediction became perfect gets no further click and keeps its mask.
"""

import csv
import dataclasses
import io
import json
import os
from typing import Iterator, Sequence

import numpy as np
from PIL import Image

from sam2_jax.data import sa1b
from sam2_jax.evaluation import clicks
from sam2_jax.evaluation.io import atomic_write_bytes

REPORTED_CLICKS = (1, 3, 5)


@dataclasses.dataclass
class ImageSample:
  """One image with the GT masks of the objects to evaluate."""
  name: str
  image: np.ndarray  # uint8 (H, W, 3)
  masks: np.ndarray  # bool (O, H, W), none empty
  object_ids: list[int]


def _check_limits(max_images: int | None, max_objects: int | None) -> None:
  for name, value in (("max_images", max_images), ("max_objects", max_objects)):
    if value is not None and value < 1:
      raise ValueError(f"{name} must be at least 1 (or None for all), got {value}.")


def select_objects(num_objects: int, max_objects: int | None, index: int, seed: int = 0) -> np.ndarray:
  """Sorted indices of the objects kept for image number `index`: all, or a seeded random subset."""
  if max_objects is None or num_objects <= max_objects:
    return np.arange(num_objects)
  return np.sort(np.random.default_rng([seed, index]).choice(num_objects, max_objects, replace=False))


def _sample(name: str, image: np.ndarray, masks: list[np.ndarray], object_ids: list[int]) -> ImageSample:
  """An ImageSample of the non-empty masks."""
  keep = [j for j, m in enumerate(masks) if m.any()]
  stacked = np.stack([masks[j] for j in keep]) if keep else np.zeros((0,) + image.shape[:2], bool)
  return ImageSample(name, image, stacked, [object_ids[j] for j in keep])


def sa1b_samples(folder: str, max_images: int | None = None, max_objects: int | None = None
                 ) -> Iterator[ImageSample]:
  """The images of an SA-1B folder (`sa_*.jpg` + `sa_*.json`, COCO RLE masks), sorted by name.

  The folder is listed at once (a missing or empty folder raises ValueError here); images are read lazily.
  """
  _check_limits(max_images, max_objects)
  paths = sa1b.list_images(folder)[:max_images]
  if not paths:
    raise ValueError(f"No sa_*.jpg images in {folder!r}.")

  def samples():
    for index, path in enumerate(paths):
      record = sa1b.read_image(path)
      keep = select_objects(len(record.object_ids), max_objects, index)
      image = np.asarray(Image.open(io.BytesIO(record.frames[0])).convert("RGB"))
      yield _sample(record.id, image, [record.decode_mask(0, int(j)) for j in keep],
                    [record.object_ids[j] for j in keep])
  return samples()


def coco_samples(annotations: str, image_root: str, max_images: int | None = None,
                 max_objects: int | None = None) -> Iterator[ImageSample]:
  """The images of a COCO instances file with non-crowd objects (RLE or polygon masks), by image id.

  The annotation file is read at once (errors raise ValueError here); images are read lazily.
  """
  from pycocotools.coco import COCO  # pylint: disable=g-import-not-at-top
  _check_limits(max_images, max_objects)
  if not os.path.isdir(image_root):
    raise ValueError(f"Image folder {image_root!r} does not exist.")
  coco = COCO()
  coco.dataset = sa1b.load_json(annotations)
  if not isinstance(coco.dataset, dict):
    raise ValueError(f"{annotations!r} is not a COCO instances file: expected a JSON object.")
  try:
    coco.createIndex()
    objects = {i: [a for a in coco.loadAnns(coco.getAnnIds(imgIds=i, iscrowd=False)) if a["area"] > 0]
               for i in sorted(coco.getImgIds())}
    image_ids = [i for i, anns in objects.items() if anns][:max_images]
    file_names = {i: coco.imgs[i]["file_name"] for i in image_ids}
  except (KeyError, TypeError) as e:
    raise ValueError(f"{annotations!r} is not a COCO instances file (missing or malformed {e}).") from e
  if not image_ids:
    raise ValueError(f"{annotations!r} has no image with a non-crowd object.")

  def samples():
    for index, image_id in enumerate(image_ids):
      anns = objects[image_id]
      path = os.path.join(image_root, file_names[image_id])
      if not os.path.isfile(path):
        raise ValueError(f"Image file {path!r} not found.")
      with open(path, "rb") as f:
        image = np.asarray(sa1b.decode_image(f.read(), path).convert("RGB"))
      keep = select_objects(len(anns), max_objects, index)
      try:
        masks = [coco.annToMask(anns[j]).astype(bool) for j in keep]
      except (KeyError, TypeError, IndexError) as e:
        raise ValueError(f"{annotations!r}: cannot decode the masks of image {image_id} (missing or malformed "
                         f"{e}).") from e
      if masks[0].shape != image.shape[:2]:
        raise ValueError(f"Image {path!r} is {image.shape[:2]} but its annotations are {masks[0].shape}.")
      yield _sample(os.path.splitext(file_names[image_id])[0], image, masks, [int(anns[j]["id"]) for j in keep])
  return samples()


def _predict(predictor, batch_size: int, points=None, labels=None, mask_input=None, box=None, multimask=False):
  """`predictor.predict` on the first rows of a batch padded to `batch_size`: (bool masks, IoU scores, low-res)."""
  n = len(points if points is not None else box)
  pad = lambda x: None if x is None else np.concatenate([x, np.repeat(x[:1], batch_size - n, axis=0)])
  masks, scores, low_res = predictor.predict(point_coords=pad(points), point_labels=pad(labels),
                                             mask_input=pad(mask_input), box=pad(box), multimask_output=multimask)
  if batch_size == 1:  # the predictor drops a batch axis of size 1
    masks, scores, low_res = masks[None], scores[None], low_res[None]
  return masks[:n] > 0, scores[:n], low_res[:n]


def _click_ious(predictor, gt: np.ndarray, num_clicks: int, mask_input: bool, batch_size: int) -> np.ndarray:
  """IoU after each of `num_clicks` simulated clicks (len(gt), num_clicks) for at most `batch_size` objects."""
  n = len(gt)
  points, labels = [[] for _ in range(n)], [[] for _ in range(n)]
  pred = np.zeros(gt.shape, bool)
  logits = [None] * n
  ious = np.zeros((n, num_clicks))
  active = list(range(n))
  for k in range(num_clicks):
    new_clicks = {i: clicks.next_click(gt[i], pred[i] if k else None) for i in active}
    active = [i for i in active if new_clicks[i] is not None]
    for i in active:
      x, y, label = new_clicks[i]
      points[i].append((x, y))
      labels[i].append(label)
    if active:
      masks, scores, low_res = _predict(
          predictor, batch_size, np.array([points[i] for i in active], np.float32),
          np.array([labels[i] for i in active], np.int32),
          np.stack([logits[i] for i in active]) if k and mask_input else None, multimask=k == 0)
      best = np.argmax(scores, axis=1)
      for j, i in enumerate(active):
        pred[i] = masks[j, best[j]]
        logits[i] = low_res[j, best[j]][None]
    ious[:, k] = [clicks.mask_iou(pred[i], gt[i]) for i in range(n)]
  return ious


def evaluate_image(predictor, image: np.ndarray, gt: np.ndarray, num_clicks: int = 5, mask_input: bool = True,
                   batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
  """(IoU after each click (O, num_clicks), IoU with the GT box prompt (O,)) for the objects `gt` (O, H, W)."""
  predictor.set_image(image)
  click_ious, box_ious = np.zeros((len(gt), num_clicks)), np.zeros(len(gt))
  for start in range(0, len(gt), batch_size):
    chunk = gt[start:start + batch_size]
    click_ious[start:start + len(chunk)] = _click_ious(predictor, chunk, num_clicks, mask_input, batch_size)
    masks, _, _ = _predict(predictor, batch_size, box=np.stack([clicks.mask_box(m) for m in chunk]))
    box_ious[start:start + len(chunk)] = [clicks.mask_iou(p[0], g) for p, g in zip(masks, chunk)]
  return click_ious, box_ious


def summarize(click_ious: np.ndarray, box_ious: np.ndarray) -> dict:
  """{"num_objects", "mIoU@k" for every click count k, "box_mIoU"}: means over objects, in percent."""
  click_ious, box_ious = np.asarray(click_ious, np.float64), np.asarray(box_ious, np.float64)
  if not len(box_ious):
    raise ValueError("No object was evaluated: the dataset has no annotated objects.")
  summary = {"num_objects": len(box_ious)}
  summary.update({f"mIoU@{k + 1}": 100 * float(click_ious[:, k].mean()) for k in range(click_ious.shape[1])})
  summary["box_mIoU"] = 100 * float(box_ious.mean())
  return summary


def summary_line(summary: dict) -> str:
  """`image mIoU@1=.. mIoU@3=.. mIoU@5=.. box_mIoU=..` (the reported click counts that were run)."""
  parts = [f"mIoU@{k}={summary[f'mIoU@{k}']:.1f}" for k in REPORTED_CLICKS if f"mIoU@{k}" in summary]
  return " ".join(["image", *parts, f"box_mIoU={summary['box_mIoU']:.1f}"])


def evaluate(predictor, samples: Iterator[ImageSample], output_dir: str, num_clicks: int = 5, mask_input: bool = True,
             batch_size: int = 16) -> dict:
  """Evaluates every sample; writes image_results.csv (per object) and image_summary.json; returns the summary."""
  if num_clicks < 1:
    raise ValueError(f"num_clicks must be at least 1, got {num_clicks}.")
  rows, all_clicks, all_boxes, num_images = [], [], [], 0
  for sample in samples:
    num_images += 1
    if not len(sample.masks):
      continue
    click_ious, box_ious = evaluate_image(predictor, sample.image, sample.masks, num_clicks, mask_input, batch_size)
    all_clicks.append(click_ious)
    all_boxes.append(box_ious)
    rows += [[sample.name, obj_id, *c, b] for obj_id, c, b in zip(sample.object_ids, click_ious, box_ious)]
  summary = summarize(np.concatenate(all_clicks) if all_clicks else np.zeros((0, num_clicks)),
                      np.concatenate(all_boxes) if all_boxes else np.zeros(0))
  summary.update(num_images=num_images, num_clicks=num_clicks, mask_input=mask_input)
  _write_results(output_dir, rows, summary, num_clicks)
  return summary


def _write_results(output_dir: str, rows: Sequence[list], summary: dict, num_clicks: int) -> None:
  text = io.StringIO()
  writer = csv.writer(text)
  writer.writerow(["image", "object_id", *[f"iou@{k + 1}" for k in range(num_clicks)], "box_iou"])
  writer.writerows([[name, obj_id, *[f"{v:.6f}" for v in values]] for name, obj_id, *values in rows])
  atomic_write_bytes(os.path.join(output_dir, "image_results.csv"), text.getvalue().encode())
  atomic_write_bytes(os.path.join(output_dir, "image_summary.json"), json.dumps(summary, indent=2).encode())
