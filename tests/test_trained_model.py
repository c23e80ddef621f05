"""A model trained with train.py is usable by every entry point, through the commands the README documents:
build_sam2 and `convert` on the workdir or one of its steps, `segment` and `eval.py` with `--checkpoint=WORKDIR`."""

import os
import re
import subprocess
import sys

import jax
import numpy as np

from sam2_jax import build_sam2
from tests.test_train import ROOT, _env

SUMMARY = re.compile(r"^J&F=(\d+\.\d) J=(\d+\.\d) F=(\d+\.\d)$")


def _run(tmp_path, *args):
  run = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                       env=_env(tmp_path))
  assert run.returncode == 0, run.stderr[-4000:]
  return run


def test_trained_model_in_every_entry_point(full_run, tmp_path):
  workdir = full_run / "full"  # checkpoints at steps 2, 4 and 5

  # The workdir names its newest step; a step can be named too.
  newest = build_sam2(checkpoint=workdir)
  second = build_sam2(checkpoint=workdir / "checkpoints" / "2")
  assert newest.config == second.config and newest.config.image_size == 64
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(newest.params), jax.tree.leaves(second.params)))
  jax.tree.map(np.testing.assert_array_equal, build_sam2(checkpoint=workdir / "checkpoints" / "5").params,
               newest.params)

  # Exported as a model checkpoint (params only), it loads to the same params.
  exported = tmp_path / "exported"
  _run(tmp_path, "-m", "sam2_jax.convert", f"--checkpoint={workdir}", f"--output={exported}")
  jax.tree.map(np.testing.assert_array_equal, build_sam2(checkpoint=exported).params, newest.params)

  # segment and eval.py take the workdir as --checkpoint, with its model config.
  eval_data = workdir / "data" / "vos_eval"
  video = sorted(os.listdir(eval_data / "JPEGImages"))[0]
  frame = eval_data / "JPEGImages" / video / sorted(os.listdir(eval_data / "JPEGImages" / video))[0]
  out = tmp_path / "segment"
  run = _run(tmp_path, "-m", "sam2_jax.segment", f"--checkpoint={workdir}", f"--input={frame}", "--points=30,30",
             f"--output={out}")
  assert "warning" not in run.stderr
  assert sorted(os.listdir(out)) == ["mask.png", "overlay.png"]
  run = _run(tmp_path, "eval.py", f"--checkpoint={workdir}", f"--data_root={eval_data}",
             f"--output_dir={tmp_path / 'preds'}")
  assert SUMMARY.match(run.stdout.strip().splitlines()[-1]), run.stdout[-2000:]
