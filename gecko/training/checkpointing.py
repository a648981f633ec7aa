"""Orbax checkpoints of the TrainState: every N steps, keep K, resume from MODEL_DIR.

A checkpoint that cannot be restored (a truncated array file, empty or garbled
metadata) is set aside, never deleted: `restore_latest` moves it to
`MODEL_DIR/checkpoints_unreadable/<step>`, says so on stderr, and resumes from the
previous one; it fails with one clear line only when no checkpoint restores.

A checkpoint holds the sharded TrainState (params, optimiser state, step, RNG, the
non-finite counters), a small JSON `meta` (the step and the run's settings) and, for
a streaming input (`gecko.data.seqio_batches`), each process's input position
(`input/process-P-of-N`, the `tf.data` iterator state). Step-indexed inputs
(`gecko.data.pairs`) need only the step. Either way a resumed run reproduces an
uninterrupted one. Orbax writes to a temporary directory
and renames on completion: a run killed mid-save leaves the previous checkpoint
intact. A state with non-finite parameters is never written.

The K kept are the newest on the cadence (`step % N == 0`). A checkpoint off it (one
written on preemption) is kept only while it is the newest, as the point the run
resumes from: it never takes the place of a kept one, so a preempted run that keeps
every checkpoint for model selection still has each of them at its end.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any

import jax
import orbax.checkpoint as ocp

from gecko.data import disk, paths
from gecko.models import unreadable
from gecko.training.train_step import all_finite

_all_finite = jax.jit(all_finite)


def params_are_finite(params) -> bool:
  return bool(_all_finite(params))


def _position_file() -> str:
  return f"process-{jax.process_index():05d}-of-{jax.process_count():05d}"


class _PositionHandler(ocp.JsonCheckpointHandler):
  """Each process's input position (bytes) in a file of its own, under orbax's commit:
  written to the step's temporary folder, renamed with the rest of the checkpoint."""

  async def _save_fn(self, x, directory):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / _position_file()).write_bytes(x)

  def restore(self, directory, item=None, args=None) -> bytes:
    del item, args
    return (directory / _position_file()).read_bytes()


@ocp.args.register_with_handler(_PositionHandler, for_save=True)
@dataclasses.dataclass
class _PositionSave(ocp.args.CheckpointArgs):
  item: bytes


@ocp.args.register_with_handler(_PositionHandler, for_restore=True)
@dataclasses.dataclass
class _PositionRestore(ocp.args.CheckpointArgs):
  item: None = None


class CheckpointError(RuntimeError):
  """Checkpoints exist, but none of them restores."""


class ModelChangedError(ValueError):
  """The checkpoints hold a model of other shapes than the run's (its settings changed)."""


def _shapes(params) -> dict[str, list[int]]:
  return {jax.tree_util.keystr(path): list(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(params)}


@dataclasses.dataclass(frozen=True)
class CadencePreservation:
  """Orbax's preservation policy for `Checkpointer` (module docstring): the newest
  `keep` checkpoints whose step is a multiple of `every`, and the newest of all."""
  every: int
  keep: int

  def should_preserve(self, checkpoints, *, context=None) -> list[bool]:
    del context
    steps = [info.step for info in checkpoints]
    kept = {*sorted(s for s in steps if s % self.every == 0)[-self.keep:], max(steps, default=0)}
    return [s in kept for s in steps]


class Checkpointer:
  """Saves and restores TrainStates under `directory/checkpoints`.

  Args:
    directory: The run's MODEL_DIR.
    every: Save when `step % every == 0` (and always on `force=True`).
    keep: How many of the newest checkpoints on that cadence to keep (and the newest
      of all, when it is off the cadence).
  """

  def __init__(self, directory: str, *, every: int, keep: int):
    if every < 1 or keep < 1:
      raise ValueError(f"checkpoint every={every} and keep={keep} must both be >= 1.")
    self.every = every
    self.directory = directory
    self._manager = ocp.CheckpointManager(
        paths.checkpoints_dir(paths.absolute(directory)),
        options=ocp.CheckpointManagerOptions(
            preservation_policy=CadencePreservation(every=every, keep=keep), create=True),
        item_names=("state", "meta", "input"))

  @property
  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def steps(self) -> list[int]:
    """The steps with a checkpoint, ascending."""
    return sorted(self._manager.all_steps())

  def due(self, step: int) -> bool:
    """Whether `step` is a checkpoint step."""
    return step % self.every == 0

  def save(self, step: int, state, meta: dict[str, Any], *,
           position: bytes | Callable[[], bytes | None] | None = None,
           force: bool = False) -> bool:
    """Saves if due (or forced); returns whether a checkpoint was written. `position`:
    this process's input position before batch `step` (a streaming input's), or a
    function giving it, called only when a checkpoint is written (a finished run that
    is started again writes nothing, and asks its input for nothing)."""
    if not force and not self.due(step):
      return False
    if step in self._manager.all_steps():
      return False
    if not params_are_finite(state.params):
      print(f"gecko: parameters at step {step} are not finite; no checkpoint written (the last "
            "good one is kept).", file=sys.stderr)
      return False
    meta = dict(meta, shapes=_shapes(state.params))
    disk.check_free(self.directory, needed=disk.nbytes(state), what=f"checkpoint {step}")
    if callable(position):
      position = position()
    items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
    if position is not None:
      items["input"] = _PositionSave(position)
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)
    return True

  def position(self, step: int) -> bytes | None:
    """This process's input position saved with `step`, or None when there is none (a
    step-indexed input, or a checkpoint from another number of processes)."""
    path = paths.join(str(self._manager.directory), str(step), "input", _position_file())
    return paths.as_path(path).read_bytes() if paths.exists(path) else None

  def restore(self, abstract_state, step: int | None = None):
    """(state, meta) of `step` (default: latest), placed with the abstract state's shardings."""
    step = self.latest_step if step is None else step
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return restored.state, restored.meta

  def restore_latest(self, abstract_state):
    """(state, meta) of the newest checkpoint that restores, or None when there is none.

    Raises:
      CheckpointError: Checkpoints exist but none restores (all are set aside).
    """
    steps = self.steps()[::-1]
    for step in steps:
      self.check_shapes(abstract_state, step)
      restored, reason = self._attempt(abstract_state, step)
      if reason is None:
        return restored
      where = self._set_aside(step)
      print(f"gecko: checkpoint step {step} cannot be restored: {reason}; moved it to "
            f"{where} (kept for inspection) and trying the previous one.", file=sys.stderr)
    if steps or paths.isdir(self._aside_dir):  # never start over on top of set-aside work
      raise CheckpointError(
          f"no checkpoint under {self.directory}/checkpoints restores; the unreadable ones are "
          f"in {self._aside_dir}. Move a good one back into checkpoints/, or remove that "
          "folder to start this run from scratch.")
    return None

  def check_shapes(self, abstract_state, step: int) -> None:
    """ModelChangedError when checkpoint `step` says it holds parameters of other shapes
    than `abstract_state`'s: a changed setting, not a damaged checkpoint, so nothing is
    set aside. A checkpoint whose `meta` cannot be read is left to `_attempt`."""
    with unreadable.CapturedStderr() as captured:  # orbax's notes on the items left unread
      captured.drop()
      try:
        meta = self._manager.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore())).meta
      except Exception:  # unreadable: `_attempt` diagnoses it
        return
    saved, wanted = meta.get("shapes"), _shapes(abstract_state.params)
    if not saved or saved == wanted:
      return
    changes = [f"{name} {saved.get(name, 'absent')} -> {wanted.get(name, 'absent')}"
               for name in sorted(set(saved) | set(wanted)) if saved.get(name) != wanted.get(name)]
    raise ModelChangedError(
        f"the checkpoints in {self.directory} hold another model than this run's: "
        f"{'; '.join(changes[:3])}{f' (and {len(changes) - 3} more)' if len(changes) > 3 else ''}. "
        "A model setting changed since the run started (e.g. EMBED_DIM): resume with the "
        "original settings (config.gin), or give this run a new MODEL_DIR. Nothing was moved.")

  def _attempt(self, abstract_state, step: int):
    """((state, meta), None), or (None, why it does not restore). After a failure, reads
    still in flight finish on orbax's closed event loop, and tensorstore's threads,
    asyncio and the garbage collector print dozens of tracebacks about them: that output
    is dropped (the caller says what failed in one line)."""
    with unreadable.CapturedStderr() as captured:
      try:
        return self.restore(abstract_state, step), None
      except Exception as e:  # orbax, tensorstore and json raise many types
        reason = unreadable.diagnose(paths.join(str(self._manager.directory), str(step)), e)
      unreadable.settle(captured)
    return None, reason

  @property
  def _aside_dir(self) -> str:
    return paths.join(paths.absolute(self.directory), "checkpoints_unreadable")

  def _set_aside(self, step: int) -> str:
    source = paths.join(str(self._manager.directory), str(step))
    target_dir = self._aside_dir
    paths.makedirs(target_dir)
    target = paths.join(target_dir, str(step))
    suffix = 1
    while paths.exists(target):
      target, suffix = paths.join(target_dir, f"{step}.{suffix}"), suffix + 1
    paths.as_path(source).rename(target)  # a bucket copies, then deletes
    self._manager.reload()
    return target

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
