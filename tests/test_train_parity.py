"""The train step against the official `SAM2Train` (sam2==1.1.0, training mode): loss terms and the gradient of
every parameter, on one clip of 3 frames with 2 moving objects, for three prompt plans.

In each plan the first frame is the only initial conditioning frame and the others are tracked from memory:
- `mask`: the first frame is prompted with its ground-truth masks (taken as the output);
- `box_then_errors`: a noisy box, then 2 correction clicks sampled from the prediction's errors;
- `click_then_gt`: one click, then 2 correction clicks sampled from the ground truth alone.
The official plan is made deterministic by its probabilities (0 or 1), and its point samplers are replaced by
ours, called with the keys our step derives from its key, so that both sides click the same pixels. Drop path
and dropout are off. The plans differ only in their probabilities, which our step receives as traced arguments:
the three plans run one compiled program.
"""

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bench import official_training, oracle
from configs.train import get_config
from sam2_jax.build_sam import abstract_params, get_model_config
from sam2_jax.checkpoint.torch import state_dict_to_params
from sam2_jax.modeling.sam2 import SAM2
from sam2_jax.training import losses, optimizer, step
from sam2_jax.training import prompt_simulation as ps

SIZE, FRAMES, OBJECTS, ROUNDS = 64, 3, 2, 2
KEY = jax.random.key(0)
# Our prompt config; the official SAM2Train fields are the same names with `_for_train`.
COMMON_PLAN = dict(num_init_cond_frames=1, rand_init_cond_frames=False, num_frames_to_correct=1,
                   rand_frames_to_correct=False, num_correction_pt_per_frame=ROUNDS)
PLANS = {
    "mask": dict(prob_to_use_pt_input=0.0, prob_to_use_box_input=0.0, prob_to_sample_from_gt=0.0),
    "box_then_errors": dict(prob_to_use_pt_input=1.0, prob_to_use_box_input=1.0, prob_to_sample_from_gt=0.0),
    "click_then_gt": dict(prob_to_use_pt_input=1.0, prob_to_use_box_input=0.0, prob_to_sample_from_gt=1.0),
}


class OurSamplers:
  """Stand-ins for the official `sample_box_points` and `get_next_point` that draw as `step.clip_losses` does
  on the first processed frame (frame 0): a box or a first click, then one click per correction round."""

  def __init__(self, plan: dict[str, float]):
    _, k_steps = jax.random.split(KEY)
    k_box, k_click, k_corrections = jax.random.split(jax.random.split(k_steps, FRAMES)[0], 3)
    self.k_box = k_box
    points = plan["prob_to_use_pt_input"] == 1.0
    self.click_keys = ([k_click] if points and plan["prob_to_use_box_input"] == 0.0 else []) + (
        [jax.random.split(k)[1] for k in jax.random.split(k_corrections, ROUNDS)] if points else [])

  def box(self, masks, noise=0.1, noise_bound=20, top_left_label=2, bottom_right_label=3):
    assert (top_left_label, bottom_right_label) == (2, 3)
    points, labels = ps.sample_box_points(self.k_box, jnp.asarray(masks[:, 0].numpy()), noise, noise_bound)
    return oracle.torch.from_numpy(np.asarray(points)), oracle.torch.from_numpy(np.asarray(labels))

  def click(self, gt_masks, pred_masks, method):
    del method  # "uniform" in training, as ours
    gt = jnp.asarray(gt_masks[:, 0].numpy())
    pred = jnp.zeros_like(gt) if pred_masks is None else jnp.asarray(pred_masks[:, 0].numpy())
    points, labels = ps.sample_points_from_errors(self.click_keys.pop(0), gt, pred)
    return (oracle.torch.from_numpy(np.asarray(points)[:, None]),
            oracle.torch.from_numpy(np.asarray(labels)[:, None]).int())


def _model_overrides() -> dict:
  """The demo model at SIZE, without dropout."""
  overrides = dict(get_config("demo").model_overrides.to_dict(), image_size=SIZE)
  overrides["memory_attention"] = dict(overrides["memory_attention"], dropout=0.0)
  return overrides


@functools.cache
def _our_loss_and_grads():
  """Our (loss, metrics) and gradients of `step.clip_losses`: (params, batch, plan probabilities) -> ..., jitted."""
  demo = get_config("demo")
  module = SAM2(get_model_config(demo.model_name, **_model_overrides()))
  fixed = demo.prompts.to_dict() | COMMON_PLAN

  def loss(params, batch, probabilities):
    prompts = types.SimpleNamespace(**(fixed | probabilities))
    return module.apply({"params": params}, batch, KEY, prompts, method=step.clip_losses,
                        rngs={"dropout": jax.random.key(1)})

  return jax.jit(jax.value_and_grad(loss, has_aux=True))


@pytest.fixture(scope="module", params=list(PLANS))
def both(request, monkeypatch_module):
  """(official loss terms, official gradients as our tree, our metrics, our gradients) for one plan."""
  plan = dict(COMMON_PLAN, **PLANS[request.param])
  demo = get_config("demo")
  overrides = _model_overrides()
  config = get_model_config(demo.model_name, **overrides)
  oracle.torch.manual_seed(0)
  official = official_training.build_official_train(
      demo.model_name, SIZE, trunk=dict(overrides["trunk"], drop_path_rate=0.0),
      memory_attention=overrides["memory_attention"],
      multimask_output_for_tracking=overrides["multimask_output_for_tracking"],
      **{(k if k == "num_correction_pt_per_frame" else f"{k}_for_train"): v for k, v in plan.items()})
  state_dict = oracle.perturb_state_dict(official.state_dict(), seed=0, obj_score_bias=2.0)
  official.load_state_dict(state_dict, strict=True)
  params = state_dict_to_params({k: v.numpy() for k, v in state_dict.items()}, abstract_params(config))
  samplers = OurSamplers(plan)
  official_module = official_training.official_model_module()
  monkeypatch_module.setattr(official_module, "sample_box_points", samplers.box)
  monkeypatch_module.setattr(official_module, "get_next_point", samplers.click)

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
  assert not samplers.click_keys  # the official side sampled every click ours does
  official_grads = state_dict_to_params(
      {k: (p.grad if p.grad is not None else oracle.torch.zeros_like(p)).numpy()
       for k, p in official.named_parameters()}
      | {k: np.zeros_like(v.numpy()) for k, v in official.named_buffers() if k in state_dict},
      abstract_params(config))

  probabilities = {k: np.float32(v) for k, v in PLANS[request.param].items()}
  (_, metrics), grads = _our_loss_and_grads()(params, batch, probabilities)
  return ({k: float(v.detach()) for k, v in official_terms.items()}, official_grads,
          {k: float(v) for k, v in metrics.items()}, grads)


@pytest.fixture(scope="module")
def monkeypatch_module():
  with pytest.MonkeyPatch.context() as patch:
    yield patch


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
