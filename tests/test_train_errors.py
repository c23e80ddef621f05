"""train.py with bad input: one `error:` line and exit status 2, before generating data or compiling anything."""

import asyncio
import gc
import logging
import os
import subprocess
import sys

import pytest

from sam2_jax.data import records
from sam2_jax.training import checkpointing
from tests.test_train import ROOT, _env


def _train(tmp_path, workdir, *extra):
  return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--config=configs/train.py:demo",
                         f"--workdir={workdir}", *extra], capture_output=True, text=True, cwd=ROOT,
                        env={**_env(tmp_path), "SAM2_JAX_HUGE_PAGES": "0"})  # runs stop before any work


def _error(run) -> str:
  assert run.returncode == 2, run.stderr[-4000:]
  assert "Traceback" not in run.stderr, run.stderr[-4000:]
  errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, run.stderr[-4000:]
  return errors[0]


def test_unknown_config_field(tmp_path):
  assert _error(_train(tmp_path, tmp_path / "run", "--config.foo=1")) == \
      "error: --config.foo: the config has no field 'foo'."
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, expected", [
    (["--config.num_steps=x"], "error: flag --config.num_steps=x: invalid literal for int() with base 10: 'x'"),
    (["--config=configs/train.py:nope"], "error: flag --config=configs/train.py:nope: Error whilst parsing config "
     "file: ValueError: Unknown training config 'nope'; expected demo, finetune_vos or sa1b_sav_{t,s,b+,l}."),
    (["--config=configs/nope.py"], "error: cannot load --config: [Errno 2] No such file or directory: "
     "'configs/nope.py'"),
    (["extra"], "error: unexpected arguments: extra"),
])
def test_bad_flags(tmp_path, args, expected):
  assert _error(_train(tmp_path, tmp_path / "run", *args)) == expected
  assert not (tmp_path / "run").exists()


def test_workdir_that_cannot_be_created(tmp_path):
  (tmp_path / "file").write_text("")
  workdir = tmp_path / "file" / "run"
  assert _error(_train(tmp_path, workdir)) == f"error: cannot create --workdir {str(workdir)!r}: Not a directory."


def test_bad_image_size_fails_before_generating_data(tmp_path):
  error = _error(_train(tmp_path, tmp_path / "run", "--config.model_overrides.image_size=100"))
  assert error == "error: image_size must be a positive multiple of 32 (at least 64), got 100."
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("case", ["missing", "empty_folder", "steps", "resolution"])
def test_bad_config_fails_before_anything_is_written(tmp_path, case):
  (tmp_path / "empty").mkdir()
  args, expected = {
      "missing": (f"--config.init_checkpoint={tmp_path / 'nope.pt'}",
                  f"error: Checkpoint {str(tmp_path / 'nope.pt')!r} does not exist."),
      "empty_folder": (f"--config.init_checkpoint={tmp_path / 'empty'}",
                       f"error: Checkpoint folder {str(tmp_path / 'empty')!r} holds no model: expected a sam2_jax "
                       "model checkpoint"),
      "steps": ("--config.num_steps=0", "error: config.num_steps must be positive, got 0."),
      "resolution": ("--config.data.resolution=256",
                     "error: config.data.resolution (256) must equal the model's image_size (128)."),
  }[case]
  assert _error(_train(tmp_path, tmp_path / "run", args)).startswith(expected)
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("case", ["no_records", "no_files"])
def test_empty_data_source(tmp_path, case):
  empty = tmp_path / "sa1b-0.array_record"
  records.write_array_record(str(empty), [])
  sources = {"no_records": [f"--config.data.sources.sa1b.paths={empty}", "--config.data.sources.sav.paths="],
             "no_files": ["--config.data.sources.sa1b.paths=", f"--config.data.sources.sav.paths={tmp_path}/sav-*"]}
  expected = {"no_records": f"error: Data source 'sa1b' has no records: its files ({empty}) hold 0 records.",
              "no_files": f"error: Data source 'sav': No file matches {str(tmp_path / 'sav-*')!r}."}
  workdir = tmp_path / "run"
  assert _error(_train(tmp_path, workdir, "--config.synthetic.generate=False", *sources[case])) == expected[case]
  assert os.listdir(workdir) == []  # no checkpoints, logs or data yet



def test_reads_abandoned_by_a_failed_restore_are_not_reported():
  """After a failed restore, the reads Orbax abandoned are dropped from asyncio's log; other reports pass."""
  async def read(message):
    raise ValueError(message)

  def abandon(message):
    loop = asyncio.new_event_loop()
    task = loop.create_task(read(message))
    loop.run_until_complete(asyncio.sleep(0))
    assert task.done()
    loop.close()
    del task
    gc.collect()

  class Records(logging.Handler):
    def __init__(self):
      super().__init__()
      self.messages = []

    def emit(self, record):
      self.messages.append(record.getMessage())

  checkpointing._hide_abandoned_read_reports()  # pylint: disable=protected-access
  records, logger = Records(), logging.getLogger("asyncio")
  logger.addHandler(records)
  try:
    abandon('DATA_LOSS: Error reading "x" in OCDBT database [tensorstore_spec=\'{"driver":"zarr"}\']')
    assert not records.messages
    abandon("some other failure")
  finally:
    logger.removeHandler(records)
  assert len(records.messages) == 1 and "some other failure" in records.messages[0], records.messages
