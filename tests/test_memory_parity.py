"""Parity of the memory encoder and memory attention with the official modules (float32)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sam2_jax.build_sam import abstract_params, get_model_config
from sam2_jax.checkpoint.torch import state_dict_to_params
from sam2_jax.modeling.memory_attention import MemoryAttention
from sam2_jax.modeling.memory_encoder import MemoryEncoder
from sam2_jax.modeling.sam2 import SAM2
from bench.oracle import build_official, nchw, rel_err, to_torch, torch

NAME = "sam2.1_hiera_t"
TOL = 1e-4


def _params(module, sd, prefix, *arrays, **static):
  abstract = jax.eval_shape(functools.partial(module.init, **static), jax.random.PRNGKey(0), *arrays)
  return state_dict_to_params(sd, abstract["params"], prefix=prefix)


def _seq_first(x: np.ndarray):
  """(B, L, C) -> torch (L, B, C), the layout the official MemoryAttention takes."""
  return to_torch(np.transpose(x, (1, 0, 2)))


# Both kernel sets; the XLA set (slower on this CPU) at 512.
@pytest.mark.parametrize("image_size,skip_mask_sigmoid,kernels",
                         [(512, False, "cpu"), (512, True, "cpu"), (1024, False, "cpu"), (512, False, "xla")])
def test_memory_encoder(image_size, skip_mask_sigmoid, kernels):
  model, sd = build_official(NAME, image_size)
  side = image_size // 16
  rng = np.random.default_rng(1)
  pix_feat = rng.standard_normal((2, side, side, 256), dtype=np.float32)
  masks = 4 * rng.standard_normal((2, image_size, image_size, 1), dtype=np.float32)
  if skip_mask_sigmoid:
    masks = (masks > 0).astype(np.float32)

  module = MemoryEncoder(kernels=kernels)
  params = _params(module, sd, "memory_encoder.", pix_feat, masks, skip_mask_sigmoid=skip_mask_sigmoid)
  ours = jax.jit(module.apply, static_argnums=3)({"params": params}, pix_feat, masks, skip_mask_sigmoid)
  with torch.no_grad():
    official = model.memory_encoder(to_torch(nchw(pix_feat)), to_torch(nchw(masks)),
                                    skip_mask_sigmoid=skip_mask_sigmoid)

  assert ours["vision_features"].shape == (2, side, side, 64)
  assert rel_err(nchw(ours["vision_features"]), official["vision_features"].numpy()) <= TOL
  assert len(ours["vision_pos_enc"]) == 1
  assert rel_err(nchw(ours["vision_pos_enc"][0]), official["vision_pos_enc"][0].numpy()) <= TOL


def _official_memory_attention(model, curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens):
  with torch.no_grad():
    out = model.memory_attention(curr=_seq_first(curr), memory=_seq_first(memory), curr_pos=_seq_first(curr_pos),
                                 memory_pos=_seq_first(memory_pos), num_obj_ptr_tokens=num_obj_ptr_tokens)
  return np.transpose(out.numpy(), (1, 0, 2))


def _memory_attention_inputs(rng, batch, n, num_frames, num_ptr_tokens):
  m = num_frames * n + num_ptr_tokens
  return (rng.standard_normal((batch, n, 256), dtype=np.float32),
          rng.standard_normal((batch, m, 64), dtype=np.float32),
          rng.standard_normal((batch, n, 256), dtype=np.float32),
          rng.standard_normal((batch, m, 64), dtype=np.float32))


# At 1024 the CPU set attends over chunks of queries, at 512 over all of them at once.
@pytest.mark.parametrize("image_size,num_frames,kernels", [(512, 3, "cpu"), (1024, 2, "cpu"), (512, 3, "xla")])
def test_memory_attention(image_size, num_frames, kernels):
  model, sd = build_official(NAME, image_size)
  n = (image_size // 16) ** 2
  num_ptr = 8
  curr, memory, curr_pos, memory_pos = _memory_attention_inputs(np.random.default_rng(2), 1, n, num_frames, num_ptr)

  module = MemoryAttention(kernels=kernels)
  params = _params(module, sd, "memory_attention.", curr, memory, curr_pos, memory_pos,
                   num_obj_ptr_tokens=num_ptr)
  ours = jax.jit(module.apply, static_argnums=5)({"params": params}, curr, memory, curr_pos, memory_pos, num_ptr)
  official = _official_memory_attention(model, curr, memory, curr_pos, memory_pos, num_ptr)
  assert ours.shape == (1, n, 256)
  assert rel_err(ours, official) <= TOL


@pytest.mark.parametrize("kernels", ["cpu", "xla"])
def test_memory_attention_masked_slots(kernels):
  """Masked frames and pointer tokens of a fixed-shape bank count as absent, per batch element."""
  model, sd = build_official(NAME, 512)
  n, num_frames, num_ptr = 32 * 32, 4, 16
  curr, memory, curr_pos, memory_pos = _memory_attention_inputs(np.random.default_rng(3), 2, n, num_frames, num_ptr)
  frame_valid = np.array([[True, False, True, True], [False, True, True, False]])
  ptr_valid = np.ones((2, num_ptr), bool)
  ptr_valid[0, 4:8] = False  # one whole pointer (4 tokens)
  ptr_valid[1, [1, 10, 11, 15]] = False  # single tokens
  memory_mask = np.concatenate([np.repeat(frame_valid, n, axis=1), ptr_valid], axis=1)

  module = MemoryAttention(kernels=kernels)
  params = _params(module, sd, "memory_attention.", curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=num_ptr)
  apply = jax.jit(module.apply, static_argnums=5)
  ours = apply({"params": params}, curr, memory, curr_pos, memory_pos, num_ptr, memory_mask)
  for b in range(2):
    keep = memory_mask[b]
    official = _official_memory_attention(model, curr[b:b + 1], memory[b:b + 1, keep], curr_pos[b:b + 1],
                                          memory_pos[b:b + 1, keep], int(ptr_valid[b].sum()))
    assert rel_err(ours[b:b + 1], official) <= TOL, b

  # No NaN when a row has no valid key at all, and an all-true mask changes nothing.
  all_masked = apply({"params": params}, curr, memory, curr_pos, memory_pos, num_ptr, np.zeros_like(memory_mask))
  assert np.isfinite(np.asarray(all_masked)).all()
  unmasked = apply({"params": params}, curr, memory, curr_pos, memory_pos, num_ptr)
  all_valid = apply({"params": params}, curr, memory, curr_pos, memory_pos, num_ptr, np.ones_like(memory_mask))
  np.testing.assert_allclose(np.asarray(all_valid), np.asarray(unmasked), rtol=0, atol=1e-6)


def test_memory_attention_dropout():
  """Dropout acts only when not deterministic and keeps the output finite."""
  _, sd = build_official(NAME, 512)
  n = 32 * 32
  curr, memory, curr_pos, memory_pos = _memory_attention_inputs(np.random.default_rng(4), 1, n, 1, 4)
  module = MemoryAttention()
  params = _params(module, sd, "memory_attention.", curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=4)
  det = module.apply({"params": params}, curr, memory, curr_pos, memory_pos, 4)
  train = module.apply({"params": params}, curr, memory, curr_pos, memory_pos, 4, deterministic=False,
                       rngs={"dropout": jax.random.PRNGKey(0)})
  assert np.isfinite(np.asarray(train)).all()
  assert not np.allclose(np.asarray(train), np.asarray(det))
  assert jnp.asarray(train).shape == det.shape
  # The official rate is the config's default; the model takes `memory_attention.dropout` from its config.
  assert get_model_config(NAME).memory_attention.dropout == 0.1
  config = get_model_config(NAME, image_size=128, memory_attention={"dropout": 0.0})
  rate = SAM2(config).apply({"params": abstract_params(config)}, method=lambda m: m.memory_attention.dropout)
  assert rate == 0.0
  train = MemoryAttention(dropout=rate).apply({"params": params}, curr, memory, curr_pos, memory_pos, 4,
                                              deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)})
  np.testing.assert_array_equal(np.asarray(train), np.asarray(det))
