"""Train-step throughput: gecko's jitted step vs sentence-transformers' MNRL, same run.

  .venv/bin/python benchmarks/train_step.py [--batch_size 64] [--length 64] [--steps 5]

Both train all-MiniLM-L6-v2 on the same (query, positive, hard negative) triples of
exactly `--length` tokens (docstring paragraphs of the Python standard library, cut
to length), batch `--batch_size`, AdamW, dropout on, one process on this machine:

  gecko:  gecko.training.train_step (Eq. 3: in-batch + same-tower + hard negative), jax.jit
  peer:   sentence_transformers.losses.MultipleNegativesRankingLoss, torch eager

Reports pairs/s (examples per second) after warm-up, the ratio, and the model FLOPs
utilisation of our step: XLA's FLOP count of the compiled step / step time, over the
fp32 matmul peak measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from encode_throughput import stdlib_paragraphs  # noqa: E402


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
  import jax
  import jax.numpy as jnp
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = min(_timed(lambda: f(a).block_until_ready()) for _ in range(repeats))
  return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def triples(tokenizer, n: int, length: int) -> list[tuple[str, str, str]]:
  """Texts of at least `length` tokens (consecutive paragraphs joined), as triples."""
  texts, current = [], ""
  for para in stdlib_paragraphs(4000):
    current = f"{current} {para}".strip()
    if len(tokenizer.encode_batch([current])[0]) >= length:
      texts.append(current)
      current = ""
  if len(texts) < 3 * n:
    raise RuntimeError(f"only {len(texts)} texts of >= {length} tokens, need {3 * n}")
  return [(texts[3 * i], texts[3 * i + 1], texts[3 * i + 2]) for i in range(n)]


def bench_gecko(data, *, batch_size: int, length: int, steps: int):
  import jax

  from gecko.data import pairs as pair_data
  from gecko.models import embedder
  from gecko.models.dual_encoder import DualEncoder
  from gecko.training import trainer
  from gecko.training.losses import GeckoLoss
  from gecko.training.optimizers import AdamW

  minilm = embedder.load("all-MiniLM-L6-v2")
  model = DualEncoder(backbone=minilm.module.backbone)
  records = [{"query": q, "positive": p, "negative": n} for q, p, n in data]
  batches = pair_data.PairBatches(records=records, tokenizer=minilm.tokenizer,
                                  batch_size=batch_size, query_length=length,
                                  passage_length=length)
  program = trainer.build(model=model, loss=GeckoLoss(temperature=0.05),
                          optimizer=AdamW(learning_rate=2e-5, total_steps=1000),
                          batch_size=batch_size, mesh_axes={"data": 1})
  state, step = program.init_state(seed=0, params=minilm.params), program.step
  batch0 = batches.batch(0)
  flops = step.lower(state, batch0).compile().cost_analysis()
  flops = (flops[0] if isinstance(flops, list) else flops).get("flops", float("nan"))
  state, metrics = step(state, batch0)  # compile + warm up
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for i in range(1, steps + 1):
    state, metrics = step(state, batches.batch(i))
  jax.block_until_ready(metrics)
  elapsed = time.perf_counter() - start
  return batch_size * steps / elapsed, elapsed / steps, flops


def bench_sentence_transformers(data, *, batch_size: int, length: int, steps: int):
  import torch
  from sentence_transformers import SentenceTransformer, losses

  from gecko.models import embedder
  model = SentenceTransformer(embedder.resolve("all-MiniLM-L6-v2"), device="cpu")
  model.max_seq_length = length
  model.train()
  loss = losses.MultipleNegativesRankingLoss(model)
  opt = torch.optim.AdamW(model.parameters(), lr=2e-5)

  def one(i):
    rows = [data[(i * batch_size + j) % len(data)] for j in range(batch_size)]
    feats = [model.tokenize([r[k] for r in rows]) for k in range(3)]
    value = loss(feats, labels=None)
    value.backward()
    opt.step()
    opt.zero_grad()

  one(0)
  start = time.perf_counter()
  for i in range(1, steps + 1):
    one(i)
  elapsed = time.perf_counter() - start
  return batch_size * steps / elapsed, elapsed / steps


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--length", type=int, default=64)
  parser.add_argument("--steps", type=int, default=5)
  args = parser.parse_args()

  import jax
  import torch

  from gecko.models import embedder
  tokenizer = embedder.load("all-MiniLM-L6-v2").tokenizer
  data = triples(tokenizer, min(args.batch_size * (args.steps + 1), 384), args.length)
  print(f"machine: {os.cpu_count()} cores; jax {jax.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); batch {args.batch_size} triples x "
        f"{args.length} tokens, {args.steps} timed steps after warm-up")
  peak = matmul_peak_gflops()
  ours, step_s, flops = bench_gecko(data, batch_size=args.batch_size, length=args.length,
                                    steps=args.steps)
  theirs, st_step_s = bench_sentence_transformers(data, batch_size=args.batch_size,
                                                  length=args.length, steps=args.steps)
  achieved = flops / step_s / 1e9
  print(f"fp32 matmul peak (jax, 2048^3): {peak:.1f} GFLOP/s")
  print(f"gecko train step:      {ours:7.2f} pairs/s  ({step_s:.2f} s/step, "
        f"{flops / 1e9:.0f} GFLOP/step by XLA, {achieved:.1f} GFLOP/s, MFU {achieved / peak:.0%})")
  print(f"sentence-transformers: {theirs:7.2f} pairs/s  ({st_step_s:.2f} s/step, MNRL)")
  print(f"ratio gecko / sentence-transformers: {ours / theirs:.2f}")


if __name__ == "__main__":
  main()
