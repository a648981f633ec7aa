"""Loaders for local evaluation data; each takes a directory (or file) as a parameter.

  load_beir(dir)            BEIR layout: corpus.jsonl, queries.jsonl, qrels/{split}.tsv
  load_sts(dir | file)      STS-B tab-separated (score in column 4, texts in 5 and 6), or
                            JSONL {"sentence1", "sentence2", "score"}
  load_labelled_pairs(dir)  JSONL {"sentence1", "sentence2", "label" 0/1}
  load_classification(dir)  CSV (text + integer label columns, header or not) or JSONL
                            {"text", "label"}, as {split}.csv / {split}.jsonl or the
                            Banking77 file names

Malformed data is reported, never silently used: a qrels line naming an unknown
document or query is dropped *and counted* (`RetrievalData.dropped`), an empty corpus
or a file without usable rows raises ValueError naming the file.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from collections.abc import Sequence

from gecko.data import jsonl


def _require(path: str) -> str:
  if not os.path.exists(path):
    raise FileNotFoundError(f"Evaluation data not found: {path!r}.")
  return path


def _objects(path: str) -> list[dict]:
  return jsonl.read_objects(path, what="Evaluation data")


def _numbered(path: str) -> list[tuple[int, dict]]:
  return jsonl.read_numbered(path, what="Evaluation data")


def _score(value, *, where: str) -> float:
  """A finite gold score, or a ValueError naming the place."""
  try:
    score = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{where}: the score {value!r} is not a number.") from None
  if not math.isfinite(score):
    raise ValueError(f"{where}: the score {value!r} is not finite.")
  return score


def load_rows(path: str, split: str, fields: Sequence[str]) -> list[dict]:
  """JSONL rows from a file or a directory's `{split}.jsonl`, each holding `fields`."""
  if os.path.isdir(path):
    path = os.path.join(path, f"{split}.jsonl")
  numbered = _numbered(path)
  if not numbered:
    raise ValueError(f"{path} holds no rows.")
  for n, row in numbered:
    missing = [f for f in fields if f not in row]
    if missing:
      raise ValueError(f"{path}:{n}: lacks {missing}.")
  return [row for _, row in numbered]


@dataclasses.dataclass
class RetrievalData:
  corpus: dict[str, dict[str, str]]   # doc id -> {"title", "text"}
  queries: dict[str, str]             # query id -> text (judged queries only)
  qrels: dict[str, dict[str, int]]    # query id -> {doc id: relevance}
  dropped: dict[str, int]             # what was skipped, and how often


def load_beir(directory: str, *, split: str = "test") -> RetrievalData:
  corpus = {str(d["_id"]): {"title": d.get("title") or "", "text": d.get("text") or ""}
            for d in _objects(os.path.join(directory, "corpus.jsonl"))}
  if not corpus:
    raise ValueError(f"{directory}/corpus.jsonl holds no documents.")
  all_queries = {str(q["_id"]): q["text"] for q in _objects(os.path.join(directory, "queries.jsonl"))}
  qrels: dict[str, dict[str, int]] = {}
  dropped = {"qrels_unknown_document": 0, "qrels_unknown_query": 0,
             "queries_without_judgements": 0}
  path = _require(os.path.join(directory, "qrels", f"{split}.tsv"))
  with open(path, encoding="utf-8") as f:
    for n, row in enumerate(csv.reader(f, delimiter="\t"), 1):
      if n == 1 and row and row[0] == "query-id":
        continue
      if len(row) < 3:
        raise ValueError(f"{path}:{n}: expected query-id, corpus-id, score; got {row!r}.")
      qid, did, score = row[0], row[1], int(float(row[2]))
      if did not in corpus:
        dropped["qrels_unknown_document"] += 1
      elif qid not in all_queries:
        dropped["qrels_unknown_query"] += 1
      else:
        qrels.setdefault(qid, {})[did] = score
  # Judged queries whose judgements are all non-positive cannot be scored.
  for qid in [q for q, docs in qrels.items() if not any(v > 0 for v in docs.values())]:
    del qrels[qid]
    dropped["queries_without_judgements"] += 1
  if not qrels:
    raise ValueError(f"{path} has no usable judgements (dropped: {dropped}).")
  queries = {qid: all_queries[qid] for qid in qrels}
  return RetrievalData(corpus=corpus, queries=queries, qrels=qrels, dropped=dropped)


@dataclasses.dataclass
class PairData:
  sentence1: list[str]
  sentence2: list[str]
  scores: list[float]


def load_sts(path: str, *, split: str = "test") -> PairData:
  """STS pairs from a directory (`sts-{split}.csv` or `{split}.jsonl`) or a file."""
  if os.path.isdir(path):
    candidates = [os.path.join(path, f"sts-{split}.csv"), os.path.join(path, f"{split}.jsonl")]
    path = next((c for c in candidates if os.path.exists(c)), candidates[0])
  data = PairData([], [], [])
  if path.endswith(".jsonl"):
    for n, row in _numbered(path):
      missing = [f for f in ("sentence1", "sentence2", "score") if f not in row]
      if missing:
        raise ValueError(f"{path}:{n}: lacks {missing}.")
      data.sentence1.append(row["sentence1"])
      data.sentence2.append(row["sentence2"])
      data.scores.append(_score(row["score"], where=f"{path}:{n}"))
  else:
    with open(_require(path), encoding="utf-8") as f:
      for n, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
        if len(row) < 7:
          raise ValueError(f"{path}:{n}: expected >= 7 tab-separated columns, got {len(row)}.")
        data.scores.append(_score(row[4], where=f"{path}:{n}"))
        data.sentence1.append(row[5])
        data.sentence2.append(row[6])
  if len(data.scores) < 2:
    raise ValueError(f"{path} holds fewer than two sentence pairs.")
  return data


def load_labelled_pairs(path: str, *, split: str = "test") -> PairData:
  """Binary-labelled pairs (pair classification): JSONL {"sentence1", "sentence2",
  "label"} with label 0/1, given as a file or a directory holding `{split}.jsonl`."""
  if os.path.isdir(path):
    path = os.path.join(path, f"{split}.jsonl")
  data = PairData([], [], [])
  for n, row in _numbered(path):
    if row.get("label") not in (0, 1):
      raise ValueError(f"{path}:{n}: label must be 0 or 1, got {row.get('label')!r}.")
    data.sentence1.append(row["sentence1"])
    data.sentence2.append(row["sentence2"])
    data.scores.append(float(row["label"]))
  if len(set(data.scores)) < 2:
    raise ValueError(f"{path} needs both positive (1) and negative (0) pairs.")
  return data


@dataclasses.dataclass
class LabelledTexts:
  texts: list[str]
  labels: list[int]


def _read_labelled_csv(path: str) -> LabelledTexts:
  """Finds the text column (the non-integer one) and an integer label column."""
  with open(_require(path), encoding="utf-8", newline="") as f:
    rows = list(csv.reader(f))
  if rows and "text" in rows[0] and "label" in rows[0]:
    header, rows = rows[0], rows[1:]
    text_col, label_col = header.index("text"), header.index("label")
  else:  # no header (Banking77 test: label,label,text)
    text_col, label_col = len(rows[0]) - 1, 0
  out = LabelledTexts([], [])
  for n, row in enumerate(rows, 1):
    try:
      out.labels.append(int(row[label_col]))
    except (ValueError, IndexError) as e:
      raise ValueError(f"{path}: row {n} has no integer label in column {label_col}: {row!r}") from e
    out.texts.append(row[text_col])
  return out


def load_labelled(path: str) -> LabelledTexts:
  if path.endswith(".jsonl"):
    rows = list(_objects(path))
    return LabelledTexts([r["text"] for r in rows], [int(r["label"]) for r in rows])
  return _read_labelled_csv(path)


def load_classification(directory: str, *, train_files: tuple[str, ...] = (),
                        test_file: str = "") -> tuple[LabelledTexts, LabelledTexts]:
  """(train, test) texts with labels; Banking77's train + val form the train pool."""
  def pick(names):
    return [os.path.join(directory, n) for n in names if os.path.exists(os.path.join(directory, n))]

  train_paths = pick(train_files or ("train.jsonl", "train.csv")) or pick(
      ("banking77_train.csv", "banking77_val.csv"))
  test_paths = pick((test_file,) if test_file else ("test.jsonl", "test.csv"))
  if not train_paths or not test_paths:
    raise FileNotFoundError(f"{directory!r} needs train and test files (train.csv/.jsonl and "
                            f"test.csv/.jsonl); found {sorted(os.listdir(directory))}.")
  train = LabelledTexts([], [])
  for path in train_paths:
    part = load_labelled(path)
    train.texts += part.texts
    train.labels += part.labels
  return train, load_labelled(test_paths[0])
