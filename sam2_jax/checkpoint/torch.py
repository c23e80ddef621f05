"""Official PyTorch state dicts <-> Flax params.

Flax param paths mirror the official module tree: `image_encoder.trunk.blocks.0.attn.qkv.weight`
is `params["image_encoder"]["trunk"]["blocks_0"]["attn"]["qkv"]["kernel"]`. So the mapping is
one rule for names (list indices become `_N` suffixes; weight -> kernel / scale / embedding) and
one for layouts (Linear kernels transposed, Conv and ConvTranspose kernels permuted from
(out|in, in|out, kh, kw) to (kh, kw, ., .), everything else unchanged), in both directions.
"""

import os
import re
from typing import Any, Mapping

import jax
import numpy as np

Params = Any

_LEAF_TO_TORCH = {"kernel": "weight", "scale": "weight", "embedding": "weight"}
_INDEXED = re.compile(r"(.+)_(\d+)")


def torch_key(path: tuple[str, ...]) -> str:
  """The official state-dict key of the Flax param at `path`."""
  parts = []
  for name in path[:-1]:
    m = _INDEXED.fullmatch(name)
    parts += [m[1], m[2]] if m else [name]
  return ".".join(parts + [_LEAF_TO_TORCH.get(path[-1], path[-1])])


def to_flax_layout(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
  if path[-1] == "kernel" and value.ndim == 2:
    return value.T
  if path[-1] == "kernel" and value.ndim == 4:
    return value.transpose(2, 3, 1, 0)
  return value


def to_torch_layout(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
  if path[-1] == "kernel" and value.ndim == 2:
    return value.T
  if path[-1] == "kernel" and value.ndim == 4:
    return value.transpose(3, 2, 0, 1)
  return value


def _flat(tree: Params) -> dict[tuple[str, ...], Any]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {tuple(k.key for k in path): leaf for path, leaf in leaves}


def _unflat(flat: Mapping[tuple[str, ...], Any]) -> dict:
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    for name in path[:-1]:
      node = node.setdefault(name, {})
    node[path[-1]] = value
  return tree


class CheckpointMismatchError(ValueError):
  """A state dict that does not fit the model: every missing, unexpected and mis-shaped key."""


def state_dict_to_params(state_dict: Mapping[str, Any], abstract_params: Params, prefix: str = "",
                         context: str = "") -> dict:
  """Converts an official state dict (torch tensors or arrays) to Flax params, strictly.

  `abstract_params` gives the expected tree (e.g. from `jax.eval_shape` of `init`); `prefix` selects
  a sub-module (`"image_encoder."`). Every missing key, unexpected key and shape mismatch is
  reported together in one `CheckpointMismatchError`.
  """
  state_dict = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
  expected = {torch_key(path): path for path in _flat(abstract_params)}
  targets = _flat(abstract_params)
  missing = sorted(set(expected) - set(state_dict))
  unexpected = sorted(set(state_dict) - set(expected))
  out, mismatched = {}, []
  for key, path in expected.items():
    if key not in state_dict:
      continue
    value = to_flax_layout(path, _to_numpy(state_dict[key]))
    if tuple(value.shape) != tuple(targets[path].shape):
      mismatched.append(f"{prefix}{key}: checkpoint {tuple(to_torch_layout(path, value).shape)}, "
                        f"model {tuple(to_torch_layout(path, np.empty(targets[path].shape)).shape)}")
      continue
    out[path] = value.astype(targets[path].dtype)
  if missing or unexpected or mismatched:
    lines = [f"The checkpoint does not match the model{context}:"]
    if missing:
      lines.append(f"  missing keys ({len(missing)}): " + ", ".join(prefix + k for k in missing))
    if unexpected:
      lines.append(f"  unexpected keys ({len(unexpected)}): " + ", ".join(prefix + k for k in unexpected))
    if mismatched:
      lines.append(f"  shape mismatches ({len(mismatched)}): " + "; ".join(mismatched))
    raise CheckpointMismatchError("\n".join(lines))
  return _unflat(out)


def params_to_state_dict(params: Params, prefix: str = "") -> dict[str, np.ndarray]:
  """Flax params -> {official key: array in the official layout} (the exact inverse)."""
  return {prefix + torch_key(path): np.ascontiguousarray(to_torch_layout(path, np.asarray(v)))
          for path, v in _flat(params).items()}


def _to_numpy(value: Any) -> np.ndarray:
  if hasattr(value, "detach"):  # a torch tensor
    value = value.detach().cpu()
    if str(value.dtype) == "torch.bfloat16":
      value = value.float()
    return value.numpy()
  return np.asarray(value)


def read_torch_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads the model state dict of an official `.pt` file (`{"model": state_dict, ...}`)."""
  path = os.fspath(path)
  if os.path.isdir(path):
    raise ValueError(f"Checkpoint {path!r} is a folder; expected an official .pt file.")
  if not os.path.isfile(path):
    raise ValueError(f"Checkpoint file {path!r} does not exist.")
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("Reading a PyTorch .pt checkpoint needs the `torch` package (CPU build is enough).") from e
  try:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises many types for a file that is not a checkpoint.
    raise ValueError(f"Could not read {path!r} as a PyTorch checkpoint: {e}") from e
  if isinstance(ckpt, Mapping) and "model" in ckpt and isinstance(ckpt["model"], Mapping):
    ckpt = ckpt["model"]
  if not isinstance(ckpt, Mapping) or not all(hasattr(v, "shape") for v in ckpt.values()):
    raise ValueError(f"{path!r} is not an official SAM 2 checkpoint: expected a dict with a 'model' state dict.")
  return {k: _to_numpy(v) for k, v in ckpt.items()}


def write_torch_checkpoint(path: str | os.PathLike, state_dict: Mapping[str, np.ndarray]) -> None:
  """Writes `{"model": state_dict}` as an official-format `.pt` (through a temporary file)."""
  import torch  # pylint: disable=g-import-not-at-top
  path = os.fspath(path)
  if os.path.exists(path):
    raise ValueError(f"Output file {path!r} already exists; refusing to overwrite it.")
  tmp = f"{path}.partial"
  try:
    torch.save({"model": {k: torch.from_numpy(np.array(v, np.float32)) for k, v in state_dict.items()}}, tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)

