"""Device mesh and logical-axis rules: parameters and batches onto named mesh axes.

Logical names (on every parameter, see `gecko.models.bert` and `gecko.models.t5`) map to mesh axes:

  batch -> (data, fsdp)      examples split over data-parallel and FSDP replicas
  embed -> fsdp              parameters sharded FSDP-style along the model width
  vocab, mlp, heads -> model tensor (model) parallelism
  kv, length, type, projection, relpos_buckets, layers -> replicated

A mesh axis of size 1 costs nothing, so one rule set serves 1 CPU to a TPU pod.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "model")
Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]


def standard_logical_axis_rules(additional_rules: Rules = ()) -> tuple:
  """The rules above; `additional_rules` come first and so take precedence."""
  return tuple(additional_rules) + (
      ("batch", ("data", "fsdp")),
      ("embed", "fsdp"),
      ("vocab", "model"),
      ("mlp", "model"),
      ("heads", "model"),
      ("kv", None),
      ("length", None),
      ("type", None),
      ("projection", None),
      ("relpos_buckets", None),
      ("layers", None),
  )


def make_mesh(axes: Mapping[str, int] | None = None, *, devices=None) -> Mesh:
  """A mesh over all (global) devices, e.g. `{"data": -1, "fsdp": 1, "model": 2}`.

  One axis may be -1 (all remaining devices); missing standard axes get size 1.
  Without -1, a mesh smaller than the device count uses the first devices (handy on
  a CPU with fake devices; on several hosts the mesh must cover every device).
  """
  axes = dict(axes or {"data": -1})
  unknown = sorted(set(axes) - set(MESH_AXES))
  if unknown:
    raise ValueError(f"Unknown mesh axes {unknown}; use {list(MESH_AXES)}.")
  devices = np.asarray(devices if devices is not None else jax.devices())
  sizes = [int(axes.get(name, 1)) for name in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"At most one mesh axis may be -1, got {axes}.")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if devices.size % known:
      raise ValueError(f"Mesh {axes} does not divide the {devices.size} devices.")
    sizes[sizes.index(-1)] = devices.size // known
  if -1 not in axes.values() and int(np.prod(sizes)) < devices.size and jax.process_count() == 1:
    devices = devices.flat[:int(np.prod(sizes))]
  if int(np.prod(sizes)) != devices.size:
    raise ValueError(f"Mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, "
                     f"found {devices.size}.")
  return Mesh(devices.reshape(sizes), MESH_AXES)


def logical_shardings(boxed_tree, mesh: Mesh, rules: Rules):
  """NamedShardings for a tree of `nn.Partitioned` (abstract) values."""
  specs = nn.get_partition_spec(boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  """The global batch must split evenly over the (data, fsdp) devices."""
  shards = int(mesh.shape["data"] * mesh.shape["fsdp"])
  if batch_size % shards:
    raise ValueError(f"batch_size={batch_size} must be divisible by data x fsdp = {shards}, "
                     f"the devices the batch is split over (mesh {dict(mesh.shape)}); change "
                     "BATCH_SIZE or MESH_AXES.")


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (example) dimension over (data, fsdp); everything else replicated."""
  return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())
