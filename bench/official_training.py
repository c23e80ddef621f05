"""The official training model (`training.model.sam2.SAM2Train`), its batch layout and loss, for the benchmarks."""

import dataclasses
import importlib
import importlib.util
import os
import sys
import types
from typing import Any

import numpy as np

from sam2_jax.predictors import transforms

MOSE_YAML = "configs/sam2.1_training/sam2.1_hiera_b+_MOSE_finetune.yaml"


def _import_official_training() -> None:
  """Imports the official `training` package, standing in for what it needs but this venv lacks.

  `tensordict.tensorclass` (only used as a dataclass with a `batch_size` here) and
  `training.trainer` (which imports tensorboard; the loss takes only `CORE_LOSS_KEY` from it).
  """
  if "tensordict" not in sys.modules and importlib.util.find_spec("tensordict") is None:
    def tensorclass(cls):
      cls = dataclasses.dataclass(cls)
      init = cls.__init__

      def __init__(self, *args, batch_size=None, **kwargs):
        init(self, *args, **kwargs)
        self.batch_size = list(batch_size or [])

      cls.__init__ = __init__
      return cls

    sys.modules["tensordict"] = types.SimpleNamespace(tensorclass=tensorclass)
  try:
    importlib.import_module("training.trainer")
  except ImportError:
    sys.modules["training.trainer"] = types.SimpleNamespace(CORE_LOSS_KEY="core_loss")


def official_model_module() -> types.ModuleType:
  """The official `training.model.sam2` module: SAM2Train and the prompt samplers it calls."""
  _import_official_training()
  return importlib.import_module("training.model.sam2")


def build_official_train(name: str, image_size: int, trunk: dict[str, Any] | None = None,
                         memory_attention: dict[str, Any] | None = None, **fields: Any):
  """The official SAM2Train (train mode) of the MOSE recipe with `name`'s trunk and neck sizes.

  `trunk` overrides Hiera arguments (as our model config's `trunk`), `memory_attention` its
  `num_layers` / `dim_feedforward` / `dropout` (the layer's and its attentions'), and `fields` SAM2Train
  arguments (e.g. `prob_to_use_pt_input_for_train`).
  """
  import sam2  # pylint: disable=g-import-not-at-top
  from bench import oracle  # pylint: disable=g-import-not-at-top
  from hydra.utils import instantiate  # pylint: disable=g-import-not-at-top
  from omegaconf import OmegaConf  # pylint: disable=g-import-not-at-top

  _import_official_training()
  root = os.path.dirname(sam2.__file__)
  recipe = OmegaConf.load(os.path.join(root, MOSE_YAML))
  recipe.scratch.resolution = image_size
  sizes = OmegaConf.load(os.path.join(root, oracle.official_config_path(name))).model.image_encoder
  model = OmegaConf.create(OmegaConf.to_container(recipe.trainer.model, resolve=True))
  model.image_encoder.trunk = OmegaConf.merge(model.image_encoder.trunk, sizes.trunk, trunk or {})
  embed_dim = model.image_encoder.trunk.embed_dim
  model.image_encoder.neck.backbone_channel_list = [embed_dim * 2 ** i for i in reversed(range(4))]
  for key, value in (memory_attention or {}).items():
    target = model.memory_attention if key == "num_layers" else model.memory_attention.layer
    target[key] = value
  for attention in ("self_attention", "cross_attention"):
    model.memory_attention.layer[attention].feat_sizes = [image_size // 16] * 2
    model.memory_attention.layer[attention].dropout = model.memory_attention.layer.dropout  # one rate, as ours
  for key, value in fields.items():
    model[key] = value
  return instantiate(model, _recursive_=True).train()


def official_batch(data: dict[str, np.ndarray]):
  """The batch as the official `BatchedVideoDatapoint` (objects of clip b at b * O + o)."""
  import torch  # pylint: disable=g-import-not-at-top
  from training.utils.data_utils import BatchedVideoDatapoint, BatchedVideoMetaData  # pylint: disable=g-import-not-at-top

  b, t, s = data["images"].shape[:3]
  o = data["masks"].shape[2]
  images = transforms.normalize(data["images"])
  img_batch = torch.from_numpy(np.ascontiguousarray(images.transpose(1, 0, 4, 2, 3)))  # T, B, 3, S, S
  masks = torch.from_numpy(np.ascontiguousarray(data["masks"].transpose(1, 0, 2, 3, 4).reshape(t, b * o, s, s)))
  frame, clip, obj = np.meshgrid(np.arange(t), np.arange(b), np.arange(o), indexing="ij")
  frame, clip, obj = (x.reshape(t, b * o) for x in (frame, clip, obj))
  return BatchedVideoDatapoint(
      img_batch=img_batch, obj_to_frame_idx=torch.from_numpy(np.stack([frame, clip], -1)).int(), masks=masks,
      metadata=BatchedVideoMetaData(unique_objects_identifier=torch.from_numpy(np.stack([clip, obj, frame], -1)),
                                    frame_orig_size=torch.full((t, b * o, 2), s)),
      dict_key="all", batch_size=[t])


def official_loss():
  """The recipe's `MultiStepMultiMasksAndIous` (mask 20, dice 1, iou 1, class 1); its `core_loss` is the total."""
  from training.loss_fns import MultiStepMultiMasksAndIous  # pylint: disable=g-import-not-at-top
  return MultiStepMultiMasksAndIous(
      weight_dict={"loss_mask": 20, "loss_dice": 1, "loss_iou": 1, "loss_class": 1}, supervise_all_iou=True,
      iou_use_l1_loss=True, pred_obj_scores=True, focal_gamma_obj_score=0.0, focal_alpha_obj_score=-1.0)
