"""The official model's random initialisation, for training from scratch.

The official SAM 2 keeps PyTorch's module defaults: `nn.Linear`, `nn.Conv2d` and `nn.ConvTranspose2d`
weights and biases uniform in +-1/sqrt(fan_in) (fan_in: the weight's second dimension times its
kernel area, in the torch layout), `nn.Embedding` rows standard normal, LayerNorms ones and zeros;
only its bare parameters have their own (see `SAM2.setup`, `Hiera`). Flax's defaults differ (LeCun
normal kernels, zero biases, embeddings with std 1/sqrt(dim)), and from-scratch training is
sensitive to that. In the Flax layout every kernel's fan_in is the product of all but its last
dimension, convolutions and transposed convolutions included.
"""

from typing import Any

import jax
import numpy as np
from flax import traverse_util

Params = Any


def torch_default_init(params: Params, key: jax.Array) -> Params:
  """`params` (e.g. from `SAM2.init`) with kernels, their biases and embeddings drawn as PyTorch does."""
  flat = traverse_util.flatten_dict(params)
  keys = dict(zip(sorted(flat), jax.random.split(key, len(flat))))
  out = {}
  for path, value in flat.items():
    kernel = flat.get(path[:-1] + ("kernel",))
    if path[-1] in ("kernel", "bias") and kernel is not None:
      bound = 1.0 / np.sqrt(np.prod(kernel.shape[:-1]))
      out[path] = jax.random.uniform(keys[path], value.shape, value.dtype, -bound, bound)
    elif path[-1] == "embedding":
      out[path] = jax.random.normal(keys[path], value.shape, value.dtype)
    else:
      out[path] = value
  return traverse_util.unflatten_dict(out)
