"""The distribution: `pip install .` ships the library alone, with its dependencies, extras and commands."""

import configparser
import email
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.test_train import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
  """The wheel `pip` builds from a copy of the sources (the build leaves nothing in the checkout)."""
  src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(os.path.join(ROOT, name), src)
  shutil.copytree(os.path.join(ROOT, "sam2_jax"), src / "sam2_jax", ignore=shutil.ignore_patterns("__pycache__"))
  subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                  str(src)], check=True)
  (path,) = out.glob("sam2_jax-*.whl")
  return zipfile.ZipFile(path)


def _dist_info(wheel, name):
  (path,) = [n for n in wheel.namelist() if n.endswith(f".dist-info/{name}")]
  return wheel.read(path).decode()


def test_wheel_holds_the_library_only(wheel):
  top_level = {name.split("/")[0] for name in wheel.namelist() if not name.split("/")[0].endswith(".dist-info")}
  assert top_level == {"sam2_jax"}
  names = set(wheel.namelist())
  for module in ("sam2_jax/configs.py", "sam2_jax/segment.py", "sam2_jax/convert.py",
                 "sam2_jax/modeling/track.py", "sam2_jax/data/pipeline.py", "sam2_jax/training/step.py"):
    assert module in names


def test_dependencies_and_extras(wheel):
  metadata = email.message_from_string(_dist_info(wheel, "METADATA"))
  requires = metadata.get_all("Requires-Dist")
  runtime = {r.split(">")[0].split("=")[0].strip() for r in requires if "extra ==" not in r}
  assert {"jax", "flax", "orbax-checkpoint", "optax", "ml_collections", "grain", "array-record", "av",
          "pycocotools", "tensorboardX", "tqdm", "absl-py"} <= runtime
  assert set(metadata.get_all("Provides-Extra")) == {"cuda", "tpu", "test"}
  assert any(r.startswith("jax[cuda13]") and 'extra == "cuda"' in r for r in requires)
  assert any(r.startswith("jax[tpu]") and 'extra == "tpu"' in r for r in requires)
  assert any(r.startswith("torch==") and 'extra == "test"' in r for r in requires)


@pytest.mark.parametrize("command, module", [("sam2-jax-segment", "segment"), ("sam2-jax-convert", "convert")])
def test_console_scripts(wheel, command, module):
  """Each command is declared and is `python -m sam2_jax.<module>`: the same help and flags."""
  entry_points = configparser.ConfigParser()
  entry_points.read_string(_dist_info(wheel, "entry_points.txt"))
  target = entry_points["console_scripts"][command]
  assert target == f"sam2_jax.cli:{module}_command"
  env = {**os.environ, "SAM2_JAX_HUGE_PAGES": "0"}
  script = subprocess.run([sys.executable, "-c", f"import sys; from sam2_jax import cli; "
                           f"sys.argv = [{command!r}, '--help']; cli.{module}_command()"],
                          capture_output=True, text=True, cwd=ROOT, env=env)
  as_module = subprocess.run([sys.executable, "-m", f"sam2_jax.{module}", "--help"],
                             capture_output=True, text=True, cwd=ROOT, env=env)
  assert script.stdout == as_module.stdout and script.returncode == as_module.returncode, script.stderr[-2000:]
  assert "--checkpoint" in script.stdout and "--output" in script.stdout
