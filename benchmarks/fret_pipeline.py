"""FRet speed: the pipeline end to end with the local LLM, and exact retrieval vs faiss.

  .venv/bin/python benchmarks/fret_pipeline.py [--seeds 10] [--neighbors 20]
      [--retrieval_corpus 100000] [--retrieval_queries 1000] [--skip_pipeline]
      [--breakdown] [--rounds 5]

Pipeline: `gecko.fret.pipeline.run` over the standard-library docstring corpus
(`gecko.fret.docstrings`) with the embedded SmolLM2 (llama.cpp) and MiniLM retrieval,
from a cold start (model loads and compilation included). The LLM backend is wrapped
in a timer, so the report splits wall time into time inside LLM calls (generation
and scoring), tokenization for the prompts' token budget, and everything else (the
pipeline's own overhead: corpus reading, embedding, retrieval, bookkeeping, writes),
with the one-time corpus embedding (cached in OUTPUT_DIR for reruns) also shown apart.

Retrieval: exact top-20 by inner product of `--retrieval_queries` random unit queries
against `--retrieval_corpus` random unit 384-d passages, `gecko.retrieval.top_n`
(blocked JAX matmul + top-k) against faiss-cpu's `IndexFlatIP` in the same process;
alternating rounds after a warm-up (median ratio, min-max), and the overlap of the two
top-20 sets.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alternating  # noqa: E402


class TimedLLM:
  """Delegates to a backend, adding up the seconds spent in each kind of call."""

  def __init__(self, llm):
    self.llm = llm
    self.seconds = {"generate": 0.0, "log_likelihood": 0.0, "label_logprobs": 0.0,
                    "truncate": 0.0}

  def __getattr__(self, name):
    attr = getattr(self.llm, name)
    if name not in self.seconds:
      return attr

    def timed(*args, **kwargs):
      start = time.perf_counter()
      try:
        return attr(*args, **kwargs)
      finally:
        self.seconds[name] += time.perf_counter() - start
    return timed


def bench_pipeline(*, seeds: int, neighbors: int) -> dict:
  from gecko.fret import docstrings, pipeline
  from gecko.fret.config import FretConfig
  from gecko.fret import corpus as corpus_lib
  from gecko.fret.llm import LlamaCpp
  with tempfile.TemporaryDirectory() as tmp:
    corpus = os.path.join(tmp, "passages.jsonl")
    docstrings.write_jsonl(docstrings.passages(), corpus)
    llm = TimedLLM(LlamaCpp(n_ctx=2048))
    config = FretConfig(corpus=corpus, output_dir=os.path.join(tmp, "out"), num_seeds=seeds,
                        num_neighbors=neighbors)
    # The corpus embeddings are a one-time cost (cached in OUTPUT_DIR for reruns):
    # timed apart, before the run that then reads them from the cache.
    begin = time.perf_counter()
    os.makedirs(config.output_dir)
    corpus_lib.embed(corpus_lib.read_corpus(corpus)[0], encoder=config.encoder,
                          output_dir=config.output_dir, batch_size=config.batch_size)
    embed_seconds = [time.perf_counter() - begin]
    summary = pipeline.run(config, llm=llm)
    wall = time.perf_counter() - begin  # the embeddings included, as on a first run
  calls = sum(v for k, v in llm.seconds.items() if k != "truncate")
  overhead = wall - calls - llm.seconds["truncate"]
  once = sum(embed_seconds)
  return {"passages": summary["corpus"]["passages"], "seeds": seeds, "neighbors": neighbors,
          "records": summary["records"], "failures": summary["failures_this_run"],
          "llm_calls": summary["llm_calls_this_run"], "wall_s": round(wall, 1),
          "passages_per_s": round(seeds / wall, 4),
          "llm_seconds": {k: round(v, 1) for k, v in llm.seconds.items()},
          "llm_share": round(calls / wall, 4),
          "overhead_share": round(overhead / wall, 4),
          "corpus_embedding_s": round(once, 1),
          "overhead_share_without_corpus_embedding": round((overhead - once) / (wall - once), 4),
          "positive_not_seed_fraction": summary["positive_not_seed_fraction"]}


def bench_retrieval(*, corpus_size: int, queries: int, k: int = 20, dim: int = 384,
                    rounds: int = 5) -> dict:
  import faiss
  import numpy as np

  from gecko import retrieval
  rng = np.random.default_rng(0)
  corpus = rng.standard_normal((corpus_size, dim), dtype=np.float32)
  corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
  q = rng.standard_normal((queries, dim), dtype=np.float32)
  q /= np.linalg.norm(q, axis=1, keepdims=True)
  index = faiss.IndexFlatIP(dim)
  index.add(corpus)
  result = alternating.alternate(lambda: retrieval.top_n(q, corpus, k, backend="jax"),
                                 lambda: index.search(q, k), rounds=rounds)
  got, _ = retrieval.top_n(q, corpus, k, backend="jax")
  _, want = index.search(q, k)
  overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(got.tolist(), want.tolist())])
  flops = 2.0 * queries * corpus_size * dim
  ours = float(np.median(result.ours))
  print(f"exact top-{k}, {queries} x {corpus_size} x {dim}, jax vs faiss IndexFlatIP: "
        f"{result.summary(work=queries, unit='queries/s')}", flush=True)
  return {"corpus": corpus_size, "queries": queries, "k": k, "dim": dim,
          **result.row("top_n jax vs faiss", work=queries),
          "gecko_gflops": round(flops / ours / 1e9, 1), "top_k_overlap": round(float(overlap), 4)}


def breakdown_retrieval(*, corpus_size: int, queries: int, k: int = 20, dim: int = 384,
                        rounds: int = 5) -> dict:
  """Where `top_n`'s time goes: its matrix products alone (XLA, both orientations, and
  numpy's BLAS on the same blocks), the products plus the group maxima, the whole
  call, and faiss, in turn each round."""
  import faiss
  import jax
  import jax.numpy as jnp
  import numpy as np

  from gecko import retrieval
  rng = np.random.default_rng(0)
  corpus = rng.standard_normal((corpus_size, dim), dtype=np.float32)
  q = rng.standard_normal((queries, dim), dtype=np.float32)
  index = faiss.IndexFlatIP(dim)
  index.add(corpus)
  size = retrieval.equal_block_size(corpus_size, retrieval.DEFAULT_BLOCK)
  host_blocks = [np.pad(b, ((0, size - len(b)), (0, 0)))
                 for b in retrieval.blocks_of(corpus, size)]
  blocks = [jnp.asarray(b) for b in host_blocks]
  qj = jnp.asarray(q)
  dot = jax.jit(lambda q, b: q @ b.T)
  dot_t = jax.jit(lambda q, b: b @ q.T)
  dot_max = jax.jit(lambda q, b: (q @ b.T).reshape(q.shape[0], -1, retrieval.GROUP).max(2))

  def each(fn, *, host=False):
    def run():
      for b in (host_blocks if host else blocks):
        out = fn(q if host else qj, b)
        if not host:
          out.block_until_ready()
    return run

  cases = {"top_n (jax), whole call": lambda: retrieval.top_n(q, corpus, k),
           "faiss IndexFlatIP.search": lambda: index.search(q, k),
           "xla dot q @ block.T": each(dot),
           "xla dot block @ q.T": each(dot_t),
           "xla dot + group maxima": each(dot_max),
           "numpy (BLAS) dot, same blocks": each(lambda q, b: q @ b.T, host=True)}
  times = alternating.rotate(cases, rounds=rounds)
  flops = 2.0 * queries * corpus_size * dim
  print(f"top-{k} breakdown, {queries} x {corpus_size} x {dim}, {len(blocks)} blocks of "
        f"{size} rows:", flush=True)
  rows = []
  for name, t in times.items():
    rate = flops / statistics.median(t) / 1e9
    print(f"  {name}: {alternating.spread(t)}, {rate:.0f} GFLOP/s", flush=True)
    rows.append({"case": name, "median_s": statistics.median(t), "min_s": min(t),
                 "max_s": max(t), "gflops": round(rate, 1)})
  return {"corpus": corpus_size, "queries": queries, "blocks": len(blocks),
          "block_rows": size, "rows": rows}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--seeds", type=int, default=10)
  parser.add_argument("--neighbors", type=int, default=20)
  parser.add_argument("--retrieval_corpus", type=int, default=100_000)
  parser.add_argument("--retrieval_queries", type=int, default=1000)
  parser.add_argument("--skip_pipeline", action="store_true")
  parser.add_argument("--breakdown", action="store_true",
                      help="also time top_n's parts (its products, group maxima) beside "
                           "numpy's BLAS and faiss")
  parser.add_argument("--rounds", type=int, default=5)
  args = parser.parse_args(argv)
  report = {"machine": alternating.machine()}
  report["retrieval"] = bench_retrieval(corpus_size=args.retrieval_corpus,
                                        queries=args.retrieval_queries, rounds=args.rounds)
  if args.breakdown:
    report["retrieval_breakdown"] = breakdown_retrieval(
        corpus_size=args.retrieval_corpus, queries=args.retrieval_queries, rounds=args.rounds)
  print(json.dumps(report, indent=2), flush=True)
  if not args.skip_pipeline:
    report["pipeline"] = bench_pipeline(seeds=args.seeds, neighbors=args.neighbors)
    print(json.dumps(report["pipeline"], indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
