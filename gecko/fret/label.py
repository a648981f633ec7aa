"""FRet step 4: from the LLM's scores to the pair: ranks, reciprocal rank fusion, the choice.

Numbers only, no LLM call. For one query and its N retrieved neighbours the LLM gave
two scores per neighbour (step 3, `gecko.fret.score`):

  QL  query likelihood, log P(query | passage)
  RC  relevance classification, log P(relevant label | query, passage)

Each is turned into ranks (1 = best), fused as R = 1/rank_QL + 1/rank_RC (the paper's
reciprocal rank fusion, no smoothing constant), and the top fused neighbour becomes
the positive; the hard negative is the lowest fused one ("lowest", the paper's best
p1/p20 setting with N = 20), a random one of the rest ("random"), or one mined from a
window of the encoder's ranks ("window", `window_negative`: NV-Retriever's
positive-aware rule, no LLM score). For the paper's ranking ablation, `ranking="ql"` or
`"rc"` uses one score's ranks alone. `ranking="seed"` asks the LLM for no score at all
(`choose_seed`): the seed passage is the positive and the negative comes from the
encoder's order (generation alone, as GPL and InPars label their queries).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

NEGATIVE_CHOICES = ("lowest", "random", "window")
RANKINGS = ("rrf", "ql", "rc", "seed")
# The LLM scores each ranking needs (the others are not computed).
NEEDS = {"rrf": ("ql", "rc"), "ql": ("ql",), "rc": ("rc",), "seed": ()}


def ranks(scores: Sequence[float]) -> np.ndarray:
  """1-based ranks, highest score first; ties keep the earlier (better retrieved) first."""
  scores = np.asarray(scores, np.float64)
  if scores.ndim != 1 or not len(scores):
    raise ValueError(f"scores must be a non-empty vector, got shape {scores.shape}.")
  if not np.all(np.isfinite(scores)):
    raise ValueError(f"scores must be finite, got {scores.tolist()}.")
  order = np.argsort(-scores, kind="stable")
  out = np.empty(len(scores), np.int64)
  out[order] = np.arange(1, len(scores) + 1)
  return out


def reciprocal_rank_fusion(*score_lists: Sequence[float]) -> np.ndarray:
  """sum over rankings of 1 / rank."""
  if not score_lists:
    raise ValueError("reciprocal_rank_fusion needs at least one score list.")
  lengths = {len(s) for s in score_lists}
  if len(lengths) != 1:
    raise ValueError(f"score lists differ in length: {sorted(lengths)}.")
  return sum(1.0 / ranks(s) for s in score_lists)


@dataclasses.dataclass(frozen=True)
class Labels:
  """The chosen neighbours (indices into the neighbour list) and the evidence."""

  positive: int
  negative: int | None  # None: "window", mined apart (`window_negative`)
  fused: tuple[float, ...]
  ql_ranks: tuple[int, ...]  # () when not computed
  rc_ranks: tuple[int, ...]


def _fuse(ql: Sequence[float] | None, rc: Sequence[float] | None, *, ranking: str):
  """(fused scores, QL ranks, RC ranks, the neighbours best first) under `ranking`."""
  if ranking not in RANKINGS:
    raise ValueError(f"ranking={ranking!r}; use one of {RANKINGS}.")
  if not NEEDS[ranking]:
    raise ValueError(f"ranking={ranking!r} has no LLM score to rank by: use choose_seed.")
  missing = [name for name, s in (("ql", ql), ("rc", rc)) if s is None and name in NEEDS[ranking]]
  if missing:
    raise ValueError(f"ranking={ranking!r} needs the {missing[0].upper()} scores.")
  present = ql if ql is not None else rc
  if len(present) < 2:
    raise ValueError(f"need at least 2 neighbours to pick a positive and a negative, "
                     f"got {len(present)}.")
  ql_ranks = ranks(ql) if ql is not None else None
  rc_ranks = ranks(rc) if rc is not None else None
  fused = {"rrf": lambda: reciprocal_rank_fusion(ql, rc), "ql": lambda: 1.0 / ql_ranks,
           "rc": lambda: 1.0 / rc_ranks}[ranking]()
  tie_break = ql_ranks if ql_ranks is not None else rc_ranks
  best_first = np.lexsort((np.arange(len(fused)), tie_break, -fused))
  return fused, ql_ranks, rc_ranks, best_first


def order(ql: Sequence[float] | None, rc: Sequence[float] | None, *,
          ranking: str = "rrf") -> list[int]:
  """The neighbours' indices best first, as `choose` ranks them."""
  return [int(i) for i in _fuse(ql, rc, ranking=ranking)[3]]


def choose(ql: Sequence[float] | None, rc: Sequence[float] | None, *, negative: str = "lowest",
           rng: np.random.Generator | None = None, ranking: str = "rrf") -> Labels:
  """Positive = top fused neighbour; negative = lowest fused or a random other one
  (None for "window": `window_negative` mines it from the encoder's ranks).

  `ranking`: "rrf" fuses both rankings; "ql" or "rc" ranks by one score alone (the
  other may then be None: it is not computed). Ties go to the better QL rank (RC rank
  when ranking by RC alone), then to the earlier neighbour.
  """
  if negative not in NEGATIVE_CHOICES:
    raise ValueError(f"negative={negative!r}; use one of {NEGATIVE_CHOICES}.")
  fused, ql_ranks, rc_ranks, order = _fuse(ql, rc, ranking=ranking)
  positive = int(order[0])
  if negative == "lowest":
    chosen = int(order[-1])
  elif negative == "window":
    chosen = None
  else:
    if rng is None:
      raise ValueError("negative='random' needs an rng (np.random.default_rng(seed)).")
    chosen = int(rng.choice(order[1:]))
  as_tuple = lambda r: () if r is None else tuple(int(x) for x in r)  # noqa: E731
  return Labels(positive=positive, negative=chosen, fused=tuple(float(f) for f in fused),
                ql_ranks=as_tuple(ql_ranks), rc_ranks=as_tuple(rc_ranks))


def choose_seed(count: int, *, seed_at: int, negative: str = "lowest",
                rng: np.random.Generator | None = None) -> Labels:
  """ranking="seed", no LLM score: the seed (index `seed_at` of the `count` candidates,
  which are in the encoder's order) is the positive; the negative is the encoder's
  lowest other candidate ("lowest"), a random other one, or None ("window":
  `window_negative`)."""
  if negative not in NEGATIVE_CHOICES:
    raise ValueError(f"negative={negative!r}; use one of {NEGATIVE_CHOICES}.")
  if count < 2 or not 0 <= seed_at < count:
    raise ValueError(f"need the seed among at least 2 candidates, got seed_at={seed_at} of "
                     f"{count}.")
  others = [i for i in range(count) if i != seed_at]
  if negative == "lowest":
    chosen = others[-1]
  elif negative == "window":
    chosen = None
  else:
    if rng is None:
      raise ValueError("negative='random' needs an rng (np.random.default_rng(seed)).")
    chosen = int(rng.choice(others))
  return Labels(positive=seed_at, negative=chosen, fused=(), ql_ranks=(), rc_ranks=())


def window_negative(ranked: Sequence[tuple[str, float]], *, window: tuple[int, int],
                    positive_score: float, max_ratio: float,
                    exclude: Sequence[str] = ()) -> tuple[int, str] | None:
  """(its 1-based rank, its id): the hard negative mined from the encoder's ranks
  `window` (first, last) of `ranked` ((passage id, cosine), best first): the first
  passage there that is not in `exclude` (the positive, the seed) and scores at most
  `max_ratio` times the positive's `positive_score` (NV-Retriever's positive-aware
  rule: the passages above are likely unlabelled positives). None when none is left."""
  first, last = window
  for rank, (pid, score) in enumerate(ranked[first - 1:last], first):
    if pid not in exclude and score <= max_ratio * positive_score:
      return rank, pid
  return None
