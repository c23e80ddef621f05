r"""Compile cost of the predictors' programs: StableHLO size, CPU compile time, H100 compile time (no GPU needed).

Three programs, built from abstract shapes (no weights, nothing executed):
  * `chunk`: one video propagation chunk, `predictors.video.propagate_chunk` over `--frames` frames for
    `--objects` objects (a scan of the whole tracking step), as `propagate_in_video` calls it;
  * `encoder`: the image predictor's `set_image` program, `predictors.image.embed_images` (Hiera,
    FPN neck and the high-resolution convolutions) on one image;
  * `train`: `training.step.train_step` (loss, gradients with remat, the official AdamW of
    `optimizer.make_optimizer`) on one clip of `--frames` frames and `--train_objects` objects, with the
    default prompt simulation (7 correction rounds), the state donated as train.py does.
For each, and for each target, one line gives the StableHLO op count of the lowered module (every
`stablehlo.*` op of every function, once per function), the time to trace and lower, and the
time of `Lowered.compile()`:
  * `cpu`: compiled for this machine's CPU;
  * `h100`: compiled ahead of time for an H100 (a CUDA topology described by `H100_TARGET_CONFIG`)
    on this CPU machine, through the CUDA PJRT plugin installed in `--cuda_plugin_dir` and put on
    PYTHONPATH for this measurement only. Autotuning needs a device, so it is off, as is Triton
    GEMM fusion (`--h100_xla_flags`); on a real GPU compilation also autotunes and takes longer.
    The program is traced on this machine, where `jax.default_backend()` is "cpu": when the model
    config has a `kernels` field, it is set to `--h100_kernels` for this target, and the tracing
    runs under `kernels.assume_gpu("9.0")` where the tree has it, so that attention goes to cuDNN
    as on an H100. (JAX itself, finding no GPU, takes cuDNN attention only up to head dim 128:
    memory attention, head dim 256, stays on XLA's attention here, but not on a real H100.)
The persistent compilation cache is off in every measurement.

Each (code tree, target) pair runs in its own subprocess whose PYTHONPATH and working directory
are that tree, so `--baseline=DIR` measures another copy of the code (whatever its model code is)
in the same run; the two sides alternate and their medians are compared (ratio new/old, below 1:
the new code is cheaper). Timings move with the machine's load: compare only within one run.

  mkdir /tmp/base_ac50abe && git archive ac50abe | tar -x -C /tmp/base_ac50abe
  .venv/bin/pip install --target /tmp/cuda_plugin "jax-cuda13-plugin[with-cuda]==0.10.2"   # the installed jax's version
  .venv/bin/python -m bench.compile_cost --baseline=/tmp/base_ac50abe
  .venv/bin/python -m bench.compile_cost --targets=cpu --programs=encoder --image_size=512   # a quick run
"""

import contextlib
import glob
import inspect
import json
import os
import subprocess
import sys
import time
from typing import Any, Callable

from absl import app, flags

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAMS = ("chunk", "encoder", "train")
TARGETS = ("cpu", "h100")

_CONFIG = flags.DEFINE_string("config", "sam2.1_hiera_t", "Model config name.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 1024, "Model input size (multiple of 32).")
_DTYPE = flags.DEFINE_string("dtype", "bfloat16", "Model compute dtype (float32, bfloat16).")
_FRAMES = flags.DEFINE_integer("frames", 8, "Frames of the propagation chunk (the predictor's chunk_size) and of "
                               "the train step's clip.")
_OBJECTS = flags.DEFINE_integer("objects", 1, "Objects tracked by the propagation chunk.")
_TRAIN_OBJECTS = flags.DEFINE_integer("train_objects", 3, "Objects per clip of the train step.")
_PROGRAMS = flags.DEFINE_list("programs", list(PROGRAMS), f"Programs to measure ({', '.join(PROGRAMS)}).")
_TARGETS = flags.DEFINE_list("targets", list(TARGETS), f"Compilation targets ({', '.join(TARGETS)}).")
_TREE = flags.DEFINE_string("tree", _REPO_ROOT, "The copy of the repository to measure (default: this checkout).")
_BASELINE = flags.DEFINE_string("baseline", None, "Another copy of the repository to measure in the same run "
                                "(e.g. made with `git archive ac50abe`).")
_REPEATS = flags.DEFINE_integer("repeats", 1, "Subprocesses per (tree, target); the median is reported.")
_CUDA_PLUGIN_DIR = flags.DEFINE_string("cuda_plugin_dir", "/tmp/cuda_plugin",
                                       "`pip install --target` folder holding jax-cuda13-plugin[with-cuda] of the "
                                       "installed jax version (for the h100 target).")
_H100_XLA_FLAGS = flags.DEFINE_string("h100_xla_flags",
                                      "--xla_gpu_autotune_level=0 --xla_gpu_enable_triton_gemm=false",
                                      "XLA_FLAGS of the h100 compilation.")
_H100_KERNELS = flags.DEFINE_string("h100_kernels", "xla",
                                    "The model config's `kernels` on the h100 target, where the config has one.")
_CHILD = flags.DEFINE_enum("child", None, list(TARGETS), "Internal: measure the programs for one target and print "
                           "one RESULT line each (run with the measured tree on PYTHONPATH).")

# The H100 SXM (80 GB): compute capability 9.0, 132 SMs. The fields are those of XLA's
# GpuTargetConfigProto that its GPU compiler reads; the versions are those of the CUDA 13 wheels.
H100_TARGET_CONFIG = """
gpu_device_info {
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_block_optin: 232448
  shared_memory_per_core: 233472
  threads_per_core_limit: 2048
  core_count: 132
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: 3352320000000
  l2_cache_size: 52428800
  clock_rate_ghz: 1.98
  device_memory_size: 84942979072
  cuda_compute_capability { major: 9 minor: 0 }
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}
platform_name: "CUDA"
dnn_version_info { major: 9 minor: 10 }
runtime_version { major: 13 minor: 0 }
device_description_str: "NVIDIA H100 80GB HBM3"
"""
H100_COMPUTE_CAPABILITY = "9.0"


# ------------------------------------------------------------------------------ child: one tree, one target
def _call_args(fn: Callable, known: dict[str, Any]) -> tuple[list, dict]:
  """Positional and keyword arguments of `fn` taken by parameter name from `known`.

  The programs are lowered through the predictors' own jitted functions; naming their parameters
  keeps this working across trees whose functions differ in order or in optional parameters.
  """
  args, kwargs, missing = [], {}, []
  for name, p in inspect.signature(fn).parameters.items():
    if name not in known:
      if p.default is inspect.Parameter.empty:
        missing.append(name)
      continue
    if p.kind == inspect.Parameter.KEYWORD_ONLY:
      kwargs[name] = known[name]
    else:
      args.append(known[name])
  if missing:
    raise ValueError(f"{fn.__module__}.{fn.__name__} takes parameters that bench/compile_cost.py does not know: "
                     f"{', '.join(missing)}; teach it their abstract values.")
  return args, kwargs


def _count_stablehlo_ops(lowered) -> int:
  """`stablehlo.*` ops in the lowered module, nested regions included, each function body counted once."""
  def count(op) -> int:
    n = int(op.name.startswith("stablehlo."))
    for region in op.regions:
      for block in region.blocks:
        n += sum(count(o.operation) for o in block.operations)
    return n

  return sum(count(op.operation) for op in lowered.compiler_ir("stablehlo").body.operations)


def measure(target: str) -> None:
  """Lowers and compiles each program for `target`; prints `RESULT {json}` lines."""
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding, PartitionSpec
  from sam2_jax.build_sam import POSTPROCESSING, SAM2Model, abstract_params, get_model_config
  from sam2_jax.modeling.memory_bank import MemoryBank
  from sam2_jax.predictors import image as image_predictor
  from sam2_jax.predictors import video as video_predictor

  overrides: dict[str, Any] = dict(image_size=_IMAGE_SIZE.value, compute_dtype=_DTYPE.value)
  if target == "h100":
    from jax.experimental import topologies

    topology = topologies.get_topology_desc(platform="cuda", target_config=H100_TARGET_CONFIG, topology="1x1x1")
    sharding = NamedSharding(topologies.make_mesh(topology, (1,), ("devices",)), PartitionSpec())
    if "kernels" in get_model_config(_CONFIG.value):
      overrides["kernels"] = _H100_KERNELS.value
  else:
    sharding = None

  def abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)

  size, frames = _IMAGE_SIZE.value, _FRAMES.value
  programs = {}
  if "chunk" in _PROGRAMS.value:
    config = get_model_config(_CONFIG.value, binarize_mask_from_pts_for_mem_enc=True, **POSTPROCESSING, **overrides)
    programs["chunk"] = (video_predictor.propagate_chunk, dict(
        module=SAM2Model(config, None).module, params=abstract(abstract_params(config)),
        bank=abstract(jax.eval_shape(lambda: MemoryBank.empty(config, _OBJECTS.value, 1))),
        frames=jax.ShapeDtypeStruct((frames, size, size, 3), jnp.uint8, sharding=sharding),
        frame_indices=jax.ShapeDtypeStruct((frames,), jnp.int32, sharding=sharding),
        is_cond=jax.ShapeDtypeStruct((frames, _OBJECTS.value), jnp.bool_, sharding=sharding),
        num_frames=jax.ShapeDtypeStruct((), jnp.int32, weak_type=True, sharding=sharding), reverse=False,
        cond_masks=jax.ShapeDtypeStruct((frames, _OBJECTS.value, 1, size // 4, size // 4), jnp.float32,
                                        sharding=sharding),
        video_size=(540, 960), fill_hole_area=8, non_overlap=False))  # the bedroom video, the official builder
  if "encoder" in _PROGRAMS.value:
    config = get_model_config(_CONFIG.value, **overrides)
    programs["encoder"] = (image_predictor.embed_images, dict(
        module=SAM2Model(config, None).module, params=abstract(abstract_params(config)),
        images=jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32, sharding=sharding)))

  if "train" in _PROGRAMS.value:
    config = get_model_config(_CONFIG.value, **overrides)
    programs["train"] = _train_program(config, abstract)

  for name, (fn, known) in programs.items():
    args, kwargs = _call_args(fn, known)
    start = time.perf_counter()
    with _as_traced_on_target(target):
      lowered = fn.lower(*args, **kwargs)
    lower_s = time.perf_counter() - start
    ops = _count_stablehlo_ops(lowered)
    start = time.perf_counter()
    lowered.compile()
    compile_s = time.perf_counter() - start
    print("RESULT " + json.dumps(dict(program=name, target=target, ops=ops, lower_s=lower_s, compile_s=compile_s,
                                      kernels=known["module"].config.get("kernels", "-"))), flush=True)


def _train_program(config, abstract: Callable[[Any], Any]) -> tuple[Callable, dict[str, Any]]:
  """The jitted train step of `config` and its abstract (state, batch)."""
  import jax
  import jax.numpy as jnp
  from sam2_jax.build_sam import abstract_params
  from sam2_jax.modeling.sam2 import SAM2
  from sam2_jax.training import optimizer, prompt_simulation, step

  module, params = SAM2(config), abstract_params(config)
  tx = optimizer.make_optimizer(optimizer.default_config(), params, 1000)
  prompts = prompt_simulation.default_config()
  state = jax.eval_shape(lambda p: step.TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p),
                                                   rng=jax.random.key(0)), params)
  t, o, s = _FRAMES.value, _TRAIN_OBJECTS.value, config.image_size
  batch = dict(images=jax.ShapeDtypeStruct((1, t, s, s, 3), jnp.uint8),
               masks=jax.ShapeDtypeStruct((1, t, o, s, s), jnp.bool_),
               obj_valid=jax.ShapeDtypeStruct((1, o), jnp.bool_))
  jitted = jax.jit(lambda state, batch: step.train_step(module, tx, state, batch, prompts), donate_argnums=0)
  return jitted, dict(state=abstract(state), batch=abstract(batch), module=module)


def _as_traced_on_target(target: str) -> contextlib.AbstractContextManager:
  """For the h100 target, the kernel choices of an H100 (cuDNN attention) where the tree makes them."""
  try:
    from sam2_jax.modeling import kernels
  except ImportError:  # a tree from before kernels were chosen per backend
    return contextlib.nullcontext()
  if target == "h100" and hasattr(kernels, "assume_gpu"):
    return kernels.assume_gpu(H100_COMPUTE_CAPABILITY)
  return contextlib.nullcontext()


# ------------------------------------------------------------------------------ parent
def _check_plugin(plugin_dir: str, jax_version: str) -> None:
  """Raises ValueError unless `plugin_dir` holds the CUDA plugin of `jax_version`."""
  if not glob.glob(os.path.join(plugin_dir, f"jax_cuda*_plugin-{jax_version}.dist-info")):
    found = sorted(os.path.basename(p) for p in glob.glob(os.path.join(plugin_dir, "jax_cuda*_plugin-*.dist-info")))
    raise ValueError(f"--cuda_plugin_dir={plugin_dir!r} holds no jax CUDA plugin {jax_version} (found: "
                     f"{', '.join(found) or 'none'}); install it with: pip install --target {plugin_dir} "
                     f"'jax-cuda13-plugin[with-cuda]=={jax_version}'.")


def _child_command(target: str) -> list[str]:
  flag_values = dict(child=target, config=_CONFIG.value, image_size=_IMAGE_SIZE.value, dtype=_DTYPE.value,
                     frames=_FRAMES.value, objects=_OBJECTS.value, train_objects=_TRAIN_OBJECTS.value,
                     programs=",".join(_PROGRAMS.value), h100_kernels=_H100_KERNELS.value)
  # -P: the script's folder (bench/) stays off sys.path, so that only the measured tree is importable.
  return [sys.executable, "-P", os.path.abspath(__file__)] + [f"--{k}={v}" for k, v in flag_values.items()]


def run_child(tree: str, target: str) -> list[dict[str, Any]]:
  """Measures `target` in a subprocess that imports the code of `tree`; returns its RESULT records."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_ENABLE_COMPILATION_CACHE="false", PYTHONPATH=tree)
  if target == "h100":
    env.update(PYTHONPATH=os.pathsep.join([tree, os.path.abspath(_CUDA_PLUGIN_DIR.value)]),
               JAX_SKIP_CUDA_CONSTRAINTS_CHECK="1", XLA_FLAGS=_H100_XLA_FLAGS.value)
  proc = subprocess.run(_child_command(target), cwd=tree, env=env, capture_output=True, text=True, check=False)
  records = [json.loads(line[len("RESULT "):]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
  if proc.returncode or len(records) != len(_PROGRAMS.value):
    raise RuntimeError(f"measuring {target} on {tree} failed (exit status {proc.returncode}):\n{proc.stderr[-4000:]}")
  return records


def _repo_copy(flag: str, path: str) -> str:
  """The absolute path of a copy of this repository given as --flag=path; ValueError if it is none."""
  tree = os.path.abspath(os.path.expanduser(path))
  if not os.path.isfile(os.path.join(tree, "sam2_jax", "predictors", "video.py")):
    raise ValueError(f"--{flag}={path!r} is not a copy of this repository (it has no sam2_jax/predictors/video.py).")
  return tree


def check_flags() -> dict[str, str]:
  """Validates the flags before anything runs; returns the trees to measure ({label: path})."""
  import jax

  for name, values, valid in (("programs", _PROGRAMS.value, PROGRAMS), ("targets", _TARGETS.value, TARGETS)):
    unknown = [v for v in values if v not in valid]
    if unknown or not values:
      raise ValueError(f"--{name}={','.join(values)}: expected a non-empty list of {', '.join(valid)}.")
  for name, value in (("frames", _FRAMES.value), ("objects", _OBJECTS.value), ("train_objects", _TRAIN_OBJECTS.value),
                      ("repeats", _REPEATS.value)):
    if value < 1:
      raise ValueError(f"--{name} must be at least 1, got {value}.")
  if _IMAGE_SIZE.value < 64 or _IMAGE_SIZE.value % 32:
    raise ValueError(f"--image_size must be a multiple of 32 (at least 64), got {_IMAGE_SIZE.value}.")
  if _DTYPE.value not in ("float32", "bfloat16"):
    raise ValueError(f"--dtype must be float32 or bfloat16, got {_DTYPE.value!r}.")
  if "h100" in _TARGETS.value:
    _check_plugin(_CUDA_PLUGIN_DIR.value, jax.__version__)
  trees = {"new": _repo_copy("tree", _TREE.value)}
  if _BASELINE.value is not None:
    trees = {"old": _repo_copy("baseline", _BASELINE.value), **trees}
  return trees


def main(argv):
  if len(argv) > 1:
    print(f"error: unexpected arguments: {' '.join(argv[1:])}", file=sys.stderr)
    sys.exit(2)
  if _CHILD.value:
    measure(_CHILD.value)
    return
  try:
    trees = check_flags()
  except ValueError as e:
    print("error: " + " ".join(str(e).split()), file=sys.stderr)
    sys.exit(2)
  import jax
  from bench import common  # here, not above: the subprocesses import only the measured tree

  print(f"{common.cpu_model()}, cpus={os.cpu_count()} | jax {jax.__version__} | {_CONFIG.value} @ {_IMAGE_SIZE.value} "
        f"{_DTYPE.value}, chunk of {_FRAMES.value} frames x {_OBJECTS.value} object(s), train clip of "
        f"{_FRAMES.value} frames x {_TRAIN_OBJECTS.value} objects | h100 XLA_FLAGS="
        f"{_H100_XLA_FLAGS.value!r} | trees: {', '.join(f'{k}={v}' for k, v in trees.items())}", flush=True)
  results: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
  for repeat in range(_REPEATS.value):
    order = list(trees.items()) if repeat % 2 == 0 else list(trees.items())[::-1]
    for target in _TARGETS.value:
      for label, tree in order:
        for r in run_child(tree, target):
          results.setdefault((r["program"], r["target"], label), []).append(r)
          print(f"  {label} {target} {r['program']}: {r['ops']} StableHLO ops, lowered in {r['lower_s']:.1f} s, "
                f"compiled in {r['compile_s']:.1f} s (kernels: {r['kernels']})", flush=True)

  rows = []
  for program in _PROGRAMS.value:
    for target in _TARGETS.value:
      medians = {}
      for label in trees:
        records = results[program, target, label]
        compile_s = [r["compile_s"] for r in records]
        medians[label] = (records[0]["ops"], common.median(compile_s))
        rows.append([program, target, label, records[0]["ops"], f"{common.median([r['lower_s'] for r in records]):.1f}",
                     f"{medians[label][1]:.1f} ({min(compile_s):.1f}-{max(compile_s):.1f})", "-", "-"])
      if len(trees) == 2:
        rows[-1][-2] = f"{medians['new'][0] / medians['old'][0]:.2f}"
        rows[-1][-1] = f"{medians['new'][1] / medians['old'][1]:.2f}"
  common.print_table(["program", "target", "tree", "StableHLO ops", "lower s", "compile s (min-max)",
                      "ops new/old", "compile new/old"], rows)


if __name__ == "__main__":
  app.run(main)
