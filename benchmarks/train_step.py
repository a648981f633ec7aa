"""Train-step throughput: gecko's jitted step vs sentence-transformers' MNRL, same run.

  .venv/bin/python benchmarks/train_step.py [--cases 64x64:64,64x256:32] [--rounds 5] [--steps 2]

Both train all-MiniLM-L6-v2 on the same (query, positive, hard negative) triples,
queries of Q and passages of P tokens for a case `QxP` (docstring paragraphs of the
Python standard library, joined and cut to exactly that length, so neither side pads),
batch `--batch_size`, AdamW, dropout on, one process on this machine:

  gecko:  gecko.training.train_step (Eq. 3: in-batch + same-tower + hard negative), jax.jit
  peer:   sentence_transformers.losses.MultipleNegativesRankingLoss, torch eager

After one warm-up step each, the two alternate `--rounds` times, `--steps` steps a
turn; reported: pairs/s, the median ratio with its min-max, and the model FLOPs
utilisation of our step (XLA's FLOP count of the compiled step / median step time,
over the best fp32 matmul rate measured in the same run, right after the rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alternating  # noqa: E402
from texts import stdlib_paragraphs  # noqa: E402


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
  import jax
  import jax.numpy as jnp
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = min(alternating.timed(lambda: f(a).block_until_ready()) for _ in range(repeats))
  return 2 * n ** 3 / best / 1e9


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


def gecko_step(data, *, batch_size: int, query_length: int, passage_length: int):
  """A function running one of our train steps on the next batch, and its XLA FLOP count."""
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
                                  batch_size=batch_size, query_length=query_length,
                                  passage_length=passage_length)
  program = trainer.build(model=model, loss=GeckoLoss(temperature=0.05),
                          optimizer=AdamW(learning_rate=2e-5, total_steps=1000),
                          batch_size=batch_size, mesh_axes={"data": 1})
  holder = {"state": program.init_state(seed=0, params=minilm.params), "i": 0}
  cost = program.lower(holder["state"], batches.batch(0)).compile().cost_analysis()
  flops = (cost[0] if isinstance(cost, list) else cost).get("flops", float("nan"))

  def step():
    holder["state"], metrics = program.step(holder["state"], batches.batch(holder["i"]))
    holder["i"] += 1
    jax.block_until_ready(metrics)

  return step, flops


def peer_step(data, *, batch_size: int, query_length: int, passage_length: int):
  """A function running one sentence-transformers MNRL step (torch eager, AdamW)."""
  import torch
  from sentence_transformers import SentenceTransformer, losses

  from gecko.models import embedder
  model = SentenceTransformer(embedder.resolve("all-MiniLM-L6-v2"), device="cpu")
  model.train()
  loss = losses.MultipleNegativesRankingLoss(model)
  opt = torch.optim.AdamW(model.parameters(), lr=2e-5)
  holder = {"i": 0}

  def step():
    i = holder["i"]
    holder["i"] += 1
    rows = [data[(i * batch_size + j) % len(data)] for j in range(batch_size)]
    feats = []
    for k, length in ((0, query_length), (1, passage_length), (2, passage_length)):
      model.max_seq_length = length
      feats.append(model.tokenize([r[k] for r in rows]))
    value = loss(feats, labels=None)
    value.backward()
    opt.step()
    opt.zero_grad()

  return step


def run_case(case: str, *, tokenizer, batch_size: int, rounds: int, steps: int) -> dict:
  lengths, _, batch = case.partition(":")
  batch_size = int(batch) if batch else batch_size
  query_length, passage_length = (int(x) for x in lengths.split("x"))
  data = triples(tokenizer, batch_size * 2, max(query_length, passage_length))
  kwargs = dict(batch_size=batch_size, query_length=query_length, passage_length=passage_length)
  ours, flops = gecko_step(data, **kwargs)
  theirs = peer_step(data, **kwargs)

  def turn(step):
    def run():
      for _ in range(steps):
        step()
    return run

  result = alternating.alternate(turn(ours), turn(theirs), rounds=rounds)
  peaks = [matmul_peak_gflops() for _ in range(3)]  # same process, right after the rounds
  step_s = statistics.median(result.ours) / steps
  achieved = flops / step_s / 1e9
  peak = max(peaks)
  print(f"\n[{case}] batch {batch_size} triples, queries {query_length} / passages "
        f"{passage_length} tokens, {steps} steps a turn")
  print(f"  {result.summary(work=batch_size * steps, unit='pairs/s')}")
  print(f"  gecko: {step_s:.2f} s/step, {flops / 1e9:.0f} GFLOP/step (XLA), {achieved:.1f} "
        f"GFLOP/s = MFU {achieved / peak:.0%} of the fp32 matmul peak {peak:.0f} GFLOP/s")
  return {**result.row(case, work=batch_size * steps), "s_per_step": step_s,
          "gflop_per_step": flops / 1e9, "matmul_peak_gflops": peak, "mfu": achieved / peak}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--cases", default="64x64:64,64x256:32",
                      help="comma-separated QUERYxPASSAGE token lengths, each with an optional "
                           ":BATCH (else --batch_size); batch 64 at 64x256 needs more than "
                           "24 GB with both models in one process")
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--steps", type=int, default=2, help="steps per turn")
  parser.add_argument("--json", default=None, help="also write the rows to this file")
  args = parser.parse_args()

  from gecko.models import embedder
  tokenizer = embedder.load("all-MiniLM-L6-v2").tokenizer
  print(alternating.machine())
  rows = [run_case(c.strip(), tokenizer=tokenizer, batch_size=args.batch_size,
                   rounds=args.rounds, steps=args.steps) for c in args.cases.split(",")]
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump({"machine": alternating.machine(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
  main()
