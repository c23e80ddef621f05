"""SA-1B: one image with its masks as a 1-frame `ClipRecord`.

Raw layout: `sa_<id>.jpg` next to `sa_<id>.json` = {"image": {image_id, width, height, file_name},
"annotations": [{id, segmentation (COCO RLE), bbox, area, predicted_iou, stability_score, crop_box,
point_coords}]}. As in the official `SA1BSegmentLoader`, annotations with area <= 0 are dropped.
The JPEG bytes are kept as they are (checked to decode at the annotated size).

A TFDS `segment_anything` build is read through `tfds.data_source` (`tfds_source`,
`record_from_tfds`); tensorflow_datasets is an optional dependency.
"""

import io
import json
import os

import numpy as np
from PIL import Image

from sam2_jax.data.records import ClipRecord, rle_from_coco

SOURCE = "sa1b"


def list_images(folder: str) -> list[str]:
  """Sorted paths of the `sa_*.jpg` files of a raw SA-1B folder."""
  if not os.path.isdir(folder):
    raise ValueError(f"SA-1B folder {folder!r} does not exist or is not a directory.")
  return sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.startswith("sa_") and n.endswith(".jpg"))


def load_json(path: str) -> dict:
  """A JSON file's content; a missing or unparsable file raises ValueError naming it."""
  if not os.path.isfile(path):
    raise ValueError(f"Annotation file {path!r} not found.")
  try:
    with open(path, "rb") as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
    raise ValueError(f"Corrupt JSON in {path!r}: {e}") from e
  except OSError as e:
    raise ValueError(f"Cannot read {path!r}: {e.strerror}.") from e


def parse_annotations(content: dict, path: str = "<json>") -> tuple[int, int, list[int], list[str]]:
  """(height, width, annotation ids, RLE counts) of an SA-1B json's content, annotations with area <= 0 dropped."""
  try:
    image = content["image"]
    height, width = int(image["height"]), int(image["width"])
    ids, counts = [], []
    for ann in content["annotations"]:
      if float(ann["area"]) <= 0:
        continue
      rle, h, w = rle_from_coco(ann["segmentation"])
      if (h, w) != (height, width):
        raise ValueError(f"annotation {ann['id']} has mask size {(h, w)}, the image is {(height, width)}")
      ids.append(int(ann["id"]))
      counts.append(rle)
  except (KeyError, TypeError) as e:
    raise ValueError(f"{path!r} is not an SA-1B annotation file (missing or malformed {e}).") from e
  except ValueError as e:
    raise ValueError(f"{path!r}: {e}") from e
  return height, width, ids, counts


def decode_image(data: bytes, path: str) -> Image.Image:
  """The decoded image; ValueError naming `path` for truncated or non-image data."""
  try:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image
  except Exception as e:  # PIL raises several types for truncated or non-image data.
    raise ValueError(f"Cannot decode image {path!r}: {e}") from e


def check_jpeg(data: bytes, height: int, width: int, path: str) -> None:
  """Raises ValueError naming `path` unless `data` decodes to an image of the given size."""
  size = decode_image(data, path).size
  if size != (width, height):
    raise ValueError(f"Image {path!r} is {size[1]}x{size[0]} (HxW) but its annotations say {height}x{width}.")


def read_image(jpg_path: str, json_path: str | None = None) -> ClipRecord:
  """The 1-frame record of `sa_<id>.jpg` and its annotations (default: `sa_<id>.json` next to it)."""
  json_path = json_path or os.path.splitext(jpg_path)[0] + ".json"
  height, width, ids, counts = parse_annotations(load_json(json_path), json_path)
  if not os.path.isfile(jpg_path):
    raise ValueError(f"Image file {jpg_path!r} not found.")
  with open(jpg_path, "rb") as f:
    data = f.read()
  check_jpeg(data, height, width, jpg_path)
  return ClipRecord(source=SOURCE, id=os.path.splitext(os.path.basename(jpg_path))[0], height=height, width=width,
                    frames=[data], frame_indices=[0], object_ids=ids, masks=[counts])


def tfds_source(data_dir: str | None = None, split: str = "train", name: str = "segment_anything"):
  """A random-access `tfds.data_source` over a prepared TFDS SA-1B build, images left encoded."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("Reading SA-1B from TFDS needs tensorflow_datasets (pip install 'tensorflow-datasets>=4.9.10' "
                      "array_record); without it convert the raw sa_*.jpg/sa_*.json folder instead.") from e
  data_dir = os.path.expanduser(data_dir) if data_dir else data_dir  # TFDS does not expand "~".
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False,
                            decoders={"image": {"content": tfds.decode.SkipDecoding()}})
  except NotImplementedError as e:  # What TFDS raises for a missing build as for a TFRecord one.
    raise ValueError(f"No array_record build of TFDS {name!r} in {data_dir!r} (tfds.data_source reads only "
                     f"builds prepared with file_format='array_record'): {e}") from e


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def record_from_tfds(example: dict) -> ClipRecord:
  """The 1-frame record of one `segment_anything` TFDS example (image content not decoded)."""
  image, anns = example["image"], example["annotations"]
  height, width = int(image["height"]), int(image["width"])
  file_name = _text(image["file_name"])
  data = bytes(image["content"])
  if not data.startswith(b"\xff\xd8"):  # Not JPEG: store a JPEG of the decoded image.
    buffer = io.BytesIO()
    decode_image(data, file_name).convert("RGB").save(buffer, format="JPEG", quality=95)
    data = buffer.getvalue()
  check_jpeg(data, height, width, file_name)
  ids, counts = [], []
  for ann_id, area, count, size in zip(anns["id"], anns["area"], anns["segmentation"]["counts"],
                                       anns["segmentation"]["size"]):
    if float(area) <= 0:
      continue
    rle, h, w = rle_from_coco({"size": [int(s) for s in size], "counts": _text(count)})
    if (h, w) != (height, width):
      raise ValueError(f"{file_name!r}: annotation {int(ann_id)} has mask size {(h, w)}, image {(height, width)}.")
    ids.append(int(ann_id))
    counts.append(rle)
  return ClipRecord(source=SOURCE, id=os.path.splitext(file_name)[0], height=height, width=width, frames=[data],
                    frame_indices=[0], object_ids=ids, masks=[counts])
