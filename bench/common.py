"""Helpers shared by the benchmarks: interleaved timing, machine and thread facts, result tables."""

import os
import platform
import statistics
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np


def block_until_ready(out: Any) -> Any:
  """Waits for every JAX array in `out` (other leaves are left alone)."""
  return jax.tree.map(lambda x: x.block_until_ready() if isinstance(x, jax.Array) else x, out)


def time_interleaved(fns: dict[str, Callable[[], Any]], iters: int, warmup: int = 2,
                     settle: bool = False) -> dict[str, list[float]]:
  """Wall time (ms) of each zero-argument function, run in turn `iters` times after `warmup` runs each.

  Interleaving spreads machine noise (other jobs, frequency changes) evenly over the contenders.
  With `settle`, each timed run directly follows an untimed run of the same function, as in a
  training loop, instead of following the other contender's run: on this CPU a JAX train step
  right after a PyTorch one took 7.0-9.6 s against 5.6 s after its own (even 2 s after PyTorch
  finished), while PyTorch's step did not depend on what ran before it.
  Functions must return only when their result is computed (use `block_until_ready` for JAX).
  """
  for fn in fns.values():
    for _ in range(warmup):
      fn()
  times = {name: [] for name in fns}
  for _ in range(iters):
    for name, fn in fns.items():
      if settle:
        fn()
      start = time.perf_counter()
      fn()
      times[name].append(1e3 * (time.perf_counter() - start))
  return times


def median(xs: Sequence[float]) -> float:
  return statistics.median(xs)


def spread(xs: Sequence[float]) -> str:
  """"min-max" of a list of timings, for the noise column."""
  return f"{min(xs):.0f}-{max(xs):.0f}"


def cpu_model() -> str:
  """The CPU's model name (Linux), or the platform's processor string."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown CPU"


def thread_info(frameworks: Sequence[str] = ("torch", "jax")) -> str:
  """CPU and thread settings of the named frameworks (left at their defaults by the benchmarks).

  Only the named frameworks are imported: a process that times one side reports that side alone.
  """
  parts = [f"{cpu_model()}, cpus={os.cpu_count()}"]
  if "torch" in frameworks:
    import torch

    parts.append(f"torch {torch.__version__} threads={torch.get_num_threads()} "
                 f"interop={torch.get_num_interop_threads()}")
  if "jax" in frameworks:
    parts.append(f"jax {jax.__version__} backend={jax.default_backend()} devices={jax.device_count()} "
                 f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r} GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}")
  return " | ".join(parts)


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
  """Prints a Markdown table (strings as they are, floats with 3 significant decimals)."""
  def fmt(v):
    return f"{v:.3g}" if isinstance(v, float) else str(v)

  cells = [list(map(str, header))] + [[fmt(v) for v in row] for row in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
  lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
  lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
  print("\n".join(lines), flush=True)
