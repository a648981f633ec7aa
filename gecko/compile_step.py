r"""Compile the sharded train step ahead of time and report its per-chip memory.

  # for a real TPU slice, from this CPU (libtpu: pip install -e ".[tpu-aot]")
  python -m gecko.compile_step --topology=v5e:8x8 \
    --gin_file=gin/models/gecko_1b.gin --gin_file=gin/runs/finetune.gin \
    --gin_file=gin/sharding/fsdp.gin --gin_file=gin/overlays/compile_step.gin \
    --gin.BATCH_SIZE=512 --json=/tmp/v5e-64.json

  # for N fake CPU devices (XLA:CPU's memory decisions, not a TPU's)
  python -m gecko.compile_step --fake_devices=8 --gin_file=... --gin.BATCH_SIZE=512

Nothing is allocated: the train state and the batch are abstract
(`jax.ShapeDtypeStruct`s carrying their `NamedSharding`s), the step is lowered with the
mesh and the logical-axis rules in force and compiled, and the compiled program's
`memory_analysis()` gives the bytes each device holds (arguments: its shard of the
parameters, optimiser state and batch; temporaries: activations and gradients).

`--topology=NAME` compiles for a real TPU slice through libtpu, as MaxText's
`train_compile.py` does: `v5e:8x8` (v5e-64), `v4:2x2x4` (v4-32), `v5p:2x2x4`,
`v6e:4x4`, with 4 chips per host; `--slices=N` adds DCN slices (set DCN_MESH_AXES).
The report then gives HBM per chip against the chip's capacity, and its JSON
(`--json PATH`) holds `topology`, `chips`, `hbm_per_chip_bytes`,
`hbm_capacity_bytes` and `flops_per_step`. Sizing a pod run this way needs no TPU.
`--fake_devices=N` makes the CPU backend expose N devices instead (it must come before
any other JAX use, so only the command line sets it). `MODEL_DIR` is not needed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import time
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


# HBM per chip (per JAX device: v4 and v5p run as megacore, one device a chip).
HBM_BYTES = {"TPU v4": 32 * _GIB, "TPU v5 lite": 16 * _GIB, "TPU v5": 95 * _GIB,
             "TPU v6 lite": 32 * _GIB}
# Topology name prefix -> (chip_config_name, accelerator type prefix for libtpu).
_GENERATIONS = {"v4": ("megacore", "v4"), "v5p": ("megacore", "v5p"),
                "v5e": ("default", "v5litepod"), "v6e": ("default", "v6e")}
_CORES_PER_CHIP = {"v4": 2, "v5p": 2, "v5e": 1, "v6e": 1}  # in accelerator type names


def topology_devices(name: str, *, slices: int = 1) -> list:
  """The devices of a TPU slice (`"v5e:8x8"`, `"v4:2x2x4"`, ...), from libtpu on this
  host, for lowering and compiling without a TPU (4 chips per host, as on pods)."""
  generation, _, shape = name.partition(":")
  if generation not in _GENERATIONS or not re.fullmatch(r"\d+(x\d+){1,2}", shape):
    raise ValueError(f"--topology={name!r}: expected GENERATION:SHAPE with GENERATION in "
                     f"{sorted(_GENERATIONS)}, e.g. v5e:8x8 (v5e-64) or v4:2x2x4 (v4-32).")
  if importlib.util.find_spec("libtpu") is None:
    raise ValueError(f"--topology={name} compiles through libtpu, which is not installed: "
                     "pip install -e '.[tpu-aot]'.")
  dims = [int(d) for d in shape.split("x")]
  chip_config, accelerator = _GENERATIONS[generation]
  chips = int(np.prod(dims))
  # libtpu reads the host's accelerator type at start-up; on a CPU host it has none.
  os.environ.setdefault("TPU_ACCELERATOR_TYPE",
                        f"{accelerator}-{chips * _CORES_PER_CHIP[generation]}")
  from jax.experimental import topologies
  bounds = tuple(min(2, d) for d in dims[:2]) + (1,)
  try:
    topology = topologies.get_topology_desc(
        platform="tpu", topology_name=name, chip_config_name=chip_config,
        chips_per_host_bounds=bounds, num_slices=slices)
  except Exception as e:  # libtpu's own message names the shape it refused
    raise ValueError(f"--topology={name}: libtpu refused it ({str(e).splitlines()[0]}).") from e
  return list(topology.devices)


def memory_report(*, model: DualEncoder, loss: GeckoLoss, optimizer: AdamW, batch_size: int,
                  query_length: int, passage_length: int,
                  mesh_axes: Mapping[str, int] | None = None,
                  dcn_mesh_axes: Mapping[str, int] | None = None,
                  additional_axis_rules: Sequence[tuple] = (),
                  grad_cache_chunk: int | None = None, output: str | None = None,
                  devices: Sequence[Any] | None = None, topology: str | None = None,
                  candidates: int | None = None) -> dict[str, Any]:
  """Lowers and compiles the train step for abstract inputs; returns the memory report.

  Args:
    model, loss, optimizer: As `gecko.train.train` gets them (gin: the run files).
    batch_size: The global batch (examples per step across all devices).
    query_length, passage_length: Token lengths of the query and passage towers.
    mesh_axes: The mesh within a slice, e.g. {"data": 1, "fsdp": -1}.
    dcn_mesh_axes: The mesh across slices, e.g. {"data": 2} (with `--slices=2`).
    additional_axis_rules: Logical-axis rules taking precedence over the standard ones.
    grad_cache_chunk: Compile the GradCache step with chunks of this many examples.
    devices, topology: The devices to compile for (default: this process's; a TPU
      slice's with `--topology`) and the topology's name, for the report.
    candidates: K, each query's candidates, when the loss distils over them
      (`GeckoLoss(distill_over="candidates")`).
    output: Also write the report as JSON here (the command line's `--json`).

  Returns:
    {"topology", "chips", "platform", "device_kind", "mesh", "parameters", "global_batch",
    "lengths", "towers", "grad_cache_chunk", "per_device_gib" (`_memory_parts`),
    "hbm_per_chip_bytes" (its peak), "hbm_capacity_bytes" (None off TPU),
    "flops_per_step", "compile_seconds"}.
  """
  program = trainer.build(model=model, loss=loss, optimizer=optimizer, batch_size=batch_size,
                          mesh_axes=mesh_axes, dcn_mesh_axes=dcn_mesh_axes,
                          additional_axis_rules=additional_axis_rules,
                          grad_cache_chunk=grad_cache_chunk, devices=devices)
  batch = program.abstract_batch(loss, batch_size=batch_size, query_length=query_length,
                                 passage_length=passage_length, candidates=candidates)
  start = time.perf_counter()
  compiled = program.lower(program.abstract_state, batch).compile()
  seconds = time.perf_counter() - start
  parts = _memory_parts(compiled, program.abstract_state)
  towers = sorted({n.split("_")[0] for n in batch if n.endswith("_tokens")})
  report = {
      "topology": topology,
      **_devices(program.mesh),
      "parameters": int(sum(np.prod(x.shape) for x in
                            jax.tree_util.tree_leaves(program.abstract_state.params))),
      "global_batch": batch_size,
      "lengths": {"query": query_length, "passage": passage_length},
      "towers": towers,
      "grad_cache_chunk": grad_cache_chunk,
      "per_device_gib": {k: round(v / _GIB, 3) for k, v in parts.items()},
      "hbm_per_chip_bytes": int(parts["peak"]),
      "flops_per_step": model_flops(model, batch_size=batch_size, lengths=[
          length for t in towers for length in
          ([query_length] if t == "query" else
           [passage_length] * (candidates if t == "candidate" else 1))]),
      "compile_seconds": round(seconds, 1),
  }
  _print_report(report, output=output)
  return report


def _devices(mesh) -> dict[str, Any]:
  """What the step was compiled for: "chips", "platform", "device_kind", "mesh" and
  "hbm_capacity_bytes" (a TPU chip's HBM; None off TPU)."""
  first = mesh.devices.flat[0]
  return {"chips": int(mesh.devices.size), "platform": first.platform,
          "device_kind": first.device_kind, "mesh": {k: int(v) for k, v in mesh.shape.items()},
          "hbm_capacity_bytes": HBM_BYTES.get(first.device_kind)
                                if first.platform == "tpu" else None}


def _memory_parts(compiled, abstract_state) -> dict[str, int]:
  """Per-device bytes of the compiled step: XLA's memory analysis ("arguments",
  "outputs", "temporaries", "aliased", "code"), "peak" = arguments + outputs +
  temporaries - aliased (the donated state is aliased to the new state), and "state"."""
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
  return parts


def _print_report(report: dict[str, Any], *, output: str | None) -> None:
  """The report as JSON on stdout (and in `output`), with a line on HBM use on TPU."""
  text = json.dumps(report, indent=2)
  print(text)
  peak, capacity = report["hbm_per_chip_bytes"], report["hbm_capacity_bytes"]
  if capacity:
    where = report["topology"] or report["device_kind"]
    print(f"gecko.compile_step: {peak / _GIB:.2f} GiB of {capacity / _GIB:.0f} GiB "
          f"HBM per chip ({peak / capacity:.0%}) on {where}", file=sys.stderr)
  if output:
    with open(output, "w", encoding="utf-8") as f:
      f.write(text + "\n")


def _take_flag(argv: Sequence[str], name: str) -> tuple[str | None, list[str]]:
  """(the value of `--name=VALUE`, the other arguments)."""
  value, rest = None, []
  for arg in argv:
    if arg == f"--{name}" or arg.startswith(f"--{name}="):
      value = arg.partition("=")[2]
      if not value:
        raise SystemExit(f"--{name} needs a value, e.g. --{name}=VALUE; got {arg!r}")
    else:
      rest.append(arg)
  return value, rest


def _use_fake_devices(value: str) -> None:
  """`--fake_devices=N` (must run before JAX picks its backend)."""
  if not value.isdigit() or int(value) < 1:
    raise SystemExit(f"--fake_devices needs a positive count, e.g. --fake_devices=8; got {value!r}")
  os.environ["JAX_PLATFORMS"] = "cpu"
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={value}").strip()
  jax.config.update("jax_platforms", "cpu")


_FLAGS_DOC = """
  --topology=NAME        compile for a TPU slice through libtpu (v5e:8x8, v4:2x2x4, ...)
  --slices=N             with --topology: N such slices over DCN (default 1)
  --fake_devices=N       expose N CPU devices (compile a pod's sharding locally)
  --json=PATH            also write the report (JSON) to PATH
"""


def main(argv: Sequence[str]) -> int:
  doc = __doc__ + _FLAGS_DOC
  if any(a in ("-h", "--help") for a in argv):
    gin_flags.parse_args(["--help"], prog="python -m gecko.compile_step", doc=doc)
  fake, argv = _take_flag(argv, "fake_devices")
  topology, argv = _take_flag(argv, "topology")
  slices, argv = _take_flag(argv, "slices")
  output, argv = _take_flag(argv, "json")
  if fake and topology:
    raise SystemExit("--fake_devices and --topology exclude each other: pick one.")
  if slices and not topology:
    raise SystemExit("--slices goes with --topology.")
  if slices is not None and (not slices.isdigit() or int(slices) < 1):
    raise SystemExit(f"--slices needs a positive count; got {slices!r}")
  if fake:
    _use_fake_devices(fake)
  kwargs = {} if output is None else {"output": output}
  if topology:
    try:
      kwargs.update(devices=topology_devices(topology, slices=int(slices or 1)),
                    topology=topology if not slices or slices == "1" else f"{slices}x{topology}")
    except ValueError as e:
      print(f"python -m gecko.compile_step: error: {e}", file=sys.stderr)
      return 2
  return gin_flags.run(memory_report, argv, prog="python -m gecko.compile_step", doc=doc,
                       **kwargs)


if __name__ == "__main__":
  from gecko import (
    compile_step as _module,  # gin binds the importable module, not __main__
  )
  sys.exit(_module.main(sys.argv[1:]))
