"""XLA:CPU's library choices for MiniLM's work: which `XLA_FLAGS` make it faster here?

  .venv/bin/python benchmarks/xla_flags.py [--rounds 1] [--sets default,eigen]

XLA reads its flags once, when the CPU backend starts, so each flag set runs in its own
process, and the sets take turns round by round. Each process measures, median of 5
calls after a warm-up: dense products of MiniLM's shapes (GFLOP/s), the jitted MiniLM
forward at [32 x 256] and [64 x 64] tokens (s), and the gradient of a squared-norm
loss of the [32 x 256] forward with dropout on (s, median of 3) — the bulk of a train
step — and `gecko.retrieval.top_n`'s exact top-20 of 1,000 queries in 100,000 passages
(s, median of 3). `--sets default,eigen` runs only those. The flag sets:

  default       jaxlib's choice (YNNPACK for dots and some reductions)
  eigen         --xla_cpu_experimental_ynn_fusion_type=   (dots by Eigen)
  eigen+onednn  the same with --xla_cpu_use_onednn=true
  vector512     --xla_cpu_prefer_vector_width=512
  ynn-fused     --xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

SETS = {
    "default": "",
    "eigen": "--xla_cpu_experimental_ynn_fusion_type=",
    "eigen+onednn": "--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_use_onednn=true",
    "vector512": "--xla_cpu_prefer_vector_width=512",
    "ynn-fused": "--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce",
}
SHAPES = ((8192, 384, 1536), (8192, 1536, 384), (2048, 2048, 2048))


def probe() -> dict[str, float]:
  """One process's measurements under the XLA_FLAGS it was started with."""
  import time

  import jax
  import jax.numpy as jnp
  import numpy as np

  from gecko import retrieval
  from gecko.models import embedder

  def median_seconds(f, *args, calls=5):
    jax.block_until_ready(f(*args))
    times = []
    for _ in range(calls):
      start = time.perf_counter()
      jax.block_until_ready(f(*args))
      times.append(time.perf_counter() - start)
    return statistics.median(times)

  out = {}
  matmul = jax.jit(lambda x, y: x @ y)
  for m, k, n in SHAPES:
    seconds = median_seconds(matmul, jnp.ones((m, k)), jnp.ones((k, n)))
    out[f"matmul {m}x{k}x{n} GFLOP/s"] = 2 * m * k * n / seconds / 1e9
  minilm = embedder.load("all-MiniLM-L6-v2")
  for rows, length in ((32, 256), (64, 64)):
    ids, mask = np.full((rows, length), 1000, np.int32), np.ones((rows, length), np.int32)
    out[f"forward {rows}x{length} s"] = median_seconds(minilm.embed_tokens, ids, mask)

  def loss(params, ids, mask, key):
    states = minilm.module.apply({"params": params}, ids, mask, deterministic=False,
                                 rngs={"dropout": key})
    return (states ** 2).sum()
  ids, mask = np.full((32, 256), 1000, np.int32), np.ones((32, 256), np.int32)
  out["gradient 32x256 s"] = median_seconds(jax.jit(jax.grad(loss)), minilm.params, ids, mask,
                                            jax.random.key(0), calls=3)
  rng = np.random.default_rng(0)
  queries = rng.standard_normal((1000, 384), dtype=np.float32)
  corpus = rng.standard_normal((100_000, 384), dtype=np.float32)
  out["top-20 1000x100000 s"] = median_seconds(
      lambda: retrieval.top_n(queries, corpus, 20)[0], calls=3)
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--rounds", type=int, default=1)
  parser.add_argument("--sets", default=",".join(SETS),
                      help=f"comma-separated flag sets to run, of {', '.join(SETS)}")
  parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.probe:
    print(json.dumps(probe()))
    return
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import alternating
  names = [name.strip() for name in args.sets.split(",") if name.strip()]
  unknown = sorted(set(names) - set(SETS))
  if unknown or not names:
    parser.error(f"--sets {args.sets!r}: unknown {unknown}; use some of {', '.join(SETS)}.")
  print(alternating.machine())
  results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
  for _ in range(args.rounds):
    for name in names:
      flags = SETS[name]
      run = subprocess.run([sys.executable, __file__, "--probe"], capture_output=True,
                           text=True, check=True, env={**os.environ, "XLA_FLAGS": flags})
      results[name].append(json.loads(run.stdout.strip().splitlines()[-1]))
  keys = list(results[names[0]][0])
  print("| flags | " + " | ".join(keys) + " |")
  print("|---" * (len(keys) + 1) + "|")
  for name, runs in results.items():
    cells = [f"{statistics.median(r[k] for r in runs):.3g}" for k in keys]
    print(f"| {name} (`{SETS[name] or 'none'}`) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
  main()
