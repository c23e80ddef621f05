r"""Converts between official SAM 2 PyTorch checkpoints and sam2_jax (Orbax) model checkpoints.

  python -m sam2_jax.convert --checkpoint=sam2.1_hiera_tiny.pt --config=sam2.1_hiera_t --output=DIR
  python -m sam2_jax.convert --checkpoint=sam2.1-hiera-tiny/model.safetensors --output=DIR   # Hugging Face
  python -m sam2_jax.convert --to-torch --checkpoint=DIR --output=sam2.1_hiera_tiny_jax.pt
  python -m sam2_jax.convert --checkpoint=WORKDIR --output=DIR   # a train.py run's newest step, params only

`--checkpoint` may also be a Hugging Face transformers `Sam2VideoModel` checkpoint (a `.safetensors` file
or the model folder), mapped back to the official keys (sam2_jax.checkpoint.hf). `--config` may be left
out: the checkpoint's keys and shapes decide it. The conversion is strict: every missing, unexpected or
mis-shaped key is reported in one error and nothing is written.
"""

import os
import sys

from absl import app
from absl import flags

from sam2_jax import build_sam
from sam2_jax.checkpoint import hf as hf_ckpt
from sam2_jax.checkpoint import orbax as orbax_ckpt
from sam2_jax.checkpoint import torch as torch_ckpt

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Official .pt checkpoint, a Hugging Face SAM 2 .safetensors "
                                  "file / model folder, or a train.py workdir or checkpoint step.")
_CONFIG = flags.DEFINE_string("config", None, "Official config name, e.g. sam2.1_hiera_t (default: inferred).")
_OUTPUT = flags.DEFINE_string("output", None, "Directory (or .pt file with --to-torch) to write; must not exist.")
_TO_TORCH = flags.DEFINE_bool("to-torch", False, "Write a sam2_jax checkpoint as an official-format .pt instead.")


def convert(checkpoint: str, output: str, config_name: str | None = None) -> str:
  """Converts `checkpoint` into an Orbax model checkpoint at `output`; returns the config name.

  A train.py workdir or checkpoint step is exported with its params only (no optimizer state).
  """
  directory = orbax_ckpt.find_checkpoint(checkpoint) if os.path.isdir(checkpoint) else None
  if directory is not None:
    metadata = orbax_ckpt.load_metadata(directory)
    model = build_sam.build_sam2(config_name, directory, apply_postprocessing=False)
    orbax_ckpt.save_model(output, model.params, {**metadata, "source": directory})
    return model.config.name
  state_dict = hf_ckpt.read_state_dict(checkpoint)
  config = build_sam.get_model_config(config_name or build_sam.infer_config_name(state_dict))
  params = build_sam.params_from_state_dict(state_dict, config)
  orbax_ckpt.save_model(output, params, {"config_name": config.name, "source": str(checkpoint)})
  return config.name


def convert_to_torch(checkpoint: str, output: str) -> str:
  """Writes the params of a sam2_jax checkpoint as an official `.pt`; returns the config name."""
  model = build_sam.build_sam2(checkpoint=checkpoint, apply_postprocessing=False)
  torch_ckpt.write_torch_checkpoint(output, build_sam.to_state_dict(model))
  return model.config.name


def main(argv):
  del argv
  for flag in (_CHECKPOINT, _OUTPUT):
    if not flag.value:
      raise app.UsageError(f"--{flag.name} is required.")
  try:
    if _TO_TORCH.value:
      name = convert_to_torch(_CHECKPOINT.value, _OUTPUT.value)
    else:
      name = convert(_CHECKPOINT.value, _OUTPUT.value, _CONFIG.value)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"Wrote {name} params to {_OUTPUT.value}")


if __name__ == "__main__":
  app.run(main)
