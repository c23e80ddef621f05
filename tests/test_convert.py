"""Checkpoint conversion: official state dict <-> Flax params <-> Orbax, strictness and errors."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from sam2_jax.configs import CONFIG_NAMES
from sam2_jax import build_sam2
from sam2_jax.build_sam import abstract_params, get_model_config, infer_config_name, params_from_state_dict
from sam2_jax.checkpoint import torch as torch_ckpt
from sam2_jax.convert import convert
from bench.oracle import build_official, torch

# Key counts of the official state dicts (params plus the one buffer).
OFFICIAL_KEY_COUNTS = {"sam2.1_hiera_t": 471, "sam2.1_hiera_s": 519, "sam2.1_hiera_b+": 615,
                       "sam2.1_hiera_l": 903, "sam2_hiera_t": 468}


@pytest.fixture(scope="module")
def official_t():
  return build_official("sam2.1_hiera_t", image_size=256)[1]


def _save_pt(path, state_dict, **extra):
  torch.save({"model": {k: torch.from_numpy(v) for k, v in state_dict.items()}, **extra}, path)
  return str(path)


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_keys_and_shapes_match_official_model(name):
  ours = torch_ckpt.params_to_state_dict(
      jax.tree.map(lambda x: np.empty(x.shape, x.dtype), abstract_params(get_model_config(name, image_size=256))))
  official = build_official(name, image_size=256)[1] if name.endswith("_t") else None
  if official is not None:
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in official.items()}
  if name in OFFICIAL_KEY_COUNTS:
    assert len(ours) == OFFICIAL_KEY_COUNTS[name]
  assert infer_config_name(ours) == name


def test_round_trip_is_exact(official_t):
  config = get_model_config("sam2.1_hiera_t", image_size=256)
  params = params_from_state_dict(official_t, config)
  back = torch_ckpt.params_to_state_dict(params)
  assert set(back) == set(official_t)
  for key, value in official_t.items():
    np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_convert_to_orbax_and_load(tmp_path, official_t):
  pt = _save_pt(tmp_path / "ckpt.pt", official_t, optimizer={"state": {}}, epoch=3)  # a training checkpoint
  out = tmp_path / "converted"
  assert convert(pt, str(out)) == "sam2.1_hiera_t"
  model = build_sam2(checkpoint=out, image_size=256)
  assert model.config.name == "sam2.1_hiera_t"
  direct = build_sam2("sam2.1_hiera_t", checkpoint=pt, image_size=256)
  jax.tree.map(np.testing.assert_array_equal, model.params, direct.params)
  back = torch_ckpt.params_to_state_dict(model.params)
  for key, value in official_t.items():
    np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_convert_cli(tmp_path, official_t):
  pt = _save_pt(tmp_path / "sam.pt", official_t)
  out = tmp_path / "cli"
  run = subprocess.run([sys.executable, "-m", "sam2_jax.convert", f"--checkpoint={pt}", "--config=sam2.1_hiera_t",
                        f"--output={out}"], capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert run.returncode == 0, run.stderr
  assert "sam2.1_hiera_t" in run.stdout and (out / "params").is_dir()
  bad = subprocess.run([sys.executable, "-m", "sam2_jax.convert", f"--checkpoint={pt}", "--config=sam2_hiera_t",
                        f"--output={tmp_path / 'bad'}"], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(__file__)))
  assert bad.returncode == 2 and "SAM 2.1" in bad.stderr
  assert not (tmp_path / "bad").exists()


def test_strict_errors_name_every_key_and_write_nothing(tmp_path, official_t):
  sd = dict(official_t)
  del sd["memory_attention.norm.weight"]
  del sd["image_encoder.neck.convs.0.conv.bias"]
  sd["extra.weight"] = np.zeros(3, np.float32)
  sd["obj_ptr_proj.layers.0.weight"] = np.zeros((3, 256), np.float32)
  pt = _save_pt(tmp_path / "broken.pt", sd)
  out = tmp_path / "out"
  with pytest.raises(torch_ckpt.CheckpointMismatchError) as e:
    convert(pt, str(out), "sam2.1_hiera_t")
  message = str(e.value)
  for key in ("memory_attention.norm.weight", "image_encoder.neck.convs.0.conv.bias", "extra.weight",
              "obj_ptr_proj.layers.0.weight: checkpoint (3, 256), model (256, 256)"):
    assert key in message
  assert "missing keys (2)" in message and "unexpected keys (1)" in message and "shape mismatches (1)" in message
  assert not out.exists()


def test_version_mismatch_is_explained(official_t):
  with pytest.raises(ValueError, match=r"SAM 2.1 checkpoint but config 'sam2_hiera_t' is SAM 2 \(2.0\): use config "
                                       r"'sam2.1_hiera_t'"):
    params_from_state_dict(official_t, get_model_config("sam2_hiera_t", image_size=256))


def test_explicit_config_reaches_the_strict_report(tmp_path, official_t):
  """A state dict with renamed keys and --config given: the key-by-key report, not "pass --config"."""
  renamed = {f"model.{k}": v for k, v in official_t.items()}
  pt = _save_pt(tmp_path / "renamed.pt", renamed)
  with pytest.raises(torch_ckpt.CheckpointMismatchError, match=r"(?s)missing keys \(471\).*unexpected keys \(471\)"):
    convert(pt, str(tmp_path / "o"), "sam2.1_hiera_t")
  run = subprocess.run([sys.executable, "-m", "sam2_jax.convert", f"--checkpoint={pt}", "--config=sam2.1_hiera_t",
                        f"--output={tmp_path / 'cli'}"], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(__file__)))
  assert run.returncode == 2 and "does not match the model sam2.1_hiera_t" in run.stderr, run.stderr[-2000:]
  assert "unexpected keys (471): model.image_encoder" in run.stderr and "pass --config" not in run.stderr
  assert not (tmp_path / "o").exists() and not (tmp_path / "cli").exists()


def test_bad_inputs(tmp_path, official_t):
  with pytest.raises(ValueError, match="does not exist"):
    convert(str(tmp_path / "nope.pt"), str(tmp_path / "o"))
  (tmp_path / "folder").mkdir()
  with pytest.raises(ValueError, match="is a folder; expected an official .pt file"):
    convert(str(tmp_path / "folder"), str(tmp_path / "o"))
  with pytest.raises(ValueError, match="holds no model: expected a sam2_jax model checkpoint"):
    build_sam2(checkpoint=str(tmp_path / "folder"))
  with pytest.raises(ValueError, match="does not exist"):
    build_sam2(checkpoint=str(tmp_path / "nope"))
  junk = tmp_path / "junk.pt"
  junk.write_bytes(b"not a checkpoint")
  with pytest.raises(ValueError, match="Could not read"):
    convert(str(junk), str(tmp_path / "o"))
  pt = _save_pt(tmp_path / "ok.pt", official_t)
  (tmp_path / "exists").mkdir()
  with pytest.raises(ValueError, match="already exists"):
    convert(pt, str(tmp_path / "exists"))
  with pytest.raises(ValueError, match="Unknown SAM 2 config 'sam3_hiera_t'"):
    build_sam2("sam3_hiera_t")
  with pytest.raises(ValueError, match="multiple of 32"):
    build_sam2("sam2.1_hiera_t", image_size=1000)


def test_to_torch_round_trip_loads_in_official_model(tmp_path, official_t):
  pt = _save_pt(tmp_path / "in.pt", official_t)
  convert(pt, str(tmp_path / "jax"))
  run = subprocess.run([sys.executable, "-m", "sam2_jax.convert", "--to-torch", f"--checkpoint={tmp_path / 'jax'}",
                        f"--output={tmp_path / 'out.pt'}"], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(__file__)))
  assert run.returncode == 0, run.stderr
  back = torch.load(tmp_path / "out.pt", weights_only=True)["model"]
  assert set(back) == set(official_t)
  for key, value in official_t.items():
    np.testing.assert_array_equal(back[key].numpy(), value, err_msg=key)
  from bench.oracle import official_config_path, sam2_build  # pylint: disable=g-import-not-at-top
  sam2_build.build_sam2(official_config_path("sam2.1_hiera_t"), ckpt_path=str(tmp_path / "out.pt"), device="cpu",
                        hydra_overrides_extra=["++model.image_size=256"])  # strict load
  assert not (tmp_path / "out.pt.partial").exists()
