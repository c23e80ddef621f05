"""SAM 2 (Segment Anything in Images and Videos) in JAX/Flax."""

from sam2_jax.build_sam import SAM2Model, build_sam2
from sam2_jax.predictors.image import SAM2ImagePredictor

__all__ = ["SAM2Model", "SAM2ImagePredictor", "build_sam2"]
