"""A dev split of a BEIR corpus's human training queries, apart by query and by document.

Settings are chosen on dev, never on test; and a dev query whose relevant document is
also a training positive would score what training memorised. So the training queries
are grouped by the documents they share (the connected components of the query–document
graph of `qrels/train.tsv`), and a whole group goes to dev when crc32 of its smallest
query id is 0 mod `fraction`: no dev document is a train positive. For SciFact (809
training claims, 919 pairs) this gives 179 dev claims (213 pairs) and 630 train claims
(706 pairs).

  split = human_dev.split(corpus_dir)            # Split(dev=..., train=...)
  human_dev.write_task(corpus_dir, split, out)   # a BEIR task: the dev queries, split "test"
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from typing import NamedTuple

from gecko.data import jsonl

FRACTION = 5


class Split(NamedTuple):
  """Query ids of each side, sorted."""

  dev: tuple[str, ...]
  train: tuple[str, ...]


def split_qrels(qrels: Mapping[str, Mapping[str, int]], *, fraction: int = FRACTION) -> Split:
  """Dev and train query ids of `qrels` (query -> {document: relevance > 0}), whole
  groups of queries that share a relevant document on one side."""
  if fraction < 2:
    raise ValueError(f"fraction={fraction} must be >= 2 (one group in `fraction` is dev).")
  parent: dict[str, str] = {}

  def root(x: str) -> str:
    parent.setdefault(x, x)
    while parent[x] != x:
      parent[x] = parent[parent[x]]
      x = parent[x]
    return x
  first_query: dict[str, str] = {}  # document -> a query judging it relevant
  for query in sorted(qrels):
    root(query)
    for document, relevance in qrels[query].items():
      if relevance > 0:
        other = first_query.setdefault(document, query)
        parent[root(query)] = root(other)
  groups: dict[str, list[str]] = {}
  for query in sorted(qrels):
    groups.setdefault(root(query), []).append(query)
  dev = {q for members in groups.values()
         if zlib.crc32(min(members).encode("utf-8")) % fraction == 0 for q in members}
  out = Split(dev=tuple(sorted(dev)), train=tuple(sorted(set(qrels) - dev)))
  if not out.dev or not out.train:
    raise ValueError(f"the dev split of {len(qrels)} training queries ({len(groups)} groups "
                     f"sharing documents) at 1 group in {fraction} leaves "
                     f"{'no dev' if not out.dev else 'no train'} query: too few queries "
                     "for a human dev split.")
  return out


def split(corpus_dir: str, *, fraction: int = FRACTION) -> Split:
  """The dev/train split of `corpus_dir`'s `qrels/train.tsv` (BEIR layout)."""
  from gecko.evaluation import datasets
  return split_qrels(datasets.load_beir(corpus_dir, split="train").qrels, fraction=fraction)


def on_training_documents(corpus_dir: str) -> tuple[str, ...]:
  """The test queries of `corpus_dir` (`qrels/test.tsv`) judged relevant to a document
  that some training query (`qrels/train.tsv`) is judged relevant to: those a model
  trained on the training queries may score by having seen their documents."""
  from gecko.evaluation import datasets
  relevant = lambda qrels: {q: {d for d, r in docs.items() if r > 0}  # noqa: E731
                            for q, docs in qrels.items()}
  trained = set().union(*relevant(datasets.load_beir(corpus_dir, split="train").qrels).values())
  return tuple(sorted(q for q, docs in relevant(datasets.load_beir(corpus_dir).qrels).items()
                      if docs & trained))


def write_task(corpus_dir: str, split_: Split, output_dir: str) -> str:
  """A BEIR task at `output_dir` for the dev queries (their qrels as split "test") over
  `corpus_dir`'s whole corpus; returns `output_dir`."""
  from gecko.evaluation import datasets
  data = datasets.load_beir(corpus_dir, split="train")
  dev = set(split_.dev)
  jsonl.write_beir(output_dir, corpus=({"id": d, **p} for d, p in data.corpus.items()),
                   queries=({"id": q, "text": data.queries[q]} for q in split_.dev),
                   qrels={"test": [(q, d) for q in sorted(dev)
                                   for d, r in sorted(data.qrels[q].items()) if r > 0]})
  return os.fspath(output_dir)
