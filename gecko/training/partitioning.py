"""Device mesh and logical-axis rules: parameters and batches onto named mesh axes.

Logical names (on every parameter, see `gecko.models.bert` and `gecko.models.t5`) map to mesh axes:

  batch -> (data, fsdp)      examples split over data-parallel and FSDP replicas
  embed -> fsdp              parameters sharded FSDP-style along the model width
  vocab, mlp, heads -> model tensor (model) parallelism
  kv, length, type, projection, relpos_buckets, layers -> replicated

A mesh axis of size 1 costs nothing, so one rule set serves 1 CPU to a TPU pod.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
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
  axes, dcn_axes = dict(axes or {"data": -1}), dict(dcn_axes or {})
  for what, given in (("mesh", axes), ("DCN mesh", dcn_axes)):
    unknown = sorted(set(given) - set(MESH_AXES))
    if unknown:
      raise ValueError(f"Unknown {what} axes {unknown}; use {list(MESH_AXES)}.")
  dcn = [int(dcn_axes.get(name, 1)) for name in MESH_AXES]
  if any(size < 1 for size in dcn):
    raise ValueError(f"DCN mesh axes must be positive sizes (no -1), got {dcn_axes}.")
  slices = int(np.prod(dcn))
  devices = list(devices if devices is not None else jax.devices())
  if len(devices) % slices:
    raise ValueError(f"DCN mesh {dcn_axes} needs the {len(devices)} devices to split into "
                     f"{slices} slices of equal size.")
  per_slice = len(devices) // slices
  sizes = [int(axes.get(name, 1)) for name in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"At most one mesh axis may be -1, got {axes}.")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if per_slice % known:
      raise ValueError(f"Mesh {axes} does not divide the {per_slice} devices"
                       f"{' of a slice' if slices > 1 else ''}.")
    sizes[sizes.index(-1)] = per_slice // known
  wanted = int(np.prod(sizes))
  if (-1 not in axes.values() and slices == 1 and wanted < len(devices)
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


@contextlib.contextmanager
def in_force(mesh: Mesh, rules: Rules):
  """The mesh and the logical-axis rules in force while tracing: every
  `nn.with_logical_constraint` in the models then constrains its activation, and
  attention picks the kernel of the mesh's platform (`gecko.models.attention`)."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


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
