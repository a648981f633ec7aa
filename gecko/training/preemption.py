"""SIGTERM (a spot or preemptible TPU VM's notice) -> every host agrees on a step to save.

  preemption = Preemption()            # before the loop
  if preemption.reached(step): save, wait, exit 0

Several processes (`jax.distributed` with its preemption service, as on a TPU pod):
JAX's coordination service catches the notice on any host and agrees on the first step
every host has yet to finish (`multihost_utils.reached_preemption_sync_point`); asking
costs nothing until a notice arrives, so there is no host sync per step. One process:
a SIGTERM handler sets a flag, and the next finished step is the one saved.
"""

from __future__ import annotations

import signal
import threading

import jax


class Preemption:
  """Whether the run must save and stop at a step (see the module docstring)."""

  def __init__(self):
    self.signal_received = threading.Event()
    self._previous = None
    self._coordinated = jax.process_count() > 1 and _sync_manager_ready()
    if not self._coordinated and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame) -> None:
    del signum, frame
    self.signal_received.set()

  def reached(self, step: int) -> bool:
    """True at the step every process saves before it exits (call after each step)."""
    if self._coordinated:
      from jax.experimental import multihost_utils
      return multihost_utils.reached_preemption_sync_point(step)
    return self.signal_received.is_set()

  def close(self) -> None:
    """Puts the previous SIGTERM handler back."""
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None


def _sync_manager_ready() -> bool:
  """JAX's preemption service runs (jax.distributed initialised with it enabled)."""
  from jax._src import distributed  # no public accessor; tests/test_preemption.py guards it
  return getattr(distributed.global_state, "preemption_sync_manager", None) is not None
