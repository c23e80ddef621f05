"""The entry points' restart with glibc's transparent-huge-page tunable."""

import os
import subprocess
import sys

import pytest

from sam2_jax import huge_pages

CHILD = """
import os
from sam2_jax import huge_pages
print("start", os.environ.get("GLIBC_TUNABLES", ""), flush=True)
huge_pages.restart_with_huge_pages()
print("running", os.environ.get("GLIBC_TUNABLES", ""), flush=True)
"""


def _thp_madvise() -> bool:
  try:
    with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
      return "[madvise]" in f.read()
  except OSError:
    return False


@pytest.fixture
def madvise_mode(tmp_path, monkeypatch):
  mode = tmp_path / "enabled"
  mode.write_text("always [madvise] never\n")
  monkeypatch.setattr(huge_pages, "_THP_MODE", str(mode))
  monkeypatch.setattr(sys, "platform", "linux")
  return mode


def test_restart_command_appends_the_tunable_and_keeps_the_command(madvise_mode, monkeypatch):
  monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.check=0")
  monkeypatch.delenv(huge_pages.OPT_OUT, raising=False)
  monkeypatch.setattr(sys, "orig_argv", ["python3", "-m", "bench.train_step", "--configs=t"])
  argv, env = huge_pages.restart_command()
  assert argv == [sys.executable, "-m", "bench.train_step", "--configs=t"]
  assert env["GLIBC_TUNABLES"] == f"glibc.malloc.check=0:{huge_pages.TUNABLE}"


def test_no_restart_when_set_opted_out_or_not_madvise(madvise_mode, monkeypatch):
  monkeypatch.delenv(huge_pages.OPT_OUT, raising=False)
  monkeypatch.setenv("GLIBC_TUNABLES", huge_pages.TUNABLE)
  assert huge_pages.restart_command() is None
  monkeypatch.delenv("GLIBC_TUNABLES")
  monkeypatch.setenv(huge_pages.OPT_OUT, "0")
  assert huge_pages.restart_command() is None
  monkeypatch.delenv(huge_pages.OPT_OUT)
  assert huge_pages.restart_command() is not None
  for mode in ("[always] madvise never\n", "always madvise [never]\n"):
    madvise_mode.write_text(mode)
    assert huge_pages.restart_command() is None


def test_process_restarts_once_with_the_tunable():
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", huge_pages.OPT_OUT)}
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  run = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, cwd=root, check=True)
  lines = [line.strip() for line in run.stdout.splitlines()]
  if sys.platform.startswith("linux") and _thp_madvise():
    assert lines == ["start", f"start {huge_pages.TUNABLE}", f"running {huge_pages.TUNABLE}"]
  else:
    assert lines == ["start", "running"]


@pytest.mark.parametrize("command", [["-m", "sam2_jax.segment"], ["eval.py"], ["train.py"]])
def test_command_line_programs_restart_before_importing_jax(command):
  """A restart repeats only the light imports before it: JAX is imported once per command, restarted or not."""
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", huge_pages.OPT_OUT)}
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  run = subprocess.run([sys.executable, "-X", "importtime", *command, "--help"], capture_output=True, text=True,
                       env=env, cwd=root)
  imported = [line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")]
  restarted = sys.platform.startswith("linux") and _thp_madvise()
  assert imported.count("sam2_jax.huge_pages") == (2 if restarted else 1), run.stderr[-3000:]
  assert imported.count("jax") == 1, run.stderr[-3000:]
