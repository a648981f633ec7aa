"""FRet steps 3 and 4 joined for one query: a `Relabeler` scores the candidates
(`gecko.fret.score`), ranks them and picks the pair (`gecko.fret.label`), and builds
the record (`gecko.fret.schema`).

Both runners (`gecko.fret.pipeline`, `gecko.fret.beam`) make one from the run's
`FretConfig`, so both produce the same records from the same inputs. The random hard
negative is drawn from a generator seeded by (seed, query id), so a record does not
depend on which records were processed before it (resumed runs and Beam bundles give
the same answer as one uninterrupted run).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from gecko.fret import label as label_lib
from gecko.fret import score
from gecko.fret.cache import LLMCache
from gecko.fret.config import FretConfig
from gecko.fret.generate import Generated
from gecko.fret.llm import LLM


def with_seed(neighbors: Sequence[int], seed_index: int) -> list[int]:
  """The retrieved passage indices, the seed put in last place when not retrieved."""
  row = [int(i) for i in neighbors]
  if seed_index not in row:
    row[-1] = seed_index  # the seed always competes
  return row


def consistent(record: Mapping, *, ranked_ids: Sequence[str], top_k: int) -> bool:
  """Round-trip consistency: the record's positive is among the first `top_k` passages
  the encoder retrieved for the record's own query (`ranked_ids`, best first)."""
  return record["positive_id"] in list(ranked_ids)[:top_k]


def seed_retrieved(seed_id: str, *, ranked_ids: Sequence[str], top_k: int) -> bool:
  """The seed round-trip filter: the query's own seed passage is among the first
  `top_k` passages the encoder retrieved for it (`ranked_ids`, best first)."""
  return seed_id in list(ranked_ids)[:top_k]


def generic(scores: Sequence[float], *, num_neighbors: int, min_spread: float) -> bool:
  """The generic-query guard: the encoder's cosines to the query's retrieved passages
  (best first) spread less than `min_spread` between the first and the
  `num_neighbors`-th: the query matches many passages about equally."""
  return scores[0] - scores[min(num_neighbors, len(scores)) - 1] < min_spread


def dropped_before_scoring(config: FretConfig, *, query_id: str, ranked_ids: Sequence[str],
                           scores: Sequence[float]) -> str | None:
  """Which filter drops the query before any scoring call ("generic" or
  "seed_not_retrieved", `records.FILTERS`), or None: the generic-query guard, then the
  seed filter, over the encoder's retrieval (`ranked_ids`, `scores`, best first)."""
  if config.min_spread is not None and generic(
      scores, num_neighbors=config.num_neighbors, min_spread=config.min_spread):
    return "generic"
  if config.seed_top_k is not None and not seed_retrieved(
      query_id, ranked_ids=ranked_ids, top_k=config.seed_top_k):
    return "seed_not_retrieved"
  return None


class NoNegative(ValueError):
  """The "window" rule left no passage to be the hard negative (the query is dropped)."""


def record_rng(seed: int, record_id: str) -> np.random.Generator:
  return np.random.default_rng([seed, zlib.crc32(record_id.encode("utf-8"))])


class Relabelled(NamedTuple):
  """A record, and every candidate's QL and RC score (None where not computed)."""

  record: dict[str, object]
  ql: list[float] | None
  rc: list[float] | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Relabeler:
  """Attributes:
    scorer: The LLM's scores (`gecko.fret.score.Scorer`).
    negative: "lowest" fused candidate or a "random" other one.
    ranking: "rrf", "ql", "rc" or "seed" (`gecko.fret.label`); a score the ranking
      does not use is not computed (None, and None in the record): "seed" computes none.
    seed: With the query id, seeds the random negative.
    llm_label: The record's "llm" field ("backend:model").
    negative_window, negative_max_ratio: The "window" negative's ranks and rule
      (`gecko.fret.label.window_negative`).
  """

  scorer: score.Scorer
  negative: str
  ranking: str
  seed: int
  llm_label: str
  negative_window: tuple[int, int] = (10, 50)
  negative_max_ratio: float = 0.95

  @classmethod
  def for_run(cls, config: FretConfig, *, llm: LLM, cache: LLMCache | None) -> Relabeler:
    """The relabeler of a run: `config`'s ranking, negative rule, seed and scorer options."""
    return cls(scorer=score.Scorer(llm=llm, cache=cache, ranking=config.ranking,
                                   **config.scorer_options),
               negative=config.negative, ranking=config.ranking, seed=config.seed,
               llm_label=f"{llm.name}:{llm.model}", negative_window=config.negative_window,
               negative_max_ratio=config.negative_max_ratio)

  @property
  def llm_calls(self) -> int:
    return self.scorer.llm_calls

  def __call__(self, generated: Generated, *, passages: Sequence[Mapping[str, str]],
               seed_passage: Mapping[str, str],
               retrieved: Sequence[tuple[Mapping[str, str], float]] = (),
               seed_score: float | None = None) -> Relabelled:
    """The record for `generated` over its candidate `passages` (the seed among them).

    For the "window" negative: `retrieved`, the encoder's passages for the query with
    their cosines, best first, as deep as the window; `seed_score`, its cosine to the
    seed passage (whether retrieved or not).

    Raises:
      NoNegative: the "window" rule left no passage.
    """
    needs = label_lib.NEEDS[self.ranking]
    ql = self.scorer.ql(generated.query, passages) if "ql" in needs else None
    rc = self.scorer.rc(generated.task, generated.query, passages) if "rc" in needs else None
    rng = record_rng(self.seed, generated.id)
    if needs:
      chosen = label_lib.choose(ql, rc, negative=self.negative, ranking=self.ranking, rng=rng)
    else:  # ranking "seed": no LLM score
      chosen = label_lib.choose_seed(
          len(passages), seed_at=[p["id"] for p in passages].index(seed_passage["id"]),
          negative=self.negative, rng=rng)
    pos = passages[chosen.positive]
    negative_at = chosen.negative
    if negative_at is None:
      neg = self._window_negative(pos, seed_passage, retrieved=retrieved, seed_score=seed_score)
      ids = [p["id"] for p in passages]
      negative_at = ids.index(neg["id"]) if neg["id"] in ids else None
    else:
      neg = passages[negative_at]
    at = lambda scores, i: None if scores is None or i is None else scores[i]  # noqa: E731
    record = {
        "id": generated.id, "task_type": generated.task_type, "task": generated.task,
        "query": generated.query, "seed_id": seed_passage["id"],
        "seed_title": seed_passage["title"], "seed_text": seed_passage["text"],
        "positive_id": pos["id"], "positive_title": pos["title"], "positive_text": pos["text"],
        "negative_id": neg["id"], "negative_title": neg["title"], "negative_text": neg["text"],
        "positive_is_seed": pos["id"] == seed_passage["id"],
        "positive_ql": at(ql, chosen.positive), "positive_rc": at(rc, chosen.positive),
        "negative_ql": at(ql, negative_at), "negative_rc": at(rc, negative_at),
        "candidate_ids": [p["id"] for p in passages],
        "candidate_ql": None if ql is None else [float(x) for x in ql],
        "candidate_rc": None if rc is None else [float(x) for x in rc],
        "llm": self.llm_label}
    return Relabelled(record, ql, rc)

  def _window_negative(self, positive: Mapping[str, str], seed_passage: Mapping[str, str], *,
                       retrieved: Sequence[tuple[Mapping[str, str], float]],
                       seed_score: float | None) -> Mapping[str, str]:
    scores = {p["id"]: score for p, score in retrieved}
    if seed_score is not None:
      scores.setdefault(seed_passage["id"], seed_score)
    if positive["id"] not in scores:
      raise ValueError(f"the window negative needs the encoder's score of the positive "
                       f"{positive['id']!r}: pass `retrieved` and `seed_score`.")
    found = label_lib.window_negative(
        [(p["id"], score) for p, score in retrieved], window=self.negative_window,
        positive_score=scores[positive["id"]], max_ratio=self.negative_max_ratio,
        exclude=(positive["id"], seed_passage["id"]))
    if found is None:
      raise NoNegative(f"no passage of ranks {self.negative_window} is below "
                       f"{self.negative_max_ratio} x the positive's score")
    return retrieved[found[0] - 1][0]
