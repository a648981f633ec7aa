"""Logical axis names to mesh axes, and the context that puts them in force.

Every parameter of `gecko.models.bert` and `gecko.models.t5` carries logical axis names,
and key activations are constrained with `nn.with_logical_constraint`. The rules map
those names onto the mesh axes (data, fsdp, model):

  batch -> (data, fsdp)      examples split over data-parallel and FSDP replicas
  embed -> fsdp              parameters sharded FSDP-style along the model width
  vocab, mlp, heads -> model tensor (model) parallelism
  kv, length, type, projection, relpos_buckets, layers -> replicated

`in_force(mesh, rules)` must surround every trace that should honour them (the train
step, init, encode on a mesh, the TPU compile report): without a mesh in force, flax
returns each constrained activation unchanged and XLA guesses the layout.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import flax.linen as nn
import jax
from jax.sharding import Mesh

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


@contextlib.contextmanager
def in_force(mesh: Mesh, rules: Rules):
  """The mesh and the logical-axis rules in force while tracing: every
  `nn.with_logical_constraint` in the models then constrains its activation, and
  attention picks the kernel of the mesh's platform (`gecko.models.attention`)."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(_on_mesh(rules, mesh.axis_names)):
    yield


def _on_mesh(rules: Rules, axis_names: Sequence[str]) -> tuple:
  """The rules less the mesh axes `axis_names` lacks (a one-axis inference mesh)."""
  def keep(axes):
    if axes is None or isinstance(axes, str):
      return axes if axes in axis_names else None
    kept = tuple(a for a in axes if a in axis_names)
    return kept if len(kept) > 1 else (kept[0] if kept else None)
  return tuple((name, keep(axes)) for name, axes in rules)
