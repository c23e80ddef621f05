"""The memory bank: fixed shapes whatever the video length, and the official selection rules."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sam2_jax.build_sam import get_model_config
from sam2_jax.modeling import track
from sam2_jax.modeling.memory_bank import MemoryBank, recent_frames, select_cond
from sam2_jax.modeling.sam2 import SAM2, use_multimask


def test_carried_state_does_not_grow_with_video_length():
  config = get_model_config("sam2.1_hiera_t", image_size=256)
  module = SAM2(config)
  params = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), jnp.zeros((1, 256, 256, 3)))["params"]
  bank = MemoryBank.empty(config, num_objects=3, num_cond=1)
  chunk = jax.ShapeDtypeStruct((8, 256, 256, 3), jnp.float32)

  def shapes(num_frames):
    fn = functools.partial(track.propagate, num_frames=num_frames)
    out_bank, ys = jax.eval_shape(lambda p, b, x, i, c: module.apply({"params": p}, b, x, i, c, method=fn),
                                  params, bank, chunk, jnp.zeros(8, jnp.int32), jnp.zeros((8, 3), bool))
    return jax.tree.map(lambda s: (s.shape, s.dtype), (out_bank, ys))

  assert shapes(20) == shapes(10_000)
  nbytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(bank))
  # 1 conditioning + 6 recent memories of 16x16x64 bf16 per object, plus 16 pointers: independent of the video.
  assert nbytes < 3 * (7 * 16 * 16 * 64 * 2 + 16 * 256 * 4 + 4096)


def test_memory_does_not_grow_with_video_length():
  """The compiled propagation chunk needs the same temporaries for a 20- and a 10,000-frame video; the predictor
  keeps frames on the host (3 * image_size**2 bytes each, and little else per frame) and the device holds the
  same for both."""
  import gc  # pylint: disable=g-import-not-at-top
  import tracemalloc  # pylint: disable=g-import-not-at-top
  from sam2_jax.build_sam import build_sam2  # pylint: disable=g-import-not-at-top
  from sam2_jax.predictors.video import SAM2VideoPredictor  # pylint: disable=g-import-not-at-top
  size, chunk = 64, 4
  model = build_sam2("sam2.1_hiera_t", image_size=size)
  module, params = SAM2(model.config), model.params
  bank = MemoryBank.empty(model.config, num_objects=2, num_cond=1)

  def temporaries(num_frames):
    fn = functools.partial(track.propagate, num_frames=num_frames)
    compiled = jax.jit(lambda p, b, x, i, c: module.apply({"params": p}, b, x, i, c, method=fn)).lower(
        params, bank, jnp.zeros((chunk, size, size, 3)), jnp.zeros(chunk, jnp.int32),
        jnp.zeros((chunk, 2), bool)).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  assert temporaries(20) == temporaries(10_000)

  predictor = SAM2VideoPredictor(model, progress=False)
  device_bytes = lambda: sum(a.nbytes for a in jax.live_arrays())

  def host_and_device(num_frames):
    """Host bytes allocated and device bytes held by a video's state (one click on frame 0)."""
    video = np.zeros((num_frames, 32, 48, 3), np.uint8)
    device_before = device_bytes()
    tracemalloc.start()
    state = predictor.init_state(video)
    predictor.add_new_points_or_box(state, 0, 1, points=[[10, 10]], labels=[1])
    host = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    device = device_bytes() - device_before
    del state
    gc.collect()
    return host, device

  host_short, device_short = host_and_device(20)
  host_long, device_long = host_and_device(10_000)
  frame_bytes = 3 * size * size
  per_frame = (host_long - host_short) / 9_980
  assert frame_bytes <= per_frame < frame_bytes + 2048, per_frame  # the frame, and under 2 KB of bookkeeping
  assert 0 < device_short == device_long, (device_short, device_long)  # frame 0's features, whatever the length


def test_recent_frames_rule():
  # stride 1: t-1 ... t-6 (t_pos 6 is the previous frame); reverse mirrors it.
  frames = lambda t, stride, reverse: recent_frames(jnp.array(t), 7, stride, reverse).tolist()
  assert frames([10, 3], 1, False) == [[4, 5, 6, 7, 8, 9], [-3, -2, -1, 0, 1, 2]]
  assert frames([10], 1, True) == [[16, 15, 14, 13, 12, 11]]
  # stride 3: the previous frame, then every 3rd frame before t-1 (after t+1 in reverse).
  assert frames([10], 3, False) == [[-6, -3, 0, 3, 6, 9]]
  assert frames([10], 3, True) == [[24, 21, 18, 15, 12, 11]]


def test_select_closest_cond_frames():
  frames = jnp.array([[0, 5, 9, 20, 30]])
  valid = jnp.ones((1, 5), bool)
  # closest before (9), closest at-or-after (20), then the nearest others (5, then 0 / 30 tie -> 0 first).
  assert np.asarray(select_cond(frames, valid, 12, 3)).tolist() == [[False, True, True, True, False]]
  assert np.asarray(select_cond(frames, valid, 12, 4)).tolist() == [[True, True, True, True, False]]
  assert np.asarray(select_cond(frames, valid, 12, -1)).tolist() == [[True] * 5]
  invalid = valid.at[0, 1].set(False)
  assert np.asarray(select_cond(frames, invalid, 12, 3)).tolist() == [[True, False, True, True, False]]


def test_use_multimask_matches_official_rule():
  import types
  import torch
  from sam2.modeling.sam2_base import SAM2Base
  for in_sam, for_tracking, lo, hi in [(True, True, 0, 1), (True, False, 0, 1), (False, True, 0, 1),
                                       (True, False, 1, 1)]:
    config = get_model_config("sam2.1_hiera_t", image_size=256, multimask_output_in_sam=in_sam,
                              multimask_output_for_tracking=for_tracking, multimask_min_pt_num=lo,
                              multimask_max_pt_num=hi)
    official = types.SimpleNamespace(multimask_output_in_sam=in_sam, multimask_output_for_tracking=for_tracking,
                                     multimask_min_pt_num=lo, multimask_max_pt_num=hi)
    for is_init in (True, False):
      for num_points in (0, 1, 2):
        points = None if num_points == 0 else {"point_labels": torch.ones(1, num_points)}
        expected = SAM2Base._use_multimask(official, is_init, points)  # pylint: disable=protected-access
        ours = use_multimask(config, is_init, num_points)
        traced = jax.jit(lambda i, n, c=config: use_multimask(c, i, n))(is_init, num_points)
        assert bool(ours) == bool(traced) == expected, (in_sam, for_tracking, lo, hi, is_init, num_points)
