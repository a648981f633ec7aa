"""Evaluation metrics, defined as MTEB computes them (pytrec_eval / scipy / sklearn).

Retrieval metrics take `qrels` ({query: {doc: relevance}}) and a ranking
({query: [doc, ...]} best first) and follow trec_eval: nDCG uses linear gain
(relevance / log2(rank + 1)) with the ideal ranking from the qrels; MAP@k divides by
the number of relevant documents (not by k); queries without any relevant document
are skipped by the caller (trec_eval only scores judged queries).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import scipy.stats


def ndcg_at_k(relevant: Mapping[str, float], ranking: Sequence[str], k: int) -> float:
  gains = [float(relevant.get(doc, 0.0)) for doc in ranking[:k]]
  dcg = sum(g / np.log2(i + 2) for i, g in enumerate(gains))
  ideal = sorted((float(v) for v in relevant.values() if v > 0), reverse=True)[:k]
  idcg = sum(g / np.log2(i + 2) for i, g in enumerate(ideal))
  return dcg / idcg if idcg > 0 else 0.0


def average_precision_at_k(relevant: Mapping[str, float], ranking: Sequence[str], k: int) -> float:
  positives = {doc for doc, v in relevant.items() if v > 0}
  if not positives:
    return 0.0
  hits, total = 0, 0.0
  for i, doc in enumerate(ranking[:k]):
    if doc in positives:
      hits += 1
      total += hits / (i + 1)
  return total / len(positives)


def recall_at_k(relevant: Mapping[str, float], ranking: Sequence[str], k: int) -> float:
  positives = {doc for doc, v in relevant.items() if v > 0}
  if not positives:
    return 0.0
  return len(positives.intersection(ranking[:k])) / len(positives)


def mrr_at_k(relevant: Mapping[str, float], ranking: Sequence[str], k: int) -> float:
  for i, doc in enumerate(ranking[:k]):
    if relevant.get(doc, 0) > 0:
      return 1.0 / (i + 1)
  return 0.0


def _check_varies(gold: Sequence[float], *, what: str) -> None:
  if len(set(float(g) for g in gold)) == 1:
    raise ValueError(f"every gold score is {float(gold[0])}: {what} correlation is undefined "
                     "for constant scores; check the data's score column.")


def spearman(predicted: Sequence[float], gold: Sequence[float]) -> float:
  """Spearman rank correlation (ties get average ranks)."""
  if len(predicted) != len(gold) or len(gold) < 2:
    raise ValueError(f"spearman needs two equal-length sequences of >= 2 values, got "
                     f"{len(predicted)} and {len(gold)}.")
  _check_varies(gold, what="Spearman")
  return float(scipy.stats.spearmanr(predicted, gold).statistic)


def pearson(predicted: Sequence[float], gold: Sequence[float]) -> float:
  _check_varies(gold, what="Pearson")
  return float(scipy.stats.pearsonr(predicted, gold).statistic)


def average_precision(scores: Sequence[float], labels: Sequence[int]) -> float:
  """Area under the precision-recall curve as sklearn's average_precision_score."""
  from sklearn.metrics import average_precision_score
  return float(average_precision_score(labels, scores))


def v_measure(labels_true: Sequence, labels_pred: Sequence) -> float:
  from sklearn.metrics import v_measure_score
  return float(v_measure_score(labels_true, labels_pred))
