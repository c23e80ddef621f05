"""Interactive prompt simulation of the official `SAM2Train`, as pure functions of a PRNG key.

Per batch (as the official trainer draws them): whether the initial conditioning frames get
clicks/boxes or the ground-truth mask, how many initial conditioning frames (frame 0 plus random
others), which frames receive correction clicks; per initial frame whether a noisy box or one
click is used; per correction round one click sampled uniformly from each object's error region
(false positives -> negative, false negatives -> positive), or from the ground truth.
"""

import jax
import jax.numpy as jnp
import ml_collections


def default_config() -> ml_collections.ConfigDict:
  """The official SAM 2.1 training values (MOSE fine-tune recipe)."""
  return ml_collections.ConfigDict(dict(
      prob_to_use_pt_input=0.5, prob_to_use_box_input=0.5, num_frames_to_correct=2, rand_frames_to_correct=True,
      num_init_cond_frames=2, rand_init_cond_frames=True, num_correction_pt_per_frame=7,
      prob_to_sample_from_gt=0.1, add_all_frames_to_correct_as_cond=True, box_noise=0.1, box_noise_bound=20))


def sample_clip_plan(key: jax.Array, num_frames: int, config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """Which frames are initial conditioning frames, which get corrections, and the processing order.

  Returns use_pt (), init_cond (T,), correct (T,), use_box (T,) booleans and order (T,): the initial
  conditioning frames first, then the others in time order.
  """
  t = num_frames
  k_pt, k_init, k_corr, k_perm_init, k_perm_corr, k_box = jax.random.split(key, 6)
  frames = jnp.arange(t)
  if t == 1:  # images: always one click (or box) and one correction frame
    use_pt = jnp.array(True)
    n_init = n_corr = jnp.array(1)
  else:
    use_pt = jax.random.uniform(k_pt) < config.prob_to_use_pt_input
    max_init = min(config.num_init_cond_frames, t)
    n_init = (jax.random.randint(k_init, (), 1, max_init + 1) if config.rand_init_cond_frames and max_init > 1
              else jnp.array(max_init))
    max_corr = min(config.num_frames_to_correct, t)
    n_corr = jnp.where(config.rand_frames_to_correct & (max_corr > n_init),
                       jax.random.randint(k_corr, (), n_init, max_corr + 1), jnp.maximum(max_corr, n_init))
  # Random ranks of frames 1..T-1 choose the extra initial frames, then the extra correction frames.
  rank_init = jnp.argsort(jax.random.permutation(k_perm_init, t - 1)) if t > 1 else jnp.zeros((0,), jnp.int32)
  init_cond = jnp.concatenate([jnp.array([True]), rank_init < n_init - 1])
  rank_corr = jnp.argsort(jnp.argsort(jnp.where(init_cond, -1.0, jax.random.uniform(k_perm_corr, (t,)))))
  # init frames have ranks 0..n_init-1; the next (n_corr - n_init) ranks are extra correction frames.
  correct = use_pt & (init_cond | (rank_corr < n_corr))
  order = jnp.argsort(jnp.where(init_cond, frames - t, frames), stable=True)
  use_box = jax.random.uniform(k_box, (t,)) < config.prob_to_use_box_input
  return dict(use_pt=use_pt, init_cond=init_cond, correct=correct, order=order, use_box=use_box)


def mask_to_box(masks: jax.Array) -> jax.Array:
  """(N, H, W) bool -> (N, 4) x0, y0, x1, y1 of the mask pixels (w, h, -1, -1 for empty masks)."""
  n, h, w = masks.shape
  xs = jnp.arange(w)[None, None, :]
  ys = jnp.arange(h)[None, :, None]
  return jnp.stack([jnp.min(jnp.where(masks, xs, w), axis=(1, 2)), jnp.min(jnp.where(masks, ys, h), axis=(1, 2)),
                    jnp.max(jnp.where(masks, xs, -1), axis=(1, 2)), jnp.max(jnp.where(masks, ys, -1), axis=(1, 2))],
                   axis=-1).astype(jnp.float32)


def sample_box_points(key: jax.Array, masks: jax.Array, noise: float = 0.1, noise_bound: float = 20.0
                      ) -> tuple[jax.Array, jax.Array]:
  """Noisy boxes of the masks as two points (N, 2, 2) with labels 2, 3 (the official sampler)."""
  n, h, w = masks.shape
  box = mask_to_box(masks)
  max_dx = jnp.minimum((box[:, 2] - box[:, 0]) * noise, noise_bound)
  max_dy = jnp.minimum((box[:, 3] - box[:, 1]) * noise, noise_bound)
  jitter = (2 * jax.random.uniform(key, (n, 4)) - 1) * jnp.stack([max_dx, max_dy, max_dx, max_dy], axis=-1)
  bounds = jnp.array([w, h, w, h], jnp.float32) - 1
  box = jnp.clip(box + jitter, 0, bounds)
  return box.reshape(n, 2, 2), jnp.broadcast_to(jnp.array([2, 3], jnp.int32), (n, 2))


def sample_points_from_errors(key: jax.Array, gt: jax.Array, pred: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One click per object uniformly from its error region: (N, 2) pixel (x, y) and (N,) labels.

  False positives give negative clicks, false negatives positive ones; a perfect prediction gives
  a negative click on the background (the official `sample_random_points_from_errors`).
  """
  n, h, w = gt.shape
  fp = ~gt & pred
  fn = gt & ~pred
  all_correct = jnp.all(gt == pred, axis=(1, 2))[:, None, None]
  allowed = jnp.stack([fp | (all_correct & ~gt), fn], axis=-1)  # (N, H, W, 2): negative, positive
  noise = jax.random.uniform(key, allowed.shape) * allowed
  idx = jnp.argmax(noise.reshape(n, -1), axis=-1)
  labels = (idx % 2).astype(jnp.int32)
  pix = idx // 2
  return jnp.stack([pix % w, pix // w], axis=-1).astype(jnp.float32), labels
