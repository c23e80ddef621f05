r"""Compiles a training config's train step ahead of time for a TPU topology, on a machine without a TPU.

  pip install --target /opt/libtpu "libtpu==0.0.42.*"     # the libtpu that jax[tpu] 0.10.2 pins
  PYTHONPATH=/opt/libtpu python -m sam2_jax.aot_compile --config=configs/train.py:sa1b_sav_b+ --topology=v5p:2x2x1

The program is the one train.py runs (`step.program`): the config's (data, fsdp) mesh over the topology's devices,
the state sharded by its rules, and the global batch of each data source with a positive weight (image and video
batches are two programs; their files need not exist). Tracing happens on this host's CPU, so a model config whose
kernels are "auto" gets the accelerator set ("xla") instead of the CPU one. The memory of a program on one device is
that of its arguments and outputs, less the donated state, plus its temporaries (`compiled.memory_analysis()`); the
largest over the programs is compared with the chip's HBM. The last line is

  aot_compile: topology=v5p:2x2x1 devices=4 compile_s=<s> memory_per_device_gib=<x> hbm_gib=95.0 fits=yes

and a step that does not fit (in `--hbm_gib` if given) then ends in `error: ...` and exit status 1 (bad flags or
config: exit status 2). A program the TPU compiler itself refuses for its HBM is reported the same way, with the
compiler's figures: the temporaries it needs and the HBM it has.
"""

import os
import re
import sys
import time

from absl import flags
from ml_collections import config_flags

from sam2_jax import cli

# Before libtpu loads: this host has no TPU metadata server to ask, and compiling only, any number of processes may
# load libtpu at once (it otherwise takes a host-wide lock).
os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config, e.g. configs/train.py:sa1b_sav_b+.")
_TOPOLOGY = flags.DEFINE_string("topology", None, "TPU topology, e.g. v5e:2x2, v5p:2x2x1, v6e:2x2.")
_HBM_GIB = flags.DEFINE_float("hbm_gib", None, "Memory per device to fit in (GiB); default: the chip's HBM.",
                               lower_bound=0)
flags.mark_flags_as_required(["config", "topology"])

# HBM per device (GiB), by the `device_kind` that libtpu's topology reports.
HBM_GIB = {"TPU v2": 8, "TPU v3": 16, "TPU v4": 32, "TPU v5 lite": 16, "TPU v5": 95, "TPU v6 lite": 32}
LIBTPU_HINT = 'pip install --target DIR "libtpu==0.0.42.*" and put DIR on PYTHONPATH'


def topology_devices(name: str) -> list:
  """The devices of TPU topology `name` (compile-only: nothing can run on them)."""
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  try:
    return list(topologies.get_topology_desc(topology_name=name, platform="tpu").devices)
  except Exception as e:  # pylint: disable=broad-except
    message = " ".join(str(e).split())
    if any(s in message.lower() for s in ("not installed", "libtpu", "unknown backend")):
      raise ValueError(f"--topology {name!r}: no TPU compiler ({message}); {LIBTPU_HINT}.") from None
    raise ValueError(f"--topology {name!r} is not a TPU topology libtpu knows ({message}); expected e.g. v5e:2x2, "
                     "v5p:2x2x1 or v6e:2x2.") from None


def device_bytes(compiled) -> int:
  """Peak bytes of an executable on one device: arguments + outputs - donated (aliased) buffers + temporaries."""
  m = compiled.memory_analysis()
  return (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes
          + m.generated_code_size_in_bytes)


def compiler_refusal(message: str) -> tuple[float, float] | None:
  """(GiB needed, GiB available) per device when the TPU compiler refused a program for its HBM, else None."""
  match = re.search(r"RESOURCE_EXHAUSTED: .*memory required for .*\(([\d.]+)G\) exceeds available HBM \(([\d.]+)G\)",
                    message)
  return (float(match[1]), float(match[2])) if match else None


def fit_report(topology: str, num_devices: int, compile_s: float, peak_bytes: int, hbm_gib: float | None,
               device_kind: str) -> tuple[str, str | None]:
  """The `aot_compile:` line, and the error line when the step does not fit in `hbm_gib` (None: unknown HBM)."""
  fits = hbm_gib is None or peak_bytes <= hbm_gib * 2**30
  line = (f"aot_compile: topology={topology} devices={num_devices} compile_s={compile_s:.1f} "
          f"memory_per_device_gib={peak_bytes / 2**30:.2f} hbm_gib={'unknown' if hbm_gib is None else f'{hbm_gib:g}'} "
          f"fits={'yes' if fits else 'no'}")
  error = None if fits else (
      f"error: the train step needs {peak_bytes / 2**30:.2f} GiB per device and the topology's devices "
      f"({device_kind}) have {hbm_gib:g} GiB: lower the batch sizes, shard the state over more devices "
      "(config.mesh.fsdp) or use a larger topology.")
  return line, error


def main() -> None:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from sam2_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from sam2_jax.training import sharding, step  # pylint: disable=g-import-not-at-top

  config, topology = _CONFIG.value, _TOPOLOGY.value
  kernels = config.model_overrides.get("kernels", "auto")
  model_config = step.model_config(config, kernels="xla" if kernels == "auto" else kernels)
  devices = topology_devices(topology)
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, devices)
  prog = step.program(config, model_config, mesh)
  batch_sharding = sharding.batch_sharding(mesh)
  inputs = pipeline.model_input_shapes(config.data)
  for name, shapes in inputs.items():
    if shapes["images"][0][0] % len(devices):
      raise ValueError(f"config.data.sources.{name}.batch_size ({shapes['images'][0][0]}) must be a multiple of the "
                       f"{len(devices)} devices of {topology}.")
  kind = devices[0].device_kind
  hbm = _HBM_GIB.value if _HBM_GIB.value is not None else HBM_GIB.get(kind)
  start, peak = time.perf_counter(), 0
  for shapes in inputs.values():
    batch = {k: jax.ShapeDtypeStruct(shape, np.dtype(dtype), sharding=batch_sharding)
             for k, (shape, dtype) in shapes.items()}
    try:
      compiled = prog.train_step.lower(prog.abstract_state, batch).compile()
    except jax.errors.JaxRuntimeError as e:
      if not (refusal := compiler_refusal(str(e))):
        raise
      # Its temporaries alone exceed the chip's HBM: report the compiler's figures (the need is a lower bound).
      peak, hbm = int(refusal[0] * 2**30), refusal[1]
      break
    peak = max(peak, device_bytes(compiled))
  line, error = fit_report(topology, len(devices), time.perf_counter() - start, peak, hbm, kind)
  print(line)
  if error:
    print(error, file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  cli.run(main, _CONFIG)
