"""The SAM 2 training losses (the official `MultiStepMultiMasksAndIous`) as pure JAX functions.

Per prediction step and object: a sigmoid focal loss and a dice loss on every predicted mask, of which
only the mask with the lowest `w_mask * focal + w_dice * dice` is back-propagated; an IoU-prediction
loss (L1 or MSE against the actual IoU of the thresholded mask), on all masks or the chosen one; and a
BCE-style object-score loss on "the target is non-empty". Mask, dice and IoU terms are zero for objects
whose target is empty. Terms are summed over prediction steps, frames and objects and divided by the
number of objects.

Everything is computed in float32 whatever the input dtype.
"""

import dataclasses

import jax
import jax.numpy as jnp

Array = jax.Array

LOSS_KEYS = ("loss_mask", "loss_dice", "loss_iou", "loss_class")


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Weights and options of the loss; the defaults are the official SAM 2.1 training values."""
  weight_mask: float = 20.0
  weight_dice: float = 1.0
  weight_iou: float = 1.0
  weight_class: float = 1.0
  focal_alpha: float = 0.25
  focal_gamma: float = 2.0
  supervise_all_iou: bool = True
  iou_use_l1_loss: bool = True
  pred_obj_scores: bool = True
  focal_alpha_obj_score: float = -1.0
  focal_gamma_obj_score: float = 0.0

  @property
  def weights(self) -> dict[str, float]:
    return {"loss_mask": self.weight_mask, "loss_dice": self.weight_dice, "loss_iou": self.weight_iou,
            "loss_class": self.weight_class}


def sigmoid_focal_loss(logits: Array, targets: Array, alpha: float = 0.25, gamma: float = 2.0) -> Array:
  """Elementwise focal loss (RetinaNet) of `logits` against binary `targets`; `alpha < 0`: no class weighting.

  With `gamma = 0` and `alpha < 0` this is the plain binary cross-entropy with logits.
  """
  logits = logits.astype(jnp.float32)
  targets = targets.astype(jnp.float32)
  prob = jax.nn.sigmoid(logits)
  loss = jax.nn.softplus(logits) - logits * targets  # stable BCE with logits
  if gamma != 0:
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = loss * (1 - p_t) ** gamma
  if alpha >= 0:
    loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
  return loss


def dice_loss(logits: Array, targets: Array) -> Array:
  """1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1) over the last two (spatial) axes, p = sigmoid(logits)."""
  prob = jax.nn.sigmoid(logits.astype(jnp.float32))
  targets = targets.astype(jnp.float32)
  numerator = 2 * jnp.sum(prob * targets, axis=(-2, -1))
  denominator = jnp.sum(prob, axis=(-2, -1)) + jnp.sum(targets, axis=(-2, -1))
  return 1 - (numerator + 1) / (denominator + 1)


def actual_iou(logits: Array, targets: Array) -> Array:
  """IoU of `logits > 0` with `targets > 0` over the last two axes (union clamped to at least 1)."""
  pred = logits > 0
  gt = targets > 0
  inter = jnp.sum(pred & gt, axis=(-2, -1)).astype(jnp.float32)
  union = jnp.sum(pred | gt, axis=(-2, -1)).astype(jnp.float32)
  return inter / jnp.maximum(union, 1.0)


def iou_loss(logits: Array, targets: Array, pred_ious: Array, use_l1_loss: bool = True) -> Array:
  """|pred_iou - actual IoU| (or its square) per mask; no gradient flows into `logits` (thresholded)."""
  diff = pred_ious.astype(jnp.float32) - actual_iou(logits, targets)
  return jnp.abs(diff) if use_l1_loss else diff * diff


def step_losses(mask_logits: Array, ious: Array, object_score_logits: Array, targets: Array,
                config: LossConfig = LossConfig()) -> dict[str, Array]:
  """Unnormalised per-object losses of one prediction step.

  Args:
    mask_logits: (..., M, H, W) mask logits (M = 1 or the multimask outputs).
    ious: (..., M) predicted IoUs.
    object_score_logits: (..., 1) object-score logits.
    targets: (..., H, W) binary ground-truth masks (broadcastable leading axes).
    config: loss options.
  Returns:
    {"loss_mask", "loss_dice", "loss_iou", "loss_class"}, each of shape (...).
  """
  targets = targets[..., None, :, :].astype(jnp.float32)
  focal = jnp.mean(sigmoid_focal_loss(mask_logits, targets, config.focal_alpha, config.focal_gamma),
                   axis=(-2, -1))
  dice = dice_loss(mask_logits, targets)
  iou = iou_loss(mask_logits, targets, ious, config.iou_use_l1_loss)
  if focal.shape[-1] > 1:
    combo = focal * config.weight_mask + dice * config.weight_dice
    best = jnp.argmin(combo, axis=-1)[..., None]
    pick = lambda x: jnp.take_along_axis(x, best, axis=-1)[..., 0]
    focal, dice = pick(focal), pick(dice)
    iou = jnp.mean(iou, axis=-1) if config.supervise_all_iou else pick(iou)
  else:
    focal, dice, iou = focal[..., 0], dice[..., 0], iou[..., 0]
  if config.pred_obj_scores:
    target_obj = jnp.any(targets[..., 0, :, :] > 0, axis=(-2, -1)).astype(jnp.float32)
    cls = sigmoid_focal_loss(object_score_logits[..., 0], target_obj, config.focal_alpha_obj_score,
                             config.focal_gamma_obj_score)
  else:
    target_obj = jnp.ones(focal.shape, jnp.float32)
    cls = jnp.zeros(focal.shape, jnp.float32)
  return {"loss_mask": focal * target_obj, "loss_dice": dice * target_obj, "loss_iou": iou * target_obj,
          "loss_class": cls}


def combine_losses(terms: dict[str, Array], config: LossConfig = LossConfig()) -> Array:
  """The weighted sum of the (already normalised) loss terms: the official `core_loss`."""
  return sum(terms[k] * w for k, w in config.weights.items() if w != 0)


def multistep_multimask_loss(mask_logits: Array, ious: Array, object_score_logits: Array, targets: Array,
                             valid: Array | None = None, step_valid: Array | None = None,
                             num_objects: Array | float | None = None,
                             config: LossConfig = LossConfig()) -> tuple[Array, dict[str, Array]]:
  """The official SAM 2 training loss over a clip: every prediction step of every frame.

  Args:
    mask_logits: (T, S, N, M, H, W) high-resolution mask logits of S prediction steps on T frames for N
      objects (objects of all clips of a batch flattened into N, as the official trainer does).
    ious: (T, S, N, M) predicted IoUs.
    object_score_logits: (T, S, N, 1) object-score logits.
    targets: (T, N, H, W) binary ground-truth masks.
    valid: (N,) which objects are real; padded objects contribute nothing and are not counted.
    step_valid: (T, S) which prediction steps took place (frames with fewer steps are padded).
    num_objects: the normaliser; by default the number of valid objects. It is clamped to at least 1.
    config: loss options.
  Returns:
    (core_loss, terms): the weighted total and {"loss_mask", "loss_dice", "loss_iou", "loss_class"},
    each normalised by the number of objects (the official logged values).
  """
  t, s, n = mask_logits.shape[:3]
  weight = jnp.ones((t, s, n), jnp.float32)
  if valid is not None:
    weight = weight * valid.astype(jnp.float32)
  if step_valid is not None:
    weight = weight * step_valid.astype(jnp.float32)[:, :, None]
  if num_objects is None:
    num_objects = n if valid is None else jnp.sum(valid.astype(jnp.float32))
  num_objects = jnp.maximum(jnp.asarray(num_objects, jnp.float32), 1.0)
  per_object = step_losses(mask_logits, ious, object_score_logits, targets[:, None], config)
  terms = {k: jnp.sum(v * weight) / num_objects for k, v in per_object.items()}
  return combine_losses(terms, config), terms
