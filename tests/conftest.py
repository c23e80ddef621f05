"""Fixtures shared by test modules (and by the suite's pytest-xdist workers)."""

import os
import shutil
import tempfile

import filelock
import pytest

from sam2_jax import compilation_cache

# The predictors' persistent compilation cache (`sam2_jax.compilation_cache`) is one folder for the whole run:
# the pytest process, its xdist workers and every subprocess they start (CLIs, scripts), so that a program is
# compiled once per run wherever it runs again. It starts empty (the user's cache is not touched).


def pytest_configure(config):
  if hasattr(config, "workerinput"):
    return  # an xdist worker: it inherited the controller's environment
  directory = tempfile.mkdtemp(prefix="sam2_jax_test_xla_")
  os.environ[compilation_cache.ENV_VAR] = directory
  config.sam2_jax_test_cache = directory


def pytest_unconfigure(config):
  directory = getattr(config, "sam2_jax_test_cache", None)
  if directory:
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def full_run(tmp_path_factory, worker_id):
  """A 5-step train.py run of the tiny demo in `{path}/full`, with checkpoints at steps 2, 4 and 5 (and its
  compilation caches); the tests copy what they change. One run serves every xdist worker: the first to need
  it makes it while the others wait."""
  from tests.test_train import _train  # pylint: disable=g-import-not-at-top
  base = tmp_path_factory.getbasetemp()
  root = base if worker_id == "master" else base.parent  # the workers' common folder
  path = root / "train"
  with filelock.FileLock(str(root / "train.lock")):
    if not (path / "DONE").exists():
      _train(path, path / "full", 5, "--config.checkpoint_every=2", "--config.keep_checkpoints=5")
      (path / "DONE").touch()
  return path
