"""The official model's random initialisation, for training from scratch.

The official SAM 2 keeps PyTorch's module defaults: `nn.Linear`, `nn.Conv2d` and `nn.ConvTranspose2d`
weights and biases uniform in +-1/sqrt(fan_in) (fan_in: the weight's second dimension times its
kernel area, in the torch layout), `nn.Embedding` rows standard normal, LayerNorms ones and zeros;
only its bare parameters have their own (see `SAM2.setup`, `Hiera`). Flax's defaults differ (LeCun
normal kernels, zero biases, embeddings with std 1/sqrt(dim)), and from-scratch training is
sensitive to that. In the Flax layout every kernel's fan_in is the product of all but its last
dimension, convolutions and transposed convolutions included.
"""

import collections
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

Params = Any


def torch_default_init(params: Params, key: jax.Array) -> Params:
  """`params` (e.g. from `SAM2.init`) with kernels, their biases and embeddings drawn as PyTorch does.

  Each tensor gets its own key (one of `len(params)` split from `key`, by sorted path). Tensors of the same
  distribution and size are drawn by one vmapped call over their keys, which gives each the values of its own
  call (threefry's bits are a function of the key and the element's flat index) in a program with one draw per
  group: on the CPU each draw costs a fraction of a second of compile time, and there are hundreds of tensors.
  """
  flat = traverse_util.flatten_dict(params)
  keys = dict(zip(sorted(flat), jax.random.split(key, len(flat))))
  groups = collections.defaultdict(list)  # (distribution, size, dtype) -> [(path, uniform bound)]
  out = {}
  for path, value in flat.items():
    kernel = flat.get(path[:-1] + ("kernel",))
    if path[-1] in ("kernel", "bias") and kernel is not None:
      groups["uniform", value.size, value.dtype].append((path, 1.0 / np.sqrt(np.prod(kernel.shape[:-1]))))
    elif path[-1] == "embedding":
      groups["normal", value.size, value.dtype].append((path, None))
    else:
      out[path] = value
  for (distribution, size, dtype), members in groups.items():
    group_keys = jnp.stack([keys[path] for path, _ in members])
    if distribution == "uniform":
      bounds = jnp.asarray([bound for _, bound in members], dtype)
      draws = jax.vmap(functools.partial(_uniform, shape=(size,), dtype=dtype))(group_keys, bounds)
    else:
      draws = jax.vmap(functools.partial(jax.random.normal, shape=(size,), dtype=dtype))(group_keys)
    for (path, _), draw in zip(members, draws):
      out[path] = draw.reshape(flat[path].shape)
  return traverse_util.unflatten_dict(out)


def _uniform(key: jax.Array, bound: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
  return jax.random.uniform(key, shape, dtype, -bound, bound)
