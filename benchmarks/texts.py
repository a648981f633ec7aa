"""The texts the benchmarks embed and train on, from data every machine has.

* `stdlib_paragraphs`: docstring paragraphs of the Python standard library (varied
  lengths, mean ~35 WordPiece tokens).
* `long_texts`: SciFact abstracts (title + text, most past 256 tokens) when
  `../shared/data/scifact` is present, else the longest docstring paragraphs.
* `short_sentences`: STS-B test sentences (~12 tokens) when `../shared/data/stsb` is
  present, else the first sentence of each docstring paragraph, cut to 16 words.

Each returns (texts, source), the source naming what was used for the report.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil

SHARED_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "..", "shared", "data")


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


def long_texts(n: int) -> tuple[list[str], str]:
  corpus = os.path.join(SHARED_DATA, "scifact", "corpus.jsonl")
  if os.path.exists(corpus):
    texts = []
    with open(corpus, encoding="utf-8") as f:
      for line in f:
        doc = json.loads(line)
        texts.append(f"{doc.get('title') or ''} {doc.get('text') or ''}".strip())
        if len(texts) == n:
          break
    return texts, f"SciFact abstracts ({os.path.normpath(corpus)})"
  texts = sorted(stdlib_paragraphs(6000), key=len, reverse=True)[:n]
  return texts, "the longest standard-library docstring paragraphs (SciFact absent)"


def short_sentences(n: int) -> tuple[list[str], str]:
  sts = os.path.join(SHARED_DATA, "stsb", "sts-test.csv")
  if os.path.exists(sts):
    texts, seen = [], set()
    with open(sts, encoding="utf-8") as f:
      for line in f:
        for text in line.rstrip("\n").split("\t")[5:7]:
          if text not in seen:
            seen.add(text)
            texts.append(text)
        if len(texts) >= n:
          break
    return texts[:n], f"STS-B test sentences ({os.path.normpath(sts)})"
  texts = [" ".join(p.split(". ")[0].split()[:16]) for p in stdlib_paragraphs(n)]
  return texts, "first sentences of standard-library docstrings (STS-B absent)"
