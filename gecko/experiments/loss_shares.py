"""Where Eq. 3's softmax denominator goes on a training set, under a given model.

For each query q_i of a batch drawn as training draws it, the denominator of Eq. 3
sums e^{s/tau} over its positive p_i+, the other in-batch positives p_j+, the other
queries q_j (the same-tower terms) and its hard negative p_i-. This tool reports the
share of each, the distribution of s(q, p+), and the same-tower share by tertile of
s(q, p+): if a low s(q, p+) lets the other queries dominate the denominator, the
lowest tertile's same-tower share is the largest. (EXPERIMENTS.md, round 5, row (e).)

  python -m gecko.experiments.loss_shares --fret RUN/data/fret_rrf_lowest/fret \
      --model all-MiniLM-L6-v2 --output shares.json
  python -m gecko.experiments.loss_shares ... --positive seed   # as seed-positive rows train

The records are any FRet shards (`gecko.fret.records`: a FRet run's OUTPUT_DIR, or a
row's training data `data/<records>/fret`), formatted as training formats them
(`gecko.fret.triples`); texts are embedded at the model's own maximum length.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence

import numpy as np

from gecko import gin_flags
from gecko.experiments import arguments

PARTS = ("positive", "in_batch_positives", "same_tower", "hard_negative")


def shares(query: np.ndarray, positive: np.ndarray, negative: np.ndarray, *,
           temperature: float, batch_size: int, seed: int = 0) -> dict[str, object]:
  """The denominator's shares over batches of `batch_size` rows in a random order
  (`seed`; the last partial batch is left out), from unit-norm `[N, D]` embeddings.

  Returns {"queries", "s_positive": {"mean", "p10", "p50", "p90"}, "share": {part: mean
  over queries}, "same_tower_share_by_s_positive_tertile": [low, mid, high]}.
  """
  count = len(query)
  if not 0 < batch_size <= count:
    raise ValueError(f"batch_size={batch_size} must be in 1..{count} (the records).")
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0, got {temperature}.")
  order = np.random.default_rng(seed).permutation(count)
  rows, s_positive = {part: [] for part in PARTS}, []
  for start in range(0, count - batch_size + 1, batch_size):
    b = order[start:start + batch_size]
    q, p, n = query[b], positive[b], negative[b]
    to_positives = q @ p.T / temperature  # [B, B]; the diagonal is each query's own
    to_queries = q @ q.T / temperature
    np.fill_diagonal(to_queries, -np.inf)  # a query is not its own negative
    to_negative = np.sum(q * n, -1, keepdims=True) / temperature
    logits = np.concatenate([to_positives, to_queries, to_negative], axis=1)
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    own = np.eye(len(b), dtype=bool)
    rows["positive"].append(weights[:, :len(b)][own])
    rows["in_batch_positives"].append(np.where(own, 0, weights[:, :len(b)]).sum(1))
    rows["same_tower"].append(weights[:, len(b):2 * len(b)].sum(1))
    rows["hard_negative"].append(weights[:, -1])
    s_positive.append(np.diag(to_positives) * temperature)
  share = {part: np.concatenate(values) for part, values in rows.items()}
  s = np.concatenate(s_positive)
  tertiles = np.array_split(np.argsort(s, kind="stable"), 3)
  return {
      "queries": int(len(s)),
      "s_positive": {"mean": float(s.mean()), "p10": float(np.percentile(s, 10)),
                     "p50": float(np.percentile(s, 50)), "p90": float(np.percentile(s, 90))},
      "share": {part: float(values.mean()) for part, values in share.items()},
      "same_tower_share_by_s_positive_tertile": [float(share["same_tower"][t].mean())
                                                 for t in tertiles],
  }


POSITIVES = ("record", "seed")  # the record's positive, or its seed (`fret_positive`)


def measure(*, fret: str, model: str, temperature: float = 0.05, batch_size: int = 32,
            seed: int = 0, positive: str = "record") -> dict[str, object]:
  """`shares` of the FRet records in `fret`, embedded by `model` in Gecko's format, with
  the record's positive (FRet's: the LLM's top passage) as each query's positive or,
  with `positive="seed"`, the seed passage (as seed-positive rows train: records whose
  negative is the seed are dropped)."""
  if positive not in POSITIVES:
    raise ValueError(f"positive={positive!r}; use one of {list(POSITIVES)}.")
  from gecko import encode
  from gecko.fret import records as records_lib
  from gecko.fret import triples
  found = records_lib.read(fret)
  if not found:
    raise ValueError(f"{fret} holds no FRet records (no complete fret-*.jsonl shard).")
  if positive == "seed":
    found = [{**r, "positive_title": r["seed_title"], "positive_text": r["seed_text"]}
             for r in found if r["seed_text"] != r["negative_text"]]
  texts = [triples.triple(r, teacher="none") for r in found]
  embedded = {side: encode.encode([t[side] for t in texts], model=model, show_progress=True)
              for side in ("query", "positive", "negative")}
  result = shares(embedded["query"], embedded["positive"], embedded["negative"],
                  temperature=temperature, batch_size=batch_size, seed=seed)
  return {"fret": fret, "model": model, "positive": positive, "temperature": temperature,
          "batch_size": batch_size, "seed": seed, **result}


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m gecko.experiments.loss_shares",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--fret", required=True, help="a directory of FRet shards")
  parser.add_argument("--model", required=True,
                      help="a packaged model name or a model directory (an export)")
  parser.add_argument("--positive", choices=POSITIVES, default="record",
                      help="each query's positive: the record's (default; FRet's is the LLM's "
                           "top passage) or the seed passage, as seed-positive rows train")
  parser.add_argument("--temperature", type=arguments.positive_float, default=0.05,
                      help="tau of the loss (default 0.05, the experiment's)")
  parser.add_argument("--batch_size", type=arguments.at_least(2), default=32)
  parser.add_argument("--seed", type=int, default=0, help="the batches' random order")
  parser.add_argument("--output", default=None,
                      help="also write the result as JSON here (under a domain-adaptation "
                           "OUTPUT_DIR/results/shares/, its --report tabulates it)")
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parser.parse_args(argv)

  def run() -> int:
    result = measure(fret=args.fret, model=args.model, temperature=args.temperature,
                     batch_size=args.batch_size, seed=args.seed, positive=args.positive)
    result["command"] = f"python -m gecko.experiments.loss_shares {shlex.join(argv)}"
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
      with open(args.output, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    return result["queries"]

  return gin_flags.run_plain(run, prog="gecko.experiments.loss_shares",
                             success="gecko.experiments.loss_shares: {} queries")


if __name__ == "__main__":
  sys.exit(main())
