"""Paired bootstrap over queries: is one model's mean score above another's?

Both models are scored on the same queries; a bootstrap sample draws queries with
replacement and takes the mean of the per-query differences. The interval is the
2.5th and 97.5th percentiles of those means (a difference is called a win when the
whole interval is above zero). Per-query scores of several training seeds are averaged
per query first, so the interval covers query sampling, not seed noise (report the
seeds' spread beside it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Difference:
  """mean(b - a) over the shared queries, with its bootstrap interval."""

  mean: float
  low: float
  high: float
  queries: int

  @property
  def significant(self) -> bool:
    """Whether the interval excludes zero."""
    return self.low > 0 or self.high < 0

  def __str__(self) -> str:
    return f"{self.mean:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


def mean_over_seeds(runs: Sequence[Mapping[str, float]]) -> dict[str, float]:
  """Per-query scores averaged over runs (seeds) that scored the same queries."""
  if not runs:
    raise ValueError("need at least one run's per-query scores.")
  keys = set(runs[0])
  for run in runs[1:]:
    if set(run) != keys:
      raise ValueError(f"runs scored different queries ({len(keys ^ set(run))} differ).")
  return {q: float(np.mean([run[q] for run in runs])) for q in runs[0]}


def paired(a: Mapping[str, float], b: Mapping[str, float], *, samples: int = 10_000,
           confidence: float = 0.95, seed: int = 0) -> Difference:
  """The difference b - a of per-query scores {query id: score}, paired by query."""
  if set(a) != set(b):
    raise ValueError(f"the two models scored different queries ({len(set(a) ^ set(b))} "
                     "differ); pair runs on the same split.")
  if not a:
    raise ValueError("no queries to compare.")
  if not 0 < confidence < 1 or samples < 1:
    raise ValueError(f"need 0 < confidence < 1 and samples >= 1, got {confidence}, {samples}.")
  queries = sorted(a)
  diff = np.array([b[q] - a[q] for q in queries], np.float64)
  draws = np.random.default_rng(seed).integers(0, len(diff), (samples, len(diff)))
  means = diff[draws].mean(axis=1)
  tail = (1 - confidence) / 2 * 100
  low, high = np.percentile(means, [tail, 100 - tail])
  return Difference(float(diff.mean()), float(low), float(high), len(diff))
