"""Model checkpoints on disk with Orbax: params plus the model config they belong to.

A model checkpoint is a directory with two items, `params` (a StandardSave pytree) and
`metadata` (JSON: config name and overrides). Orbax writes to a temporary directory and
renames it when complete, so an interrupted save never leaves a directory that looks finished.

A step of a train.py run (`{workdir}/checkpoints/{step}`) holds the same `metadata` item beside
its `state` (params, optimizer state, step, RNG), so the model of any training step can be
loaded too: `find_checkpoint` resolves a workdir to its newest step.
"""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

Params = Any


def save_model(directory: str | os.PathLike, params: Params, metadata: dict[str, Any]) -> None:
  """Writes `params` and `metadata` to `directory`, which must not exist yet."""
  directory = os.path.abspath(os.fspath(directory))
  if os.path.exists(directory):
    raise ValueError(f"Output directory {directory!r} already exists; refusing to overwrite it.")
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    ckptr.save(directory, ocp.args.Composite(params=ocp.args.StandardSave(params),
                                             metadata=ocp.args.JsonSave(metadata)))


def is_model_checkpoint(directory: str | os.PathLike) -> bool:
  return os.path.isdir(os.path.join(os.fspath(directory), "params"))


def is_training_step(directory: str | os.PathLike) -> bool:
  """Whether `directory` is one finished step of a train.py run (its `state` and `metadata` items)."""
  return all(os.path.isdir(os.path.join(os.fspath(directory), item)) for item in ("state", "metadata"))


def find_checkpoint(path: str | os.PathLike) -> str | None:
  """The directory holding the model that `path` names, or None when `path` is no sam2_jax checkpoint.

  `path` may be a model checkpoint (`save_model`), one step of a train.py run
  (`{workdir}/checkpoints/{step}`), or a train.py workdir or its `checkpoints` folder, which name
  their newest finished step.
  """
  path = os.path.abspath(os.fspath(path))
  if is_model_checkpoint(path) or is_training_step(path):
    return path
  folder = os.path.join(path, "checkpoints")
  if not os.path.isdir(folder):
    if os.path.basename(path) != "checkpoints" or not os.path.isdir(path):
      return None
    folder = path
  steps = [int(n) for n in os.listdir(folder) if n.isdigit() and is_training_step(os.path.join(folder, n))]
  if not steps:
    raise ValueError(f"{path!r} is a training run without a finished checkpoint step that holds its model config "
                     f"(expected {os.path.join(folder, '<step>')} with 'state' and 'metadata' in it).")
  return os.path.join(folder, str(max(steps)))


def load_metadata(directory: str | os.PathLike) -> dict[str, Any]:
  """The metadata saved beside the params (config name and overrides)."""
  directory = os.path.abspath(os.fspath(directory))
  if not (is_model_checkpoint(directory) or is_training_step(directory)):
    raise ValueError(f"{directory!r} is not a sam2_jax model checkpoint (expected a 'params' item in it) nor a "
                     "training step (expected 'state' and 'metadata' items).")
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    return ckptr.restore(directory, ocp.args.Composite(metadata=ocp.args.JsonRestore()))["metadata"]


def load_params(directory: str | os.PathLike, abstract_params: Params) -> Params:
  """Restores params with the structure, shapes and dtypes of `abstract_params`.

  From a training step only the params are read, not the optimizer state.
  """
  directory = os.path.abspath(os.fspath(directory))
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), abstract_params)
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    if is_model_checkpoint(directory):
      return ckptr.restore(directory, ocp.args.Composite(params=ocp.args.StandardRestore(target)))["params"]
    if not is_training_step(directory):
      raise ValueError(f"{directory!r} is not a sam2_jax model checkpoint nor a training step.")
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    item = {"params": target}
    restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=sharding), item)
    state = ckptr.restore(directory, ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=item, restore_args=restore_args, partial_restore=True)))["state"]
  return state["params"]
