r"""Video propagation speed: sam2-jax `SAM2VideoPredictor` vs the official one on the same machine.

Both predictors get the same config and weights (the official random init, perturbed, with the
object-score bias raised so that objects are tracked; converted with `params_from_state_dict`)
and the same clicks on frame 0 of a JPEG folder, then `propagate_in_video` runs from frame 0 over
`--num_frames` frames. Frames per second count the frames yielded by a full propagation (wall
clock, consuming the video-resolution masks); frame loading (`init_state`) and the clicks are not
timed. The official predictor loops over objects on each frame; ours tracks all objects in one
batched step.

Each side is timed as its users run it: every contender (the official predictor, then ours in
each `--dtypes` compute dtype) runs in a process of its own, one after the other. The official
one runs in this command's environment under `torch.inference_mode()`; ours restarts itself with
glibc's huge-pages tunable as our command-line tools do (`sam2_jax.huge_pages`) and never imports
torch. In each process every case (frame count x object count) first runs one untimed full
propagation (warm-up: compilation on our side; on both sides the FLOPs are counted on it), then
`--repeats` timed ones (median reported).

  .venv/bin/python -m bench.video --num_frames=4,16 --objects=1,3 --memory_frames=   # t@1024 (the README)
  .venv/bin/python -m bench.video --num_frames=2 --objects=1 --image_size=128 --memory_frames=   # a smoke run

Also printed:
  * GFLOP per frame that each side executes in matmuls, convolutions and attention (2 per
    multiply-add), over the counted propagation divided by the frames it yielded: ours from the
    jaxprs of the propagation chunks it ran (`sam2_jax.training.flops.ExecutedFlops`, with the
    memory bank's slot flags and frame indices known, so control flow that depends on them is
    followed; padding frames of the last chunk and conditioning frames, computed and discarded,
    count), the official's with `torch.utils.flop_counter.FlopCounterMode`. Achieved GFLOP/s =
    GFLOP per frame x frames/s, against the side's own measured rate of a large matmul (torch
    float32 for the official, JAX in the compute dtype for ours; best of before and after).
  * Mask agreement: IoU of the masks (logits > 0) against the official ones, and of bfloat16
    against our float32, min and mean over frames and objects.
  * Peak memory: one JAX-only subprocess per `--memory_frames` count propagates one click through
    that many frames (JPEG folder, the bedroom frames repeated) at `--memory_image_size`, after
    compiling; the peak resident set size while propagating (sampled every 10 ms) and the process
    high-water mark (VmHWM, which includes compilation) are printed, and the ratios of the
    longest run to the shortest.
"""

import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from bench import common
from sam2_jax import huge_pages
from sam2_jax.build_sam import POSTPROCESSING, SAM2Model, build_sam2, get_model_config, params_from_state_dict
from sam2_jax.predictors.video_frames import list_jpeg_frames

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_FRAMES_DIR = flags.DEFINE_string("frames_dir", os.path.join(_REPO_ROOT, "..", "shared", "data", "bedroom"),
                                  "JPEG frame folder (frames are repeated if it has fewer than --num_frames).")
_NUM_FRAMES = flags.DEFINE_list("num_frames", ["16"], "Frame counts to propagate through (from the clicked frame 0).")
_CONFIG = flags.DEFINE_string("config", "sam2.1_hiera_t", "Model config name.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 1024, "Model input size (multiple of 32).")
_OBJECTS = flags.DEFINE_list("objects", ["1", "3"], "Numbers of objects to track (one click each, at most 4).")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Our compute dtypes (float32, bfloat16).")
_SKIP_OFFICIAL = flags.DEFINE_bool("skip_official", False, "Time only the JAX predictor.")
_REPEATS = flags.DEFINE_integer("repeats", 1, "Timed propagations per contender and case (median reported).")
_CHUNK_SIZE = flags.DEFINE_integer("chunk_size", 8, "Frames per lax.scan call of our predictor.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the weights.")
_MATMUL_SIZE = flags.DEFINE_integer("matmul_size", 4096, "Side of the square matmul timed for each side's peak.")
_MEMORY_FRAMES = flags.DEFINE_list("memory_frames", ["20", "200"],
                                   "Frame counts of the peak-memory subprocesses (empty: skip).")
_MEMORY_IMAGE_SIZE = flags.DEFINE_integer("memory_image_size", 256, "Model input size of the memory runs.")
_MEMORY_CHILD = flags.DEFINE_integer("memory_child", 0, "Internal: run one peak-memory measurement of N frames.")
_CHILD = flags.DEFINE_string("child", "", "Internal: time one contender (official, or a JAX compute dtype).")
_WEIGHTS = flags.DEFINE_string("weights", "", "Internal: the state dict (.npz) that JAX contenders load.")
_OUT = flags.DEFINE_string("out", "", "Internal: where a contender writes its results (<out>.json, <out>.npz).")

# Clicks (x, y) in video pixels for the bedroom frames (960x540), object k gets CLICKS[k].
CLICKS = ((210.0, 350.0), (480.0, 270.0), (750.0, 150.0), (640.0, 430.0))
OBJ_SCORE_BIAS = 6.0
OFFICIAL = "official"


# ------------------------------------------------------------------------------ inputs
def frames_folder(src_dir: str, num_frames: int, dst_dir: str) -> str:
  """Links the first `num_frames` JPEGs of `src_dir` (cycled when it has fewer) as 00000.jpg, ... in `dst_dir`."""
  sources = list_jpeg_frames(src_dir)
  for t in range(num_frames):
    os.symlink(os.path.abspath(sources[t % len(sources)]), os.path.join(dst_dir, f"{t:05d}.jpg"))
  return dst_dir


def add_clicks(predictor, state, num_objects: int) -> None:
  """One positive click per object on frame 0 (object ids 1..num_objects)."""
  for k in range(num_objects):
    predictor.add_new_points_or_box(state, 0, k + 1, points=np.array([CLICKS[k]], np.float32),
                                    labels=np.array([1], np.int32))


def chunk_lengths(num_frames: int, chunk_size: int) -> list[int]:
  """The distinct scan lengths our predictor uses to propagate `num_frames` frames (its jit cache keys)."""
  lengths = {chunk_size} if num_frames >= chunk_size else set()
  tail = num_frames % chunk_size
  if tail:
    lengths.add(1 << (tail - 1).bit_length())
  return sorted(lengths)


def cases() -> list[tuple[int, int]]:
  """(frames, objects) of every timed case."""
  return [(int(f), int(n)) for f in _NUM_FRAMES.value for n in _OBJECTS.value]


# ------------------------------------------------------------------------------ propagation
def propagate(predictor, state, num_frames: int) -> tuple[float, list[np.ndarray]]:
  """Seconds of one propagation over `num_frames` frames from frame 0, and the masks (n_obj, H, W) of each frame."""
  masks = []
  start = time.perf_counter()
  for _, _, logits in predictor.propagate_in_video(state, start_frame_idx=0, max_frame_num_to_track=num_frames - 1):
    masks.append(np.asarray(logits[:, 0] > 0))
  return time.perf_counter() - start, masks


def iou_stats(masks: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
  """(min, mean) IoU over frames and objects of (T, n_obj, H, W) masks; an empty union counts as 1."""
  assert masks.shape == reference.shape, (masks.shape, reference.shape)
  inter = np.logical_and(masks, reference).sum(axis=(-2, -1))
  union = np.logical_or(masks, reference).sum(axis=(-2, -1))
  ious = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
  return float(ious.min()), float(ious.mean())


# ------------------------------------------------------------------------------ FLOPs
class RecordedChunks:
  """Wraps our `propagate_chunk`, keeping each call's arguments: Python numbers and small integer or boolean
  arrays (the bank's slot flags and frames, frame indices) as values, other arrays as shapes."""

  def __init__(self, fn: Callable):
    self.fn, self.calls = fn, []

  def __call__(self, module, *args, **static):
    def keep(x):
      if not hasattr(x, "dtype"):
        return x
      if not jnp.issubdtype(x.dtype, jnp.inexact) and x.size <= 1 << 16:
        return np.asarray(x)
      return jax.ShapeDtypeStruct(x.shape, x.dtype)

    self.calls.append((lambda *a: self.fn(module, *a, **static), jax.tree.map(keep, args)))
    return self.fn(module, *args, **static)

  def executed_flops(self) -> tuple[float, int]:
    """(matmul/conv FLOPs, control-flow decisions that stayed unknown) of all recorded calls."""
    from sam2_jax.training import flops

    total, unresolved = 0.0, 0
    with jax.default_device(jax.local_devices(backend="cpu")[0]):  # known values are evaluated op by op
      for fn, args in self.calls:
        closed = jax.make_jaxpr(fn)(*args)
        known = [None if isinstance(x, jax.ShapeDtypeStruct) else x for x in jax.tree.leaves(args)]
        counter = flops.ExecutedFlops()
        counter.run(closed.jaxpr, closed.consts, known)
        total, unresolved = total + counter.flops, unresolved + counter.unresolved
    return total, unresolved


def official_flop_counter():
  """`FlopCounterMode` that also counts the CPU's fused attention op (absent from torch's own table)."""
  import torch
  from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

  def cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    del args, out_shape, kwargs
    return sdpa_flop_count(query_shape, key_shape, value_shape)

  return FlopCounterMode(display=False,
                         custom_mapping={torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa})


def torch_matmul_rate(n: int, reps: int = 3) -> float:
  """FLOP/s of an n x n float32 torch matmul (best of `reps`)."""
  import torch

  a, b = torch.randn(n, n), torch.randn(n, n)
  torch.mm(a, b)
  best = float("inf")
  for _ in range(reps):
    start = time.perf_counter()
    torch.mm(a, b)
    best = min(best, time.perf_counter() - start)
  return 2.0 * n ** 3 / best


# ------------------------------------------------------------------------------ contenders (child processes)
def run_official(folder: str) -> tuple[dict, dict[str, np.ndarray]]:
  """Times the official predictor on every case; returns (results, masks per case)."""
  import torch

  from bench.oracle import build_official

  print(f"official: torch {torch.__version__} threads={torch.get_num_threads()} "
        f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}", flush=True)
  rate = torch_matmul_rate(_MATMUL_SIZE.value)
  predictor, _ = build_official(_CONFIG.value, image_size=_IMAGE_SIZE.value, seed=_SEED.value,
                                obj_score_bias=OBJ_SCORE_BIAS, video=True)
  results, masks = [], {}
  with torch.inference_mode():
    state = predictor.init_state(folder)
    for num_frames, num_objects in cases():
      predictor.reset_state(state)
      add_clicks(predictor, state, num_objects)
      counter = official_flop_counter()
      with counter:
        warmup_s, _ = propagate(predictor, state, num_frames)
      seconds, case_masks = timed_runs("official", predictor, state, num_frames, num_objects)
      masks[f"{num_frames}_{num_objects}"] = np.stack(case_masks)
      results.append(dict(frames=num_frames, objects=num_objects, seconds=seconds, warmup_s=warmup_s,
                          flops_per_frame=counter.get_total_flops() / num_frames, unresolved=0))
  return dict(matmul_flops=max(rate, torch_matmul_rate(_MATMUL_SIZE.value)), cases=results), masks


def timed_runs(label: str, predictor, state, num_frames: int, num_objects: int) -> tuple[list[float], list]:
  """--repeats timed propagations: (seconds of each, the last one's masks)."""
  seconds = []
  for _ in range(_REPEATS.value):
    t, case_masks = propagate(predictor, state, num_frames)
    seconds.append(t)
    print(f"  {label}: {num_frames} frames, {num_objects} object(s) in {t:.2f} s", flush=True)
  return seconds, case_masks


def run_jax(dtype: str, folder: str) -> tuple[dict, dict[str, np.ndarray]]:
  """Times our predictor in `dtype` on every case; returns (results, masks per case)."""
  from sam2_jax.predictors import video as video_predictor
  from sam2_jax.training import flops

  print(f"jax {dtype}: jax {jax.__version__} backend={jax.default_backend()} "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r} GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}",
        flush=True)
  rate = flops.matmul_rate(dtype, _MATMUL_SIZE.value)
  config = get_model_config(_CONFIG.value, image_size=_IMAGE_SIZE.value, compute_dtype=dtype,
                            binarize_mask_from_pts_for_mem_enc=True, **POSTPROCESSING)
  with np.load(_WEIGHTS.value) as weights:
    params = jax.tree.map(jnp.asarray, params_from_state_dict(dict(weights), config))
  predictor = video_predictor.SAM2VideoPredictor(SAM2Model(config, params), fill_hole_area=0,
                                                 chunk_size=_CHUNK_SIZE.value)
  state = predictor.init_state(folder)
  results, masks = [], {}
  for num_frames, num_objects in cases():
    predictor.reset_state(state)
    add_clicks(predictor, state, num_objects)
    recorder = RecordedChunks(video_predictor.propagate_chunk)
    video_predictor.propagate_chunk = recorder
    try:
      warmup_s, _ = propagate(predictor, state, num_frames)  # compiles each chunk length used
    finally:
      video_predictor.propagate_chunk = recorder.fn
    executed, unresolved = recorder.executed_flops()
    seconds, case_masks = timed_runs(f"jax {dtype}", predictor, state, num_frames, num_objects)
    masks[f"{num_frames}_{num_objects}"] = np.stack(case_masks)
    results.append(dict(frames=num_frames, objects=num_objects, seconds=seconds, warmup_s=warmup_s,
                        flops_per_frame=executed / num_frames, unresolved=unresolved))
  return dict(matmul_flops=max(rate, flops.matmul_rate(dtype, _MATMUL_SIZE.value)), cases=results), masks


def contender_child(name: str) -> None:
  """One contender's process: times every case and writes <out>.json and <out>.npz."""
  with tempfile.TemporaryDirectory() as tmp:
    folder = frames_folder(_FRAMES_DIR.value, max(f for f, _ in cases()), tmp)
    results, masks = run_official(folder) if name == OFFICIAL else run_jax(name, folder)
  np.savez_compressed(_OUT.value + ".npz", **masks)
  with open(_OUT.value + ".json", "w") as f:
    json.dump(results, f)


def run_contender(name: str, out: str, weights: str) -> dict:
  """Runs `contender_child` in a process of its own (the official: this environment); returns its results."""
  cmd = [sys.executable, "-m", "bench.video", f"--child={name}", f"--out={out}", f"--weights={weights}",
         f"--config={_CONFIG.value}", f"--image_size={_IMAGE_SIZE.value}", f"--frames_dir={_FRAMES_DIR.value}",
         f"--num_frames={','.join(_NUM_FRAMES.value)}", f"--objects={','.join(_OBJECTS.value)}",
         f"--repeats={_REPEATS.value}", f"--chunk_size={_CHUNK_SIZE.value}", f"--seed={_SEED.value}",
         f"--matmul_size={_MATMUL_SIZE.value}"]
  start = time.perf_counter()
  proc = subprocess.run(cmd, cwd=_REPO_ROOT, check=False)
  if proc.returncode:
    raise RuntimeError(f"the {name} contender failed (exit status {proc.returncode}); its output is above.")
  print(f"{name}: process took {time.perf_counter() - start:.0f} s", flush=True)
  with open(out + ".json") as f:
    results = json.load(f)
  with np.load(out + ".npz") as masks:
    results["masks"] = dict(masks)
  return results


def write_weights(path: str) -> None:
  """Saves the perturbed official state dict that every contender uses (the official rebuilds the same)."""
  from bench.oracle import build_official

  _, state_dict = build_official(_CONFIG.value, image_size=_IMAGE_SIZE.value, seed=_SEED.value,
                                 obj_score_bias=OBJ_SCORE_BIAS, video=True)
  np.savez(path, **state_dict)
  build_official.cache_clear()


# ------------------------------------------------------------------------------ peak memory
def _rss_kb() -> int:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


class RssSampler:
  """Samples the resident set size every `interval` seconds in a thread; `peak_kb` is the largest seen."""

  def __init__(self, interval: float = 0.01):
    self.interval, self.peak_kb = interval, _rss_kb()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _run(self) -> None:
    while not self._stop.wait(self.interval):
      self.peak_kb = max(self.peak_kb, _rss_kb())

  def __enter__(self) -> "RssSampler":
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._stop.set()
    self._thread.join()
    self.peak_kb = max(self.peak_kb, _rss_kb())


def memory_child(num_frames: int) -> None:
  """Propagates one click through `num_frames` frames (JAX only) and prints resident memory figures.

  The scan lengths are compiled first (a short propagation per length), so that the measured
  propagation shows steady-state memory; the process high-water mark (VmHWM) includes
  compilation.
  """
  from sam2_jax.predictors.video import SAM2VideoPredictor

  size = _MEMORY_IMAGE_SIZE.value
  model = build_sam2(_CONFIG.value, image_size=size, binarize_mask_from_pts_for_mem_enc=True)
  predictor = SAM2VideoPredictor(model, fill_hole_area=0, chunk_size=_CHUNK_SIZE.value)
  with tempfile.TemporaryDirectory() as tmp:
    state = predictor.init_state(frames_folder(_FRAMES_DIR.value, num_frames, tmp))
    add_clicks(predictor, state, 1)
    # The same scan lengths in every run (those of all --memory_frames counts), so that the runs
    # hold the same compiled code and differ only by their frames and per-frame outputs.
    lengths = {k for n in _MEMORY_FRAMES.value for k in chunk_lengths(int(n), _CHUNK_SIZE.value)}
    for length in sorted(lengths):
      propagate(predictor, state, min(length, num_frames))
    before = _rss_kb()
    with RssSampler() as sampler:
      frames = sum(1 for _ in predictor.propagate_in_video(state))
  with open("/proc/self/status") as f:  # this process's high-water mark (ru_maxrss would include the parent's)
    peak = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
  print(f"MEMORY frames={frames} rss_before_kb={before} propagation_peak_kb={sampler.peak_kb} "
        f"process_peak_kb={peak}", flush=True)


def measure_memory(frame_counts: list[int]) -> dict[int, dict[str, int]]:
  """{frames: memory figures (KiB) of `memory_child`}, one subprocess per count, run in turn."""
  results = {}
  for n in frame_counts:
    cmd = [sys.executable, "-m", "bench.video", f"--memory_child={n}", f"--config={_CONFIG.value}",
           f"--memory_image_size={_MEMORY_IMAGE_SIZE.value}", f"--frames_dir={_FRAMES_DIR.value}",
           f"--chunk_size={_CHUNK_SIZE.value}", f"--memory_frames={','.join(_MEMORY_FRAMES.value)}"]
    proc = subprocess.run(cmd, cwd=_REPO_ROOT, capture_output=True, text=True, check=False)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("MEMORY ")), None)
    if proc.returncode or line is None:
      raise RuntimeError(f"memory run of {n} frames failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    results[n] = {k: int(v) for k, v in (f.split("=") for f in line.split()[1:])}
    r = results[n]
    print(f"memory: {n} frames at {_MEMORY_IMAGE_SIZE.value}: RSS before propagating "
          f"{r['rss_before_kb'] / 1024:.0f} MiB, peak while propagating {r['propagation_peak_kb'] / 1024:.0f} MiB, "
          f"process high-water mark {r['process_peak_kb'] / 1024:.0f} MiB", flush=True)
  return results


# ------------------------------------------------------------------------------ main
def result_rows(results: dict[str, dict]) -> list[list]:
  """Table rows: per case and contender, speed, ratio to the official, executed rate, mask agreement."""
  rows = []
  for index, (num_frames, num_objects) in enumerate(cases()):
    key = f"{num_frames}_{num_objects}"
    fps = {name: num_frames / common.median(r["cases"][index]["seconds"]) for name, r in results.items()}
    for name, r in results.items():
      case, ours = r["cases"][index], name != OFFICIAL
      achieved = case["flops_per_frame"] * fps[name]
      vs_official = ours and OFFICIAL in results
      vs_f32 = ours and name != "float32" and "float32" in results
      masks = r["masks"][key]
      rows.append([num_frames, num_objects, f"jax {name}" if ours else "official float32", f"{fps[name]:.3f}",
                   f"{common.median(case['seconds']):.2f} ({min(case['seconds']):.2f}-{max(case['seconds']):.2f})",
                   f"{fps[name] / fps[OFFICIAL]:.2f}" if vs_official else "-",
                   f"{case['flops_per_frame'] / 1e9:.1f}" + (f" ({case['unresolved']} unresolved)"
                                                            if case["unresolved"] else ""),
                   f"{achieved / 1e9:.1f}", f"{100 * achieved / r['matmul_flops']:.0f}%",
                   "%.4f/%.4f" % iou_stats(masks, results[OFFICIAL]["masks"][key]) if vs_official else "-",
                   "%.4f/%.4f" % iou_stats(masks, results["float32"]["masks"][key]) if vs_f32 else "-",
                   f"{masks.mean():.3f}"])
  return rows


def main(argv):
  del argv
  if _MEMORY_CHILD.value or (_CHILD.value and _CHILD.value != OFFICIAL):
    huge_pages.restart_with_huge_pages()  # ours runs as our command-line tools do
  if _MEMORY_CHILD.value:
    memory_child(_MEMORY_CHILD.value)
    return
  if _CHILD.value:
    contender_child(_CHILD.value)
    return
  objects = [int(n) for n in _OBJECTS.value]
  if not all(1 <= n <= len(CLICKS) for n in objects):
    raise app.UsageError(f"--objects must be between 1 and {len(CLICKS)}.")
  if not all(int(f) >= 1 for f in _NUM_FRAMES.value):
    raise app.UsageError("--num_frames must be at least 1.")
  if not set(_DTYPES.value) <= {"float32", "bfloat16"}:
    raise app.UsageError(f"--dtypes must be float32 and/or bfloat16, got {_DTYPES.value}.")
  print(f"{common.cpu_model()}, cpus={os.cpu_count()}, {platform.platform()}", flush=True)
  print(f"{_CONFIG.value} @ {_IMAGE_SIZE.value}, frames {_NUM_FRAMES.value} of {_FRAMES_DIR.value}, objects "
        f"{objects}, jax dtypes {_DTYPES.value}, chunk {_CHUNK_SIZE.value}, {_REPEATS.value} timed run(s) per case; "
        "each contender in its own process", flush=True)
  contenders = ([] if _SKIP_OFFICIAL.value else [OFFICIAL]) + list(_DTYPES.value)
  with tempfile.TemporaryDirectory() as tmp:
    weights = os.path.join(tmp, "weights.npz")
    write_weights(weights)
    results = {name: run_contender(name, os.path.join(tmp, name), weights) for name in contenders}

  print(f"\n{_CONFIG.value} @ {_IMAGE_SIZE.value}; matmul {_MATMUL_SIZE.value}^2 in each process (best of before and "
        "after): " + ", ".join(f"{name} {r['matmul_flops'] / 1e9:.0f} GFLOP/s" for name, r in results.items()),
        flush=True)
  header = ["frames", "objects", "predictor", "frames/s", "s (min-max)", "jax/official speed",
            "GFLOP/frame executed", "GFLOP/s", "% own matmul", "IoU vs official min/mean", "IoU vs jax f32 min/mean",
            "mask area"]
  common.print_table(header, result_rows(results))

  frame_counts = [int(n) for n in _MEMORY_FRAMES.value]
  if frame_counts:
    mem = measure_memory(frame_counts)
    lo, hi = mem[min(frame_counts)], mem[max(frame_counts)]
    print(f"peak memory (JAX, {_CONFIG.value} @ {_MEMORY_IMAGE_SIZE.value}), {max(frame_counts)} frames / "
          f"{min(frame_counts)} frames: while propagating "
          f"{hi['propagation_peak_kb'] / lo['propagation_peak_kb']:.3f}, process high-water mark "
          f"{hi['process_peak_kb'] / lo['process_peak_kb']:.3f}", flush=True)


if __name__ == "__main__":
  app.run(main)
