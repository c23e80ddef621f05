r"""Video propagation speed: sam2-jax `SAM2VideoPredictor` vs the official one on the same CPU.

Both predictors get the same config and weights (the official random init, perturbed, with the
object-score bias raised so that objects are tracked; converted with `params_from_state_dict`)
and the same clicks on frame 0 of a JPEG folder, then `propagate_in_video` runs over all
`--num_frames` frames. Frames per second count the frames yielded by a full propagation (wall
clock, consuming the video-resolution masks); frame loading (`init_state`) and the clicks are
not timed. On the JAX side one warm-up propagation per chunk length is run first, so compilation
is excluded. The official predictor loops over objects on each frame; ours tracks all objects in
one batched step. Repeats are interleaved (official, then each JAX dtype) and the median is shown.

  .venv/bin/python -m bench.video          # t@1024, 16 frames, 1 and 3 objects, float32 and bfloat16
  .venv/bin/python -m bench.video --num_frames=6 --image_size=512 --memory_frames=   # a quick run

At 1024 a frame costs about 0.9 TFLOP for one object and 2.2 TFLOP for three (memory attention
over 7 x 4096 memory tokens dominates), so the default run takes tens of minutes on a 2-core CPU.

Also printed:
  * GFLOP per frame of one propagation step (`_propagate` on one frame): matmul and convolution
    FLOPs counted from the jaxpr (2 per multiply-add), and XLA's own count (which adds elementwise
    work); achieved GFLOP/s = matmul/conv GFLOP per frame x frames/s, beside the measured rate of
    a large float32 matmul on this CPU (JAX and torch).
  * Mask agreement: IoU of the masks (logits > 0) against the official ones, and of bfloat16
    against our float32, min and mean over frames and objects.
  * Peak memory: one JAX-only subprocess per `--memory_frames` count propagates one click through
    that many frames (JPEG folder, the bedroom frames repeated) at `--memory_image_size`, after
    compiling; the peak resident set size while propagating (sampled every 10 ms) and the process
    high-water mark (VmHWM, which includes compilation) are printed, and the ratios of the
    longest run to the shortest.
"""

import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from bench import common
from sam2_jax import huge_pages
from sam2_jax.build_sam import POSTPROCESSING, SAM2Model, build_sam2, get_model_config, params_from_state_dict
from sam2_jax.modeling.memory_bank import MemoryBank
from sam2_jax.predictors import video as video_predictor
from sam2_jax.predictors.video import SAM2VideoPredictor
from sam2_jax.predictors.video_frames import list_jpeg_frames

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_FRAMES_DIR = flags.DEFINE_string("frames_dir", os.path.join(_REPO_ROOT, "..", "shared", "data", "bedroom"),
                                  "JPEG frame folder (frames are repeated if it has fewer than --num_frames).")
_NUM_FRAMES = flags.DEFINE_integer("num_frames", 16, "Frames to propagate through (from the clicked frame 0).")
_CONFIG = flags.DEFINE_string("config", "sam2.1_hiera_t", "Model config name.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 1024, "Model input size (multiple of 32).")
_OBJECTS = flags.DEFINE_list("objects", ["1", "3"], "Numbers of objects to track (one click each, at most 4).")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Our compute dtypes (float32, bfloat16).")
_SKIP_OFFICIAL = flags.DEFINE_bool("skip_official", False, "Time only the JAX predictor.")
_REPEATS = flags.DEFINE_integer("repeats", 1, "Timed propagations per contender (median reported).")
_CHUNK_SIZE = flags.DEFINE_integer("chunk_size", 8, "Frames per lax.scan call of our predictor.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the weights.")
_MATMUL_SIZE = flags.DEFINE_integer("matmul_size", 4096, "Side of the square float32 matmul timed for the peak.")
_MEMORY_FRAMES = flags.DEFINE_list("memory_frames", ["20", "200"],
                                   "Frame counts of the peak-memory subprocesses (empty: skip).")
_MEMORY_IMAGE_SIZE = flags.DEFINE_integer("memory_image_size", 256, "Model input size of the memory runs.")
_MEMORY_CHILD = flags.DEFINE_integer("memory_child", 0, "Internal: run one peak-memory measurement of N frames.")

# Clicks (x, y) in video pixels for the bedroom frames (960x540), object k gets CLICKS[k].
CLICKS = ((210.0, 350.0), (480.0, 270.0), (750.0, 150.0), (640.0, 430.0))
OBJ_SCORE_BIAS = 6.0


# ------------------------------------------------------------------------------ inputs
def frames_folder(src_dir: str, num_frames: int, dst_dir: str) -> str:
  """Links the first `num_frames` JPEGs of `src_dir` (cycled when it has fewer) as 00000.jpg, ... in `dst_dir`."""
  sources = list_jpeg_frames(src_dir)
  for t in range(num_frames):
    os.symlink(os.path.abspath(sources[t % len(sources)]), os.path.join(dst_dir, f"{t:05d}.jpg"))
  return dst_dir


def add_clicks(predictor, state, num_objects: int, scale_x: float = 1.0, scale_y: float = 1.0) -> None:
  """One positive click per object on frame 0 (object ids 1..num_objects)."""
  for k in range(num_objects):
    x, y = CLICKS[k]
    predictor.add_new_points_or_box(state, 0, k + 1, points=np.array([[x * scale_x, y * scale_y]], np.float32),
                                    labels=np.array([1], np.int32))


def chunk_lengths(num_frames: int, chunk_size: int) -> list[int]:
  """The distinct scan lengths our predictor uses to propagate `num_frames` frames (its jit cache keys)."""
  lengths = {chunk_size} if num_frames >= chunk_size else set()
  tail = num_frames % chunk_size
  if tail:
    lengths.add(1 << (tail - 1).bit_length())
  return sorted(lengths)


# ------------------------------------------------------------------------------ predictors
def build_pair(config_name: str, image_size: int, dtypes: list[str], chunk_size: int, seed: int
               ) -> tuple[Any, dict[str, SAM2VideoPredictor]]:
  """The official video predictor and ours (one per compute dtype) with the same perturbed weights."""
  from tests.oracle import build_official

  official, state_dict = build_official(config_name, image_size=image_size, seed=seed,
                                        obj_score_bias=OBJ_SCORE_BIAS, video=True)
  ours = {}
  for dtype in dtypes:
    config = get_model_config(config_name, image_size=image_size, compute_dtype=dtype,
                              binarize_mask_from_pts_for_mem_enc=True, **POSTPROCESSING)
    params = jax.tree.map(jnp.asarray, params_from_state_dict(state_dict, config))
    ours[dtype] = SAM2VideoPredictor(SAM2Model(config, params), fill_hole_area=0, chunk_size=chunk_size)
  return official, ours


def propagate_official(predictor, state) -> tuple[float, list[np.ndarray]]:
  """Seconds of one full official propagation and the masks (n_obj, H, W) of each frame."""
  import torch

  masks = []
  start = time.perf_counter()
  with torch.inference_mode():
    for _, _, logits in predictor.propagate_in_video(state):
      masks.append((logits[:, 0] > 0).numpy())
  return time.perf_counter() - start, masks


def propagate_ours(predictor: SAM2VideoPredictor, state, max_frames: int | None = None
                   ) -> tuple[float, list[np.ndarray]]:
  """Seconds of one of our propagations (`max_frames` frames from frame 0, all if None) and the masks."""
  masks = []
  start = time.perf_counter()
  track = None if max_frames is None else max_frames - 1
  for _, _, logits in predictor.propagate_in_video(state, max_frame_num_to_track=track):
    masks.append(logits[:, 0] > 0)
  return time.perf_counter() - start, masks


def iou_stats(masks: list[np.ndarray], reference: list[np.ndarray]) -> tuple[float, float]:
  """(min, mean) IoU over frames and objects; an empty union counts as 1."""
  assert len(masks) == len(reference), (len(masks), len(reference))
  ious = []
  for a, b in zip(masks, reference):
    assert a.shape == b.shape, (a.shape, b.shape)
    for o in range(a.shape[0]):
      union = np.logical_or(a[o], b[o]).sum()
      ious.append(1.0 if union == 0 else np.logical_and(a[o], b[o]).sum() / union)
  return float(min(ious)), float(np.mean(ious))


def mask_fraction(masks: list[np.ndarray]) -> float:
  """Mean fraction of pixels inside the masks (shows whether objects are tracked at all)."""
  return float(np.mean([m.mean() for m in masks]))


# ------------------------------------------------------------------------------ FLOPs
def _sub_jaxprs(eqn) -> list:
  out = []
  for value in eqn.params.values():
    for v in value if isinstance(value, (list, tuple)) else (value,):
      if hasattr(v, "eqns"):
        out.append(v)
      elif hasattr(v, "jaxpr"):
        out.append(v.jaxpr if hasattr(v.jaxpr, "eqns") else v.jaxpr.jaxpr)
  return out


def matmul_conv_flops(jaxpr) -> float:
  """FLOPs (2 per multiply-add) of the dot_general and convolution ops of a jaxpr.

  Scans count `length` times, conditionals their costliest branch, while loops one iteration;
  transposed convolutions (input dilation) count only the taps that meet a non-zero input.
  """
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      lhs, rhs = (v.aval.shape for v in eqn.invars)
      (_, rhs_contract), (_, rhs_batch) = eqn.params["dimension_numbers"]
      rhs_free = [d for i, d in enumerate(rhs) if i not in rhs_contract and i not in rhs_batch]
      total += 2.0 * np.prod(lhs, dtype=np.float64) * np.prod(rhs_free, dtype=np.float64)
    elif name == "conv_general_dilated":
      rhs = eqn.invars[1].aval.shape
      out = eqn.outvars[0].aval.shape
      out_feature_dim = eqn.params["dimension_numbers"].rhs_spec[0]
      taps = np.prod(rhs, dtype=np.float64) / rhs[out_feature_dim]
      total += 2.0 * np.prod(out, dtype=np.float64) * taps / np.prod(eqn.params["lhs_dilation"], dtype=np.float64)
    else:
      subs = [matmul_conv_flops(j) for j in _sub_jaxprs(eqn)]
      if subs:
        if name == "scan":
          total += eqn.params["length"] * sum(subs)
        elif name == "cond":
          total += max(subs)
        else:
          total += sum(subs)
  return total


def step_flops(predictor: SAM2VideoPredictor, num_objects: int) -> tuple[float, float]:
  """(matmul/conv FLOPs from the jaxpr, XLA cost-analysis FLOPs) of propagating one frame."""
  model = predictor.model
  size = model.config.image_size
  bank = MemoryBank.empty(model.config, num_objects, 1)
  args = (model.params, bank, jnp.zeros((1, size, size, 3), jnp.uint8), jnp.zeros((1,), jnp.int32),
          jnp.zeros((1, num_objects), bool))

  def one_frame(params, bank, frames, frame_indices, is_cond):
    return video_predictor._propagate(model.module, params, bank, frames, frame_indices, is_cond, 100,
                                      reverse=False)

  counted = matmul_conv_flops(jax.make_jaxpr(one_frame)(*args).jaxpr)
  cost = jax.jit(one_frame).lower(*args).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return counted, float(cost.get("flops", float("nan")))


def matmul_rates(n: int, reps: int = 3) -> dict[str, float]:
  """GFLOP/s of an n x n float32 matmul (best of `reps`), JAX and torch."""
  import torch

  rng = np.random.default_rng(0)
  a, b = (rng.standard_normal((n, n), np.float32) for _ in range(2))
  flops = 2.0 * n ** 3
  dot = jax.jit(jnp.dot)
  ja, jb = jnp.asarray(a), jnp.asarray(b)
  ta, tb = torch.from_numpy(a), torch.from_numpy(b)
  fns = {"jax": lambda: dot(ja, jb).block_until_ready(), "torch": lambda: torch.mm(ta, tb)}
  times = common.time_interleaved(fns, reps, warmup=1)
  return {name: flops / (1e-3 * min(t)) / 1e9 for name, t in times.items()}


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
      propagate_ours(predictor, state, max_frames=min(length, num_frames))
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
    print(f"memory: {n} frames at {_MEMORY_IMAGE_SIZE.value}: RSS before propagating {r['rss_before_kb'] / 1024:.0f} MiB, "
          f"peak while propagating {r['propagation_peak_kb'] / 1024:.0f} MiB, process high-water mark "
          f"{r['process_peak_kb'] / 1024:.0f} MiB", flush=True)
  return results


# ------------------------------------------------------------------------------ main
def bench_objects(num_objects: int, official, ours: dict[str, SAM2VideoPredictor], folder: str,
                  num_frames: int, repeats: int, chunk_size: int) -> tuple[dict[str, list[float]], dict]:
  """Times full propagations of `num_objects` clicked objects; returns (seconds per contender, masks)."""
  states = {}
  if official is not None:
    import torch

    with torch.inference_mode():
      states["official"] = official.init_state(folder)
      add_clicks(official, states["official"], num_objects)
      start = time.perf_counter()
      list(official.propagate_in_video(states["official"], max_frame_num_to_track=1))  # first-call overheads
    print(f"  official: {num_objects} object(s) warm-up (2 frames) {time.perf_counter() - start:.1f} s", flush=True)
  for dtype, predictor in ours.items():
    states[dtype] = predictor.init_state(folder)
    add_clicks(predictor, states[dtype], num_objects)
    start = time.perf_counter()
    for length in chunk_lengths(num_frames, chunk_size):  # compiles every scan length used below
      propagate_ours(predictor, states[dtype], max_frames=length)
    print(f"  jax {dtype}: {num_objects} object(s) warm-up (compilation) {time.perf_counter() - start:.1f} s",
          flush=True)

  runs: dict[str, Callable[[], tuple[float, list]]] = {}
  if official is not None:
    runs["official"] = lambda: propagate_official(official, states["official"])
  for dtype, predictor in ours.items():
    runs[dtype] = lambda predictor=predictor, dtype=dtype: propagate_ours(predictor, states[dtype])
  seconds, masks = {name: [] for name in runs}, {}
  for _ in range(repeats):
    for name, run in runs.items():
      t, masks[name] = run()
      seconds[name].append(t)
      print(f"  {name}: {num_objects} object(s) {len(masks[name])} frames in {t:.2f} s "
            f"({len(masks[name]) / t:.3f} frames/s)", flush=True)
  return seconds, masks


def result_rows(num_objects: int, seconds: dict[str, list[float]], masks: dict[str, list[np.ndarray]],
                flops: tuple[float, float], matmul_rate: float) -> list[list]:
  """Table rows of one object count: speed, ratio to the official, achieved rate, mask agreement."""
  fps = {name: len(masks[name]) / common.median(s) for name, s in seconds.items()}
  rows = []
  for name in seconds:
    ours, achieved = name != "official", flops[0] * fps[name] / 1e9
    vs_official = ours and "official" in masks
    vs_f32 = ours and name != "float32" and "float32" in masks
    rows.append([num_objects, f"jax {name}" if ours else "official float32", f"{fps[name]:.3f}",
                 f"{common.median(seconds[name]):.2f} ({min(seconds[name]):.2f}-{max(seconds[name]):.2f})",
                 f"{fps[name] / fps['official']:.2f}" if vs_official else "-",
                 f"{flops[0] / 1e9:.1f} ({flops[1] / 1e9:.1f})", f"{achieved:.1f}",
                 f"{100 * achieved / matmul_rate:.0f}%",
                 "%.4f/%.4f" % iou_stats(masks[name], masks["official"]) if vs_official else "-",
                 "%.4f/%.4f" % iou_stats(masks[name], masks["float32"]) if vs_f32 else "-",
                 f"{mask_fraction(masks[name]):.3f}"])
  return rows


def main(argv):
  del argv
  if _MEMORY_CHILD.value:
    memory_child(_MEMORY_CHILD.value)
    return
  num_frames, size = _NUM_FRAMES.value, _IMAGE_SIZE.value
  objects = [int(n) for n in _OBJECTS.value]
  if not all(1 <= n <= len(CLICKS) for n in objects):
    raise app.UsageError(f"--objects must be between 1 and {len(CLICKS)}.")
  print(common.thread_info(), flush=True)
  print(f"{_CONFIG.value} @ {size}, {num_frames} frames of {_FRAMES_DIR.value}, objects {objects}, "
        f"jax dtypes {_DTYPES.value}, chunk {_CHUNK_SIZE.value}, {_REPEATS.value} timed run(s) each", flush=True)
  rates = matmul_rates(_MATMUL_SIZE.value)
  print(f"float32 matmul {_MATMUL_SIZE.value}^2: jax {rates['jax']:.0f} GFLOP/s, torch {rates['torch']:.0f} GFLOP/s",
        flush=True)
  official, ours = build_pair(_CONFIG.value, size, _DTYPES.value, _CHUNK_SIZE.value, _SEED.value)
  if _SKIP_OFFICIAL.value:
    official = None

  results = []
  with tempfile.TemporaryDirectory() as tmp:
    folder = frames_folder(_FRAMES_DIR.value, num_frames, tmp)
    for n in objects:
      flops = step_flops(ours[_DTYPES.value[0]], n)
      print(f"{n} object(s): {flops[0] / 1e9:.1f} GFLOP/frame in matmuls and convolutions "
            f"(XLA cost analysis: {flops[1] / 1e9:.1f})", flush=True)
      results.append((n, *bench_objects(n, official, ours, folder, num_frames, _REPEATS.value, _CHUNK_SIZE.value),
                      flops))
  after = matmul_rates(_MATMUL_SIZE.value)  # the machine is shared: keep the best of before and after
  rates = {k: max(v, after[k]) for k, v in rates.items()}
  print(f"\n{_CONFIG.value} @ {size}, {num_frames} frames; float32 matmul {_MATMUL_SIZE.value}^2 (best of before "
        f"and after): jax {rates['jax']:.0f}, torch {rates['torch']:.0f} GFLOP/s", flush=True)
  header = ["objects", "predictor", "frames/s", "s (min-max)", "jax/official speed", "GFLOP/frame mm+conv (XLA)",
            "GFLOP/s", "% jax matmul", "IoU vs official min/mean", "IoU vs jax f32 min/mean", "mask area"]
  common.print_table(header, [row for n, seconds, masks, flops in results
                              for row in result_rows(n, seconds, masks, flops, rates["jax"])])

  frame_counts = [int(n) for n in _MEMORY_FRAMES.value]
  if frame_counts:
    mem = measure_memory(frame_counts)
    lo, hi = mem[min(frame_counts)], mem[max(frame_counts)]
    print(f"peak memory (JAX, {_CONFIG.value} @ {_MEMORY_IMAGE_SIZE.value}), {max(frame_counts)} frames / "
          f"{min(frame_counts)} frames: while propagating "
          f"{hi['propagation_peak_kb'] / lo['propagation_peak_kb']:.3f}, process high-water mark "
          f"{hi['process_peak_kb'] / lo['process_peak_kb']:.3f}", flush=True)


if __name__ == "__main__":
  huge_pages.restart_with_huge_pages()
  app.run(main)
