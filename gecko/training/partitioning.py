"""Device mesh and shardings: parameters and batches onto the named mesh axes.

The mesh has the axes (data, fsdp, model), laid out by `jax.experimental.mesh_utils`
over the TPU torus (and over slices, with DCN axes). The models' logical axis names
map onto them by `gecko.models.sharding.standard_logical_axis_rules` (batch -> data and
fsdp, embed -> fsdp, vocab/mlp/heads -> model), which `in_force` applies while tracing.
A mesh axis of size 1 costs nothing, so one rule set serves 1 CPU to a TPU pod.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gecko.models import sharding

MESH_AXES = ("data", "fsdp", "model")
Rules = sharding.Rules
# The models' logical names and the context that applies them (gecko.models.sharding).
standard_logical_axis_rules = sharding.standard_logical_axis_rules
in_force = sharding.in_force


def make_mesh(axes: Mapping[str, int] | None = None, *, devices=None,
              dcn_axes: Mapping[str, int] | None = None) -> Mesh:
  """A mesh over all (global) devices, e.g. `{"data": -1, "fsdp": 1, "model": 2}`.

  Devices are laid out by `jax.experimental.mesh_utils`, which follows the TPU torus
  (neighbouring chips on the axes that talk most: `model`, then `fsdp`). One axis may
  be -1 (all remaining devices); missing standard axes get size 1. Without -1, a mesh
  smaller than the device count uses the first devices (handy on a CPU with fake
  devices; on several hosts the mesh must cover every device).

  Args:
    axes: Axis sizes within a slice (over ICI, the chips' own links).
    devices: The devices (default `jax.devices()`; a TPU topology's devices to
      compile for a slice from a CPU host).
    dcn_axes: Axis sizes across slices (over DCN, the data-centre network), as
      MaxText's `dcn_*` settings: e.g. `{"data": 2}` on two slices. Each axis's size
      in the mesh is its ICI size times its DCN size.
  """
  devices = list(devices if devices is not None else jax.devices())
  sizes, dcn = mesh_sizes(axes, dcn_axes=dcn_axes, devices=len(devices))
  wanted, slices = int(np.prod(sizes)), int(np.prod(dcn))
  if (-1 not in dict(axes or {"data": -1}).values() and slices == 1 and wanted < len(devices)
      and jax.process_count() == 1):
    devices = devices[:wanted]
  if wanted * slices != len(devices):
    total = dict(zip(MESH_AXES, (i * d for i, d in zip(sizes, dcn))))
    raise ValueError(f"Mesh {total} needs {wanted * slices} devices, found {len(devices)}.")
  if slices == 1:
    grid = mesh_utils.create_device_mesh(sizes, devices, allow_split_physical_axes=True)
  else:  # slices are TPU slices (slice_index) or, where devices have none, processes
    grid = mesh_utils.create_hybrid_device_mesh(
        sizes, dcn, devices, process_is_granule=not hasattr(devices[0], "slice_index"),
        allow_split_physical_axes=True)
  return Mesh(grid, MESH_AXES)


def mesh_sizes(axes: Mapping[str, int] | None, *, devices: int,
               dcn_axes: Mapping[str, int] | None = None) -> tuple[list[int], list[int]]:
  """(ICI sizes, DCN sizes) of the axes `MESH_AXES` on `devices` devices: an axis of -1
  takes the devices of a slice the others leave. Checks the names and the division."""
  axes, dcn_axes = dict(axes or {"data": -1}), dict(dcn_axes or {})
  for what, given in (("mesh", axes), ("DCN mesh", dcn_axes)):
    unknown = sorted(set(given) - set(MESH_AXES))
    if unknown:
      raise ValueError(f"Unknown {what} axes {unknown}; use {list(MESH_AXES)}.")
  dcn = [int(dcn_axes.get(name, 1)) for name in MESH_AXES]
  if any(size < 1 for size in dcn):
    raise ValueError(f"DCN mesh axes must be positive sizes (no -1), got {dcn_axes}.")
  slices = int(np.prod(dcn))
  if devices % slices:
    raise ValueError(f"DCN mesh {dcn_axes} needs the {devices} devices to split into "
                     f"{slices} slices of equal size.")
  per_slice = devices // slices
  sizes = [int(axes.get(name, 1)) for name in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"At most one mesh axis may be -1, got {axes}.")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if per_slice % known:
      raise ValueError(f"Mesh {axes} does not divide the {per_slice} devices"
                       f"{' of a slice' if slices > 1 else ''}.")
    sizes[sizes.index(-1)] = per_slice // known
  return sizes, dcn


def logical_shardings(boxed_tree, mesh: Mesh, rules: Rules):
  """NamedShardings for a tree of `nn.Partitioned` (abstract) values."""
  specs = nn.get_partition_spec(boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def check_batch_size(batch_size: int, mesh: Mesh | Mapping[str, int]) -> None:
  """The global batch must split evenly over the (data, fsdp) devices (`mesh`: a Mesh or
  its axis sizes)."""
  shape = dict(mesh.shape) if isinstance(mesh, Mesh) else dict(mesh)
  shards = int(shape["data"] * shape["fsdp"])
  if batch_size % shards:
    raise ValueError(f"batch_size={batch_size} must be divisible by data x fsdp = {shards}, "
                     f"the devices the batch is split over (mesh {shape}); change "
                     "BATCH_SIZE or MESH_AXES.")


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (example) dimension over (data, fsdp); everything else replicated."""
  return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))


def row_span(index: tuple, size: int) -> tuple[int, int]:
  """[start, stop) of the batch rows a device holds, from its index in
  `Sharding.devices_indices_map((size,))`."""
  return index[0].start or 0, size if index[0].stop is None else index[0].stop


def data_shard(mesh: Mesh, *, process: int | None = None) -> tuple[int, int]:
  """(index, count): the input shard of `process` (default: this one) under the batch
  sharding. Shard i is rows [i*n, (i+1)*n) of every global batch; processes whose
  devices hold the same rows (model-parallel copies) share a shard. The shard follows
  the data axes, not the process number: mesh_utils may order processes differently.

  Raises ValueError when a process's rows are not one block of the batch.
  """
  process = jax.process_index() if process is None else process
  blocks = int(mesh.shape["data"] * mesh.shape["fsdp"])
  rows: dict[int, set[int]] = {}
  for device, index in batch_sharding(mesh).devices_indices_map((blocks,)).items():
    rows.setdefault(device.process_index, set()).update(range(*row_span(index, blocks)))
  spans = {}
  for owner, held in rows.items():
    lo, hi = min(held), max(held) + 1
    if len(held) != hi - lo or (hi - lo) * len({min(r) for r in rows.values()}) != blocks:
      raise ValueError(f"process {owner} holds batch rows {sorted(held)} of {blocks} blocks, "
                       "which is not one equal share; lay the mesh out so that each process "
                       "holds one contiguous block of (data, fsdp).")
    spans[owner] = lo
  starts = sorted(set(spans.values()))
  return starts.index(spans[process]), len(starts)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())
