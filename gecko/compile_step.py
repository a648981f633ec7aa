r"""Compile the sharded train step ahead of time and report its per-device memory.

  python -m gecko.compile_step --fake_devices=8 \
    --gin_file=gin/models/gecko_1b.gin --gin_file=gin/runs/finetune.gin \
    --gin_file=gin/sharding/fsdp.gin --gin_file=gin/overlays/compile_step.gin \
    --gin.BATCH_SIZE=512

Nothing is allocated: the train state and the batch are abstract
(`jax.ShapeDtypeStruct`s carrying their `NamedSharding`s), the step is lowered with
`jax.jit(...).lower(...)` and compiled, and the compiled program's
`memory_analysis()` gives the bytes each device holds (arguments: its shard of the
parameters, optimiser state and batch; temporaries: activations and gradients). So a
researcher sizes a pod run, and checks a sharding plan compiles, on a laptop:
`--fake_devices=N` makes the CPU backend expose N devices (it must come before any
other JAX use, so only the command line sets it). The report (JSON) is printed and,
with `output=...`, written to a file.

On TPU the same command compiles for the real slice; on CPU the numbers describe the
same sharded shapes with XLA:CPU's fusion decisions, a close estimate of a TPU's.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gecko import gin_flags
from gecko.models import dual_encoder
from gecko.models.dual_encoder import DualEncoder
from gecko.training import trainer
from gecko.training.losses import GeckoLoss
from gecko.training.optimizers import AdamW

_GIB = 2 ** 30


def _per_device_bytes(tree) -> int:
  """Bytes of one device's shard of every array in `tree` (abstract, with shardings)."""
  total = 0
  for leaf in jax.tree_util.tree_leaves(tree):
    shard = leaf.sharding.shard_shape(leaf.shape)
    total += int(np.prod(shard)) * jnp.dtype(leaf.dtype).itemsize
  return total


def model_flops(model: DualEncoder, *, batch_size: int, lengths: Sequence[int]) -> float:
  """Training FLOPs of one step (forward + backward, no recomputation), for MFU.

  6 x (parameters outside the embedding table) per token, plus attention's
  12 x layers x heads x head_dim x length^2 per sequence, over every tower's `lengths`.
  """
  cfg = model.backbone
  params = sum(int(np.prod(x.shape))
               for x in jax.tree_util.tree_leaves(dual_encoder.abstract_params(model)))
  dense = params - cfg.vocab_size * cfg.hidden_size
  attention = 12 * cfg.num_layers * cfg.num_heads * cfg.head_dim
  return float(sum(batch_size * (6 * dense * n + attention * n * n) for n in lengths))


def memory_report(*, model: DualEncoder, loss: GeckoLoss, optimizer: AdamW, batch_size: int,
                  query_length: int, passage_length: int,
                  mesh_axes: Mapping[str, int] | None = None,
                  additional_axis_rules: Sequence[tuple] = (),
                  grad_cache_chunk: int | None = None, output: str | None = None) -> dict[str, Any]:
  """Lowers and compiles the train step for abstract inputs; returns the memory report.

  Args:
    model, loss, optimizer: As `gecko.train.train` gets them (gin: the run files).
    batch_size: The global batch (examples per step across all devices).
    query_length, passage_length: Token lengths of the query and passage towers.
    mesh_axes: The mesh, e.g. {"data": 1, "fsdp": -1} (all devices of the process
      set, fake ones included).
    additional_axis_rules: Logical-axis rules taking precedence over the standard ones.
    grad_cache_chunk: Compile the GradCache step with chunks of this many examples.
    output: Also write the report as JSON here.

  Returns:
    {"devices", "mesh", "parameters", "global_batch", "per_device_gib": {"arguments",
    "outputs", "temporaries", "aliased", "peak", "state", "code"},
    "model_flops_per_step", "compile_seconds"}; `peak` = arguments + outputs +
    temporaries - aliased (the donated state is aliased to the new state).
  """
  import time

  program = trainer.build(model=model, loss=loss, optimizer=optimizer, batch_size=batch_size,
                          mesh_axes=mesh_axes, additional_axis_rules=additional_axis_rules,
                          grad_cache_chunk=grad_cache_chunk)
  mesh, abstract_state = program.mesh, program.abstract_state
  batch = program.abstract_batch(loss, batch_size=batch_size, query_length=query_length,
                                 passage_length=passage_length)
  start = time.perf_counter()
  compiled = program.step.lower(abstract_state, batch).compile()
  seconds = time.perf_counter() - start
  memory = compiled.memory_analysis()
  parts = {
      "arguments": memory.argument_size_in_bytes,
      "outputs": memory.output_size_in_bytes,
      "temporaries": memory.temp_size_in_bytes,
      "aliased": memory.alias_size_in_bytes,
      "code": memory.generated_code_size_in_bytes,
  }
  parts["peak"] = parts["arguments"] + parts["outputs"] + parts["temporaries"] - parts["aliased"]
  parts["state"] = _per_device_bytes(abstract_state)
  towers = sorted({n.split("_")[0] for n in batch if n.endswith("_tokens")})
  lengths = [query_length if t == "query" else passage_length for t in towers]
  report = {
      "devices": int(mesh.devices.size),
      "platform": mesh.devices.flat[0].platform,
      "mesh": {k: int(v) for k, v in mesh.shape.items()},
      "parameters": int(sum(np.prod(x.shape) for x in
                            jax.tree_util.tree_leaves(abstract_state.params))),
      "global_batch": batch_size,
      "lengths": {"query": query_length, "passage": passage_length},
      "towers": towers,
      "grad_cache_chunk": grad_cache_chunk,
      "per_device_gib": {k: round(v / _GIB, 3) for k, v in parts.items()},
      "model_flops_per_step": model_flops(model, batch_size=batch_size, lengths=lengths),
      "compile_seconds": round(seconds, 1),
  }
  text = json.dumps(report, indent=2)
  print(text)
  if output:
    with open(output, "w", encoding="utf-8") as f:
      f.write(text + "\n")
  return report


def _take_fake_devices(argv: Sequence[str]) -> list[str]:
  """Applies and removes `--fake_devices=N` (must run before JAX picks its backend)."""
  rest = []
  for arg in argv:
    if arg.startswith("--fake_devices"):
      value = arg.partition("=")[2]
      if not value.isdigit() or int(value) < 1:
        raise SystemExit(f"--fake_devices needs a positive count, e.g. --fake_devices=8; got {arg!r}")
      os.environ["JAX_PLATFORMS"] = "cpu"
      os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                 f" --xla_force_host_platform_device_count={value}").strip()
      jax.config.update("jax_platforms", "cpu")
    else:
      rest.append(arg)
  return rest


def main(argv: Sequence[str]) -> int:
  doc = __doc__ + "\n  --fake_devices=N       expose N CPU devices (compile a pod's sharding locally)\n"
  if any(a in ("-h", "--help") for a in argv):
    gin_flags.parse_args(["--help"], prog="python -m gecko.compile_step", doc=doc)
  return gin_flags.run(memory_report, _take_fake_devices(argv),
                       prog="python -m gecko.compile_step", doc=doc)


if __name__ == "__main__":
  from gecko import (
    compile_step as _module,  # gin binds the importable module, not __main__
  )
  sys.exit(_module.main(sys.argv[1:]))
