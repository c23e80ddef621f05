"""JAX's persistent compilation cache, on by default: a second launch loads its XLA executables instead of compiling.

Compiling the video predictor's propagation chunk takes over a minute on a GPU; with the cache, a
process that runs a program some earlier process compiled (same program, jax version and device)
reads the executable from disk. On GPUs JAX also keeps XLA's per-fusion autotuning results in the
same directory, so a program that changed in part is autotuned only in its new fusions.

The directory is ~/.cache/sam2_jax/xla unless the environment variable SAM2_JAX_COMPILATION_CACHE
names another (an empty value turns the cache off). JAX's own settings win: a cache directory
configured already (JAX_COMPILATION_CACHE_DIR, `jax.config.update`) is left as it is, thresholds
included, and JAX_ENABLE_COMPILATION_CACHE=false keeps the cache off.
"""

import os

import jax

DEFAULT_DIR = "~/.cache/sam2_jax/xla"
ENV_VAR = "SAM2_JAX_COMPILATION_CACHE"
# JAX's environment variable of the compile-time threshold: when set, the user's value is kept.
_MIN_COMPILE_TIME_ENV_VAR = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"


def enable(directory: str | None = None) -> str | None:
  """Turns on JAX's persistent compilation cache for this process; returns its directory (None: the cache is off).

  Args:
    directory: the cache directory when SAM2_JAX_COMPILATION_CACHE is not set (an empty string: no
      cache); None means ~/.cache/sam2_jax/xla.

  Every program is cached however fast it compiled (JAX's default skips those under 1 s, such as
  the mask decoder's), so that a second process compiles nothing. Call it before the first
  compilation whose executable should be cached; calling it again changes nothing, since the
  directory set first is then JAX's configured one.
  """
  configured = jax.config.jax_compilation_cache_dir
  if configured:
    return configured if jax.config.jax_enable_compilation_cache else None
  chosen = os.environ.get(ENV_VAR, DEFAULT_DIR if directory is None else directory)
  if not chosen or not jax.config.jax_enable_compilation_cache:
    return None
  path = os.path.abspath(os.path.expanduser(chosen))
  if _MIN_COMPILE_TIME_ENV_VAR not in os.environ:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_compilation_cache_dir", path)
  return path
