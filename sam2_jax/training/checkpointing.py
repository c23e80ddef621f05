"""Training checkpoints with Orbax: save, and resume from the newest step that restores.

A step `{workdir}/checkpoints/{step}` holds `state` (params, optimizer state, step, RNG), `data_iter` (the data
iterator's position), `data_stats` and `metadata`: JSON with the model's `config_name` and `overrides` (as in a
converted model checkpoint, so `build_sam2` can load any step) and the active `data_sources` and `num_workers`
that shape the data iterator's state. `restore` compares these and the saved array shapes with the run's config
before reading any array, so a changed config gets a message saying what changed; a step that fails to read is
skipped for an older one.

A save is atomic: Orbax writes a step to `{step}.orbax-checkpoint-tmp` and renames it when every item is written
(on GCS, where there is no rename: `commit_success.txt` marks the end), so a process killed mid-write leaves the
previous steps as they were and an unfinished folder that the next run's manager deletes. `SigtermWatch` turns a
preemption notice (SIGTERM) into a checkpoint of the current step and a clean exit.
"""

import functools
import json
import logging
import os
import signal
import sys
from typing import Any

import jax
from jax.experimental import multihost_utils
import ml_collections
import orbax.checkpoint as ocp

from sam2_jax.data import pipeline

SKIPPED_DIR = "skipped_checkpoints"  # in the workdir: steps that failed to restore, moved out of the way
_SHOWN = 5  # mismatches named in an error
_REASON_CHARS = 300  # TensorStore's messages can hold a whole JSON spec


class CheckpointMismatchError(ValueError):
  """A checkpoint was written by a run with a different model or data config."""


def make_manager(directory: str, max_to_keep: int) -> ocp.CheckpointManager:
  """An asynchronous CheckpointManager of the train.py items.

  It deletes the unfinished writes of a killed run (temporary folders, which no step lists), and old steps only
  once a newer one is complete.
  """
  handlers = {"state": ocp.StandardCheckpointHandler(), "data_iter": ocp.JsonCheckpointHandler(),
              "data_stats": ocp.JsonCheckpointHandler(), "metadata": ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(directory, item_handlers=handlers, options=ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, enable_async_checkpointing=True, cleanup_tmp_directories=True))


class SigtermWatch:
  """Whether a preemption notice (SIGTERM) asks the train loop to stop after a step, alike on every process.

  One process: a `signal.signal` handler only sets a flag, which the loop reads between steps; a repeated SIGTERM
  sets it again, so it cannot interrupt the checkpoint the first one led to. Several processes:
  `jax.distributed.initialize` installed JAX's preemption notifier for SIGTERM (the preemption service, on by
  default), which tells every process, and `multihost_utils.reached_preemption_sync_point` turns True at the same
  step on all of them (one past the highest step any of them had reached), without synchronising any device; a
  Python handler here would replace JAX's. SIGINT keeps its default (KeyboardInterrupt).
  """

  def __init__(self) -> None:
    self._received = False
    self._multi_process = jax.process_count() > 1
    if not self._multi_process:
      signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum: int, frame: Any) -> None:
    del signum, frame
    self._received = True  # and nothing else: the loop saves between steps

  def stop_after(self, step: int) -> bool:
    """Whether to save `step` and stop; every process asks after every step, with the same steps."""
    if self._multi_process:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._received


def run_metadata(config: ml_collections.ConfigDict, model_name: str) -> dict[str, Any]:
  """The `metadata` item of a training config whose model config is named `model_name`."""
  metadata = {"config_name": model_name, "overrides": config.model_overrides.to_dict(),
              "data_sources": [s.name for s in pipeline.active_sources(config.data)],
              "num_workers": config.data.num_workers}
  return json.loads(json.dumps(metadata))  # as it reads back: tuples become lists


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_iter_state: dict[str, Any],
         data_stats_state: dict[str, Any], metadata: dict[str, Any]) -> None:
  """Starts saving a step (asynchronously: `manager.wait_until_finished()` waits for it)."""
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), data_iter=ocp.args.JsonSave(data_iter_state),
      data_stats=ocp.args.JsonSave(data_stats_state), metadata=ocp.args.JsonSave(metadata)))


def restore(manager: ocp.CheckpointManager, target: Any,
            metadata: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
  """The newest step that restores and its `state` (with `target`'s shapes and shardings), `data_iter` and
  `data_stats`; None when there is no checkpoint.

  Newer steps that failed to read are moved to `{workdir}/skipped_checkpoints/` (the resumed run saves those
  steps again), each with one printed line saying why. Raises `CheckpointMismatchError` when the newest readable
  step was written with a different model, optimizer or data config (see `run_metadata`), and ValueError when
  no step restores.
  """
  _hide_abandoned_read_reports()
  failures, found = [], None
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      found = step, _restore_step(manager, step, target, metadata)
      break
    except CheckpointMismatchError:
      raise
    except Exception as e:  # pylint: disable=broad-exception-caught  # any failure to read: try an older step
      failures.append((step, _reason(e)))
  if found is None and failures:
    raise ValueError(f"No checkpoint in {manager.directory} restores: "
                     + "; ".join(f"step {step}: {reason}" for step, reason in failures)
                     + ". Move the checkpoints folder away to start afresh, or use a new --workdir.")
  if failures:
    if jax.process_index() == 0:
      for skipped, reason in failures:
        print(f"Skipped checkpoint step {skipped} (moved to {_move_aside(manager, skipped)}): {reason}", flush=True)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("checkpointing.restore: skipped steps moved")
    manager.reload()
  return found


@functools.cache
def _hide_abandoned_read_reports() -> None:
  """Drops what the reads abandoned by a failed Orbax restore report: when one read fails, Orbax closes its event
  loop with the others in flight, and each later reports a long traceback as TensorStore completes it on the closed
  loop (sys.unraisablehook) or as its task or coroutine is garbage-collected (asyncio's logger,
  sys.unraisablehook). The skipped step's one line says enough; every other report passes."""
  def abandoned_read(unraisable) -> bool:
    exc, code = unraisable.exc_value, getattr(unraisable.object, "cr_code", None)
    return ((isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed")
            or (code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename))

  previous = sys.unraisablehook
  sys.unraisablehook = lambda unraisable: None if abandoned_read(unraisable) else previous(unraisable)

  def not_abandoned_read(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    if "never retrieved" not in message and "destroyed but it is pending" not in message:
      return True
    exc = record.exc_info[1] if record.exc_info else None
    return f"{os.sep}orbax{os.sep}" not in message and "tensorstore" not in f"{message} {exc!r}".lower()

  logging.getLogger("asyncio").addFilter(not_abandoned_read)


def _restore_step(manager: ocp.CheckpointManager, step: int, target: Any, metadata: dict[str, Any]) -> dict[str, Any]:
  items = manager.item_metadata(step)
  saved = None  # steps saved without a metadata item get the array check only
  if "metadata" in items.keys():
    saved = manager.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))["metadata"]
  where = f"The checkpoint in {os.path.dirname(os.fspath(manager.directory))} (step {step})"
  _check_arrays(where, items["state"].tree, target, saved, metadata)
  if saved is not None:
    _check_data(where, saved, metadata)
  return manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target), data_iter=ocp.args.JsonRestore(), data_stats=ocp.args.JsonRestore()))


def _check_arrays(where: str, saved_tree: Any, target: Any, saved: dict[str, Any] | None,
                  now: dict[str, Any]) -> None:
  """Arrays missing, extra or of other shapes: a different model (or optimizer) config."""
  saved_shapes, shapes = _shapes(saved_tree), _shapes(target)
  diffs = [f"{p}: {saved_shapes[p]} in the checkpoint, {shapes[p]} in the config"
           for p in sorted(saved_shapes.keys() & shapes.keys()) if saved_shapes[p] != shapes[p]]
  diffs += [f"{p}: only in the checkpoint" for p in sorted(saved_shapes.keys() - shapes.keys())]
  diffs += [f"{p}: only in the config" for p in sorted(shapes.keys() - saved_shapes.keys())]
  if not diffs:
    return
  diffs.sort(key=lambda d: not d.startswith("params/"))  # stable: the params' differences first
  kind = "model" if diffs[0].startswith("params/") else "optimizer"
  changes = _model_changes(saved, now) if saved is not None else []
  changes = f" ({'; '.join(changes[:_SHOWN])})" if changes else ""
  shown = "; ".join(diffs[:_SHOWN]) + (f"; and {len(diffs) - _SHOWN} more" if len(diffs) > _SHOWN else "")
  raise CheckpointMismatchError(
      f"{where} was written by a different {kind} config{changes}: {len(diffs)} of its arrays do not fit this "
      f"config's ({shown}). Train in a new --workdir (config.init_checkpoint starts a run from a model "
      "checkpoint's weights), or resume with the config it was written with.")


def _model_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
  """'overrides.x was 1, now 2' for each model config entry that differs."""
  before = _flatten({"config_name": saved.get("config_name"), "overrides": saved.get("overrides", {})})
  after = _flatten({"config_name": now["config_name"], "overrides": now["overrides"]})
  return [f"{k} was {before.get(k, 'unset')}, now {after.get(k, 'unset')}"
          for k in sorted(before.keys() | after.keys()) if before.get(k) != after.get(k)]


def _check_data(where: str, saved: dict[str, Any], now: dict[str, Any]) -> None:
  """Other data sources or worker count: the data iterator's saved position does not fit."""
  changes = [f"{k} was {saved.get(k)}, now {now[k]}" for k in ("data_sources", "num_workers") if saved.get(k) != now[k]]
  if changes:
    raise CheckpointMismatchError(
        f"{where} was written with other data sources ({'; '.join(changes)}), so its data iterator's position "
        "does not fit this config's. Resume with the data config it was written with, or train in a new --workdir.")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """'params/image_encoder/...' -> shape, for the leaves of a state or of its saved tree metadata."""
  def name(key) -> str:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        return str(getattr(key, attr))
    return str(key)

  def shape(leaf) -> tuple[int, ...]:  # PRNG keys are saved as their key data
    if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
      return jax.eval_shape(jax.random.key_data, leaf).shape
    return tuple(leaf.shape)

  return {"/".join(name(k) for k in path): shape(leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _reason(e: BaseException) -> str:
  """The root cause of a failure, on one (shortened) line: the innermost exception's type and first line."""
  while (inner := e.__cause__ or (None if e.__suppress_context__ else e.__context__)) is not None:
    e = inner
  lines = str(e).strip().splitlines()
  reason = f"{type(e).__name__}: {lines[0] if lines else 'no message'}"
  return reason if len(reason) <= _REASON_CHARS else reason[:_REASON_CHARS - 3] + "..."


def _move_aside(manager: ocp.CheckpointManager, step: int) -> str:
  """Moves a step to `{workdir}/skipped_checkpoints/{step}` (`{step}.1`, ... when taken); returns where."""
  skipped_dir = os.path.join(os.path.dirname(os.fspath(manager.directory)), SKIPPED_DIR)
  os.makedirs(skipped_dir, exist_ok=True)
  dest, n = os.path.join(skipped_dir, str(step)), 0
  while os.path.exists(dest):
    n += 1
    dest = os.path.join(skipped_dir, f"{step}.{n}")
  os.rename(os.path.join(os.fspath(manager.directory), str(step)), dest)
  return dest


def truncate_metrics(path: str, step: int) -> None:
  """Drops the lines of a metrics.jsonl logged after `step` (and any line cut off mid-write), so a run resumed from
  `step` logs each later step once. Rewrites the file atomically."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()

  def logged_step(line: str) -> float:
    try:
      return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
      return float("inf")

  keep = [line for line in lines if line.endswith("\n") and logged_step(line) <= step]
  if len(keep) == len(lines):
    return
  with open(path + ".tmp", "w") as f:
    f.writelines(keep)
  os.replace(path + ".tmp", path)
