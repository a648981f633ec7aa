"""Orbax checkpoints of the TrainState: every N steps, keep K, resume from MODEL_DIR.

A checkpoint holds the sharded TrainState (params, optimiser state, step, RNG, the
non-finite counters) and a small JSON `meta` (the data position and the run's
settings). The data position is the step (`gecko.data.pairs` is step-indexed), so a
resumed run reproduces an uninterrupted one. Orbax writes to a temporary directory
and renames on completion: a run killed mid-save leaves the previous checkpoint
intact. A state with non-finite parameters is never written.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import jax
import orbax.checkpoint as ocp

from gecko.training.train_step import all_finite

_all_finite = jax.jit(all_finite)


def params_are_finite(params) -> bool:
  return bool(_all_finite(params))


class Checkpointer:
  """Saves and restores TrainStates under `directory/checkpoints`.

  Args:
    directory: The run's MODEL_DIR.
    every: Save when `step % every == 0` (and always on `force=True`).
    keep: How many recent checkpoints to keep.
  """

  def __init__(self, directory: str, *, every: int, keep: int):
    if every < 1 or keep < 1:
      raise ValueError(f"checkpoint every={every} and keep={keep} must both be >= 1.")
    self.every = every
    self.directory = directory
    self._manager = ocp.CheckpointManager(
        os.path.join(os.path.abspath(directory), "checkpoints"),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        item_names=("state", "meta"))

  @property
  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state, meta: dict[str, Any], *, force: bool = False) -> bool:
    """Saves if due (or forced); returns whether a checkpoint was written."""
    if not force and step % self.every:
      return False
    if step in self._manager.all_steps():
      return False
    if not params_are_finite(state.params):
      print(f"gecko: parameters at step {step} are not finite; no checkpoint written (the last "
            "good one is kept).", file=sys.stderr)
      return False
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
    return True

  def restore(self, abstract_state, step: int | None = None):
    """(state, meta) of `step` (default: latest), placed with the abstract state's shardings."""
    step = self.latest_step if step is None else step
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return restored.state, restored.meta

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
