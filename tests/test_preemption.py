"""Preemption, with real signals to a train.py subprocess: SIGTERM saves the step in progress and exits 0 (a second
SIGTERM during that save changes nothing); SIGKILL during an Orbax write leaves the previous checkpoint; resumed
after both, the run logs the uninterrupted run's metrics. In a multi-process run, every process stops at the same
step.

The interrupted run starts from the shared full run's step 2, and one run takes both signals: a train.py process
spends most of its time here tracing (and loading from the compilation cache) its train step."""

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from typing import Callable

from orbax.checkpoint.path import atomicity_types

from tests.test_train import ROOT, _env, _logged, _resumable_copy, _train, _train_command

NUM_STEPS = 5  # as the full_run fixture's uninterrupted run (the LR schedule, hence the cached executables, too)


def _start(full_run, workdir, *extra) -> subprocess.Popen:
  """train.py in `workdir` (resuming from what it holds), with its output in `workdir`.std{out,err}."""
  with open(f"{workdir}.stdout", "w") as out, open(f"{workdir}.stderr", "w") as err:
    return subprocess.Popen(_train_command(full_run, workdir, NUM_STEPS, *extra), stdout=out, stderr=err, cwd=ROOT,
                            env=_env(full_run))


def _stderr(workdir) -> str:
  with open(f"{workdir}.stderr") as f:
    return f.read()


def _wait_until(condition: Callable[[], bool], *procs: subprocess.Popen) -> None:
  """Polls `condition` while every process runs (failing when one ends first)."""
  while not condition():
    for proc in procs:
      assert proc.poll() is None, f"{proc.args} ended with status {proc.returncode} before the test's signal"
    time.sleep(0.002)


def _complete_lines(workdir) -> int:
  path = workdir / "metrics.jsonl"
  return path.read_text().count("\n") if path.exists() else 0


def _unfinished_writes(workdir) -> list[int]:
  """The steps of Orbax's temporary folders in the workdir's checkpoints (`{step}.orbax-checkpoint-tmp...`)."""
  path = workdir / "checkpoints"
  names = os.listdir(path) if path.exists() else []
  return sorted(int(n.split(atomicity_types.TMP_DIR_SUFFIX)[0]) for n in names if atomicity_types.TMP_DIR_SUFFIX in n)


def _stop_mid_write(proc: subprocess.Popen, workdir) -> int:
  """Stops `proc` (SIGSTOP) while Orbax writes a step, and returns that step: the temporary folder is there once
  every thread of the process is stopped, so what is sent next lands mid-write."""
  while True:
    _wait_until(lambda: bool(_unfinished_writes(workdir)), proc)
    os.kill(proc.pid, signal.SIGSTOP)
    os.waitid(os.P_PID, proc.pid, os.WSTOPPED | os.WEXITED | os.WNOWAIT)  # stopped (or exited: not reaped)
    if steps := _unfinished_writes(workdir):
      return steps[0]
    os.kill(proc.pid, signal.SIGCONT)  # the write finished in between: catch the next one


def _checkpoints(workdir) -> list[str]:
  return sorted(os.listdir(workdir / "checkpoints"))


def _assert_logged_as_uninterrupted(full_run, workdir, first_step: int = 1) -> None:
  """Each step from `first_step` on logged once, with the uninterrupted run's values (all but the frame rate)."""
  want, got = _logged(full_run / "full")[first_step - 1:], _logged(workdir)
  assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(first_step, NUM_STEPS + 1))
  for w, g in zip(want, got):
    del w["frames_per_second"], g["frames_per_second"]
    assert g == w


def test_sigterm_then_sigkill_mid_write_then_resume_is_exact(full_run):
  """One run from the full run's step 2, stopped twice: SIGTERM saves the step in progress and exits 0 (a second
  SIGTERM during that save changes nothing); resumed, SIGKILL in the middle of a checkpoint write leaves the one
  before; resumed again, it logs the uninterrupted run's metrics."""
  workdir = full_run / "preempted"
  _resumable_copy(full_run, workdir, (2,))
  os.remove(workdir / "metrics.jsonl")  # so that it holds this run's lines only

  proc = _start(full_run, workdir, "--config.checkpoint_every=100")  # no periodic checkpoint before the last step
  _wait_until(lambda: _complete_lines(workdir) >= 1, proc)
  proc.send_signal(signal.SIGTERM)
  written = _stop_mid_write(proc, workdir)  # a second SIGTERM while the checkpoint the first asked for is written
  proc.send_signal(signal.SIGTERM)
  os.kill(proc.pid, signal.SIGCONT)
  assert proc.wait() == 0, _stderr(workdir)[-4000:]
  stderr = _stderr(workdir)
  stops = re.findall(r"^train: SIGTERM at step (\d+): checkpoint saved, exiting$", stderr, re.M)
  assert len(stops) == 1 and "Traceback" not in stderr, stderr[-4000:]
  saved = int(stops[0])
  assert written == saved < NUM_STEPS
  assert _checkpoints(workdir) == ["2", str(saved)]  # the step's checkpoint is complete (renamed into place)
  assert max(r["step"] for r in _logged(workdir)) == saved

  proc = _start(full_run, workdir, "--config.checkpoint_every=1")
  killed = _stop_mid_write(proc, workdir)
  proc.kill()
  assert proc.wait() == -signal.SIGKILL
  names = _checkpoints(workdir)
  assert [n for n in names if not n.isdigit()] == [f"{killed}{atomicity_types.TMP_DIR_SUFFIX}"], names
  assert max(int(n) for n in names if n.isdigit()) == killed - 1, names

  run = _train(full_run, workdir, NUM_STEPS, "--config.checkpoint_every=1")
  assert f"Resumed from step {killed - 1} " in run.stdout and "Skipped" not in run.stdout, run.stdout
  # config.keep_checkpoints (3): the newest three complete steps; the unfinished write is gone.
  assert _checkpoints(workdir) == [str(n) for n in sorted({2, *range(saved, NUM_STEPS + 1)})[-3:]]
  _assert_logged_as_uninterrupted(full_run, workdir, first_step=3)


MULTI_PROCESS = textwrap.dedent("""
    import sys, time
    import jax
    process_id, port, started = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
    from sam2_jax.training import checkpointing
    sigterm = checkpointing.SigtermWatch()
    open(started, "w").close()
    for step in range(1, 20_000):
      time.sleep(0.01)  # a train step
      if sigterm.stop_after(step):
        print(f"stop after step {step}")
        break
""")


def test_every_process_stops_at_the_same_step(tmp_path):
  """Two processes (JAX's coordination service on localhost): SIGTERM, twice, to one of them stops both after the
  same step."""
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  env = dict(_env(tmp_path), JAX_PLATFORMS="cpu")
  started = [tmp_path / f"started_{i}" for i in range(2)]
  procs = [subprocess.Popen([sys.executable, "-c", MULTI_PROCESS, str(i), str(port), str(started[i])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
           for i in range(2)]
  _wait_until(lambda: all(p.exists() for p in started), *procs)
  procs[1].send_signal(signal.SIGTERM)
  procs[1].send_signal(signal.SIGTERM)
  outputs = [proc.communicate() for proc in procs]
  assert [proc.returncode for proc in procs] == [0, 0], [err[-4000:] for _, err in outputs]
  stops = [re.findall(r"^stop after step (\d+)$", out, re.M) for out, _ in outputs]
  assert len(stops[0]) == 1 and stops[0] == stops[1], outputs
