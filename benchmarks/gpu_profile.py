"""Where one MiniLM encode spends its GPU time, kernel by kernel, ours against torch
(`GPU_PARTS=profile benchmarks/gpu.sh`; BENCHMARKS.md, "On a GPU").

  python3 benchmarks/gpu_profile.py --framework=jax   --json OUT/profile-jax-0.json [--smoke]
  python3 benchmarks/gpu_profile.py --framework=torch --json OUT/profile-torch.json [--smoke]
  python3 benchmarks/gpu_profile.py --compare OUT/profile-*.json

The case is the benchmark's bf16 encode, MiniLM-L6 over [1024 x 256] tokens (cuDNN's
fused attention on our side, SDPA on torch's).

* `jax`: times the encode with float32 parameters cast inside the step (as the benchmark
  row) and with the parameters stored in bf16 (as torch's `.to(bfloat16)` model holds
  them). It writes the compiled HLO beside the JSON (`<json stem>.hlo.txt`). Then it
  traces `--calls` calls with `jax.profiler` and sums the kernels' device time per HLO
  op (the events' `hlo_op` stat). It records the XLA_FLAGS it ran under: gpu.sh runs
  it once per line of PROFILE_XLA_FLAGS, to show what a compiler flag changes.
* `torch`: the same encode under `torch.profiler`, device time per CUDA kernel.
* `--compare`: the files' time per category (matmuls, attention, normalisation and
  reductions, the rest) side by side.

Categories come from kernel and op names (cuBLAS/CUTLASS/Triton GEMMs, cuDNN/flash
attention, reductions), a heuristic labelled as such in the output. On a CPU (`--smoke`)
the JAX events are XLA's host thunks and torch's are its CPU operators: that checks the
script, not the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gpu_step  # noqa: E402 - beside this file

CATEGORIES = (  # (category, name fragments), the first that matches wins
    ("attention", ("fmha", "flash", "sdpa", "attention", "cudnn")),
    ("matmul", ("gemm", "cublas", "cutlass", "xmma", "matmul", "addmm", "dot", "linear")),
    ("normalisation and reductions", ("reduce", "norm", "softmax")),
)
OTHER = "elementwise and other"
# Lines a profiler derives from the kernels themselves; counting them would count twice.
DERIVED_LINES = ("XLA Modules", "XLA Ops", "Async XLA Ops", "Steps", "Launch Stats",
                 "Source code", "TensorFlow Ops", "TensorFlow Name Scope")


def category(name: str) -> str:
  lowered = name.lower()
  return next((c for c, parts in CATEGORIES if any(p in lowered for p in parts)), OTHER)


def summarise(events: list[tuple[str, str, float]], *, calls: int, wall_s: float,
              source: str, top: int = 25) -> dict:
  """Per-call figures from `(group, kernel, seconds)` events traced over `calls` calls."""
  groups: dict[str, dict] = {}
  for group, kernel, seconds in events:
    entry = groups.setdefault(group, {"name": group, "kernel": kernel, "launches": 0,
                                      "seconds": 0.0})
    entry["launches"] += 1
    entry["seconds"] += seconds
  total = sum(g["seconds"] for g in groups.values())
  by_category: dict[str, float] = {}
  for g in groups.values():
    g["category"] = category(f"{g['name']} {g['kernel']}")
    by_category[g["category"]] = by_category.get(g["category"], 0.0) + g["seconds"]
  ranked = sorted(groups.values(), key=lambda g: -g["seconds"])
  return {
      "source": source, "calls": calls, "wall_ms_per_call": wall_s / calls * 1e3,
      "kernel_ms_per_call": total / calls * 1e3,
      "launches_per_call": sum(g["launches"] for g in groups.values()) / calls,
      "categories_ms_per_call": {c: s / calls * 1e3 for c, s in
                                 sorted(by_category.items(), key=lambda kv: -kv[1])},
      "top": [{"name": g["name"], "kernel": g["kernel"][:160], "category": g["category"],
               "launches_per_call": g["launches"] / calls,
               "ms_per_call": g["seconds"] / calls * 1e3,
               "share": g["seconds"] / total if total else 0.0} for g in ranked[:top]],
  }


def print_summary(report: dict) -> None:
  profile = report["profile"]
  print(f"{report['framework']} {report['case']} {report.get('xla_flags') or ''}".rstrip())
  for row in report.get("variants", []):
    print(f"  timed: {row['variant']:<22} {row['ms']:8.2f} ms ({row['texts_per_s']:,.0f} texts/s)")
  print(f"  traced ({profile['source']}): {profile['wall_ms_per_call']:.2f} ms a call, "
        f"kernels {profile['kernel_ms_per_call']:.2f} ms in "
        f"{profile['launches_per_call']:.0f} launches")
  for name, ms in profile["categories_ms_per_call"].items():
    print(f"    {name:<30} {ms:8.3f} ms")
  print(f"  {'op':<48} {'category':<30} {'ms/call':>8} {'share':>6} launches")
  for g in profile["top"]:
    print(f"  {g['name'][:48]:<48} {g['category']:<30} {g['ms_per_call']:8.3f} "
          f"{g['share']:6.1%} {g['launches_per_call']:.0f}")


# ---------------------------------------------------------------------------- JAX


def jax_events(trace_dir: str) -> tuple[list[tuple[str, str, float]], str]:
  """The traced kernels as `(hlo op, kernel, seconds)`: the GPU planes' stream lines, or
  on a machine without a GPU the host's XLA thunks (the events with an `hlo_op` stat)."""
  from jax import profiler
  (path,) = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
  data = profiler.ProfileData.from_file(path)
  planes = list(data.planes)  # an iterator: read it once
  gpu = [p for p in planes if p.name.startswith("/device:GPU")]
  lines = ([line for p in gpu for line in p.lines if line.name not in DERIVED_LINES] if gpu
           else [line for p in planes if p.name.startswith("/host") for line in p.lines])
  events = []
  for line in lines:
    for event in line.events:
      stats = dict(event.stats)
      if gpu or "hlo_op" in stats:
        events.append((str(stats.get("hlo_op", event.name)), event.name,
                       event.duration_ns * 1e-9))
  return events, ("GPU kernels" if gpu else
                  "host XLA thunks (the trace has no GPU plane: no GPU, or no CUPTI)")


def jax_profile(args, sizes: gpu_step.Sizes) -> dict:
  import jax
  import jax.numpy as jnp

  minilm, _ = gpu_step.minilm_and_xl(args.smoke)
  cfg = dataclasses.replace(minilm, dtype="bfloat16", attention="auto")
  module, params, ids, mask = gpu_step.jax_encode_case(cfg, sizes)
  rows, length = sizes.encode_rows, sizes.encode_length
  variants = {"float32 parameters": params,
              "bfloat16 parameters": jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)}
  report = {"framework": "jax", "jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "case": f"encode MiniLM [{rows} x {length}] bfloat16, attention={cfg.attention}",
            "variants": []}
  with gpu_step.jax_precision("bfloat16"):
    apply = jax.jit(lambda p, i, m: module.apply({"params": p}, i, m))
    for name, p in variants.items():
      seconds = gpu_step.median_time(lambda p=p: apply(p, ids, mask).block_until_ready(),
                                     args.repeats)
      report["variants"].append({"variant": name, "ms": seconds * 1e3,
                                 "texts_per_s": rows / seconds})
    hlo_path = os.path.splitext(args.json)[0] + ".hlo.txt"
    with open(hlo_path, "w", encoding="utf-8") as f:
      f.write(apply.lower(params, ids, mask).compile().as_text())
    report["hlo"] = os.path.basename(hlo_path)
    with tempfile.TemporaryDirectory() as trace_dir:
      with jax.profiler.trace(trace_dir):
        start = time.perf_counter()
        for _ in range(args.calls):
          apply(params, ids, mask).block_until_ready()
        wall = time.perf_counter() - start
      events, source = jax_events(trace_dir)
  report["profile"] = summarise(events, calls=args.calls, wall_s=wall, source=source)
  return report


# -------------------------------------------------------------------------- torch


def torch_profile(args, sizes: gpu_step.Sizes) -> dict:
  import torch
  from torch.profiler import ProfilerActivity, profile
  cuda = torch.cuda.is_available()
  device = "cuda" if cuda else "cpu"
  minilm, _ = gpu_step.minilm_and_xl(args.smoke)
  forward = gpu_step.torch_encode_case(minilm, dtype="bfloat16", sizes=sizes, device=device)
  rows, length = sizes.encode_rows, sizes.encode_length
  seconds = gpu_step.median_time(forward, args.repeats)
  activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
  with profile(activities=activities) as prof:
    start = time.perf_counter()
    for _ in range(args.calls):
      forward()
    wall = time.perf_counter() - start
  events = []
  for avg in prof.key_averages():
    on_device = avg.device_type == torch.autograd.DeviceType.CUDA
    micros = avg.self_device_time_total if cuda else avg.self_cpu_time_total
    if micros > 0 and (on_device if cuda else avg.key.startswith("aten::")):
      # One event per op name, its time spread over its launches.
      events += [(avg.key, avg.key, micros * 1e-6 / avg.count)] * avg.count
  return {"framework": "torch", "torch": torch.__version__, "device": device,
          "case": f"encode MiniLM [{rows} x {length}] bfloat16, sdpa",
          "variants": [{"variant": "bfloat16 model", "ms": seconds * 1e3,
                        "texts_per_s": rows / seconds}],
          "profile": summarise(events, calls=args.calls, wall_s=wall,
                               source="CUDA kernels" if cuda else "CPU operators (no GPU here)")}


def compare(paths: list[str]) -> int:
  """The files' milliseconds per call, by category, one column per file."""
  reports = [json.load(open(p, encoding="utf-8")) for p in paths]
  names = [os.path.basename(p).removesuffix(".json") for p in paths]
  cats = [c for c, _ in CATEGORIES] + [OTHER]
  print(f"{'ms per call':<30}" + "".join(f"{n[:22]:>24}" for n in names))
  for row in ("wall_ms_per_call", "kernel_ms_per_call", *cats):
    values = [r["profile"].get(row) if row.endswith("per_call")
              else r["profile"]["categories_ms_per_call"].get(row, 0.0) for r in reports]
    print(f"{row.removesuffix('_ms_per_call'):<30}" + "".join(f"{v:>24.3f}" for v in values))
  for name, report in zip(names, reports):
    flags = report.get("xla_flags") or "default XLA flags"
    print(f"{name}: {flags if report['framework'] == 'jax' else report['framework']}")
  return 0


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--framework", choices=("jax", "torch"))
  parser.add_argument("--json", help="where to write the figures (the HLO goes beside it)")
  parser.add_argument("--compare", nargs="+", metavar="JSON", help="profiles to set side by side")
  parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check on a CPU")
  parser.add_argument("--repeats", type=int, default=10, help="timed calls per variant")
  parser.add_argument("--calls", type=int, default=5, help="calls traced by the profiler")
  args = parser.parse_args()
  if args.compare:
    return compare(args.compare)
  if not (args.framework and args.json):
    parser.error("give --framework and --json, or --compare with profile files")
  sizes = gpu_step.Sizes.get(args.smoke)
  if args.framework == "torch":
    report = torch_profile(args, sizes)
    gpu_step.write(report, args.json)
    print_summary(report)
    return 0
  report = jax_profile(args, sizes)
  print_summary(report)
  return gpu_step.finish_jax_report(report, args.json, "gpu_profile")


if __name__ == "__main__":
  sys.exit(main())
