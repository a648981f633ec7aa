"""The in-domain reference: a BEIR corpus's own human training queries as FRet-shaped
records, so they train through the same task, loss and budget as FRet's.

Each (query, relevant passage) pair of `qrels/train.tsv` is a record whose positive is
the judged passage; its hard negative is picked as FRet picks it, the lowest-ranked of
the encoder's top N passages for the query among those not judged relevant. This is
the ceiling synthetic data chases at a given scale: the same number of steps on real
queries of the target domain.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from gecko.data import jsonl

TASK_TYPE = "fact checking"
LLM_LABEL = "human"


def records(*, corpus_dir: str, corpus_path: str, output_dir: str, neighbors: int,
            encoder: str, task: str = TASK_TYPE, batch_size: int = 64,
            query_ids: Sequence[str] | None = None) -> list[dict]:
  """FRet-schema records for the train split of `corpus_dir` (BEIR), one per judged pair.

  Args:
    corpus_dir: BEIR directory with queries.jsonl and qrels/train.tsv.
    corpus_path: The FRet corpus JSONL (the retrieval pool; its embeddings are cached in
      `output_dir`, where a FRet run's cached embeddings may be copied first).
    output_dir: Where the corpus embeddings are cached.
    neighbors: N, the encoder's top passages the negative is picked from.
    encoder: The embedding model that ranks them.
    task: The records' task (the Gecko format's "task: …").
    query_ids: Only these training queries (None: all), e.g. the train part of
      `gecko.experiments.human_dev.split`.
  """
  from gecko import retrieval
  from gecko.data.input_format import GECKO
  from gecko.encode import encode
  from gecko.evaluation import datasets
  from gecko.fret import corpus as corpus_lib
  data = datasets.load_beir(corpus_dir, split="train")
  if query_ids is not None:
    unknown = sorted(set(query_ids) - set(data.qrels))
    if unknown:
      raise ValueError(f"query_ids {unknown[:5]} are not judged in {corpus_dir}/qrels/train.tsv.")
  corpus = jsonl.read_objects(corpus_path, what="FRet corpus")
  index = {p["id"]: i for i, p in enumerate(corpus)}
  os.makedirs(output_dir, exist_ok=True)
  vectors = corpus_lib.embed(corpus, encoder=encoder, output_dir=output_dir,
                            batch_size=batch_size)
  query_ids = sorted(data.qrels if query_ids is None else set(query_ids))
  queries = encode([GECKO.query(data.queries[q], task=task) for q in query_ids], model=encoder,
                   batch_size=batch_size)
  ranked, _ = retrieval.top_n(queries, vectors, neighbors)
  out = []
  for qid, row in zip(query_ids, ranked, strict=True):
    negative = _lowest_unjudged([corpus[i]["id"] for i in row], judged=data.qrels[qid])
    for doc_id, relevance in sorted(data.qrels[qid].items()):
      if relevance > 0 and negative is not None:
        out.append(record(qid=qid, query=data.queries[qid], task=task,
                          positive=corpus[index[doc_id]], negative=corpus[index[negative]]))
  if not out:
    raise ValueError(f"{corpus_dir}/qrels/train.tsv gave no training pair.")
  return out


def _lowest_unjudged(ranked_ids: Sequence[str], *, judged) -> str | None:
  """The last of `ranked_ids` not in `judged` (None when all are)."""
  return next((d for d in reversed(list(ranked_ids)) if d not in judged), None)


def record(*, qid: str, query: str, task: str, positive: dict, negative: dict) -> dict:
  """One FRet-schema record (`gecko.fret.schema`): the judged passage is both the seed
  and the positive; no LLM scores."""
  return {"id": f"{qid}-{positive['id']}", "task_type": TASK_TYPE, "task": task,
          "query": query, "seed_id": positive["id"], "seed_title": positive["title"],
          "seed_text": positive["text"], "positive_id": positive["id"],
          "positive_title": positive["title"], "positive_text": positive["text"],
          "negative_id": negative["id"], "negative_title": negative["title"],
          "negative_text": negative["text"], "positive_is_seed": True,
          "positive_ql": None, "positive_rc": None, "negative_ql": None, "negative_rc": None,
          "candidate_ids": None, "candidate_ql": None, "candidate_rc": None, "llm": LLM_LABEL}
