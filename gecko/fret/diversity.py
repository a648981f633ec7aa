"""Query diversity: near-duplicate queries dropped, and how alike the kept ones are.

A small LLM writes near-identical queries for different passages ("how can a cat …"
over and over). With same-tower negatives (Eq. 3) every such pair puts a near-copy of
the query in its own denominator, so duplicates cost more than they teach. The FRet
pipeline (`dedup_cosine`) keeps a new query only if its embedding is below a cosine
threshold to every earlier kept query of the same task type, and its summary reports
the share dropped and the median pairwise cosine of the kept queries.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Pairs sampled for the median pairwise cosine of many queries (exact below this).
MAX_PAIRS = 200_000


def keep_mask(vectors: np.ndarray, task_types: Sequence[str], *, threshold: float,
              earlier: int = 0) -> np.ndarray:
  """Which rows to keep, greedily in order: a row is dropped when its cosine to an
  earlier kept row of the same task type exceeds `threshold`.

  Args:
    vectors: [N, D] unit-norm query embeddings.
    task_types: N task types; only queries of one type are compared.
    threshold: Cosine above which a query is a near-duplicate, in (-1, 1].
    earlier: The first `earlier` rows are queries kept before (an earlier run's
      records): always kept, and compared against.
  """
  vectors = np.asarray(vectors, np.float32)
  if vectors.ndim != 2 or len(vectors) != len(task_types):
    raise ValueError(f"need [N, D] vectors and N task types, got {vectors.shape} and "
                     f"{len(task_types)}.")
  if not -1.0 < threshold <= 1.0:
    raise ValueError(f"threshold must be a cosine in (-1, 1], got {threshold!r}.")
  keep = np.ones(len(vectors), bool)
  types = np.asarray(task_types, dtype=object)
  for task_type in dict.fromkeys(task_types):
    rows = np.flatnonzero(types == task_type)
    similar = vectors[rows] @ vectors[rows].T > threshold
    kept: list[int] = []
    for j, row in enumerate(rows):
      if row >= earlier and kept and similar[j, kept].any():
        keep[row] = False
      else:
        kept.append(j)
  return keep


def median_pairwise_cosine(vectors: np.ndarray, *, seed: int = 0) -> float | None:
  """The median cosine between different rows of unit-norm `vectors` (None under two
  rows); over MAX_PAIRS random pairs when there are more pairs than that."""
  vectors = np.asarray(vectors, np.float32)
  n = len(vectors)
  if n < 2:
    return None
  if n * (n - 1) // 2 <= MAX_PAIRS:
    upper = np.triu_indices(n, k=1)
    return float(np.median((vectors @ vectors.T)[upper]))
  rng = np.random.default_rng(seed)
  first = rng.integers(0, n, MAX_PAIRS)
  second = (first + rng.integers(1, n, MAX_PAIRS)) % n  # never the same row
  return float(np.median(np.einsum("pd,pd->p", vectors[first], vectors[second])))


def nothing_judged(threshold: float | None) -> dict[str, object]:
  """The summary's "queries" entry when no query was judged (or, on Beam without a
  threshold, gathered)."""
  return {"dedup_cosine": threshold, "dropped_this_run": 0, "dropped_fraction": 0.0,
          "median_pairwise_cosine": None}


def deduplicate(made: Sequence, *, earlier: Sequence[dict], threshold: float | None,
                encoder, batch_size: int) -> tuple[list, dict[str, object]]:
  """This run's generated queries (`made`, in order) without near-duplicates of earlier
  kept ones (all of them when `threshold` is None), and the summary's "queries" entry.

  Args:
    made: `gecko.fret.generate.Generated` queries, judged in this order.
    earlier: Records written before (their queries are compared against, never dropped).
    threshold: `keep_mask`'s cosine, or None.
    encoder: The run's encoder (a name, a directory or a loaded `Embedder`).
    batch_size: Encoder batch size.
  """
  from gecko.encode import encode
  if not made and not earlier:
    return [], nothing_judged(threshold)
  texts = [r["query"] for r in earlier] + [g.query for g in made]
  vectors = encode(texts, model=encoder, batch_size=batch_size)
  keep = np.ones(len(texts), bool)
  if threshold is not None:
    keep = keep_mask(vectors, [r["task_type"] for r in earlier] + [g.task_type for g in made],
                     threshold=threshold, earlier=len(earlier))
  new_keep = keep[len(earlier):]
  dropped = int((~new_keep).sum())
  return [g for g, k in zip(made, new_keep) if k], {
      "dedup_cosine": threshold, "dropped_this_run": dropped,
      "dropped_fraction": dropped / len(made) if made else 0.0,
      "median_pairwise_cosine": median_pairwise_cosine(vectors[keep])}
