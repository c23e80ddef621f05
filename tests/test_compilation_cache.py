"""`compilation_cache.enable`: which directory it picks, and a second process that compiles nothing."""

import json
import os
import subprocess
import sys

import jax
import pytest

from sam2_jax import compilation_cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Builds a small image predictor, embeds an image and predicts from a click, counting XLA compilations: JAX
# reports every compile request as a backend-compile duration, cache hits included. The random weights are
# drawn on the host: the jitted initialisation alone compiles for over a minute on a 2-core CPU.
PREDICT = """
import json
import jax, numpy as np
from sam2_jax import SAM2ImagePredictor, compilation_cache
from sam2_jax.build_sam import SAM2Model, abstract_params, get_model_config

counts = {"requests": 0, "hits": 0}
def on_duration(event, duration, **kwargs):
  counts["requests"] += event == "/jax/core/compile/backend_compile_duration"
def on_event(event, **kwargs):
  counts["hits"] += event == "/jax/compilation_cache/cache_hits"
jax.monitoring.register_event_duration_secs_listener(on_duration)
jax.monitoring.register_event_listener(on_event)

directory = compilation_cache.enable()
config = get_model_config("sam2.1_hiera_t", image_size=64)
rng = np.random.default_rng(0)
params = jax.tree.map(lambda x: 0.05 * rng.standard_normal(x.shape).astype(x.dtype), abstract_params(config))
predictor = SAM2ImagePredictor(SAM2Model(config, params))
predictor.set_image(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
masks, scores, logits = predictor.predict(point_coords=np.array([[20.0, 30.0]]), point_labels=np.array([1]))
print(json.dumps(dict(directory=directory, compiles=counts["requests"] - counts["hits"], hits=counts["hits"],
                      logits=float(np.abs(logits).sum()))))
"""


def _run_predictor(env):
  proc = subprocess.run([sys.executable, "-c", PREDICT], capture_output=True, text=True, cwd=ROOT, env=env,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.splitlines()[-1])


def test_second_process_compiles_nothing(tmp_path):
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE",
                                                                 "JAX_ENABLE_COMPILATION_CACHE"))}
  env[compilation_cache.ENV_VAR] = str(tmp_path / "xla")
  first = _run_predictor(env)
  assert first["directory"] == str(tmp_path / "xla")
  assert first["compiles"] > 0 and first["hits"] == 0
  assert os.listdir(tmp_path / "xla")
  second = _run_predictor(env)
  assert second["compiles"] == 0
  assert second["hits"] == first["compiles"]
  assert second["logits"] == first["logits"]


@pytest.fixture
def jax_cache_config(monkeypatch):
  """Restores JAX's cache settings after the test (nothing compiles in between, so no cache is opened)."""
  for name in (compilation_cache.ENV_VAR, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"):
    monkeypatch.delenv(name, raising=False)
  names = ("jax_compilation_cache_dir", "jax_enable_compilation_cache", "jax_persistent_cache_min_compile_time_secs")
  saved = {name: getattr(jax.config, name) for name in names}
  jax.config.update("jax_compilation_cache_dir", None)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  yield
  for name, value in saved.items():
    jax.config.update(name, value)


def test_default_directory(jax_cache_config, monkeypatch, tmp_path):
  monkeypatch.setenv("HOME", str(tmp_path))
  expected = str(tmp_path / ".cache" / "sam2_jax" / "xla")
  assert compilation_cache.enable() == expected
  assert jax.config.jax_compilation_cache_dir == expected
  assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
  assert compilation_cache.enable(str(tmp_path / "other")) == expected  # the first directory stays


def test_argument_directory_and_off(jax_cache_config, tmp_path):
  assert compilation_cache.enable("") is None
  assert jax.config.jax_compilation_cache_dir is None
  assert compilation_cache.enable(str(tmp_path / "a")) == str(tmp_path / "a")


@pytest.mark.parametrize("value", ["", "relocated"])
def test_environment_variable_wins_over_argument(jax_cache_config, monkeypatch, tmp_path, value):
  monkeypatch.setenv(compilation_cache.ENV_VAR, str(tmp_path / value) if value else "")
  expected = str(tmp_path / value) if value else None
  assert compilation_cache.enable(str(tmp_path / "argument")) == expected
  assert jax.config.jax_compilation_cache_dir == expected


def test_jax_settings_are_left_alone(jax_cache_config, monkeypatch, tmp_path):
  monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "5")
  assert compilation_cache.enable(str(tmp_path / "a")) == str(tmp_path / "a")
  assert jax.config.jax_persistent_cache_min_compile_time_secs == 1.0  # the user's variable is JAX's to read
  jax.config.update("jax_compilation_cache_dir", str(tmp_path / "configured"))
  monkeypatch.setenv(compilation_cache.ENV_VAR, str(tmp_path / "ours"))
  assert compilation_cache.enable() == str(tmp_path / "configured")
  jax.config.update("jax_enable_compilation_cache", False)
  assert compilation_cache.enable() is None
  jax.config.update("jax_compilation_cache_dir", None)
  assert compilation_cache.enable() is None
  assert jax.config.jax_compilation_cache_dir is None
