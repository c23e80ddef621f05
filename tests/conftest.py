"""Fixtures shared by test modules (and by the suite's pytest-xdist workers)."""

import filelock
import pytest


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
