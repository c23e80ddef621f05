"""Training input pipeline: augmentations (against torchvision, which the official transforms call), sampling,
batch shapes, per-batch mixing, determinism, iterator checkpoints, and corrupt-record handling."""

import io
import json

import numpy as np
import pytest
from array_record.python import array_record_module
from PIL import Image

from sam2_jax.data import pipeline, records
from sam2_jax.data import transforms as T

SIZE = 64
COLORS = np.array([(230, 30, 30), (30, 200, 40), (40, 60, 230), (230, 220, 30), (200, 40, 220)], np.uint8)
BACKGROUND = (90, 90, 90)


def _jpeg(frame: np.ndarray) -> bytes:
  out = io.BytesIO()
  Image.fromarray(frame).save(out, format="JPEG", quality=95)
  return out.getvalue()


def _clip(index: int, num_frames: int, num_objects: int, *, appear_late: bool = True,
          visible: bool = True) -> records.ClipRecord:
  """Flat-coloured moving boxes on a grey background; masks are the visible parts (later objects on top).

  Object 1 is absent on every third frame; with `appear_late`, the last object only appears from frame 4.
  Frame indices are 1000 * index + 4 * i and object ids 100 * index + j, so an example names its record.
  """
  rng = np.random.default_rng(index)
  pos = rng.uniform(14, 50, (num_objects, 2))
  vel = rng.uniform(-2, 2, (num_objects, 2))
  yy, xx = np.mgrid[:SIZE, :SIZE]
  frames, rows = [], []
  for t in range(num_frames):
    frame = np.empty((SIZE, SIZE, 3), np.uint8)
    frame[:] = BACKGROUND
    masks = []
    for o in range(num_objects):
      cy, cx = np.clip(pos[o] + vel[o] * t, 12, 52)
      m = (np.abs(yy - cy) < 7 + o) & (np.abs(xx - cx) < 9)
      if not visible or (o == 1 and t % 3 == 2) or (appear_late and o == num_objects - 1 and t < 4):
        m[:] = False
      masks = [prev & ~m for prev in masks] + [m]
      frame[m] = COLORS[o]
    frames.append(_jpeg(frame))
    rows.append([records.encode_rle(m) for m in masks])
  return records.ClipRecord("sav" if num_frames > 1 else "sa1b", f"clip{index}", SIZE, SIZE, frames,
                            [1000 * index + 4 * t for t in range(num_frames)],
                            [100 * index + j for j in range(num_objects)], rows)


def _records_by_key(clips):
  return {(c.frame_indices[0] // 1000 if len(c.frames) > 1 else c.object_ids[0] // 100): c for c in clips}


VIDEOS = [_clip(i, 10, 3) for i in range(6)]
IMAGES = [_clip(100 + i, 1, 5, appear_late=False) for i in range(8)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("pipeline")
  records.write_array_record(str(d / "videos.array_record"), VIDEOS)
  records.write_array_record(str(d / "images.array_record"), IMAGES)
  return d


def _config(data_dir, **overrides):
  c = pipeline.get_config()
  c.resolution = 32
  c.num_workers = 0
  c.sources.sav.paths = str(data_dir / "videos.array_record")
  c.sources.sav.batch_size = 2
  c.sources.sa1b.paths = str(data_dir / "images.array_record")
  c.sources.sa1b.batch_size = 4
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def _take(config, n, seed=0, state=None):
  it = iter(pipeline.make_dataset(config, seed=seed))
  if state is not None:
    it.set_state(state)
  return [next(it) for _ in range(n)], it


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


# ---------------------------------------------------------------- transforms


def test_transforms_match_torchvision():
  torch = pytest.importorskip("torch")
  F = pytest.importorskip("torchvision.transforms.functional")
  from torchvision.transforms import InterpolationMode  # pylint: disable=g-import-not-at-top
  from tests.images import shapes_image  # pylint: disable=g-import-not-at-top
  img = shapes_image(48, 64, seed=1)
  mask = np.zeros((48, 64), bool)
  mask[10:30, 20:50] = True
  mask[5:9, 3:7] = True
  for angle, shear in [(10.3, -7.2), (-24.0, 19.5), (3.0, 0.0)]:
    matrix = T.inverse_affine_matrix(angle, shear, (32.0, 24.0))
    ours = Image.fromarray(img).transform((64, 48), Image.AFFINE, matrix, Image.BILINEAR, fillcolor=T.IMAGE_MEAN_FILL)
    ref = F.affine(Image.fromarray(img), angle=angle, translate=[0, 0], scale=1.0, shear=[shear, 0.0],
                   interpolation=InterpolationMode.BILINEAR, fill=T.IMAGE_MEAN_FILL)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))
    ref_mask = F.affine(torch.from_numpy(mask.astype(np.uint8))[None], angle=angle, translate=[0, 0], scale=1.0,
                        shear=[shear, 0.0], interpolation=InterpolationMode.NEAREST, fill=0.0)[0].numpy() > 0
    np.testing.assert_array_equal(T._warp_mask(mask, matrix), ref_mask)  # pylint: disable=protected-access
  big = shapes_image(150, 250, seed=2)
  big_mask = np.zeros((150, 250), bool)
  big_mask[30:100, 50:170] = True
  big_mask[::7, ::5] = True
  np.testing.assert_array_equal(T.resize_frame(big, 64), np.asarray(F.resize(Image.fromarray(big), [64, 64])))
  ref = F.resize(torch.from_numpy(big_mask.astype(np.uint8))[None, None], [64, 64]).squeeze().numpy()
  np.testing.assert_array_equal(T.resize_mask(big_mask, 64), ref > 0)
  fns = [F.adjust_brightness, F.adjust_contrast, F.adjust_saturation]
  for ops in [[(0, 1.07), (1, 0.98), (2, 1.02)], [(2, 0.96), (0, 0.93), (1, 1.04)]]:
    ref = Image.fromarray(big)
    for op, factor in ops:
      ref = fns[op](ref, factor)
    np.testing.assert_array_equal(T.adjust_colors(big, ops), np.asarray(ref))
  gray = T.RandomGrayscale(1.0)(T.Clip(big[None], big_mask[None, None]), np.random.default_rng(0)).frames[0]
  np.testing.assert_array_equal(gray, np.asarray(F.to_grayscale(Image.fromarray(big), 3)))


def test_flip_and_affine_move_frames_and_masks_together():
  frames = np.stack([np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in VIDEOS[0].frames[:3]])
  masks = np.stack([[VIDEOS[0].decode_mask(t, o) for o in range(2)] for t in range(3)])
  clip = T.Clip(frames, masks)
  flipped = T.RandomHorizontalFlip(1.0)(clip, np.random.default_rng(0))
  np.testing.assert_array_equal(flipped.frames, frames[:, :, ::-1])
  np.testing.assert_array_equal(flipped.masks, masks[..., ::-1])
  assert T.RandomHorizontalFlip(0.0)(clip, np.random.default_rng(0)) is clip
  warped = T.RandomAffine(25, 20)(clip, np.random.default_rng(3))
  assert not np.array_equal(warped.masks, masks) and warped.masks[0].any(axis=(1, 2)).all()
  for t in range(3):  # the warped masks still cover their object's colour
    for o in range(2):
      if warped.masks[t, o].sum() > 20:
        mean = warped.frames[t][warped.masks[t, o]].mean(0)
        assert np.abs(mean - COLORS[o]).max() < 40


def test_affine_is_skipped_when_a_first_frame_object_would_vanish():
  frames = np.full((2, 64, 64, 3), 100, np.uint8)
  masks = np.zeros((2, 2, 64, 64), bool)
  masks[:, 0, 20:40, 20:40] = True
  masks[:, 1, 0, 0] = True  # a corner pixel: any rotation by a few degrees moves it out of the frame
  clip = T.Clip(frames, masks)
  rng = np.random.default_rng(0)
  assert T.RandomAffine(25, 0, num_tries=3)(clip, rng) is clip
  masks[:, 1, 0, 0] = False
  masks[:, 1, 30:34, 30:34] = True
  assert T.RandomAffine(25, 0, num_tries=3)(clip, rng) is not clip


# ---------------------------------------------------------------- pipeline


def test_batch_shapes_dtypes_and_sampling(data_dir):
  batches, _ = _take(_config(data_dir), 8)
  kinds = {int(b["source_id"][0]) for b in batches}
  names = pipeline.source_names(_config(data_dir))
  assert kinds == {names.index("sa1b"), names.index("sav")}
  for b in batches:
    assert len(set(b["source_id"].tolist())) == 1
    video = names[int(b["source_id"][0])] == "sav"
    bsz, t = (2, 8) if video else (4, 1)
    expected = {"images": ((bsz, t, 32, 32, 3), np.uint8), "masks": ((bsz, t, 3, 32, 32), np.bool_),
                "obj_valid": ((bsz, 3), np.bool_), "object_ids": ((bsz, 3), np.int32),
                "frame_indices": ((bsz, t), np.int32), "source_id": ((bsz,), np.int32),
                "num_skipped": ((bsz,), np.int32)}
    assert {k: (v.shape, v.dtype) for k, v in b.items()} == expected
    for i in range(bsz):
      n = int(b["obj_valid"][i].sum())
      assert n >= 1 and b["obj_valid"][i, :n].all() and (b["object_ids"][i, n:] == -1).all()
      assert not b["masks"][i, :, n:].any()
      assert b["masks"][i, 0, :n].any(axis=(1, 2)).all()  # chosen objects are visible in the first frame
      fi = b["frame_indices"][i]
      if video:
        assert (np.abs(np.diff(fi)) == 4).all() and len(set(fi // 1000)) == 1  # consecutive annotated frames


def test_time_direction_and_late_objects(data_dir):
  # 10-frame videos give 8-frame windows starting at frames 0-2; object 2 only appears at frame 4, so it is
  # never in a forward clip's first frame, and always in a reversed one's (frames 7-9 come first).
  for reverse in (0.0, 1.0):
    batches, _ = _take(_config(data_dir, reverse_time_prob=reverse, **{"sources.sa1b.weight": 0.0}), 6)
    for b in batches:
      for fi, ids, masks in zip(b["frame_indices"], b["object_ids"], b["masks"]):
        assert (np.diff(fi) == (-4 if reverse else 4)).all()
        late = 100 * (fi[0] // 1000) + 2
        if not reverse:
          assert late not in ids
        assert masks[0][ids >= 0].any(axis=(1, 2)).all()


def test_without_augmentation_masks_are_the_decoded_rles(data_dir):
  by_key = _records_by_key(VIDEOS + IMAGES)
  for resolution in (64, 32):
    config = _config(data_dir, resolution=resolution, **{"augment.enabled": False})
    for b in _take(config, 6)[0]:
      for i in range(len(b["source_id"])):
        fi = b["frame_indices"][i]
        key = fi[0] // 1000 if len(fi) > 1 else b["object_ids"][i, 0] // 100
        rec = by_key[int(key)]
        frames = [rec.frame_indices.index(int(f)) for f in fi]
        for j, obj in enumerate(b["object_ids"][i]):
          if obj < 0:
            continue
          k = rec.object_ids.index(int(obj))
          for t, f in enumerate(frames):
            np.testing.assert_array_equal(b["masks"][i, t, j], T.resize_mask(rec.decode_mask(f, k), resolution))
        for t, f in enumerate(frames):
          frame = np.asarray(Image.open(io.BytesIO(rec.frames[f])).convert("RGB"))
          np.testing.assert_array_equal(b["images"][i, t], T.resize_frame(frame, resolution))


def test_horizontal_flip_in_the_pipeline(data_dir):
  off = {"augment.enabled": False}
  flip_only = {"augment.hflip_prob": 1.0, "augment.affine_degrees": 0.0, "augment.affine_shear": 0.0,
               "augment.clip_jitter": (0.0, 0.0, 0.0), "augment.grayscale_prob": 0.0,
               "augment.frame_jitter": (0.0, 0.0, 0.0)}
  plain, _ = _take(_config(data_dir, **off), 4)
  flipped, _ = _take(_config(data_dir, **flip_only), 4)
  for a, b in zip(plain, flipped):
    np.testing.assert_array_equal(b["object_ids"], a["object_ids"])
    np.testing.assert_array_equal(b["images"], a["images"][:, :, :, ::-1])
    np.testing.assert_array_equal(b["masks"], a["masks"][..., ::-1])


def test_augmented_masks_stay_on_their_objects(data_dir):
  batches, _ = _take(_config(data_dir, resolution=64, **{"augment.grayscale_prob": 0.0}), 6, seed=5)
  checked = 0
  for b in batches:
    for i in range(len(b["source_id"])):
      for j, obj in enumerate(b["object_ids"][i]):
        for t in range(b["masks"].shape[1]):
          m = b["masks"][i, t, j]
          inner = m & np.roll(m, 2, 0) & np.roll(m, -2, 0) & np.roll(m, 2, 1) & np.roll(m, -2, 1)
          if obj < 0 or inner.sum() < 10:
            continue
          color = np.median(b["images"][i, t][inner], axis=0)
          dist = np.abs(COLORS.astype(float) - color).sum(1)
          assert dist.argmin() == obj % 100, (color, obj)
          checked += 1
  assert checked > 50


def test_mixing_weights_per_batch(data_dir):
  config = _config(data_dir, **{"sources.sa1b.weight": 3.0, "sources.sav.weight": 1.0,
                                "sources.sa1b.batch_size": 1, "sources.sav.batch_size": 1,
                                "augment.enabled": False, "resolution": 16})
  batches, _ = _take(config, 200)
  image_id = pipeline.source_names(config).index("sa1b")
  frac = np.mean([int(b["source_id"][0]) == image_id for b in batches])
  assert abs(frac - 0.75) < 0.05


def test_deterministic_given_the_seed(data_dir):
  config = _config(data_dir)
  a, _ = _take(config, 5, seed=3)
  b, _ = _take(config, 5, seed=3)
  _assert_batches_equal(a, b)
  c, _ = _take(config, 5, seed=4)
  assert not all(np.array_equal(x["images"], y["images"]) for x, y in zip(a, c))


def test_per_process_slices_differ(data_dir):
  config = _config(data_dir, **{"sources.sa1b.weight": 0.0, "sources.sav.batch_size": 4})
  p0 = iter(pipeline.make_dataset(config, process_index=0, process_count=2, seed=1))
  p1 = iter(pipeline.make_dataset(config, process_index=1, process_count=2, seed=1))
  a, b = next(p0), next(p1)
  assert a["images"].shape[0] == 2 and b["images"].shape[0] == 2
  assert not set((a["frame_indices"][:, 0] // 1000).tolist()) & set((b["frame_indices"][:, 0] // 1000).tolist())


def test_iterator_state_resumes_identically(data_dir):
  config = _config(data_dir)
  first, it = _take(config, 5, seed=2)
  state = json.loads(json.dumps(it.get_state()))
  expected = [next(it) for _ in range(6)]
  resumed, _ = _take(config, 6, seed=2, state=state)
  _assert_batches_equal(resumed, expected)
  assert len({int(b["source_id"][0]) for b in first + expected}) == 2  # the state covers both sources


def _write_raw(path, payloads):
  writer = array_record_module.ArrayRecordWriter(str(path), "group_size:1")
  for p in payloads:
    writer.write(p)
  writer.close()


def test_corrupt_and_unusable_records_are_skipped_and_counted(data_dir):
  good = [_clip(200 + i, 9, 3) for i in range(6)]
  bad_jpeg = _clip(300, 9, 2)
  bad_jpeg.frames[3] = b"\xff\xd8 not a jpeg"
  truncated = _clip(301, 9, 2)
  truncated.frames[0] = truncated.frames[0][: len(truncated.frames[0]) // 2]
  bad_rle = _clip(302, 9, 2)
  bad_rle.masks[0] = ["!!not-rle~~" for _ in bad_rle.masks[0]]
  wrong_size = _clip(303, 9, 2)
  wrong_size.height = 48
  short = _clip(304, 5, 2)
  invisible = _clip(305, 9, 2, visible=False)
  payloads = ([r.serialize() for r in good[:3]] + [b"\x93not msgpack", bad_jpeg.serialize(), truncated.serialize(),
              bad_rle.serialize(), wrong_size.serialize(), short.serialize(), invisible.serialize()]
              + [r.serialize() for r in good[3:]])
  path = data_dir / "mixed_quality.array_record"
  _write_raw(path, payloads)
  config = _config(data_dir, shuffle=False, **{"sources.sa1b.weight": 0.0, "sources.sav.paths": str(path),
                                               "sources.sav.batch_size": 1, "max_bad_fraction": 0.9})
  batches, it = _take(config, len(good))
  stats = pipeline.DataStats(pipeline.source_names(config))
  for b in batches:
    stats.update(b)
  assert [int(b["num_skipped"][0]) for b in batches] == [0, 0, 0, 7, 0, 0]
  sav = pipeline.source_names(config).index("sav")
  assert stats.seen[sav] == len(payloads) and stats.skipped[sav] == 7
  metrics = stats.metrics()
  assert metrics["data/sav/skipped"] == 7 and metrics["data/skipped_fraction"] == pytest.approx(7 / 13)
  assert sorted(int(b["frame_indices"][0, 0]) // 1000 for b in batches) == list(range(200, 206))
  next(it)  # the second epoch goes on


def test_unreadable_array_record_chunks_are_skipped(data_dir):
  path = data_dir / "damaged.array_record"
  _write_raw(path, [_clip(400 + i, 9, 2).serialize() for i in range(12)])
  data = bytearray(path.read_bytes())  # compressed chunks first, then padding and the footer
  for offset in range(len(data) // 20, len(data) // 5, 4000):
    data[offset:offset + 16] = b"\xff" * 16
  path.write_bytes(bytes(data))
  from grain import sources  # pylint: disable=g-import-not-at-top
  raw = sources.ArrayRecordDataSource([str(path)])
  unreadable = 0
  for i in range(len(raw)):
    try:
      raw[i]
    except RuntimeError:
      unreadable += 1
  assert 0 < unreadable < 12
  config = _config(data_dir, shuffle=False, **{"sources.sa1b.weight": 0.0, "sources.sav.paths": str(path),
                                               "sources.sav.batch_size": 1, "max_bad_fraction": 0.9})
  batches, _ = _take(config, 12 - unreadable)
  assert sum(int(b["num_skipped"].sum()) for b in batches) == unreadable


def test_too_many_bad_records_raise(data_dir):
  path = data_dir / "mostly_bad.array_record"
  _write_raw(path, [VIDEOS[0].serialize()] + [b"garbage %d" % i for i in range(9)])
  config = _config(data_dir, **{"sources.sav.paths": str(path), "max_bad_fraction": 0.2,
                                "bad_fraction_min_records": 5})
  with pytest.raises(pipeline.BadDataError, match=r"'sav'.*corrupt or unusable.*max_bad_fraction 20"):
    _take(config, 10)


def test_config_errors(data_dir):
  with pytest.raises(ValueError, match="No data source"):
    pipeline.make_dataset(_config(data_dir, **{"sources.sav.paths": "", "sources.sa1b.paths": ""}))
  with pytest.raises(ValueError, match="Data source 'sav': No file matches '.*nope-"):
    pipeline.make_dataset(_config(data_dir, **{"sources.sav.paths": str(data_dir / "nope-*.array_record")}))
  empty = data_dir / "empty.array_record"
  records.write_array_record(str(empty), [])
  with pytest.raises(ValueError, match=r"Data source 'sa1b' has no records: its files \(.*empty.array_record\)"):
    pipeline.make_dataset(_config(data_dir, **{"sources.sa1b.paths": str(empty)}))
  with pytest.raises(ValueError, match="not divisible"):
    pipeline.make_dataset(_config(data_dir), process_index=0, process_count=3)


def test_worker_processes_give_the_same_batches(data_dir):
  config = _config(data_dir)
  expected, _ = _take(config, 6, seed=7)
  config.num_workers = 1
  it = iter(pipeline.make_dataset(config, seed=7))
  try:
    got = [next(it) for _ in range(3)]
    state = it.get_state()
  finally:
    it.close()
  _assert_batches_equal(got, expected[:3])
  resumed, it = _take(config, 3, seed=7, state=state)
  it.close()
  _assert_batches_equal(resumed, expected[3:])
