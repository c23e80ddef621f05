"""Fixtures shared by test modules, and the suite's split over two pytest-xdist workers."""

import pytest


def pytest_collection_modifyitems(items):
  """The tests of the shared train run go to one worker (`--dist loadgroup`), which runs it once."""
  for item in items:
    if "full_run" in getattr(item, "fixturenames", ()):
      item.add_marker(pytest.mark.xdist_group("full_run"))


@pytest.fixture(scope="session")
def full_run(tmp_path_factory):
  """A 5-step train.py run of the tiny demo in `{path}/full`, with checkpoints at steps 2, 4 and 5 (and its
  compilation caches); the tests copy what they change."""
  from tests.test_train import _train  # pylint: disable=g-import-not-at-top
  tmp_path = tmp_path_factory.mktemp("train")
  _train(tmp_path, tmp_path / "full", 5, "--config.checkpoint_every=2", "--config.keep_checkpoints=5")
  return tmp_path
