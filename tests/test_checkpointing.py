"""Which orbax checkpoints a run keeps (`gecko.training.checkpointing.Checkpointer`): the
newest K on the cadence, and a preemption's checkpoint only while it is the newest."""

import types

import flax
import numpy as np

from gecko.training import checkpointing


@flax.struct.dataclass
class _State:
  params: dict


def _steps_on_disk(directory) -> list[int]:
  ckpt = checkpointing.Checkpointer(str(directory), every=2, keep=3)
  try:
    return ckpt.steps()
  finally:
    ckpt.close()


def test_a_preemption_checkpoint_never_takes_a_kept_ones_place(tmp_path):
  """A selection run keeps every checkpoint (every=2, keep=3 of 6 steps) and is
  preempted at step 5: after 6 it still has 2, 4 and 6 (the newest three of all would
  have dropped 2), and while 5 was the newest it was kept to resume from."""
  state = _State(params={"w": np.ones((2, 3), np.float32)})
  ckpt = checkpointing.Checkpointer(str(tmp_path), every=2, keep=3)
  for step in (2, 4):
    assert ckpt.save(step, state, {"step": step})
  assert ckpt.save(5, state, {"step": 5}, force=True)
  ckpt.close()
  assert _steps_on_disk(tmp_path) == [2, 4, 5]
  ckpt = checkpointing.Checkpointer(str(tmp_path), every=2, keep=3)
  assert ckpt.save(6, state, {"step": 6})
  ckpt.close()
  assert _steps_on_disk(tmp_path) == [2, 4, 6]


def test_the_policy_keeps_the_newest_on_the_cadence_and_the_newest_of_all():
  policy = checkpointing.CadencePreservation(every=10, keep=2)
  infos = [types.SimpleNamespace(step=s) for s in (10, 20, 25, 30, 37)]
  assert policy.should_preserve(infos) == [False, True, False, True, True]
  assert policy.should_preserve(infos[:3]) == [True, True, True]
