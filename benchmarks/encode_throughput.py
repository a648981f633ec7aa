"""Encoding throughput: gecko.encode vs sentence-transformers, same weights, same run.

  make bench   # installs benchmarks/requirements.txt (torch CPU, sentence-transformers, faiss)
  .venv/bin/python benchmarks/encode_throughput.py [--cases long,short,docstrings] [--rounds 5]

Three cases (see benchmarks/texts.py):

  long        SciFact abstracts (or the longest docstrings), 256-token limit, batch 32
  short       STS-B sentences (or docstring first sentences), ~12 tokens, batch 64
  docstrings  standard-library docstring paragraphs, mean ~35 tokens, batch 32

Both models embed the same texts with the same batch size. Each is warmed up on the
whole set first (for JAX this compiles its programs; the cold time is printed), then
the two alternate for `--rounds` rounds; the median ratio and its min-max are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alternating  # noqa: E402
import texts as text_sources  # noqa: E402

CASES = {  # name -> (texts(n) -> (texts, source), default n, batch size)
    "long": (text_sources.long_texts, 1000, 32),
    "short": (text_sources.short_sentences, 4000, 64),
    "docstrings": (lambda n: (text_sources.stdlib_paragraphs(n),
                              "standard-library docstring paragraphs"), 2000, 32),
}


def run_case(name: str, *, model, st, n: int | None, rounds: int) -> dict:
  from gecko.encode import encode
  load, default_n, batch_size = CASES[name]
  texts, source = load(n or default_n)
  lengths = [len(x) for x in model.tokenizer.encode_batch(texts)]
  print(f"\n[{name}] {len(texts)} texts from {source}; tokens/text mean {np.mean(lengths):.1f}, "
        f"max {max(lengths)}, truncated {sum(x == model.tokenizer.max_length for x in lengths)}; "
        f"batch {batch_size}")
  cold = alternating.timed(lambda: encode(texts, model=model, batch_size=batch_size))
  ours = encode(texts, model=model, batch_size=batch_size)
  theirs = st.encode(texts, batch_size=batch_size, normalize_embeddings=True)
  cosine = float(np.min(np.sum(ours * theirs, axis=1)))
  result = alternating.alternate(
      lambda: encode(texts, model=model, batch_size=batch_size),
      lambda: st.encode(texts, batch_size=batch_size, normalize_embeddings=True),
      rounds=rounds, warmup=0)
  print(f"  agreement: min cosine {cosine:.6f}; gecko cold first call (compiles) {cold:.1f} s")
  print(f"  {result.summary(work=len(texts), unit='texts/s')}")
  return {**result.row(name, work=len(texts)), "texts": len(texts), "source": source,
          "mean_tokens": float(np.mean(lengths)), "batch_size": batch_size,
          "min_cosine": cosine, "cold_s": cold}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--cases", default="long,short,docstrings",
                      help=f"comma-separated, from {sorted(CASES)}")
  parser.add_argument("--n", type=int, default=None, help="texts per case (default: per case)")
  parser.add_argument("--rounds", type=int, default=5, help="timed ABAB rounds after warm-up")
  parser.add_argument("--model", default="all-MiniLM-L6-v2")
  parser.add_argument("--json", default=None, help="also write the rows to this file")
  args = parser.parse_args()
  cases = [c.strip() for c in args.cases.split(",") if c.strip()]
  unknown = [c for c in cases if c not in CASES]
  if unknown:
    parser.error(f"unknown case(s) {unknown}; choose from {sorted(CASES)}")

  from sentence_transformers import SentenceTransformer

  from gecko.models import embedder
  model = embedder.load(args.model)
  st = SentenceTransformer(embedder.resolve(args.model), device="cpu")
  print(alternating.machine())
  rows = [run_case(c, model=model, st=st, n=args.n, rounds=args.rounds) for c in cases]
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump({"machine": alternating.machine(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
  sys.exit(main())
