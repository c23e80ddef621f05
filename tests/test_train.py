"""Training: sharded step == single-device step, and interrupt-and-resume reproduces the run exactly."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config.synthetic.num_images=8", "--config.synthetic.num_videos=4", "--config.synthetic.num_eval_videos=1",
        "--config.synthetic.num_frames=16", "--config.synthetic.eval_num_frames=6", "--config.data.sources.sa1b.batch_size=2",
        "--config.data.sources.sav.batch_size=1", "--config.data.num_frames=4", "--config.prompts.num_correction_pt_per_frame=1",
        "--config.optimizer.warmup_steps=1", "--config.log_every=1", "--config.eval_every=0",
        "--config.count_flops=False", "--config.model_overrides.image_size=64", "--config.data.resolution=64",
        "--config.synthetic.size=64", "--config.model_overrides.memory_attention.num_layers=1"]


def _env(tmp_path, devices: int = 1) -> dict:
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["PYTHONPATH"] = ROOT
  return env


def _train(tmp_path, workdir, num_steps, *extra):
  run = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--config=configs/train.py:demo",
                        f"--workdir={workdir}", f"--config.num_steps={num_steps}",
                        f"--config.compilation_cache_dir={tmp_path / 'xla_cache'}", *TINY, *extra],
                       capture_output=True, text=True, cwd=ROOT, env=_env(tmp_path))
  assert run.returncode == 0, run.stderr[-4000:]
  return run


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return {r["step"]: r["loss"] for r in map(json.loads, f) if "loss" in r}


def test_interrupt_and_resume_is_exact(tmp_path):
  full, resumed = tmp_path / "full", tmp_path / "resumed"
  _train(tmp_path, full, 5, "--config.checkpoint_every=2", "--config.keep_checkpoints=5")
  # A job killed after step 3 leaves the step-2 checkpoint (and the generated data) behind.
  os.makedirs(resumed / "checkpoints")
  shutil.copytree(full / "checkpoints" / "2", resumed / "checkpoints" / "2")
  os.symlink(full / "data", resumed / "data")
  run = _train(tmp_path, resumed, 5, "--config.checkpoint_every=2")
  assert "Resumed from step 2" in run.stdout
  want, got = _losses(full), _losses(resumed)
  assert sorted(want) == [1, 2, 3, 4, 5] and sorted(got) == [3, 4, 5]
  for step in (3, 4, 5):
    assert got[step] == want[step], (step, got[step], want[step])
  # The train step went into the config's compilation cache, where a restarted run finds it (a directory
  # apart from the environment's JAX_COMPILATION_CACHE_DIR, so this fails if the config is ignored).
  assert any(name.startswith("jit_train_step") for name in os.listdir(tmp_path / "xla_cache"))


SHARDED = textwrap.dedent("""
    import functools, sys
    import jax, jax.numpy as jnp, numpy as np
    from configs.train import get_config
    from sam2_jax.build_sam import get_model_config
    from sam2_jax.modeling.sam2 import SAM2
    from sam2_jax.training import optimizer, sharding, step
    assert jax.device_count() == 8
    c = get_config("demo")
    c.prompts.num_correction_pt_per_frame = 1
    c.model_overrides.image_size = 64
    c.model_overrides.memory_attention.num_layers = 1
    mc = get_model_config(c.model_name, **c.model_overrides.to_dict())
    module = SAM2(mc)
    params = jax.jit(lambda k: module.init(k, jnp.zeros((1, 64, 64, 3)))["params"])(jax.random.key(0))
    tx = optimizer.make_optimizer(c.optimizer, params, 100)
    rng = np.random.default_rng(0)
    masks = np.zeros((8, 2, 2, 64, 64), bool)
    masks[:, :, 0, 10:30, 15:35] = True
    masks[::2, :, 1, 35:50, 5:25] = True
    batch = dict(images=rng.integers(0, 255, (8, 2, 64, 64, 3), dtype=np.uint8), masks=masks,
                 obj_valid=np.ones((8, 2), bool))
    results = []
    for data, fsdp in ((1, 1), (4, 2)):
      mesh = sharding.make_mesh(data, fsdp, jax.devices()[:data * fsdp])
      state = step.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                              rng=jax.random.key(1))
      shardings = sharding.param_shardings(state, mesh, min_size=1024)
      state = jax.device_put(state, shardings)
      fn = jax.jit(functools.partial(step.train_step, module, tx, prompts=c.prompts),
                   in_shardings=(shardings, sharding.batch_sharding(mesh)), out_shardings=(shardings, None))
      new_state, metrics = fn(state, sharding.global_batch(batch, mesh))
      if fsdp == 2:
        kernel = new_state.params["memory_attention"]["layers_0"]["linear1"]["kernel"]
        assert "fsdp" in str(kernel.sharding.spec), kernel.sharding
      results.append((float(metrics["loss"]), jax.device_get(new_state.params)))
    (loss1, p1), (loss8, p8) = results
    assert abs(loss1 - loss8) <= 1e-5 * abs(loss1), (loss1, loss8)
    errs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), p1, p8))
    assert max(errs) <= 1e-5, max(errs)
    print("OK", loss1, loss8, max(errs))
""")


def test_sharded_step_matches_single_device(tmp_path):
  run = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True, cwd=ROOT,
                       env=_env(tmp_path, devices=8))
  assert run.returncode == 0 and "OK" in run.stdout, run.stderr[-4000:]
