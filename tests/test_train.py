"""Training: two processes on a sharded mesh train as one; interrupt-and-resume reproduces the run exactly, past a corrupt
checkpoint; resuming with another model or data config, or from unreadable checkpoints, fails with one error."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Video batches only, so that a process compiles one train step (the pipeline tests and the demo mix in images).
TINY = ["--config.data.sources.sa1b.weight=0", "--config.data.sources.sav.batch_size=2",
        "--config.synthetic.num_images=8", "--config.synthetic.num_videos=4", "--config.synthetic.num_eval_videos=1",
        "--config.synthetic.num_frames=16", "--config.synthetic.eval_num_frames=6", "--config.data.num_frames=4",
        "--config.prompts.num_correction_pt_per_frame=1", "--config.optimizer.warmup_steps=1",
        "--config.log_every=1", "--config.eval_every=0", "--config.count_flops=False",
        "--config.model_overrides.image_size=64", "--config.data.resolution=64", "--config.synthetic.size=64",
        "--config.model_overrides.memory_attention.num_layers=1"]


def _env(tmp_path, devices: int = 1) -> dict:
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["PYTHONPATH"] = ROOT
  return env


def _train_command(tmp_path, workdir, num_steps, *extra) -> list[str]:
  """train.py on the tiny demo config, with the compilation caches in `tmp_path` (run with `_env(tmp_path)`)."""
  return [sys.executable, os.path.join(ROOT, "train.py"), "--config=configs/train.py:demo", f"--workdir={workdir}",
          f"--config.num_steps={num_steps}", f"--config.compilation_cache_dir={tmp_path / 'xla_cache'}", *TINY,
          *extra]


def _run_train(tmp_path, workdir, num_steps, *extra):
  return subprocess.run(_train_command(tmp_path, workdir, num_steps, *extra), capture_output=True, text=True,
                        cwd=ROOT, env=_env(tmp_path))


def _train(tmp_path, workdir, num_steps, *extra):
  run = _run_train(tmp_path, workdir, num_steps, *extra)
  assert run.returncode == 0, run.stderr[-4000:]
  return run


def _logged(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if "loss" in r]


def _resumable_copy(full_run, workdir, steps):
  """`workdir` holding `steps` of the full run's checkpoints, its metrics and (a link to) its data."""
  for step in steps:
    shutil.copytree(full_run / "full" / "checkpoints" / str(step), workdir / "checkpoints" / str(step))
  shutil.copy(full_run / "full" / "metrics.jsonl", workdir / "metrics.jsonl")
  os.symlink(full_run / "full" / "data", workdir / "data")


def test_interrupt_and_resume_is_exact(full_run):
  tmp_path, full, resumed = full_run, full_run / "full", full_run / "resumed"
  # A job killed during step 5, while it wrote step 4's checkpoint and a metrics line, leaves step 2's checkpoint,
  # a step-4 checkpoint with a truncated array file, and the metrics of steps 1 to 4 (the last line cut off).
  _resumable_copy(full_run, resumed, (2, 4))
  arrays = resumed / "checkpoints" / "4" / "state" / "ocdbt.process_0" / "d"
  largest = max(arrays.iterdir(), key=lambda p: p.stat().st_size)
  os.truncate(largest, largest.stat().st_size // 2)
  with open(resumed / "metrics.jsonl") as f:
    lines = f.readlines()
  with open(resumed / "metrics.jsonl", "w") as f:
    f.writelines(lines[:4] + [lines[4][:20]])
  run = _train(tmp_path, resumed, 5, "--config.checkpoint_every=2")
  skipped = [line for line in run.stdout.splitlines() if "Skipped" in line]
  assert len(skipped) == 1 and re.fullmatch(
      rf"Skipped checkpoint step 4 \(moved to {re.escape(str(resumed / 'skipped_checkpoints' / '4'))}\): "
      r"ValueError: OUT_OF_RANGE: Error reading .*", skipped[0]), skipped
  assert "Traceback" not in run.stderr, run.stderr[-4000:]
  assert "Resumed from step 2" in run.stdout
  # The output is one progress bar: no libraries' INFO lines, no propagation or data-writing bars.
  assert not re.search(r"^I\d{4} ", run.stderr, re.M), run.stderr[-4000:]
  assert run.stderr.rstrip().endswith("5/5") or re.search(r"train: 100%\|.*\| 5/5 ", run.stderr), run.stderr[-4000:]
  assert sorted(os.listdir(resumed / "checkpoints")) == ["2", "4", "5"]
  # Each step is logged once, steps 1 and 2 from before the interruption; steps 3 to 5 again, identically.
  want, got = _logged(full), _logged(resumed)
  assert [r["step"] for r in want] == [r["step"] for r in got] == [1, 2, 3, 4, 5]
  assert got[:2] == want[:2]
  for w, g in zip(want[2:], got[2:]):
    assert g["loss"] == w["loss"], (g["step"], g["loss"], w["loss"])
  # The train step went into the config's compilation cache, where a restarted run finds it (a directory
  # apart from the environment's JAX_COMPILATION_CACHE_DIR, so this fails if the config is ignored).
  assert any(name.startswith("jit_train_step") for name in os.listdir(tmp_path / "xla_cache"))


@pytest.mark.parametrize("case", ["model", "data", "unreadable"])
def test_resume_with_another_config_or_no_readable_step_fails(full_run, case):
  """One error line and exit 2, before anything is compiled, and the workdir is left as it was."""
  workdir = full_run / f"resume_{case}"
  _resumable_copy(full_run, workdir, (4, 5))
  extra, expected = {
      "model": (["--config.model_overrides.memory_attention.num_layers=2"],
                rf"error: The checkpoint in {re.escape(str(workdir))} \(step 5\) was written by a different model "
                r"config \(overrides.memory_attention.num_layers was 1, now 2\): \d+ of its arrays do not fit this "
                r"config's \(params/memory_attention/layers_1/.*: only in the config;.*\)\. Train in a new --workdir "
                r"\(config.init_checkpoint .*"),
      "data": (["--config.data.sources.sa1b.weight=1"],
               rf"error: The checkpoint in {re.escape(str(workdir))} \(step 5\) was written with other data sources "
               r"\(data_sources was \['sav'\], now \['sa1b', 'sav'\]\).* train in a new --workdir\."),
      "unreadable": ([], r"error: No checkpoint in .*/checkpoints restores: step 5: ValueError: .*; "
                         r"step 4: ValueError: .*\. Move the checkpoints folder away .*"),
  }[case]
  if case == "unreadable":
    for step in (4, 5):
      with open(workdir / "checkpoints" / str(step) / "state" / "manifest.ocdbt", "r+b") as f:
        f.truncate(10)
  before = sorted(str(p) for p in workdir.rglob("*"))
  metrics = (workdir / "metrics.jsonl").read_text()
  run = _run_train(full_run, workdir, 8, *extra)
  assert run.returncode == 2, run.stderr[-4000:]
  errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and re.fullmatch(expected, errors[0]), run.stderr[-4000:]
  assert "Traceback" not in run.stderr
  assert sorted(str(p) for p in workdir.rglob("*")) == before
  assert (workdir / "metrics.jsonl").read_text() == metrics


def test_two_processes_train_as_one(full_run):
  """train.py in two processes, launched as the README says (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
  JAX_PROCESS_ID; JAX's coordination service on localhost, one CPU device each), the state sharded over both
  (fsdp=2) and each process reading its half of every batch: the losses and the final parameters are the
  one-process run's."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from sam2_jax import build_sam2  # pylint: disable=g-import-not-at-top
  workdir = full_run / "two_processes"
  os.makedirs(workdir)
  os.symlink(full_run / "full" / "data", workdir / "data")
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  command = _train_command(full_run, workdir, 5, "--config.mesh.data=1", "--config.mesh.fsdp=2",
                           "--config.checkpoint_every=5")
  procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=dict(_env(full_run), JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                                     JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)))
           for i in range(2)]
  outputs = [proc.communicate(timeout=1800) for proc in procs]
  assert [proc.returncode for proc in procs] == [0, 0], [err[-4000:] for _, err in outputs]
  want, got = _logged(full_run / "full"), _logged(workdir)
  assert [r["step"] for r in got] == [r["step"] for r in want] == [1, 2, 3, 4, 5]
  for w, g in zip(want, got):
    assert abs(g["loss"] - w["loss"]) <= 1e-4 * abs(w["loss"]), (g["step"], g["loss"], w["loss"])
  one, two = build_sam2(checkpoint=full_run / "full").params, build_sam2(checkpoint=workdir).params
  error = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), one, two)))
  assert error <= 1e-4, error


def test_frozen_image_encoder_is_unchanged():
  """With config.freeze_image_encoder, three steps leave the encoder's params bit-identical (no update, no weight
  decay) and train the rest."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from configs.train import get_config  # pylint: disable=g-import-not-at-top
  from sam2_jax.build_sam import get_model_config, init_params  # pylint: disable=g-import-not-at-top
  from sam2_jax.modeling.sam2 import SAM2  # pylint: disable=g-import-not-at-top
  from sam2_jax.training import step  # pylint: disable=g-import-not-at-top
  c = get_config("demo")
  c.freeze_image_encoder = True
  c.optimizer.warmup_steps = 0
  c.prompts.num_correction_pt_per_frame = 1
  c.model_overrides.image_size = 64
  c.model_overrides.memory_attention.num_layers = 1
  model_config = get_model_config(c.model_name, **c.model_overrides.to_dict())
  params = init_params(model_config, jax.random.key(0))
  tx, step_fn = step.from_config(SAM2(model_config), c, params)
  state = step.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                          rng=jax.random.key(1))
  masks = np.zeros((1, 2, 1, 64, 64), bool)
  masks[:, :, 0, 10:30, 15:35] = True
  batch = dict(images=np.random.default_rng(0).integers(0, 255, (1, 2, 64, 64, 3), dtype=np.uint8), masks=masks,
               obj_valid=np.ones((1, 1), bool))
  train_step = jax.jit(step_fn)
  for _ in range(3):
    state, _ = train_step(state, batch)
  before, after = jax.device_get(params), jax.device_get(state.params)
  for a, b in zip(jax.tree.leaves(before["image_encoder"]), jax.tree.leaves(after["image_encoder"])):
    np.testing.assert_array_equal(a, b)
  for module in ("sam_mask_decoder", "memory_attention", "memory_encoder"):
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before[module]),
                                                         jax.tree.leaves(after[module]))), module
