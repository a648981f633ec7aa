"""The pieces of a training loop, shared by `gecko.train`, `gecko.compile_step` and the
benchmarks: `build` (mesh -> logical rules -> shardings -> jitted step), the initial
state (restored, imported or random) and a window of step metrics.

  program = trainer.build(model=model, loss=loss, optimizer=optimizer,
                          mesh_axes={"data": -1}, batch_size=64)
  state = program.init_state(seed=0)
  state, metrics = program.step(state, program.global_batch(data.batch(0)))
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from gecko.data import features
from gecko.models import embedder as embedder_lib
from gecko.models.dual_encoder import DualEncoder
from gecko.training import partitioning, train_step
from gecko.training.losses import GeckoLoss
from gecko.training.optimizers import AdamW

# Backbone fields a run chooses freely, whatever the checkpoint it starts from says.
RUN_TIME_FIELDS = ("dtype", "dropout_rate", "attention", "attention_dropout_rate")


@dataclasses.dataclass(frozen=True)
class ShardedTraining:
  """A model, loss and optimiser placed on a mesh, ready to initialise, step or lower.

  Every call traces with the mesh and the logical-axis rules in force
  (`partitioning.in_force`), so the models' activation constraints take effect.

  Attributes:
    mesh: The device mesh.
    rules: The logical-axis rules (logical name -> mesh axes).
    abstract_state: `jax.ShapeDtypeStruct`s of the TrainState, carrying its shardings.
    shardings: The TrainState's `NamedSharding`s.
    jitted_step: The jitted `(state, batch) -> (state, metrics)`; the state is donated.
    batch_sharding: How a global batch is laid out (examples over data x fsdp).
  """

  model: DualEncoder
  tx: Any
  mesh: Mesh
  rules: tuple
  abstract_state: train_step.TrainState
  shardings: train_step.TrainState
  jitted_step: Callable
  batch_sharding: NamedSharding

  def step(self, state: train_step.TrainState, batch: Mapping[str, jax.Array]):
    """One training step: `(new state, metrics)`."""
    with partitioning.in_force(self.mesh, self.rules):
      return self.jitted_step(state, batch)

  def lower(self, state, batch):
    """The step lowered for (abstract or concrete) `state` and `batch`."""
    with partitioning.in_force(self.mesh, self.rules):
      return self.jitted_step.lower(state, batch)

  def init_state(self, *, seed: int, params=None) -> train_step.TrainState:
    """A sharded TrainState: random parameters, or `params` (host arrays) placed on the
    mesh with their shardings and passed in as arguments (never as constants)."""
    with partitioning.in_force(self.mesh, self.rules):
      return train_step.create_state(self.model, self.tx, self.shardings, seed=seed,
                                     params=params)

  def global_batch(self, local: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
    """This process's rows assembled into the global (sharded) batch."""
    return {k: jax.make_array_from_process_local_data(self.batch_sharding, v)
            for k, v in local.items()}

  def batch_at(self, data: features.BatchSource, step: int) -> dict[str, jax.Array]:
    """The global batch at `step`. A `features.RowSource` is asked for exactly the rows
    this process's devices hold under the batch sharding (its data axes, not its process
    index); any other source gives this process's share (`data.batch(step)`)."""
    if not isinstance(data, features.RowSource):
      return self.global_batch(data.batch(step))
    size = data.batch_size
    spans = sorted({partitioning.row_span(index, size) for index in
                    self.batch_sharding.addressable_devices_indices_map((size,)).values()})
    rows = {s: data.rows(step, *s) for s in spans}
    first = rows[spans[0]]
    return {name: jax.make_array_from_callback(
        (size,) + first[name].shape[1:], self.batch_sharding,
        lambda index, name=name: rows[partitioning.row_span(index, size)][name])
        for name in first}

  def abstract_batch(self, loss: GeckoLoss, *, batch_size: int, query_length: int,
                     passage_length: int, candidates: int | None = None
                     ) -> dict[str, jax.ShapeDtypeStruct]:
    """The shapes of a global batch holding exactly the features `loss` needs
    (`candidates`: K, the candidates per query of a listwise distillation)."""
    needs_k = features.TEACHER_CANDIDATES in loss.required_features
    if needs_k and not (candidates or 0) >= 2:
      raise ValueError(f"GeckoLoss(distill_over='candidates') scores K candidates per query: "
                       f"give candidates=K >= 2, got {candidates!r}.")
    rows = {"query": (query_length,), "positive": (passage_length,),
            "negative": (passage_length,), "candidate": (candidates, passage_length)}
    batch = {}
    for name in loss.required_features:
      tower = next((t for t, names in features.TOWERS.items() if name in names), None)
      shape = ((batch_size, *rows[tower]) if tower else (batch_size, candidates)
               if name == features.TEACHER_CANDIDATES else (batch_size,))
      dtype = jnp.float32 if name in features.FLOATS else jnp.int32
      batch[name] = jax.ShapeDtypeStruct(shape, dtype, sharding=self.batch_sharding)
    return batch


def build(*, model: DualEncoder, loss: GeckoLoss, optimizer: AdamW, batch_size: int,
          mesh_axes: Mapping[str, int] | None = None,
          dcn_mesh_axes: Mapping[str, int] | None = None,
          additional_axis_rules: Sequence[tuple] = (),
          grad_cache_chunk: int | None = None, devices=None,
          mesh: Mesh | None = None) -> ShardedTraining:
  """Checks the configuration against the mesh and compiles nothing yet (jit is lazy).

  The mesh is `mesh` when given (a caller that already laid it out, e.g. to choose the
  input shard), else laid out here from `mesh_axes` / `dcn_mesh_axes` over `devices`
  (default: every device; a TPU topology's devices lower and compile for a slice from a
  CPU host, `gecko.compile_step --topology`).

  Raises ValueError for a batch that does not split over the mesh, Matryoshka dims the
  model lacks, or a GradCache chunk that does not divide the batch.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
  if mesh is None:
    mesh = partitioning.make_mesh(mesh_axes, dcn_axes=dcn_mesh_axes, devices=devices)
  partitioning.check_batch_size(batch_size, mesh)
  loss.check_dims(model.matryoshka_dims)
  if grad_cache_chunk and batch_size % grad_cache_chunk:
    raise ValueError(f"grad_cache_chunk={grad_cache_chunk} must divide the batch size "
                     f"{batch_size}.")
  if grad_cache_chunk and grad_cache_chunk % mesh.shape["data"]:
    raise ValueError(f"grad_cache_chunk={grad_cache_chunk} must be divisible by the mesh's "
                     f"data axis ({mesh.shape['data']}); every chunk is split over it.")
  rules = partitioning.standard_logical_axis_rules(additional_axis_rules)
  tx = optimizer.transformation()
  abstract, shardings = train_step.state_shardings(model, tx, mesh, rules)
  step = train_step.jit_train_step(
      train_step.make_train_step(
          model, loss, tx, grad_cache_chunk=grad_cache_chunk, data_shards=mesh.shape["data"],
          param_specs=jax.tree.map(lambda s: s.spec, shardings.params)),
      shardings, mesh)
  return ShardedTraining(model=model, tx=tx, mesh=mesh, rules=rules,
                         abstract_state=abstract, shardings=shardings, jitted_step=step,
                         batch_sharding=partitioning.batch_sharding(mesh))


def initial_params(model: DualEncoder, source: embedder_lib.Embedder, *, name: str, seed: int):
  """Parameters from a pretrained/saved model, random where it has nothing (e.g. a
  projection it lacks or of another size)."""
  run_time = {f: getattr(model.backbone, f) for f in RUN_TIME_FIELDS}  # not the checkpoint's
  if dataclasses.replace(source.module.backbone, **run_time) != model.backbone:
    raise ValueError(f"init_from={name!r} has backbone {source.module.backbone}, but the "
                     f"configured model has {model.backbone}; use the matching model gin file.")
  params = embedder_lib.init_params(model, seed=seed)
  params["encoder"] = source.params["encoder"]
  if "projection" in params and "projection" in source.params:
    if source.params["projection"]["kernel"].shape == params["projection"]["kernel"].shape:
      params["projection"] = source.params["projection"]
  return params


def host_params(state: train_step.TrainState) -> dict:
  """The full parameters as NumPy on every process (gathers FSDP/model shards)."""
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(state.params, tiled=True)


class MetricsWindow:
  """Sums step metrics on the device and averages them when a window is logged."""

  def __init__(self):
    self._reset()

  def _reset(self) -> None:
    self._sum, self._steps, self._start = None, 0, time.perf_counter()

  def add(self, metrics: Mapping[str, jax.Array]) -> None:
    self._sum = dict(metrics) if self._sum is None else jax.tree.map(jnp.add, self._sum, metrics)
    self._steps += 1

  def average(self, *, batch_size: int) -> dict[str, float]:
    """The window's mean of every metric, plus `step_time` and `examples_per_second`;
    starts a new window."""
    elapsed = time.perf_counter() - self._start
    out = {k: float(v) / self._steps for k, v in jax.device_get(self._sum).items()}
    out.update(step_time=elapsed / self._steps,
               examples_per_second=self._steps * batch_size / elapsed)
    self._reset()
    return out
