"""Encoding throughput: gecko.encode vs sentence-transformers, same weights, same run.

  make bench            # installs benchmarks/requirements.txt (torch CPU, sentence-transformers)
  .venv/bin/python benchmarks/encode_throughput.py [--n 2000] [--batch_size 32] [--repeats 3]

The texts are paragraphs of the Python standard library's docstrings (present on
every machine; varied lengths from a few words to past the 256-token limit). Both
models embed the same texts with the same batch size; each is warmed up on the full
set first (for JAX this compiles one program per length bucket; the cold time is
printed too), then timed `--repeats` times, best run reported.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import pkgutil
import platform
import sys
import time

import numpy as np


def stdlib_paragraphs(n: int) -> list[str]:
  """`n` distinct docstring paragraphs of standard-library modules, deterministic order."""
  seen, texts = set(), []
  names = sorted(m.name for m in pkgutil.iter_modules() if m.module_finder.path.startswith(
      os.path.dirname(os.__file__)) and not m.name.startswith(("_", "test", "idle", "tkinter",
                                                                "turtle", "antigravity", "this")))
  for name in names:
    try:
      module = importlib.import_module(name)
    except Exception:  # noqa: BLE001 - optional platform modules
      continue
    objects = [module] + [v for _, v in sorted(vars(module).items()) if inspect.isclass(v)
                          or inspect.isfunction(v)]
    for obj in objects:
      for para in (inspect.getdoc(obj) or "").split("\n\n"):
        para = " ".join(para.split())
        if len(para) >= 20 and para not in seen:
          seen.add(para)
          texts.append(para)
          if len(texts) == n:
            return texts
  raise RuntimeError(f"only {len(texts)} docstring paragraphs found, wanted {n}")


def best_time(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--n", type=int, default=2000, help="number of texts")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--model", default="all-MiniLM-L6-v2")
  args = parser.parse_args()

  import jax
  import torch
  from sentence_transformers import SentenceTransformer

  from gecko.encode import encode
  from gecko.models import embedder

  texts = stdlib_paragraphs(args.n)
  model = embedder.load(args.model)
  lengths = [len(x) for x in model.tokenizer.encode_batch(texts)]
  print(f"texts: {len(texts)}, tokens/text mean {np.mean(lengths):.1f}, max {max(lengths)}, "
        f"truncated {sum(x == model.tokenizer.max_length for x in lengths)}")
  print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)")

  start = time.perf_counter()
  ours = encode(texts, model=model, batch_size=args.batch_size)
  cold = time.perf_counter() - start
  gecko_s = best_time(lambda: encode(texts, model=model, batch_size=args.batch_size), args.repeats)

  st = SentenceTransformer(embedder.resolve(args.model), device="cpu")
  theirs = st.encode(texts, batch_size=args.batch_size, normalize_embeddings=True)
  st_s = best_time(lambda: st.encode(texts, batch_size=args.batch_size,
                                     normalize_embeddings=True), args.repeats)

  cosine = np.sum(ours * theirs, axis=1)
  print(f"agreement: min cosine {cosine.min():.6f}")
  print(f"gecko.encode:          {len(texts) / gecko_s:8.1f} sentences/s  "
        f"(best of {args.repeats}; cold first call incl. compile {cold:.2f} s)")
  print(f"sentence-transformers: {len(texts) / st_s:8.1f} sentences/s  (best of {args.repeats})")
  print(f"ratio gecko / sentence-transformers: {st_s / gecko_s:.2f}")


if __name__ == "__main__":
  sys.exit(main())
