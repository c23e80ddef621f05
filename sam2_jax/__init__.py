"""SAM 2 (Segment Anything in Images and Videos) in JAX/Flax."""

from sam2_jax.build_sam import SAM2Model, build_sam2
from sam2_jax.predictors.automatic import SAM2AutomaticMaskGenerator
from sam2_jax.predictors.camera import SAM2CameraPredictor, build_sam2_camera_predictor
from sam2_jax.predictors.image import SAM2ImagePredictor
from sam2_jax.predictors.video import SAM2VideoPredictor, build_sam2_video_predictor

__all__ = ["SAM2AutomaticMaskGenerator", "SAM2CameraPredictor", "SAM2ImagePredictor", "SAM2Model", "SAM2VideoPredictor",
           "build_sam2", "build_sam2_camera_predictor", "build_sam2_video_predictor"]
