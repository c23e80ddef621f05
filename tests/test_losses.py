"""The SAM 2 losses against a PyTorch re-implementation of the official `training/loss_fns.py`.

The official training package is not part of the pip release, so the oracle below re-implements
`MultiStepMultiMasksAndIous` (single process) in torch, following the official computation step by
step: the same formulas, reductions, multimask selection and accumulation over steps and frames.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sam2_jax.training import losses

torch = pytest.importorskip("torch")
F = torch.nn.functional

TOL = 1e-5
WEIGHTS = {"loss_mask": 20.0, "loss_dice": 1.0, "loss_iou": 1.0, "loss_class": 1.0}


# ----------------------------------------------------------------------------------------------------------
# Torch oracle (official semantics).


def ref_focal(inputs, targets, num_objects, alpha, gamma, multimask):
  prob = inputs.sigmoid()
  ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
  p_t = prob * targets + (1 - prob) * (1 - targets)
  loss = ce * (1 - p_t) ** gamma
  if alpha >= 0:
    loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
  if multimask:
    return loss.flatten(2).mean(-1) / num_objects
  return loss.mean(1).sum() / num_objects


def ref_dice(inputs, targets, num_objects):
  inputs = inputs.sigmoid().flatten(2)
  targets = targets.flatten(2)
  num = 2 * (inputs * targets).sum(-1)
  den = inputs.sum(-1) + targets.sum(-1)
  return (1 - (num + 1) / (den + 1)) / num_objects


def ref_iou(inputs, targets, pred_ious, num_objects, use_l1):
  pred = inputs.flatten(2) > 0
  gt = targets.flatten(2) > 0
  inter = (pred & gt).sum(-1).float()
  union = (pred | gt).sum(-1).float()
  actual = inter / torch.clamp(union, min=1.0)
  fn = F.l1_loss if use_l1 else F.mse_loss
  return fn(pred_ious, actual, reduction="none") / num_objects


class RefLoss:
  """Single-process `MultiStepMultiMasksAndIous`."""

  def __init__(self, weights=WEIGHTS, alpha=0.25, gamma=2.0, supervise_all_iou=True, iou_use_l1_loss=True,
               pred_obj_scores=True, gamma_obj=0.0, alpha_obj=-1.0):
    self.weights, self.alpha, self.gamma = weights, alpha, gamma
    self.supervise_all_iou, self.use_l1, self.pred_obj_scores = supervise_all_iou, iou_use_l1_loss, pred_obj_scores
    self.gamma_obj, self.alpha_obj = gamma_obj, alpha_obj

  def __call__(self, outs_batch, targets_batch):
    num_objects = max(float(targets_batch.shape[1]), 1.0)
    totals = {k: 0 for k in list(WEIGHTS) + ["core_loss"]}
    for outs, targets in zip(outs_batch, targets_batch):
      for k, v in self.frame(outs, targets, num_objects).items():
        totals[k] = totals[k] + v
    return totals

  def frame(self, outs, targets, num_objects):
    target_masks = targets.unsqueeze(1).float()
    out = {k: 0 for k in WEIGHTS}
    for masks, ious, obj in zip(outs["multistep_pred_multimasks_high_res"], outs["multistep_pred_ious"],
                                outs["multistep_object_score_logits"]):
      self.step(out, masks, target_masks, ious, num_objects, obj)
    out["core_loss"] = sum(out[k] * w for k, w in self.weights.items() if w != 0)
    return out

  def step(self, out, masks, target_masks, ious, num_objects, obj):
    target_masks = target_masks.expand_as(masks)
    multi_focal = ref_focal(masks, target_masks, num_objects, self.alpha, self.gamma, True)
    multi_dice = ref_dice(masks, target_masks, num_objects)
    if self.pred_obj_scores:
      target_obj = torch.any((target_masks[:, 0] > 0).flatten(1), dim=-1)[..., None].float()
      loss_class = ref_focal(obj, target_obj, num_objects, self.alpha_obj, self.gamma_obj, False)
    else:
      target_obj = torch.ones(multi_focal.shape[0], 1)
      loss_class = torch.tensor(0.0)
    multi_iou = ref_iou(masks, target_masks, ious, num_objects, self.use_l1)
    if multi_focal.size(1) > 1:
      combo = multi_focal * self.weights["loss_mask"] + multi_dice * self.weights["loss_dice"]
      best = torch.argmin(combo, dim=-1)
      rows = torch.arange(combo.size(0))
      loss_mask = multi_focal[rows, best].unsqueeze(1)
      loss_dice = multi_dice[rows, best].unsqueeze(1)
      loss_iou = multi_iou.mean(-1, keepdim=True) if self.supervise_all_iou else multi_iou[rows, best].unsqueeze(1)
    else:
      loss_mask, loss_dice, loss_iou = multi_focal, multi_dice, multi_iou
    out["loss_mask"] = out["loss_mask"] + (loss_mask * target_obj).sum()
    out["loss_dice"] = out["loss_dice"] + (loss_dice * target_obj).sum()
    out["loss_iou"] = out["loss_iou"] + (loss_iou * target_obj).sum()
    out["loss_class"] = out["loss_class"] + loss_class


# ----------------------------------------------------------------------------------------------------------
# Helpers.


def random_inputs(seed, t=2, s=3, n=3, m=3, h=16, w=12, empty=(), scale=3.0):
  """Random logits that straddle 0 and GT masks (some empty: `empty` lists (frame, object) pairs)."""
  rng = np.random.default_rng(seed)
  masks = (rng.normal(size=(t, s, n, m, h, w)) * scale).astype(np.float32)
  ious = rng.uniform(size=(t, s, n, m)).astype(np.float32)
  obj = (rng.normal(size=(t, s, n, 1)) * 2).astype(np.float32)
  targets = (rng.uniform(size=(t, n, h, w)) < rng.uniform(0.1, 0.6, size=(t, n, 1, 1))).astype(np.float32)
  for fi, oi in empty:
    targets[fi, oi] = 0
  return masks, ious, obj, targets


def run_ref(masks, ious, obj, targets, steps_per_frame=None, objects=None, ref=None, grad=False):
  """The oracle on numpy inputs; `steps_per_frame` truncates steps, `objects` keeps a subset."""
  ref = ref or RefLoss()
  objects = list(range(masks.shape[2])) if objects is None else list(objects)
  tm = torch.tensor(masks[:, :, objects], requires_grad=grad)
  ti = torch.tensor(ious[:, :, objects], requires_grad=grad)
  to = torch.tensor(obj[:, :, objects], requires_grad=grad)
  outs = []
  for f in range(masks.shape[0]):
    k = masks.shape[1] if steps_per_frame is None else steps_per_frame[f]
    outs.append({"multistep_pred_multimasks_high_res": [tm[f, j] for j in range(k)],
                 "multistep_pred_ious": [ti[f, j] for j in range(k)],
                 "multistep_object_score_logits": [to[f, j] for j in range(k)]})
  res = ref(outs, torch.tensor(targets[:, objects]))
  if grad:
    res["core_loss"].backward()
    return res, (tm.grad.numpy(), ti.grad.numpy(), to.grad.numpy())
  return res


def check_terms(core, terms, ref):
  for k in WEIGHTS:
    np.testing.assert_allclose(float(terms[k]), float(ref[k]), rtol=TOL, atol=TOL, err_msg=k)
  np.testing.assert_allclose(float(core), float(ref["core_loss"]), rtol=TOL, atol=TOL, err_msg="core_loss")


# ----------------------------------------------------------------------------------------------------------
# Elementwise formulas.


def test_focal_dice_iou_formulas():
  rng = np.random.default_rng(0)
  x = (rng.normal(size=(3, 2, 9, 7)) * 4).astype(np.float32)
  t = (rng.uniform(size=(3, 2, 9, 7)) < 0.4).astype(np.float32)
  p = rng.uniform(size=(3, 2)).astype(np.float32)
  tx, tt, tp = map(torch.tensor, (x, t, p))
  for alpha, gamma in ((0.25, 2.0), (-1.0, 0.0), (0.5, 1.0)):
    ours = jnp.mean(losses.sigmoid_focal_loss(x, t, alpha, gamma), axis=(-2, -1))
    np.testing.assert_allclose(ours, ref_focal(tx, tt, 1.0, alpha, gamma, True).numpy(), rtol=TOL, atol=1e-7)
  np.testing.assert_allclose(losses.dice_loss(x, t), ref_dice(tx, tt, 1.0).numpy(), rtol=TOL, atol=1e-7)
  for l1 in (True, False):
    np.testing.assert_allclose(losses.iou_loss(x, t, p, l1), ref_iou(tx, tt, tp, 1.0, l1).numpy(),
                               rtol=TOL, atol=1e-7)


def test_focal_gamma0_alpha_neg_is_bce_and_extreme_logits_finite():
  x = np.array([-200.0, -30.0, -1.0, 0.0, 2.0, 40.0, 300.0], np.float32)
  for target in (0.0, 1.0):
    t = np.full_like(x, target)
    ours = np.asarray(losses.sigmoid_focal_loss(x, t, -1.0, 0.0))
    ref = F.binary_cross_entropy_with_logits(torch.tensor(x), torch.tensor(t), reduction="none").numpy()
    np.testing.assert_allclose(ours, ref, rtol=TOL, atol=1e-6)
    assert np.all(np.isfinite(np.asarray(losses.sigmoid_focal_loss(x, t))))


def test_hand_made_values():
  """A 2x2 target, a perfect and a wrong mask: the perfect one is chosen; values from the formulas."""
  target = np.array([[1, 0], [0, 0]], np.float32)
  good = np.where(target > 0, 50.0, -50.0).astype(np.float32)
  bad = -good
  masks = np.stack([bad, good, np.zeros_like(good)])[None, None, None]  # (1, 1, 1, 3, 2, 2)
  ious = np.array([0.3, 0.9, 0.5], np.float32)[None, None, None]
  obj = np.array([[[[1.5]]]], np.float32)
  core, terms = losses.multistep_multimask_loss(masks, ious, obj, target[None, None])
  # The good mask: focal ~ 0, dice = 1 - (2 + 1) / (1 + 1 + 1) = 0.
  assert float(terms["loss_mask"]) < 1e-12 and abs(float(terms["loss_dice"])) < 1e-6
  # Actual IoUs: bad 0/4, good 1, zero-logit mask (no pixel > 0) 0/1; L1 mean over all three masks.
  np.testing.assert_allclose(float(terms["loss_iou"]), (0.3 + 0.1 + 0.5) / 3, rtol=1e-6)
  np.testing.assert_allclose(float(terms["loss_class"]), np.log1p(np.exp(-1.5)), rtol=1e-6)
  np.testing.assert_allclose(float(core), 20 * float(terms["loss_mask"]) + float(terms["loss_dice"]) +
                             float(terms["loss_iou"]) + float(terms["loss_class"]), rtol=1e-6)
  check_terms(core, terms, run_ref(masks, ious, obj, target[None, None]))


def test_empty_target_only_object_score():
  """Empty GT: no mask, dice or IoU loss; the class loss is BCE against 0."""
  masks, ious, obj, targets = random_inputs(1, t=1, s=2, n=1, empty=[(0, 0)])
  core, terms = losses.multistep_multimask_loss(masks, ious, obj, targets)
  for k in ("loss_mask", "loss_dice", "loss_iou"):
    assert float(terms[k]) == 0.0
  np.testing.assert_allclose(float(terms["loss_class"]), np.sum(np.logaddexp(0, obj)), rtol=1e-6)
  check_terms(core, terms, run_ref(masks, ious, obj, targets))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_matches_oracle(seed):
  masks, ious, obj, targets = random_inputs(seed, empty=[(1, 2)] if seed else ())
  core, terms = losses.multistep_multimask_loss(masks, ious, obj, targets)
  check_terms(core, terms, run_ref(masks, ious, obj, targets))


@pytest.mark.parametrize("options", [
    dict(supervise_all_iou=False), dict(iou_use_l1_loss=False), dict(pred_obj_scores=False),
    dict(focal_alpha=-1.0, focal_gamma=1.0, weight_mask=5.0, weight_class=0.0)])
def test_options_match_oracle(options):
  config = losses.LossConfig(**options)
  ref = RefLoss(weights=config.weights, alpha=config.focal_alpha, gamma=config.focal_gamma,
                supervise_all_iou=config.supervise_all_iou, iou_use_l1_loss=config.iou_use_l1_loss,
                pred_obj_scores=config.pred_obj_scores)
  masks, ious, obj, targets = random_inputs(3, empty=[(0, 1)])
  core, terms = losses.multistep_multimask_loss(masks, ious, obj, targets, config=config)
  check_terms(core, terms, run_ref(masks, ious, obj, targets, ref=ref))


def test_single_mask_output():
  masks, ious, obj, targets = random_inputs(4, m=1)
  core, terms = losses.multistep_multimask_loss(masks, ious, obj, targets)
  check_terms(core, terms, run_ref(masks, ious, obj, targets))


def test_multimask_selection_is_argmin_of_weighted_focal_dice():
  masks, ious, obj, targets = random_inputs(5, t=1, s=1, n=4)
  config = losses.LossConfig()
  per = losses.step_losses(masks[0, 0], ious[0, 0], obj[0, 0], targets[0], config)
  t4 = jnp.asarray(targets[0])[:, None]
  focal = jnp.mean(losses.sigmoid_focal_loss(masks[0, 0], t4), axis=(-2, -1))
  dice = losses.dice_loss(masks[0, 0], t4)
  best = np.argmin(20 * np.asarray(focal) + np.asarray(dice), axis=-1)
  np.testing.assert_allclose(per["loss_mask"], np.asarray(focal)[np.arange(4), best], rtol=1e-6)
  np.testing.assert_allclose(per["loss_dice"], np.asarray(dice)[np.arange(4), best], rtol=1e-6)


def test_gradients_match_oracle_and_only_chosen_mask_gets_mask_gradient():
  masks, ious, obj, targets = random_inputs(6, empty=[(0, 2)])
  fn = lambda m, i, o: losses.multistep_multimask_loss(m, i, o, targets)[0]
  g_masks, g_ious, g_obj = jax.grad(fn, argnums=(0, 1, 2))(masks, ious, obj)
  _, (r_masks, r_ious, r_obj) = run_ref(masks, ious, obj, targets, grad=True)
  for ours, ref in ((g_masks, r_masks), (g_ious, r_ious), (g_obj, r_obj)):
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=TOL, atol=1e-9)
  nonzero = np.abs(np.asarray(g_masks)).sum(axis=(-2, -1)) > 0  # (T, S, N, M)
  assert np.all(nonzero.sum(-1) == np.where(targets.any(axis=(-2, -1)), 1, 0)[:, None])


def test_padded_objects_and_steps():
  """Padded objects and missing steps contribute nothing; num_objects counts real objects only."""
  masks, ious, obj, targets = random_inputs(7, t=3, s=4, n=5, empty=[(1, 0)])
  valid = np.array([True, False, True, True, False])
  step_valid = np.array([[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0]], bool)
  # Garbage in the padding must not leak in.
  masks[:, :, ~valid] = 1e3
  obj[:, :, ~valid] = -1e3
  core, terms = jax.jit(losses.multistep_multimask_loss)(masks, ious, obj, targets, valid, step_valid)
  ref = run_ref(masks, ious, obj, targets, steps_per_frame=[4, 1, 2], objects=np.flatnonzero(valid))
  check_terms(core, terms, ref)


def test_no_valid_object_gives_zero_loss():
  masks, ious, obj, targets = random_inputs(8, n=2)
  core, terms = losses.multistep_multimask_loss(masks, ious, obj, targets, valid=np.zeros(2, bool))
  assert float(core) == 0.0 and all(float(v) == 0.0 for v in terms.values())


def test_explicit_num_objects_and_bfloat16_inputs():
  masks, ious, obj, targets = random_inputs(9)
  core, _ = losses.multistep_multimask_loss(masks, ious, obj, targets, num_objects=6.0)
  core3, _ = losses.multistep_multimask_loss(masks, ious, obj, targets)
  np.testing.assert_allclose(float(core) * 2, float(core3), rtol=1e-6)
  core_bf16, terms = losses.multistep_multimask_loss(jnp.asarray(masks, jnp.bfloat16), ious, obj, targets)
  assert core_bf16.dtype == jnp.float32 and all(v.dtype == jnp.float32 for v in terms.values())
  np.testing.assert_allclose(float(core_bf16), float(core3), rtol=2e-2)
