"""The train step against the official `SAM2Train` (sam2==1.1.0, training mode): loss terms and the gradient of
every parameter, on one clip with a deterministic prompt plan.

Plan: the first frame is the only initial conditioning frame and is prompted with its ground-truth masks (taken as
the output, as SAM2Train does with `prob_to_use_pt_input_for_train=0`); the other frames are tracked from memory.
Drop path and dropout are off. Covered: mask-as-output, the SAM heads on memory-conditioned features, memory
encoding, the bank, memory attention, object pointers, the four losses and their normalisation. Not covered here:
clicks, boxes and correction rounds, whose points the two sides sample with different random generators.
"""

import jax
import numpy as np
import pytest

from bench import official_training, oracle
from configs.train import get_config
from sam2_jax.build_sam import abstract_params, get_model_config
from sam2_jax.checkpoint.torch import state_dict_to_params
from sam2_jax.modeling.sam2 import SAM2
from sam2_jax.training import losses, optimizer, step

SIZE, FRAMES, OBJECTS = 64, 3, 2


@pytest.fixture(scope="module")
def both():
  """(official loss terms, official gradients as our tree, our metrics, our gradients)."""
  demo = get_config("demo")
  overrides = dict(demo.model_overrides.to_dict(), image_size=SIZE)
  overrides["memory_attention"] = dict(overrides["memory_attention"], dropout=0.0)
  config = get_model_config(demo.model_name, **overrides)
  oracle.torch.manual_seed(0)
  official = official_training.build_official_train(
      demo.model_name, SIZE, trunk=dict(overrides["trunk"], drop_path_rate=0.0),
      memory_attention=overrides["memory_attention"],
      multimask_output_for_tracking=overrides["multimask_output_for_tracking"],
      prob_to_use_pt_input_for_train=0.0, num_init_cond_frames_for_train=1, rand_init_cond_frames_for_train=False)
  state_dict = oracle.perturb_state_dict(official.state_dict(), seed=0, obj_score_bias=2.0)
  official.load_state_dict(state_dict, strict=True)
  params = state_dict_to_params({k: v.numpy() for k, v in state_dict.items()}, abstract_params(config))

  rng = np.random.default_rng(0)
  masks = np.zeros((1, FRAMES, OBJECTS, SIZE, SIZE), bool)
  for t in range(FRAMES):  # two objects that move
    masks[0, t, 0, 10 + 2 * t:30 + 2 * t, 15:35] = True
    masks[0, t, 1, 35:50, 5 + 3 * t:25 + 3 * t] = True
  batch = dict(images=rng.integers(0, 255, (1, FRAMES, SIZE, SIZE, 3), dtype=np.uint8), masks=masks,
               obj_valid=np.ones((1, OBJECTS), bool))

  official_batch = official_training.official_batch(batch)
  official_terms = official_training.official_loss()(official(official_batch), official_batch.masks)
  official_terms["core_loss"].backward()
  official_grads = state_dict_to_params(
      {k: (p.grad if p.grad is not None else oracle.torch.zeros_like(p)).numpy()
       for k, p in official.named_parameters()}
      | {k: np.zeros_like(v.numpy()) for k, v in official.named_buffers() if k in state_dict},
      abstract_params(config))

  prompts = demo.prompts.copy_and_resolve_references()
  prompts.prob_to_use_pt_input, prompts.num_init_cond_frames, prompts.rand_init_cond_frames = 0.0, 1, False
  module = SAM2(config)

  def loss(p):
    return module.apply({"params": p}, batch, jax.random.key(0), prompts, method=step.clip_losses,
                        rngs={"dropout": jax.random.key(1)})

  (_, metrics), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  return ({k: float(v.detach()) for k, v in official_terms.items()}, official_grads,
          {k: float(v) for k, v in metrics.items()}, grads)


def test_loss_terms(both):
  official, _, ours, _ = both
  for key in losses.LOSS_KEYS:
    assert ours[key] == pytest.approx(official[key], rel=1e-4), key
  assert ours["loss"] == pytest.approx(official["core_loss"], rel=1e-4)


def test_gradients_of_every_parameter(both):
  """Relative to each tensor's largest official gradient; gradients that are zero in exact arithmetic (attention
  key biases: softmax ignores a per-query constant) are compared with the whole model's gradient scale."""
  _, official, _, ours = both
  flat_official = dict(jax.tree_util.tree_leaves_with_path(official))
  scale = max(float(np.max(np.abs(g))) for g in flat_official.values())
  checked = 0
  for path, g in jax.tree_util.tree_leaves_with_path(ours):
    name = jax.tree_util.keystr(path)
    if any(buffer.split(".")[-1] in name for buffer in optimizer.BUFFERS):
      continue  # an official buffer (no gradient there); never trained here either
    expected, got = np.asarray(flat_official[path], np.float64), np.asarray(g, np.float64)
    reference = max(float(np.max(np.abs(expected))), 1e-4 * scale)
    assert float(np.max(np.abs(got - expected))) <= 1e-3 * reference, name
    checked += 1
  assert checked == len(flat_official) - len(optimizer.BUFFERS)
