"""Input-pipeline throughput: SeqIO tasks -> tokenized, converted batches, vs the train step.

  .venv/bin/python benchmarks/input_pipeline.py [--examples 20000] [--batch_size 64]

Writes FRet-shaped JSONL shards (standard-library docstring paragraphs as queries and
passages), then measures, in one process on this machine:

  gecko:  `gecko.data.seqio_batches.SeqioBatches` over the gecko_fret_only mixture (JSONL
          parsing, the Gecko input format, tf.text WordPiece, feature conversion,
          shuffling, batching), examples/s after the first batch
  peer:   sentence-transformers' `model.tokenize` (the Hugging Face fast tokenizer a
          torch training loop collates with) on the same formatted texts, examples/s
  step:   the jitted Gecko train step on batches of the same shape (pairs/s), the
          consumer the pipeline must outpace (skip with --no-train_step)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from texts import stdlib_paragraphs  # noqa: E402

TASK = "Given a question, retrieve a passage that answers it"


def write_fret(directory: str, n: int, shards: int = 4) -> list[dict]:
  paragraphs = stdlib_paragraphs(4000)  # reused cyclically: the pipeline does not cache
  records = []
  for i in range(n):
    q, p, neg = (paragraphs[(3 * i + k) % len(paragraphs)] for k in range(3))
    records.append({"task": TASK, "query": " ".join(q.split()[:16]), "seed_title": "",
                    "seed_text": p, "positive_title": "", "positive_text": p,
                    "negative_title": "", "negative_text": neg})
  os.makedirs(os.path.join(directory, "fret"), exist_ok=True)
  for s in range(shards):
    with open(os.path.join(directory, "fret", f"fret-{s:05d}.jsonl"), "w") as f:
      for r in records[s::shards]:
        f.write(json.dumps(r) + "\n")
  return records


def bench_gecko(data_dir: str, *, batch_size: int, length: int, batches: int, tokenizer):
  from gecko.data.seqio_batches import SeqioBatches
  data = SeqioBatches(mixture_or_task_name="gecko_fret_only", tokenizer=tokenizer,
                      batch_size=batch_size, query_length=length, passage_length=length,
                      data_dir=data_dir)
  start = time.perf_counter()
  data.batch(0)
  first = time.perf_counter() - start
  start = time.perf_counter()
  for step in range(1, batches + 1):
    data.batch(step)
  return batch_size * batches / (time.perf_counter() - start), first


def bench_peer(records: list[dict], *, batch_size: int, length: int, batches: int):
  from sentence_transformers import SentenceTransformer

  from gecko.data.input_format import GECKO
  from gecko.models import embedder
  model = SentenceTransformer(embedder.resolve("all-MiniLM-L6-v2"), device="cpu")
  model.max_seq_length = length
  start = time.perf_counter()
  for b in range(batches):
    rows = records[(b * batch_size) % len(records):][:batch_size]
    for side in ("query", "positive", "negative"):
      texts = ([GECKO.query(r["query"], task=r["task"]) for r in rows] if side == "query" else
               [GECKO.document(r[f"{side}_text"], title=r[f"{side}_title"]) for r in rows])
      model.tokenize(texts)
  return batch_size * batches / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--examples", type=int, default=20000)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--length", type=int, default=64)
  parser.add_argument("--batches", type=int, default=150)
  parser.add_argument("--train_step", action=argparse.BooleanOptionalAction, default=True)
  args = parser.parse_args()
  from gecko.models import embedder
  tokenizer = embedder.load("all-MiniLM-L6-v2").tokenizer
  with tempfile.TemporaryDirectory() as data_dir:
    records = write_fret(data_dir, args.examples)
    ours, first = bench_gecko(data_dir, batch_size=args.batch_size, length=args.length,
                              batches=args.batches, tokenizer=tokenizer)
  peer = bench_peer(records, batch_size=args.batch_size, length=args.length,
                    batches=args.batches)
  print(f"SeqioBatches (gecko_fret_only): {ours:.0f} examples/s "
        f"(first batch after {first:.1f} s: pipeline build + shuffle buffer)")
  print(f"sentence-transformers tokenize: {peer:.0f} examples/s")
  print(f"ratio: {ours / peer:.2f}")
  if args.train_step:
    from train_step import bench_gecko as bench_step
    from train_step import triples
    data = triples(tokenizer, args.batch_size * 3, args.length)
    pairs, seconds, _ = bench_step(data, batch_size=args.batch_size, length=args.length, steps=3)
    print(f"train step: {pairs:.2f} pairs/s ({seconds:.2f} s/step); the pipeline is "
          f"{ours / pairs:.0f}x faster than the step consumes")


if __name__ == "__main__":
  main()
