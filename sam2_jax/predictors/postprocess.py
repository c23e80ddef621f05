"""Mask post-processing: small holes and sprinkles by 8-connected components.

The official code runs these with a CUDA kernel and silently skips them on a CPU-only install;
here they always run: on the host with scipy (the image predictors), or on the device inside the
video predictor's jitted programs (`fill_holes_on_device`).
"""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

_EIGHT_CONNECTED = np.ones((3, 3), bool)


def small_components(binary: np.ndarray, max_area: float) -> np.ndarray:
  """Pixels of 8-connected components of `binary` (..., H, W) with area <= max_area."""
  out = np.zeros_like(binary, dtype=bool)
  flat_in, flat_out = binary.reshape(-1, *binary.shape[-2:]), out.reshape(-1, *binary.shape[-2:])
  for plane, dst in zip(flat_in, flat_out):
    labels, n = ndimage.label(plane, structure=_EIGHT_CONNECTED)
    if n:
      areas = np.bincount(labels.ravel())
      small = areas <= max_area
      small[0] = False
      dst[...] = small[labels]
  return out


def fill_holes(mask_logits: np.ndarray, max_area: float, threshold: float = 0.0, fill_value: float = 0.1) -> np.ndarray:
  """Background regions (logit <= threshold) of area <= max_area become `fill_value`."""
  if max_area <= 0:
    return mask_logits
  return np.where(small_components(mask_logits <= threshold, max_area), fill_value, mask_logits)


def fill_holes_on_device(mask_logits: jnp.ndarray, max_area: int, fill_value: float = 0.1) -> jnp.ndarray:
  """`fill_holes` (threshold 0) in JAX, for masks (..., H, W) on the device; traceable, `max_area` static.

  Every background pixel starts with its own label and takes the smallest label of its 8-neighbourhood
  in the background, for at most max_area - 1 rounds: a component of at most max_area pixels has
  settled on one label by then. A label marks a whole component when none of its pixels touches a
  background pixel of another label; such a component of at most max_area pixels is a hole.
  """
  if max_area <= 0:
    return mask_logits
  shape = mask_logits.shape
  planes = mask_logits.reshape(-1, *shape[-2:])
  background = planes <= 0
  size = planes.size  # the label of foreground pixels, above every pixel's index
  own = jnp.arange(size, dtype=jnp.int32).reshape(planes.shape)
  labels = jnp.where(background, own, size)

  def neighbourhood(x, init, op):
    return jax.lax.reduce_window(x, init, op, (1, 3, 3), (1, 1, 1), "SAME")

  def spread(carry):
    labels, _, rounds = carry
    new = jnp.where(background, neighbourhood(labels, jnp.int32(size), jax.lax.min), size)
    return new, jnp.any(new != labels), rounds + 1

  labels, _, _ = jax.lax.while_loop(lambda c: c[1] & (c[2] < max_area - 1), spread,
                                    (labels, jnp.bool_(True), jnp.int32(0)))
  lowest = neighbourhood(labels, jnp.int32(size), jax.lax.min)
  highest = neighbourhood(jnp.where(background, labels, -1), jnp.int32(-1), jax.lax.max)
  open_edge = background & ((lowest != labels) | (highest != labels))
  flat = labels.ravel()
  area = jax.ops.segment_sum(background.ravel().astype(jnp.int32), flat, num_segments=size + 1)
  open_edges = jax.ops.segment_sum(open_edge.ravel().astype(jnp.int32), flat, num_segments=size + 1)
  hole = background & (area[labels] <= max_area) & (open_edges[labels] == 0)
  return jnp.where(hole, jnp.asarray(fill_value, planes.dtype), planes).reshape(shape)


def fill_holes_and_sprinkles(mask_logits: np.ndarray, max_hole_area: float, max_sprinkle_area: float,
                             threshold: float = 0.0) -> np.ndarray:
  """The image predictor's post-processing: holes -> threshold + 10, sprinkles -> threshold - 10.

  Both kinds of region are found on the input logits (as the official `postprocess_masks` does).
  """
  out = fill_holes(mask_logits, max_hole_area, threshold, threshold + 10.0)
  if max_sprinkle_area > 0:
    out = np.where(small_components(mask_logits > threshold, max_sprinkle_area), threshold - 10.0, out)
  return out
