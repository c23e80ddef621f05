"""SAM 2 image encoder: Hiera trunk + FPN neck (the official `backbones/image_encoder.py`)."""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from sam2_jax.modeling.hiera import Hiera
from sam2_jax.modeling.layers import Conv
from sam2_jax.modeling.position_encoding import sine_pe_2d

Dtype = Any


class _Lateral(nn.Module):
  """1x1 lateral projection (the official `convs[i]` Sequential holding one `conv`)."""
  features: int
  dtype: Dtype = jnp.float32
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    return Conv(self.features, dtype=self.dtype, kernels=self.kernels, name="conv")(x)


class FpnNeck(nn.Module):
  """FPN neck: 1x1 laterals to `d_model`, nearest-2x top-down fusion (sum) on `fpn_top_down_levels`.

  Takes the trunk maps highest resolution first and returns (features, sine position encodings),
  both lists of (B, h, w, d_model) in the same order. Level 0 is the highest resolution;
  `convs_0` projects the lowest-resolution map (`backbone_channel_list` is lowest resolution first).
  """
  backbone_channel_list: Sequence[int]
  d_model: int = 256
  fpn_top_down_levels: Sequence[int] = (2, 3)
  dtype: Dtype = jnp.float32
  kernels: str = "auto"

  @nn.compact
  def __call__(self, xs: Sequence[jnp.ndarray]) -> tuple[list[jnp.ndarray], list[jnp.ndarray]]:
    n = len(self.backbone_channel_list)
    if len(xs) != n:
      raise ValueError(f"FpnNeck expects {n} feature maps, got {len(xs)}.")
    top_down_levels = set(self.fpn_top_down_levels)
    out, pos = [None] * n, [None] * n
    prev = None
    for i in reversed(range(n)):
      lateral = _Lateral(self.d_model, dtype=self.dtype, kernels=self.kernels, name=f"convs_{n - 1 - i}")(xs[i])
      if i in top_down_levels and prev is not None:
        top_down = jnp.repeat(jnp.repeat(prev.astype(jnp.float32), 2, axis=1), 2, axis=2)
        prev = lateral + top_down
      else:
        prev = lateral
      b, h, w, _ = prev.shape
      out[i] = prev
      pos[i] = jnp.broadcast_to(jnp.asarray(sine_pe_2d(h, w, self.d_model), prev.dtype), (b, h, w, self.d_model))
    return out, pos


class ImageEncoder(nn.Module):
  """Trunk + neck; drops the `scalp` lowest-resolution levels.

  Returns {"vision_features": (B, h, w, d_model) lowest kept level, "vision_pos_enc": [PEs],
  "backbone_fpn": [maps]}, lists highest resolution first, all channels last.
  """
  trunk: Hiera
  neck: FpnNeck
  scalp: int = 1

  def setup(self):
    if tuple(self.trunk.channel_list) != tuple(self.neck.backbone_channel_list):
      raise ValueError(f"Trunk channels {tuple(self.trunk.channel_list)} do not match the neck's "
                       f"backbone_channel_list {tuple(self.neck.backbone_channel_list)}.")

  def __call__(self, x: jnp.ndarray, deterministic: bool = True) -> dict[str, Any]:
    features, pos = self.neck(self.trunk(x, deterministic))
    if self.scalp > 0:
      features, pos = features[:-self.scalp], pos[:-self.scalp]
    return {"vision_features": features[-1], "vision_pos_enc": pos, "backbone_fpn": features}

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, dtype: Dtype | None = None,
                  **kwargs: Any) -> "ImageEncoder":
    """Builds the encoder from a `sam2_jax/configs.py` config (`trunk`, `neck`, `scalp`, `compute_dtype`, `kernels`).

    `kwargs` go to the constructor (e.g. `name`).
    """
    dtype = jnp.dtype(config.compute_dtype) if dtype is None else dtype
    t, nk = config.trunk, config.neck
    # parent=None: trunk and neck are adopted by the encoder (named "trunk" and "neck") even when
    # this is called inside another module's compact method.
    trunk = Hiera(embed_dim=t.embed_dim, num_heads=t.num_heads, stages=tuple(t.stages),
                  global_att_blocks=tuple(t.global_att_blocks), window_spec=tuple(t.window_spec),
                  window_pos_embed_bkg_spatial_size=tuple(t.window_pos_embed_bkg_spatial_size),
                  q_pool=t.q_pool, q_stride=tuple(t.q_stride), dim_mul=t.dim_mul, head_mul=t.head_mul,
                  drop_path_rate=t.drop_path_rate, remat=t.remat, dtype=dtype, kernels=config.kernels,
                  parent=None)
    neck = FpnNeck(backbone_channel_list=tuple(nk.backbone_channel_list), d_model=nk.d_model,
                   fpn_top_down_levels=tuple(nk.fpn_top_down_levels), dtype=dtype, kernels=config.kernels,
                   parent=None)
    return cls(trunk=trunk, neck=neck, scalp=config.scalp, **kwargs)
