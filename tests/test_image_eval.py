"""Interactive image evaluation: mIoU aggregation, the click loop with a scripted predictor, eval.py --task=image."""

import csv
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from data.synthetic import write_sa1b
from sam2_jax.build_sam import abstract_params, get_model_config
from sam2_jax.checkpoint import torch as torch_ckpt
from sam2_jax.evaluation import image_inference
from sam2_jax.evaluation.clicks import mask_box

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINE = re.compile(r"^image mIoU@1=(\d+\.\d) mIoU@3=(\d+\.\d) mIoU@5=(\d+\.\d) box_mIoU=(\d+\.\d)$")


def test_summary_on_hand_made_numbers():
  clicks = [[0.5, 0.6, 0.7, 0.8, 0.9], [0.1, 0.2, 0.3, 0.4, 0.5]]
  summary = image_inference.summarize(clicks, [1.0, 0.5])
  assert summary["num_objects"] == 2
  np.testing.assert_allclose([summary[f"mIoU@{k}"] for k in range(1, 6)], [30, 40, 50, 60, 70])
  assert summary["box_mIoU"] == pytest.approx(75)
  assert image_inference.summary_line(summary) == "image mIoU@1=30.0 mIoU@3=50.0 mIoU@5=70.0 box_mIoU=75.0"
  two_clicks = image_inference.summarize([[0.25, 1.0]], [0.0])
  assert image_inference.summary_line(two_clicks) == "image mIoU@1=25.0 box_mIoU=0.0"
  with pytest.raises(ValueError, match="No object"):
    image_inference.summarize(np.zeros((0, 5)), np.zeros(0))


class ScriptedPredictor:
  """Stands in for SAM2ImagePredictor: knows the GT masks and answers prompts by a fixed script.

  First click (multimask): [left half of the object, nothing, whole image] scored [0.9, 0.1, 0.2], low-res
  logits filled with 1, 2, 3. Later clicks (single mask): the whole object if the mask input is the kept
  first mask (logits 1), else the left half again. Box: the object. Batch axes of size 1 are dropped, as
  the real predictor does.
  """

  def __init__(self, gt):
    self.gt, self.calls = gt, []

  def set_image(self, image):
    self.hw = image.shape[:2]

  def _object(self, x, y):
    return next(i for i, m in enumerate(self.gt) if m[int(y), int(x)])

  def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None, multimask_output=True):
    self.calls.append(dict(points=None if point_coords is None else point_coords.copy(), labels=point_labels,
                           mask_input=mask_input, box=box, multimask=multimask_output))
    outs = []
    for b in range(len(point_coords if point_coords is not None else box)):
      if box is not None:
        obj = self.gt[next(i for i, m in enumerate(self.gt) if np.array_equal(mask_box(m), box[b]))]
        outs.append(([obj], [0.5], [0.0]))
        continue
      obj = self.gt[self._object(*point_coords[b, 0])]
      left = obj & (np.arange(obj.shape[1]) < np.nonzero(obj)[1].mean())
      if multimask_output:
        outs.append(([left, np.zeros_like(obj), np.ones_like(obj)], [0.9, 0.1, 0.2], [1.0, 2.0, 3.0]))
      else:
        kept_first = mask_input is not None and mask_input[b, 0, 0, 0] == 1.0
        outs.append(([obj if kept_first else left], [0.5], [1.0 if kept_first else 4.0]))
    masks = np.array([o[0] for o in outs], np.float32)
    scores = np.array([o[1] for o in outs], np.float32)
    low_res = np.array([[np.full((8, 8), v) for v in o[2]] for o in outs], np.float32)
    squeeze = lambda x: x[0] if x.shape[0] == 1 else x
    return squeeze(masks), squeeze(scores), squeeze(low_res)


def _objects():
  gt = np.zeros((3, 24, 32), bool)
  gt[0, 2:10, 2:12] = True
  gt[1, 12:22, 4:14] = True
  gt[2, 4:20, 18:30] = True
  return gt


@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_click_loop_with_mask_input(batch_size):
  gt = _objects()
  predictor = ScriptedPredictor(gt)
  click_ious, box_ious = image_inference.evaluate_image(predictor, np.zeros((24, 32, 3), np.uint8), gt, num_clicks=4,
                                                        batch_size=batch_size)
  # Click 1 keeps the highest-scored mask (the left half); click 2 is positive in the right half and, fed the
  # kept logits, gives the whole object; then the prediction is perfect and no more clicks are made.
  left_iou = [np.mean(np.nonzero(m)[1] < np.nonzero(m)[1].mean()) for m in gt]
  np.testing.assert_allclose(click_ious, np.stack([left_iou] + [np.ones(3)] * 3, axis=1))
  np.testing.assert_array_equal(box_ious, 1.0)
  point_calls = [c for c in predictor.calls if c["box"] is None]
  assert len(point_calls) == 2 * -(-3 // batch_size)  # two clicks per batch of objects
  for call in predictor.calls:  # every batch is padded to batch_size
    assert len(call["points"] if call["box"] is None else call["box"]) == batch_size
  first, second = point_calls[0], point_calls[1]
  assert first["multimask"] and first["mask_input"] is None and first["points"].shape[1] == 1
  assert not second["multimask"] and second["points"].shape[1] == 2 and (second["labels"][:, 1] == 1).all()
  assert second["mask_input"].shape == (batch_size, 1, 8, 8) and (second["mask_input"] == 1.0).all()


def test_click_loop_without_mask_input():
  gt = _objects()
  predictor = ScriptedPredictor(gt)
  click_ious, _ = image_inference.evaluate_image(predictor, np.zeros((24, 32, 3), np.uint8), gt, num_clicks=3,
                                                 mask_input=False, batch_size=4)
  # Without the previous logits the script never completes the object: each round adds one click.
  np.testing.assert_allclose(click_ious, np.repeat(click_ious[:, :1], 3, axis=1))
  point_calls = [c for c in predictor.calls if c["box"] is None]
  assert [c["points"].shape[1] for c in point_calls] == [1, 2, 3]
  assert all(c["mask_input"] is None for c in point_calls)


def random_checkpoint(path) -> str:
  """An official-format .pt of random sam2.1_hiera_t weights (loading it is much faster than a random init)."""
  pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  shapes = abstract_params(get_model_config("sam2.1_hiera_t", image_size=128))
  params = jax.tree.map(lambda x: rng.normal(0, 0.1, x.shape).astype(np.float32), shapes)
  torch_ckpt.write_torch_checkpoint(path, torch_ckpt.params_to_state_dict(params))
  return str(path)


def test_eval_image_end_to_end(tmp_path):
  write_sa1b(str(tmp_path / "sa1b"), num_images=2, height=96, width=128)
  out = tmp_path / "out"
  run = subprocess.run([sys.executable, os.path.join(ROOT, "eval.py"), "--task=image",
                        f"--data_root={tmp_path / 'sa1b'}", f"--output_dir={out}",
                        f"--checkpoint={random_checkpoint(tmp_path / 'random.pt')}", "--config=sam2.1_hiera_t",
                        "--image_size=128", "--max_objects_per_image=2"], capture_output=True, text=True, cwd=ROOT)
  assert run.returncode == 0, run.stderr[-3000:]
  line = run.stdout.strip().splitlines()[-1]
  assert LINE.match(line), line
  summary = json.loads((out / "image_summary.json").read_text())
  assert summary["num_images"] == 2 and summary["num_clicks"] == 5 and summary["mask_input"] is True
  assert image_inference.summary_line(summary) == line
  with open(out / "image_results.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == summary["num_objects"] <= 4
  assert {r["image"] for r in rows} == {"sa_1", "sa_2"}
  mean_iou1 = 100 * np.mean([float(r["iou@1"]) for r in rows])
  assert abs(mean_iou1 - summary["mIoU@1"]) < 1e-3
  assert not [n for n in os.listdir(out) if n.startswith(".")]

  missing = subprocess.run([sys.executable, os.path.join(ROOT, "eval.py"), "--task=image",
                            f"--data_root={tmp_path / 'none'}", f"--output_dir={out}"],
                           capture_output=True, text=True, cwd=ROOT)
  assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_coco_and_sa1b_readers_agree(tmp_path):
  write_sa1b(str(tmp_path), num_images=2, height=48, width=64)
  images, annotations = [], []
  for i in (1, 2):
    content = json.loads((tmp_path / f"sa_{i}.json").read_text())
    images.append({"id": i, "file_name": f"sa_{i}.jpg", "height": 48, "width": 64})
    annotations += [dict(a, image_id=i, iscrowd=0, category_id=1) for a in content["annotations"]]
  # A crowd region and a polygon object on image 1: the first is skipped, the second read.
  annotations.append(dict(annotations[0], id=9001, iscrowd=1))
  annotations.append({"id": 9002, "image_id": 1, "iscrowd": 0, "category_id": 1, "area": 100.0,
                      "bbox": [2, 2, 10, 10], "segmentation": [[2, 2, 12, 2, 12, 12, 2, 12]]})
  coco = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "object"}]}
  (tmp_path / "instances.json").write_text(json.dumps(coco))
  from_coco = list(image_inference.coco_samples(str(tmp_path / "instances.json"), str(tmp_path)))
  from_sa1b = list(image_inference.sa1b_samples(str(tmp_path)))
  assert [s.name for s in from_coco] == [s.name for s in from_sa1b] == ["sa_1", "sa_2"]
  assert from_coco[0].object_ids == from_sa1b[0].object_ids + [9002]
  np.testing.assert_array_equal(from_coco[0].masks[:-1], from_sa1b[0].masks)
  assert from_coco[0].masks[-1].sum() > 80
  np.testing.assert_array_equal(from_coco[1].masks, from_sa1b[1].masks)
  np.testing.assert_array_equal(from_coco[1].image, from_sa1b[1].image)
  subset = list(image_inference.sa1b_samples(str(tmp_path), max_images=1, max_objects=1))
  assert len(subset) == 1 and len(subset[0].object_ids) == 1
  assert subset[0].object_ids[0] in from_sa1b[0].object_ids


def test_readers_reject_bad_input(tmp_path):
  write_sa1b(str(tmp_path), num_images=1, height=48, width=64)
  for kwargs, name in (({"max_images": 0}, "max_images"), ({"max_objects": -1}, "max_objects")):
    with pytest.raises(ValueError, match=f"{name} must be at least 1"):
      image_inference.sa1b_samples(str(tmp_path), **kwargs)
    with pytest.raises(ValueError, match=f"{name} must be at least 1"):
      image_inference.coco_samples(str(tmp_path / "sa_1.json"), str(tmp_path), **kwargs)
  (tmp_path / "truncated.json").write_bytes((tmp_path / "sa_1.json").read_bytes()[:100])
  (tmp_path / "list.json").write_text("[1, 2]")
  for name, message in (("truncated.json", r"Corrupt JSON in .*truncated\.json"),
                        ("list.json", r"list\.json' is not a COCO instances file: expected a JSON object"),
                        ("sa_1.json", r"sa_1\.json' is not a COCO instances file \(missing or malformed 'image_id'\)")):
    with pytest.raises(ValueError, match=message):
      image_inference.coco_samples(str(tmp_path / name), str(tmp_path))
  coco = {"images": [{"id": 1, "file_name": "broken.jpg", "height": 48, "width": 64}],
          "annotations": [{"id": 5, "image_id": 1, "iscrowd": 0, "area": 4.0, "segmentation": [[1, 1, 3, 1, 3, 3]]}]}
  (tmp_path / "coco.json").write_text(json.dumps(coco))
  (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
  with pytest.raises(ValueError, match=r"Cannot decode image .*broken\.jpg"):
    next(image_inference.coco_samples(str(tmp_path / "coco.json"), str(tmp_path)))


def test_eval_image_bad_input(tmp_path):
  write_sa1b(str(tmp_path / "sa1b"), num_images=1, height=48, width=64)
  (tmp_path / "truncated.json").write_bytes((tmp_path / "sa1b" / "sa_1.json").read_bytes()[:100])
  (tmp_path / "file").write_text("")
  sa1b = [f"--data_root={tmp_path / 'sa1b'}", f"--output_dir={tmp_path / 'out'}"]
  for args, message in (
      (sa1b + ["--max_images=0"], "--max_images must be at least 1, got 0"),
      (sa1b + ["--max_objects_per_image=0"], "--max_objects_per_image must be at least 1, got 0"),
      (sa1b + ["--num_clicks=0"], "--num_clicks must be at least 1, got 0"),
      ([f"--image_annotations={tmp_path / 'truncated.json'}", f"--image_root={tmp_path / 'sa1b'}",
        f"--output_dir={tmp_path / 'out'}"], r"Corrupt JSON in .*truncated\.json"),
      ([f"--data_root={tmp_path / 'sa1b'}", f"--output_dir={tmp_path / 'file' / 'out'}"],
       r"cannot create --output_dir .*file/out"),
  ):
    run = subprocess.run([sys.executable, os.path.join(ROOT, "eval.py"), "--task=image", *args,
                          "--config=sam2.1_hiera_t", "--image_size=64"], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, SAM2_JAX_HUGE_PAGES="0"))
    assert run.returncode == 2 and re.match(f"error: {message}", run.stderr), (args, run.stderr)
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
  assert not (tmp_path / "out").exists()
