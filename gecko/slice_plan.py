r"""Check a training run's settings against a TPU slice before anything is created.

  python -m gecko.slice_plan --accelerator_type=v5litepod-64 -- \
    --gin_file=gin/experiments/minilm_finetune.gin --gin.BATCH_SIZE=1024 \
    --gin.MODEL_DIR="'gs://BUCKET/runs/ft1'" --gin.TRAIN_STEPS=20000

The run's gin configuration is resolved as `gecko.train` resolves it (no device is
used), its mesh laid out over the slice's JAX devices (one per chip: v4 and v5p run
as megacore), and the global batch checked to split over data x fsdp, as GradCache
chunks over data. It prints the mesh and exits 0, or names the mismatch in one line and
exits 2. `launch/tpu_train.sh` runs it before it creates or touches a slice.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

from gecko import gin_flags
from gecko.training import partitioning

# Accelerator type prefix -> how many of its count make one JAX device: v2-v5p names
# count TensorCores (v4 and v5p pair them into one megacore device; v2 and v3 show each
# core), v5e ("v5litepod") and v6e names count chips.
_CORES_PER_DEVICE = {"v2": 1, "v3": 1, "v4": 2, "v5p": 2, "v5litepod": 1, "v6e": 1}


def slice_devices(accelerator_type: str) -> int:
  """JAX devices of one slice of `accelerator_type` (`v5litepod-64` -> 64, `v4-32` -> 16)."""
  match = re.fullmatch(r"(v2|v3|v4|v5p|v5litepod|v6e)-(\d+)", accelerator_type)
  if not match:
    raise ValueError(f"accelerator type {accelerator_type!r} is not one of "
                     f"{sorted(_CORES_PER_DEVICE)} followed by -N (e.g. v5litepod-64, v4-32).")
  return int(match.group(2)) // _CORES_PER_DEVICE[match.group(1)]


def _macro(name: str, default):
  import gin
  try:
    return gin.query_parameter(f"%{name}")
  except ValueError:  # the configuration does not declare it
    return default


def plan(*, devices: int, slices: int = 1) -> dict:
  """The configured run's mesh on `slices` slices of `devices` devices each, checked:
  {"devices", "mesh", "batch_size", "grad_cache_chunk"} (gin must be configured)."""
  batch_size = _macro("BATCH_SIZE", None)
  if batch_size is None:
    raise ValueError("the configuration declares no BATCH_SIZE macro; pass the run's gin files.")
  ici, dcn = partitioning.mesh_sizes(_macro("MESH_AXES", {"data": -1}), devices=devices * slices,
                                     dcn_axes=_macro("DCN_MESH_AXES", None))
  mesh = {name: i * d for name, i, d in zip(partitioning.MESH_AXES, ici, dcn)}
  if mesh["data"] * mesh["fsdp"] * mesh["model"] != devices * slices:
    raise ValueError(f"the mesh {mesh} covers {mesh['data'] * mesh['fsdp'] * mesh['model']} "
                     f"devices, but the slice has {devices * slices}; set MESH_AXES so that "
                     "one axis is -1 or the sizes multiply to the device count.")
  partitioning.check_batch_size(batch_size, mesh)
  chunk = _macro("GRAD_CACHE_CHUNK", None)
  if chunk and (batch_size % chunk or chunk % mesh["data"]):
    raise ValueError(f"GRAD_CACHE_CHUNK={chunk} must divide BATCH_SIZE={batch_size} and be "
                     f"divisible by the data axis ({mesh['data']}).")
  return {"devices": devices * slices, "mesh": mesh, "batch_size": batch_size,
          "grad_cache_chunk": chunk}


def main(argv: Sequence[str]) -> int:
  parser = argparse.ArgumentParser(prog="python -m gecko.slice_plan", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--accelerator_type", required=True,
                      help="the slice's type, as gcloud names it (v5litepod-64, v4-32, ...)")
  parser.add_argument("--slices", type=int, default=1, help="slices of that type (DCN)")
  parser.add_argument("run", nargs=argparse.REMAINDER,
                      help="after --: the gecko.train arguments (--gin_file=..., --gin.X=...)")
  args = parser.parse_args(argv)
  run = args.run[1:] if args.run[:1] == ["--"] else args.run
  prog = "gecko.slice_plan"
  try:
    devices = slice_devices(args.accelerator_type)
    parsed = gin_flags.parse_args(run, prog=prog, doc=__doc__)
    gin_flags.configure(parsed.gin_file, parsed.gin_bindings, parsed.gin_search_path)
    result = plan(devices=devices, slices=args.slices)
  except (gin_flags.ConfigError, ValueError) as e:
    print(f"{prog}: {args.accelerator_type}: {e}", file=sys.stderr)
    return 2
  mesh = result["mesh"]
  per_shard = result["batch_size"] // (mesh["data"] * mesh["fsdp"])
  print(f"{prog}: {args.accelerator_type}: {result['devices']} devices, mesh {mesh}, batch "
        f"{result['batch_size']} ({per_shard} per data x fsdp shard): fits.")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
