"""SAM 2 (Segment Anything in Images and Videos) in JAX/Flax.

The public names below are imported on first use, so that importing a light submodule (`sam2_jax.cli`,
`sam2_jax.huge_pages`) does not import JAX: the command-line tools restart themselves before their heavy imports.
"""

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "SAM2AutomaticMaskGenerator": "sam2_jax.predictors.automatic",
    "SAM2CameraPredictor": "sam2_jax.predictors.camera",
    "SAM2ImagePredictor": "sam2_jax.predictors.image",
    "SAM2Model": "sam2_jax.build_sam",
    "SAM2VideoPredictor": "sam2_jax.predictors.video",
    "build_sam2": "sam2_jax.build_sam",
    "build_sam2_camera_predictor": "sam2_jax.predictors.camera",
    "build_sam2_video_predictor": "sam2_jax.predictors.video",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
  if name in _EXPORTS:
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
  from sam2_jax.build_sam import SAM2Model, build_sam2
  from sam2_jax.predictors.automatic import SAM2AutomaticMaskGenerator
  from sam2_jax.predictors.camera import SAM2CameraPredictor, build_sam2_camera_predictor
  from sam2_jax.predictors.image import SAM2ImagePredictor
  from sam2_jax.predictors.video import SAM2VideoPredictor, build_sam2_video_predictor
