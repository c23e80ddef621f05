"""Device mesh and parameter / batch shardings (`jax.sharding`, no pmap).

The mesh has a `data` axis (batch parallelism) and an `fsdp` axis (parameters sharded, batch
also split over it). Parameters are sharded on `fsdp` by a rule table, big_vision style: the
first matching regex on the parameter path decides; by default every parameter with at least
`min_size` elements is split along its largest dimension divisible by the `fsdp` size, all
others are replicated.
"""

import os
import re
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

Params = Any
DEFAULT_RULES = ((".*", "fsdp_largest"),)


def make_mesh(data: int = -1, fsdp: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, fsdp) mesh over all devices; data=-1 takes what fsdp leaves."""
  devices = list(devices if devices is not None else jax.devices())
  if data == -1:
    if len(devices) % fsdp:
      raise ValueError(f"fsdp={fsdp} does not divide the {len(devices)} devices.")
    data = len(devices) // fsdp
  if data * fsdp != len(devices):
    raise ValueError(f"A mesh of data={data} x fsdp={fsdp} needs {data * fsdp} devices, there are {len(devices)}.")
  return jax.make_mesh((data, fsdp), ("data", "fsdp"), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)


def _spec(path: str, shape: tuple[int, ...], rules, fsdp_size: int, min_size: int) -> P:
  for pattern, rule in rules:
    if re.fullmatch(pattern, path):
      if rule == "replicate" or fsdp_size == 1 or int(np.prod(shape)) < min_size:
        return P()
      if rule == "fsdp_largest":
        for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
          if shape[dim] % fsdp_size == 0:
            return P(*[("fsdp" if d == dim else None) for d in range(len(shape))])
        return P()
      raise ValueError(f"Unknown sharding rule {rule!r} for {path!r}.")
  return P()


def param_shardings(params: Params, mesh: Mesh, rules=DEFAULT_RULES, min_size: int = 2**16) -> Params:
  """NamedShardings for a param (or optimizer state) pytree of arrays or ShapeDtypeStructs."""
  fsdp_size = mesh.shape["fsdp"]

  def one(path, leaf):
    name = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
    shape = tuple(getattr(leaf, "shape", ()))
    return NamedSharding(mesh, _spec(name, shape, rules, fsdp_size, min_size))

  return jax.tree_util.tree_map_with_path(one, params)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """The leading (batch) axis split over both mesh axes."""
  return NamedSharding(mesh, P(("data", "fsdp")))


def global_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's part of the batch -> global arrays sharded on the batch axis."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


def maybe_initialize_distributed() -> bool:
  """`jax.distributed.initialize()` when the environment describes a multi-host job; False on one host.

  The job is described by SLURM, by Cloud TPU's worker list, or on any cluster by `JAX_COORDINATOR_ADDRESS`
  (host:port of process 0) with `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`. Must run before any other JAX call.
  """
  env = os.environ
  if env.get("JAX_COORDINATOR_ADDRESS") and env.get("JAX_NUM_PROCESSES"):
    jax.distributed.initialize(env["JAX_COORDINATOR_ADDRESS"], num_processes=int(env["JAX_NUM_PROCESSES"]),
                               process_id=int(env.get("JAX_PROCESS_ID", "0")))
    return True
  multi_host = (bool(env.get("JAX_COORDINATOR_ADDRESS")) or int(env.get("SLURM_NTASKS", "1") or 1) > 1
                or len(env.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1)
  if multi_host:
    jax.distributed.initialize()
  return multi_host
