"""Model checkpoints on disk with Orbax: params plus the model config they belong to.

A model checkpoint is a directory with two items, `params` (a StandardSave pytree) and
`metadata` (JSON: config name and overrides). Orbax writes to a temporary directory and
renames it when complete, so an interrupted save never leaves a directory that looks finished.
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


def load_metadata(directory: str | os.PathLike) -> dict[str, Any]:
  """The metadata saved beside the params (config name and overrides)."""
  directory = os.path.abspath(os.fspath(directory))
  if not is_model_checkpoint(directory):
    raise ValueError(f"{directory!r} is not a sam2_jax model checkpoint (expected a 'params' item in it).")
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    return ckptr.restore(directory, ocp.args.Composite(metadata=ocp.args.JsonRestore()))["metadata"]


def load_params(directory: str | os.PathLike, abstract_params: Params) -> Params:
  """Restores params with the structure, shapes and dtypes of `abstract_params`."""
  directory = os.path.abspath(os.fspath(directory))
  if not is_model_checkpoint(directory):
    raise ValueError(f"{directory!r} is not a sam2_jax model checkpoint (expected a 'params' item in it).")
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), abstract_params)
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    return ckptr.restore(directory, ocp.args.Composite(params=ocp.args.StandardRestore(target)))["params"]
