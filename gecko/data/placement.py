"""Host arrays onto a device mesh and back, in one process or many.

Inference (`gecko.encode`, `gecko.retrieval.top_n`) splits rows over every device of
a mesh. Every process holds the same host arrays (SPMD: each runs the same calls on
the same inputs); each materialises only the shards of its own devices, and results
come back whole to every process.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def row_axes(mesh: Mesh) -> tuple[str, ...]:
  """The mesh axes rows are split over: all but `model` (tensor parallelism)."""
  axes = tuple(a for a in mesh.axis_names if a != "model")
  return axes or tuple(mesh.axis_names)


def row_shards(mesh: Mesh) -> int:
  """How many row shards a batch is split into on this mesh."""
  return int(np.prod([mesh.shape[a] for a in row_axes(mesh)]))


def rows_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(row_axes(mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def put(value: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A global array from a host array that every process holds whole."""
  value = np.asarray(value)
  return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def put_tree(tree, shardings):
  """`put` for every leaf of a tree (a sharding tree of the same structure, or one sharding)."""
  if isinstance(shardings, NamedSharding):
    return jax.tree.map(lambda x: put(x, shardings), tree)
  return jax.tree.map(put, tree, shardings)


def on_mesh(tree, mesh: Mesh) -> bool:
  """Whether every leaf is already a global array on `mesh`."""
  return all(isinstance(x, jax.Array) and isinstance(x.sharding, NamedSharding)
             and x.sharding.mesh == mesh for x in jax.tree.leaves(tree))


def fetch(value: jax.Array) -> np.ndarray:
  """The whole value on every process (gathered across processes if it is split)."""
  if value.is_fully_addressable:
    return np.asarray(value)
  if value.is_fully_replicated:
    return np.asarray(value.addressable_data(0))
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(value, tiled=True))
