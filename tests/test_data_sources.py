"""Raw dataset readers and ArrayRecord converters on synthetic data written in the real SA-1B / SA-V / DAVIS
formats (and as a TFDS `segment_anything` build), read back through Grain; error cases; and (local check) the
SA-V reader on real annotation files."""

import gzip
import io
import json
import os
import shutil
import subprocess
import sys

import grain
import numpy as np
import pytest
from PIL import Image

from data import sa1b_to_arrayrecord, sav_to_arrayrecord, synthetic, vos_to_arrayrecord
from sam2_jax.data import records, sa1b, sav, vos_folders
from sam2_jax.evaluation import io as vos_io

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 64, 96  # Non-square on purpose: catches height/width mix-ups.
SEED = 3
# Real SA-V annotations of one video (sav_000001, manual and auto), shipped gzipped with their licence.
SAV_FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "sav")

# Keys of a real SA-V manual json (sav_dataset README, checked on sav_000001_manual.json).
SAV_KEYS = {"video_id", "video_duration", "video_frame_count", "video_height", "video_width", "video_resolution",
            "video_environment", "video_split", "masklet", "masklet_id", "masklet_size_rel", "masklet_size_abs",
            "masklet_size_bucket", "masklet_visibility_changes", "masklet_first_appeared_frame",
            "masklet_frame_count", "masklet_edited_frame_count", "masklet_type", "masklet_stability_score",
            "masklet_num"}


def read_back(stats: records.ShardStats) -> list[records.ClipRecord]:
  """All records of the written shards, through Grain's ArrayRecord data source."""
  source = grain.sources.ArrayRecordDataSource(stats.paths)
  return [records.ClipRecord.deserialize(source[i]) for i in range(len(source))]


def decode_jpeg(data: bytes) -> np.ndarray:
  return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def all_masks(record: records.ClipRecord) -> np.ndarray:
  """(T, O, H, W) bool masks of a record."""
  return np.array([[record.decode_mask(t, j) for j in range(len(record.object_ids))]
                   for t in range(len(record.frames))], bool).reshape(len(record.frames), -1, record.height,
                                                                       record.width)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def leftovers(folder) -> list[str]:
  return [n for n in os.listdir(folder) if n.endswith(".partial") or n.startswith(".")]


# ------------------------------------------------------------------------------------------------------------
# Generator


def test_render_is_deterministic_with_visible_disjoint_masks():
  frames, masks = synthetic.render_sample("sav", SEED, 0, H, W, 9)
  again, masks_again = synthetic.render_sample("sav", SEED, 0, H, W, 9)
  np.testing.assert_array_equal(frames, again)
  np.testing.assert_array_equal(masks, masks_again)
  assert frames.shape == (9, H, W, 3) and frames.dtype == np.uint8
  assert masks.shape[0] == 9 and 1 <= masks.shape[1] <= synthetic.MAX_OBJECTS and masks.shape[2:] == (H, W)
  assert not np.array_equal(frames, synthetic.render_sample("sav", SEED + 1, 0, H, W, 9)[0])
  for index in range(6):
    _, masks = synthetic.render_sample("vos", SEED, index, H, W, 4)
    assert masks.sum(1).max() <= 1  # Visible masks do not overlap.
    assert masks[0].reshape(masks.shape[1], -1).sum(-1).min() >= 16  # Every object is visible on frame 0.


def test_generator_cli(tmp_path):
  out = tmp_path / "synth"
  subprocess.run([sys.executable, os.path.join(REPO, "data", "synthetic.py"), f"--output_dir={out}", "--num_images=1",
                  "--num_videos=1", "--num_eval_videos=1", "--size=64", "--num_frames=5", "--eval_num_frames=2"],
                 check=True, cwd=tmp_path, capture_output=True)
  assert sorted(os.listdir(out / "sa1b")) == ["sa_1.jpg", "sa_1.json"]
  assert sorted(os.listdir(out / "sav")) == ["sav_000001.mp4", "sav_000001_manual.json"]
  assert sorted(os.listdir(out / "vos_eval" / "JPEGImages" / "synth_0000")) == ["00000.jpg", "00001.jpg"]
  assert sorted(os.listdir(out / "vos_eval" / "Annotations" / "synth_0000")) == ["00000.png", "00001.png"]


# ------------------------------------------------------------------------------------------------------------
# SA-1B


def test_sa1b_round_trip(tmp_path):
  raw = tmp_path / "sa1b"
  paths = synthetic.write_sa1b(str(raw), 3, H, W, SEED)
  content = json.loads((raw / "sa_2.json").read_text())
  assert content["image"] == {"image_id": 2, "width": W, "height": H, "file_name": "sa_2.jpg"}
  for ann in content["annotations"]:
    assert set(ann) == {"id", "segmentation", "bbox", "area", "predicted_iou", "stability_score", "crop_box",
                        "point_coords"}
    mask = records.decode_rle(ann["segmentation"]["counts"], *ann["segmentation"]["size"])
    ys, xs = np.nonzero(mask)
    assert ann["area"] == mask.sum() and ann["bbox"] == [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1]
    x, y = ann["point_coords"][0]
    assert mask[int(y), int(x)]

  stats = sa1b_to_arrayrecord.convert(str(raw), str(tmp_path / "out"), 2, progress=False)
  assert (stats.written, stats.dropped, stats.errors) == (3, 0, [])
  assert [os.path.basename(p) for p in stats.paths] == ["sa1b-00000-of-00002.array_record",
                                                         "sa1b-00001-of-00002.array_record"]
  got = read_back(stats)
  assert [r.id for r in got] == ["sa_1", "sa_2", "sa_3"]
  for index, (record, path) in enumerate(zip(got, paths)):
    frames, masks = synthetic.render_sample("sa1b", SEED, index, H, W)
    assert (record.source, record.height, record.width, record.frame_indices) == ("sa1b", H, W, [0])
    with open(path, "rb") as f:
      assert record.frames == [f.read()]  # Original JPEG bytes.
    assert record.object_ids == [(index + 1) * 1000 + j for j in range(masks.shape[1])]
    np.testing.assert_array_equal(all_masks(record), masks)
    assert mean_abs_diff(decode_jpeg(record.frames[0]), frames[0]) < 8


def test_sa1b_drops_annotations_with_no_area(tmp_path):
  raw = tmp_path / "sa1b"
  synthetic.write_sa1b(str(raw), 2, H, W, SEED)
  first = json.loads((raw / "sa_1.json").read_text())
  first["annotations"].append(dict(first["annotations"][0], id=7, area=0))
  (raw / "sa_1.json").write_text(json.dumps(first))
  second = json.loads((raw / "sa_2.json").read_text())
  for ann in second["annotations"]:
    ann["area"] = 0
  (raw / "sa_2.json").write_text(json.dumps(second))
  stats = sa1b_to_arrayrecord.convert(str(raw), str(tmp_path / "out"), 1, progress=False)
  assert (stats.written, stats.dropped) == (1, 1)
  (record,) = read_back(stats)
  assert record.id == "sa_1" and 7 not in record.object_ids
  assert len(record.object_ids) == len(first["annotations"]) - 1


def test_sa1b_bad_inputs(tmp_path):
  raw = tmp_path / "sa1b"
  synthetic.write_sa1b(str(raw), 3, H, W, SEED)
  out = tmp_path / "out"
  os.remove(raw / "sa_2.json")
  with pytest.raises(ValueError, match=r"sa_2\.json.*not found"):
    sa1b_to_arrayrecord.convert(str(raw), str(out), 1, progress=False)
  assert not os.path.exists(out) or os.listdir(out) == []  # Nothing half-written.
  (raw / "sa_2.json").write_text('{"image": {"image_id": 2')
  with pytest.raises(ValueError, match=r"Corrupt JSON in .*sa_2\.json"):
    sa1b_to_arrayrecord.convert(str(raw), str(out), 1, progress=False)
  (raw / "sa_2.json").write_text('{"annotations": []}')
  with pytest.raises(ValueError, match=r"sa_2\.json.*not an SA-1B annotation file"):
    sa1b_to_arrayrecord.convert(str(raw), str(out), 1, progress=False)
  shutil.copy(raw / "sa_1.json", raw / "sa_2.json")
  data = (raw / "sa_3.jpg").read_bytes()
  (raw / "sa_3.jpg").write_bytes(data[:len(data) // 3])
  with pytest.raises(ValueError, match=r"Cannot decode image .*sa_3\.jpg"):
    sa1b_to_arrayrecord.convert(str(raw), str(out), 1, progress=False)
  assert leftovers(out) == [] and not os.path.exists(records.shard_path(str(out), "sa1b", 0, 1))
  stats = sa1b_to_arrayrecord.convert(str(raw), str(out), 1, skip_errors=True, progress=False)
  assert stats.written == 2 and len(stats.errors) == 1 and "sa_3.jpg" in stats.errors[0]
  assert [r.id for r in read_back(stats)] == ["sa_1", "sa_2"]
  with pytest.raises(ValueError, match="No sa_"):
    sa1b_to_arrayrecord.convert(str(tmp_path / "out"), str(out), 1, progress=False)


def tfds_sa1b_example(jpg_path: str) -> dict:
  """The `segment_anything` TFDS example of a raw SA-1B image, as its TFDS builder makes it (boxes normalized)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  content = sa1b.load_json(os.path.splitext(jpg_path)[0] + ".json")
  height, width = content["image"]["height"], content["image"]["width"]

  def box(b):
    x, y, w, h = b
    return tfds.features.BBox(ymin=y / height, xmin=x / width, ymax=(y + h) / height, xmax=(x + w) / width)

  return {"image": dict(content["image"], content=jpg_path),
          "annotations": [dict(a, bbox=box(a["bbox"]), crop_box=box(a["crop_box"])) for a in content["annotations"]]}


def write_tfds_sa1b(data_dir: str, examples: list[dict], num_shards: int = 2) -> None:
  """Writes `examples` as an array_record build of TFDS `segment_anything` in `data_dir`, laid out as
  `download_and_prepare` lays one out: the builder's own features serialize them, default shard names,
  dataset_info.json with the split's shard lengths."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder("segment_anything", data_dir=data_dir, file_format="array_record")
  info = builder.info
  template = tfds.core.ShardedFileTemplate(data_dir=builder.data_path, dataset_name=builder.name, split="train",
                                           filetype_suffix=info.file_format.file_suffix)
  builder.data_path.mkdir(parents=True)
  bounds = [len(examples) * k // num_shards for k in range(num_shards + 1)]
  lengths, num_bytes = [], 0
  for shard in range(num_shards):
    serialized = [info.features.serialize_example(e) for e in examples[bounds[shard]:bounds[shard + 1]]]
    tfds.core.file_adapters.ArrayRecordFileAdapter.write_examples(
        template.sharded_filepath(shard_index=shard, num_shards=num_shards), enumerate(serialized))
    lengths.append(len(serialized))
    num_bytes += sum(map(len, serialized))
  info.set_splits(tfds.core.SplitDict([tfds.core.SplitInfo(name="train", shard_lengths=lengths, num_bytes=num_bytes,
                                                           filename_template=template)]))
  info.write_to_directory(builder.data_path)


def test_sa1b_tfds_round_trip(tmp_path, monkeypatch):
  raw = tmp_path / "sa1b"
  paths = synthetic.write_sa1b(str(raw), 4, H, W, SEED)
  examples = [tfds_sa1b_example(p) for p in paths]
  first = examples[0]["annotations"]
  first.insert(1, dict(first[0], id=7, area=0))  # Dropped, as in the raw reader.
  for ann in examples[3]["annotations"]:
    ann["area"] = 0  # Image left without annotations: no record.
  data_dir = tmp_path / "tfds"
  write_tfds_sa1b(str(data_dir), examples)
  assert sorted(os.listdir(data_dir / "segment_anything" / "1.0.0")) == [
      "LICENSE", "dataset_info.json", "features.json", "segment_anything-train.array_record-00000-of-00002",
      "segment_anything-train.array_record-00001-of-00002"]

  monkeypatch.setenv("HOME", str(tmp_path))
  source = sa1b.tfds_source("~/tfds")
  assert len(source) == 4
  example = source[1]
  assert isinstance(example["image"]["content"], bytes)  # Left encoded.
  record = sa1b.record_from_tfds(example)
  assert (record.id, record.height, record.width) == ("sa_2", H, W)
  assert record.frames == [(raw / "sa_2.jpg").read_bytes()]

  stats = sa1b_to_arrayrecord.convert_tfds(str(data_dir), str(tmp_path / "out"), 2, progress=False)
  assert (stats.written, stats.dropped, stats.errors) == (3, 1, [])
  got = read_back(stats)
  assert [r.id for r in got] == ["sa_1", "sa_2", "sa_3"]
  for index, (record, path) in enumerate(zip(got, paths)):
    assert (record.source, record.height, record.width, record.frame_indices) == ("sa1b", H, W, [0])
    with open(path, "rb") as f:
      assert record.frames == [f.read()]  # Original JPEG bytes.
    anns = sa1b.load_json(path[:-4] + ".json")["annotations"]
    assert record.object_ids == [a["id"] for a in anns]  # Not 7.
    written = np.array([[records.decode_rle(a["segmentation"]["counts"], H, W) for a in anns]])
    np.testing.assert_array_equal(all_masks(record), written)
    np.testing.assert_array_equal(written, synthetic.render_sample("sa1b", SEED, index, H, W)[1])


def test_sa1b_tfds_bad_examples(tmp_path):
  raw = tmp_path / "sa1b"
  paths = synthetic.write_sa1b(str(raw), 4, H, W, SEED)
  examples = [tfds_sa1b_example(p) for p in paths]
  png = io.BytesIO()
  with Image.open(paths[0]) as image:
    image.save(png, format="PNG")
  examples[0]["image"]["content"] = png.getvalue()  # Not JPEG: stored as a JPEG of the decoded image.
  examples[1]["image"]["content"] = b"not an image"
  examples[2]["image"].update(height=W, width=H)  # Transposed size.
  ann = examples[3]["annotations"][0]
  ann["segmentation"] = dict(ann["segmentation"], size=[W, H])
  data_dir = tmp_path / "tfds"
  write_tfds_sa1b(str(data_dir), examples, num_shards=1)
  out = tmp_path / "out"
  with pytest.raises(ValueError, match=r"Cannot decode image 'sa_2\.jpg'"):
    sa1b_to_arrayrecord.convert_tfds(str(data_dir), str(out), 1, progress=False)
  assert leftovers(out) == [] and os.listdir(out) == []
  stats = sa1b_to_arrayrecord.convert_tfds(str(data_dir), str(out), 1, skip_errors=True, progress=False)
  assert stats.written == 1 and len(stats.errors) == 3
  assert "Cannot decode image 'sa_2.jpg'" in stats.errors[0]
  assert f"Image 'sa_3.jpg' is {H}x{W} (HxW) but its annotations say {W}x{H}" in stats.errors[1]
  assert f"'sa_4.jpg': annotation {ann['id']} has mask size ({W}, {H}), image ({H}, {W})" in stats.errors[2]
  (record,) = read_back(stats)
  assert record.id == "sa_1" and record.frames[0].startswith(b"\xff\xd8")
  assert mean_abs_diff(decode_jpeg(record.frames[0]), decode_jpeg((raw / "sa_1.jpg").read_bytes())) < 3
  with pytest.raises(ValueError, match="No array_record build of TFDS 'segment_anything'"):
    sa1b_to_arrayrecord.convert_tfds(str(tmp_path / "empty"), str(out), 1, progress=False)


def test_sa1b_tfds_needs_tensorflow_datasets(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # Import raises ImportError, installed or not.
  with pytest.raises(ImportError, match="tensorflow_datasets"):
    sa1b_to_arrayrecord.convert_tfds(None, "/nonexistent", 1)


# ------------------------------------------------------------------------------------------------------------
# SA-V


def test_sav_round_trip(tmp_path):
  raw = tmp_path / "sav"
  num_frames = 18  # Annotated frames 0, 4, 8, 12, 16.
  synthetic.write_sav(str(raw), 2, H, W, num_frames, SEED)
  content = json.loads((raw / "sav_000002_manual.json").read_text())
  assert set(content) == SAV_KEYS
  assert (content["video_height"], content["video_width"], content["video_frame_count"]) == (H, W, num_frames)
  assert len(content["masklet"]) == 5 and content["masklet_num"] == len(content["masklet"][0])
  assert content["masklet"][0][0]["size"] == [H, W]

  stats = sav_to_arrayrecord.convert(str(raw), str(tmp_path / "out"), 2, progress=False)
  assert (stats.written, stats.dropped, stats.errors) == (2, 0, [])
  got = read_back(stats)
  assert [r.id for r in got] == ["sav_000001", "sav_000002"]
  for index, record in enumerate(got):
    frames, masks = synthetic.render_sample("sav", SEED, index, H, W, num_frames)
    assert (record.source, record.height, record.width) == ("sav", H, W)
    assert record.frame_indices == [0, 4, 8, 12, 16]
    assert record.object_ids == list(range(masks.shape[1]))
    np.testing.assert_array_equal(all_masks(record), masks[::4])
    for t, data in enumerate(record.frames):
      image = decode_jpeg(data)
      assert image.shape == (H, W, 3)
      assert mean_abs_diff(image, frames[4 * t]) < 10  # mp4 (yuv420p) then JPEG.
      assert mean_abs_diff(image, frames[4 * t + 1]) > mean_abs_diff(image, frames[4 * t])  # The right frame.


def test_sav_auto_masklets(tmp_path):
  raw = tmp_path / "sav"
  synthetic.write_sav(str(raw), 1, H, W, 9, SEED)
  manual = json.loads((raw / "sav_000001_manual.json").read_text())
  auto = dict(manual, masklet=[row[:1] for row in manual["masklet"]], masklet_id=[0], masklet_num=1)
  (raw / "sav_000001_auto.json").write_text(json.dumps(auto))
  (plain,) = read_back(sav_to_arrayrecord.convert(str(raw), str(tmp_path / "a"), 1, progress=False))
  (both,) = read_back(sav_to_arrayrecord.convert(str(raw), str(tmp_path / "b"), 1, include_auto=True, progress=False))
  assert plain.object_ids == manual["masklet_id"]
  assert both.object_ids == manual["masklet_id"] + [sav.AUTO_ID_OFFSET]
  np.testing.assert_array_equal(all_masks(both)[:, -1], all_masks(plain)[:, 0])


def test_sav_annotation_parsing_without_video():
  masks = np.zeros((3, 2, H, W), bool)
  masks[0, 0, :10, :20] = True
  masks[2, 1, 30:, 50:] = True
  content = {"video_id": "v", "video_height": H, "video_width": W, "video_frame_count": 9,
             "masklet_id": [4, 9], "masklet": [[{"size": [H, W], "counts": records.encode_rle(m)} for m in row]
                                               for row in masks]}
  content["masklet"][1][1] = None  # Read as an empty mask.
  ann = sav.parse_annotation(content)
  assert (ann.height, ann.width, ann.num_video_frames, ann.frame_indices, ann.object_ids) == (H, W, 9, [0, 4, 8],
                                                                                              [4, 9])
  got = np.array([[records.decode_rle(c, H, W) for c in row] for row in ann.masks])
  np.testing.assert_array_equal(got, masks)
  assert sav.parse_annotation(dict(content, fps=24)).frame_indices == [0, 1, 2]
  content["masklet"][2][0] = {"size": [W, H], "counts": records.encode_rle(masks[2, 0].T)}
  with pytest.raises(ValueError, match="has size"):
    sav.parse_annotation(content, "x.json")


def test_sav_bad_inputs(tmp_path):
  raw = tmp_path / "sav"
  synthetic.write_sav(str(raw), 2, H, W, 9, SEED)
  out = str(tmp_path / "out")
  (raw / "sav_000002.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
  with pytest.raises(ValueError, match=r"Cannot decode video .*sav_000002\.mp4"):
    sav_to_arrayrecord.convert(str(raw), out, 1, progress=False)
  assert leftovers(out) == [] and not os.listdir(out)
  stats = sav_to_arrayrecord.convert(str(raw), out, 1, skip_errors=True, progress=False)
  assert stats.written == 1 and "sav_000002.mp4" in stats.errors[0]

  synthetic.write_sav(str(raw), 2, H, W, 9, SEED)
  manual = json.loads((raw / "sav_000002_manual.json").read_text())
  longer = dict(manual, masklet=manual["masklet"] + manual["masklet"][-1:])  # Needs frame 12 of a 9-frame video.
  (raw / "sav_000002_manual.json").write_text(json.dumps(longer))
  with pytest.raises(ValueError, match=r"sav_000002\.mp4.* has 9 frames but the annotations need frame 12"):
    sav.read_video(str(raw / "sav_000002.mp4"))
  (raw / "sav_000002_manual.json").write_text(json.dumps(dict(manual, video_height=W, video_width=H)))
  with pytest.raises(ValueError, match=r"sav_000002_manual\.json.*has size"):
    sav.read_video(str(raw / "sav_000002.mp4"))
  os.remove(raw / "sav_000002_manual.json")
  with pytest.raises(ValueError, match=r"sav_000002_manual\.json.*not found"):
    sav.read_video(str(raw / "sav_000002.mp4"))
  os.remove(raw / "sav_000002.mp4")
  with pytest.raises(ValueError, match=r"sav_000002\.mp4.*not found"):
    sav.decode_frames(str(raw / "sav_000002.mp4"), [0])


def test_sav_reader_on_real_annotations(tmp_path):
  for name in ("sav_000001_manual.json", "sav_000001_auto.json"):
    with gzip.open(os.path.join(SAV_FIXTURES, name + ".gz"), "rb") as src:
      (tmp_path / name).write_bytes(src.read())
  manual = sav.load_annotation(str(tmp_path / "sav_000001_manual.json"))
  assert manual.video_id == "sav_000001" and manual.num_video_frames == 483
  assert (manual.height, manual.width) == (848, 480)
  assert len(manual.object_ids) == 5 and len(manual.masks) == 121
  assert manual.frame_indices == list(range(0, 481, 4))
  assert all(len(row) == 5 for row in manual.masks)
  assert records.decode_rle(manual.masks[60][1], manual.height, manual.width).shape == (848, 480)
  first_visible = [next(i for i, row in enumerate(manual.masks) if records.decode_rle(row[j], 848, 480).any())
                   for j in range(5)]
  with open(tmp_path / "sav_000001_manual.json") as f:
    content = json.load(f)
  assert first_visible == [int(f) for f in content["masklet_first_appeared_frame"]]  # Object 3 appears at 113.
  auto = sav.load_annotation(str(tmp_path / "sav_000001_auto.json"), sav.AUTO_ID_OFFSET)
  merged = sav.merge(manual, auto)
  assert len(auto.object_ids) == 9 and len(merged.object_ids) == 14 and len(merged.masks) == 121


# ------------------------------------------------------------------------------------------------------------
# VOS folders


def test_vos_davis_round_trip(tmp_path):
  root = tmp_path / "vos"
  names = synthetic.write_vos(str(root), 2, H, W, 5, SEED)
  stats = vos_to_arrayrecord.convert(str(root), str(tmp_path / "out"), 1, progress=False)
  assert (stats.written, stats.dropped) == (2, 0)
  got = read_back(stats)
  assert [r.id for r in got] == names
  for index, record in enumerate(got):
    frames, masks = synthetic.render_sample("vos", SEED, index, H, W, 5)
    assert (record.source, record.height, record.width, record.frame_indices) == ("vos", H, W, [0, 1, 2, 3, 4])
    assert record.object_ids == list(range(1, masks.shape[1] + 1))
    np.testing.assert_array_equal(all_masks(record), masks)
    assert mean_abs_diff(decode_jpeg(record.frames[2]), frames[2]) < 8
  only = vos_to_arrayrecord.convert(str(root), str(tmp_path / "one"), 1, videos=[names[1]], progress=False)
  assert [r.id for r in read_back(only)] == [names[1]]
  with pytest.raises(ValueError, match="Videos without annotations"):
    vos_to_arrayrecord.convert(str(root), str(tmp_path / "x"), 1, videos=["nope"], progress=False)


def test_vos_sav_layout_sparse_objects(tmp_path):
  frames, masks = synthetic.render_sample("vos", SEED, 0, H, W, 3)
  root = tmp_path / "sav_val"
  os.makedirs(root / "JPEGImages_24fps" / "v")
  for t in range(3):
    Image.fromarray(frames[t]).save(root / "JPEGImages_24fps" / "v" / f"{4 * t:05d}.jpg")
    present = {5: masks[t, 0]} if t != 1 else {}
    if t != 0:
      present[7] = masks[t, 0] | masks[t, -1]
    vos_io.write_frame_masks(str(root / "Annotations_6fps"), "v", 4 * t, present, layout=vos_io.SAV)
  frames_dir, annotations_dir = vos_folders.find_folders(str(root))
  record = vos_folders.read_video(frames_dir, annotations_dir, "v")
  assert record.frame_indices == [0, 4, 8] and record.object_ids == [5, 7]
  got = all_masks(record)
  np.testing.assert_array_equal(got[:, 0], [masks[0, 0], np.zeros((H, W), bool), masks[2, 0]])
  np.testing.assert_array_equal(got[:, 1], [np.zeros((H, W), bool), masks[1, 0] | masks[1, -1],
                                            masks[2, 0] | masks[2, -1]])


def test_vos_bad_inputs(tmp_path):
  root = tmp_path / "vos"
  synthetic.write_vos(str(root), 1, H, W, 3, SEED)
  os.remove(root / "JPEGImages" / "synth_0000" / "00001.jpg")
  with pytest.raises(ValueError, match=r"synth_0000/00001\.jpg not found"):
    vos_to_arrayrecord.convert(str(root), str(tmp_path / "out"), 1, progress=False)
  with pytest.raises(ValueError, match="not a VOS dataset folder"):
    vos_to_arrayrecord.convert(str(tmp_path), str(tmp_path / "out"), 1, progress=False)


def test_write_shards_many_workers_and_shards(tmp_path):
  raw = tmp_path / "sa1b"
  synthetic.write_sa1b(str(raw), 5, H, W, SEED)
  stats = sa1b_to_arrayrecord.convert(str(raw), str(tmp_path / "out"), 8, num_workers=2, progress=False)
  assert len(stats.paths) == 5 and stats.written == 5  # No empty shards.
  assert [r.id for r in read_back(stats)] == [f"sa_{i}" for i in range(1, 6)]
