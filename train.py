r"""Trains SAM 2 on mixed image and video data.

  python train.py --config=configs/train.py:demo --workdir=/tmp/sam2_demo
  python train.py --config=configs/train.py:sa1b_sav_b+ --workdir=/data/runs/b+ \
      --config.data.sources.sa1b.paths='/data/sa1b/*.array_record' --config.data.sources.sav.paths=...

The run resumes from the newest checkpoint in --workdir that restores (params, optimizer state, step,
RNG and the data iterator's position; unreadable newer steps are moved to workdir/skipped_checkpoints),
and fails with one error line when the checkpoint was written with another model or data config.
Metrics go to TensorBoard event files (workdir/tensorboard), to workdir/metrics.jsonl (a resumed run
first drops the lines of steps after its checkpoint) and to a progress line; periodic evaluation prints
`eval step=<n> J&F=<value> copy_first_frame_J&F=<value>`.

SIGTERM (a spot or TPU preemption notice) lets the step in progress finish, saves it as a checkpoint (data iterator
and metrics state included), waits for the write, prints `train: SIGTERM at step <n>: checkpoint saved, exiting`
to stderr and exits with status 0; a second SIGTERM does not interrupt the save, and in multi-process runs every
process stops at the same step (`checkpointing.SigtermWatch`). SIGINT (Ctrl-C) stops at once, as before: the run
resumes from its last periodic checkpoint. A run killed mid-write resumes from the previous one.
"""

import functools
import json
import os
import sys
import time

from sam2_jax import huge_pages

if __name__ == "__main__":
  huge_pages.restart_with_huge_pages()  # first, so that a restart repeats none of the imports below

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
from ml_collections import config_flags
import tqdm

from sam2_jax import cli
from sam2_jax.training import sharding  # before JAX is used: multi-host initialisation precedes any JAX call
# pylint: enable=g-import-not-at-top,wrong-import-position

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config, e.g. configs/train.py:demo.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs and generated data go here.")


def prepare_synthetic(config, data_dir: str) -> None:
  """Generates the demo's synthetic SA-1B / SA-V / held-out data and converts it to ArrayRecord (once)."""
  from data import sa1b_to_arrayrecord, sav_to_arrayrecord, synthetic  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  s = config.synthetic
  done = os.path.join(data_dir, "READY")
  if jax.process_index() == 0 and not os.path.exists(done):
    synthetic.generate(data_dir, s.num_images, s.num_videos, s.num_eval_videos, s.size, num_frames=s.num_frames,
                       eval_num_frames=s.eval_num_frames, seed=0)
    sa1b_to_arrayrecord.convert(os.path.join(data_dir, "sa1b"), os.path.join(data_dir, "records"), 4,
                                progress=False)
    sav_to_arrayrecord.convert(os.path.join(data_dir, "sav"), os.path.join(data_dir, "records"), 4,
                               progress=False)
    open(done, "w").close()
  while not os.path.exists(done):  # other hosts wait for host 0
    time.sleep(1)
  config.data.sources.sa1b.paths = os.path.join(data_dir, "records", "sa1b-*.array_record")
  config.data.sources.sav.paths = os.path.join(data_dir, "records", "sav-*.array_record")
  config.eval_data = os.path.join(data_dir, "vos_eval")


def main(argv):
  del argv
  cli.quiet_library_logs()
  sharding.maybe_initialize_distributed()
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  from sam2_jax.build_sam import (  # pylint: disable=g-import-not-at-top
      SAM2Model, build_sam2, find_sam2_jax_checkpoint, init_params)
  from sam2_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from sam2_jax.evaluation import io as vos_io  # pylint: disable=g-import-not-at-top
  from sam2_jax.evaluation import vos_inference  # pylint: disable=g-import-not-at-top
  from sam2_jax.predictors.video import SAM2VideoPredictor  # pylint: disable=g-import-not-at-top
  from sam2_jax.training import checkpointing, flops, optimizer, step  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  # Bad input (config, workdir, data, a checkpoint of another config) fails here, before generating data or
  # compiling anything.
  try:
    model_config = step.model_config(config)
    if config.init_checkpoint:
      find_sam2_jax_checkpoint(config.init_checkpoint)  # raises when it does not exist or holds no model
    workdir = os.path.abspath(_WORKDIR.value)
    cli.make_output_dir(workdir, "workdir")
    if config.compilation_cache_dir:  # the config's directory wins over JAX_COMPILATION_CACHE_DIR
      jax.config.update("jax_compilation_cache_dir", os.path.expanduser(config.compilation_cache_dir))
    if config.synthetic.generate:
      prepare_synthetic(config, os.path.join(workdir, "data"))
    dataset = pipeline.make_dataset(config.data, jax.process_index(), jax.process_count(), seed=config.seed)
    metadata = checkpointing.run_metadata(config, model_config.name)
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
    prog = step.program(config, model_config, mesh)
    manager = checkpointing.make_manager(os.path.join(workdir, "checkpoints"), config.keep_checkpoints)
    restored = checkpointing.restore(manager, prog.abstract_state, metadata)
  except ValueError as e:
    cli.fail(str(e))

  data_iter = iter(dataset)
  stats = pipeline.DataStats(pipeline.source_names(config.data))
  if restored is not None:
    latest, restored = restored
    state = restored["state"]
    data_iter.set_state(restored["data_iter"])
    stats.set_state(restored["data_stats"])
    print(f"Resumed from step {latest} in {workdir}")
  else:
    key_init, key_train = jax.random.split(jax.random.key(config.seed))
    if config.init_checkpoint:
      params = build_sam2(config.model_name, config.init_checkpoint, apply_postprocessing=False,
                          **config.model_overrides.to_dict()).params
    else:
      params = jax.jit(functools.partial(init_params, model_config),
                       out_shardings=prog.state_shardings.params)(key_init)
    state = jax.jit(prog.init_state, out_shardings=prog.state_shardings)(params, key_train)

  train_step = prog.train_step
  lr_schedule = optimizer.lr_factor_schedule(config.num_steps, config.optimizer.warmup_steps,
                                             config.optimizer.end_lr_factor)
  # The MFU's peak: a large matmul in the model's compute dtype, measured on this device.
  peak = flops.matmul_rate(model_config.compute_dtype, 4096) * jax.device_count() if config.count_flops else 0.0
  compiled, flops_per_step = {}, {}
  start = int(state.step)
  writer = jsonl = None
  if jax.process_index() == 0:
    # Steps logged after the restored checkpoint are logged again: the earlier copies go.
    writer = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=start + 1)
    checkpointing.truncate_metrics(os.path.join(workdir, "metrics.jsonl"), start)
    jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")

  def log(step_num: int, values: dict) -> None:
    if writer is None:
      return
    for k, v in values.items():
      writer.add_scalar(k, v, step_num)
    jsonl.write(json.dumps({"step": step_num, **values}) + "\n")
    jsonl.flush()

  def evaluate(step_num: int, state) -> None:
    if not config.eval_data:
      return
    params = jax.device_get(state.params)
    # As eval.py and the official tools/vos_inference.py: one PNG per frame (DAVIS) keeps, at each pixel,
    # only the highest-scoring object.
    layout = vos_io.dataset_layout(config.eval_data)[0]
    predictor = SAM2VideoPredictor(SAM2Model(model_config, params), non_overlap_masks=layout == vos_io.DAVIS,
                                   progress=False)
    jf, copy_jf = vos_inference.evaluate_tracker(predictor, config.eval_data,
                                                 os.path.join(workdir, "eval", f"step_{step_num}"),
                                                 config.eval_max_videos)
    bar.write(f"eval step={step_num} J&F={jf:.1f} copy_first_frame_J&F={copy_jf:.1f}", file=sys.stdout)
    postfix["J&F"] = f"{jf:.1f}"
    bar.set_postfix(postfix)
    log(step_num, {"eval/J&F": jf, "eval/copy_first_frame_J&F": copy_jf})

  # One progress bar (steps, ETA, the latest loss, frames/s and J&F); metrics.jsonl and TensorBoard get every value.
  bar = tqdm.tqdm(total=config.num_steps, initial=start, desc="train", unit="step",
                  disable=jax.process_index() != 0, mininterval=1.0)
  postfix = {}
  t_last, frames, window_flops = time.perf_counter(), 0, 0.0
  # Until here SIGTERM ends a single-process run at once: it has done nothing since its checkpoint.
  sigterm = checkpointing.SigtermWatch()
  for step_num in range(start + 1, config.num_steps + 1):
    batch = next(data_iter)
    stats.update(batch)
    model_batch = {k: batch[k] for k in ("images", "masks", "obj_valid")}
    frames += int(np.prod(batch["images"].shape[:2])) * jax.process_count()
    global_batch = sharding.global_batch(model_batch, mesh)
    shape_key = batch["images"].shape
    if shape_key not in compiled:  # image and video batches: one executable each
      compiled[shape_key] = train_step.lower(state, global_batch).compile()
      # Executed matmul/conv FLOPs of this first step's prompt plan (XLA's count sees each loop body once).
      flops_per_step[shape_key] = flops.step_flops(train_step, state, global_batch)[0] if config.count_flops else 0.0
    state, metrics = compiled[shape_key](state, global_batch)
    window_flops += flops_per_step[shape_key]
    if step_num % config.log_every == 0 or step_num == config.num_steps:
      metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
      elapsed = time.perf_counter() - t_last
      metrics.update({"lr": config.optimizer.lr * float(lr_schedule(step_num - 1)),
                      "frames_per_second": frames / elapsed})
      if config.count_flops:
        metrics["mfu"] = window_flops / elapsed / peak
      metrics.update(stats.metrics())
      log(step_num, metrics)
      postfix.update(loss=f"{metrics['loss']:.4f}", fps=f"{metrics['frames_per_second']:.1f}")
      if config.count_flops:
        postfix["mfu"] = f"{100 * metrics['mfu']:.1f}%"
      bar.set_postfix(postfix, refresh=False)
      t_last, frames, window_flops = time.perf_counter(), 0, 0.0
    bar.update()
    # A preemption notice (SIGTERM) ends the run after this step, with its checkpoint and without its evaluation.
    # stop_after is asked at every step: in multi-process runs, JAX's preemption sync needs each step.
    preempted = sigterm.stop_after(step_num) and step_num < config.num_steps
    if preempted or step_num % config.checkpoint_every == 0 or step_num == config.num_steps:
      checkpointing.save(manager, step_num, state, data_iter.get_state(), stats.get_state(), metadata)
    if preempted:
      manager.wait_until_finished()
      bar.write(f"train: SIGTERM at step {step_num}: checkpoint saved, exiting", file=sys.stderr)
      break
    if config.eval_every and (step_num % config.eval_every == 0 or step_num == config.num_steps):
      manager.wait_until_finished()
      evaluate(step_num, state)
  bar.close()
  manager.wait_until_finished()
  if writer is not None:
    writer.close()
    jsonl.close()


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main, flags_parser=lambda argv: cli.parse_config_flags(argv, _CONFIG))
