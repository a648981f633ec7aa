"""FRet steps 3–4 for one generated query: score its neighbours, fuse, write the record.

Shared by the one-machine pipeline (`gecko.fret.pipeline`) and the Beam pipeline
(`gecko.fret.beam`), so both produce the same records from the same inputs. The
random hard negative is drawn from a generator seeded by (seed, query id), so a
record does not depend on which records were processed before it (resumed runs and
Beam bundles give the same answer as one uninterrupted run).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from gecko.fret import label as label_lib
from gecko.fret.generate import Generated


def with_seed(neighbors: Sequence[int], seed_index: int) -> list[int]:
  """The retrieved passage indices, the seed put in last place when not retrieved."""
  row = [int(i) for i in neighbors]
  if seed_index not in row:
    row[-1] = seed_index  # the seed always competes
  return row


def record_rng(seed: int, record_id: str) -> np.random.Generator:
  return np.random.default_rng([seed, zlib.crc32(record_id.encode("utf-8"))])


def _at(scores: Sequence[float] | None, index: int) -> float | None:
  return None if scores is None else scores[index]


def relabel(generated: Generated, *, passages: Sequence[Mapping[str, str]],
            seed_passage: Mapping[str, str], scorer, negative: str, ranking: str, seed: int,
            llm_label: str) -> tuple[dict[str, object], list[float] | None, list[float] | None]:
  """The FRet record for `generated` over its candidate `passages` (the seed among
  them), with every passage's QL and RC scores; a score the ranking does not use is
  not computed (None, and None in the record)."""
  needs = label_lib.NEEDS.get(ranking, ())
  ql = scorer.ql(generated.query, passages) if "ql" in needs else None
  rc = scorer.rc(generated.task, generated.query, passages) if "rc" in needs else None
  chosen = label_lib.choose(ql, rc, negative=negative, ranking=ranking,
                           rng=record_rng(seed, generated.id))
  pos, neg = passages[chosen.positive], passages[chosen.negative]
  record = {
      "id": generated.id, "task_type": generated.task_type, "task": generated.task,
      "query": generated.query, "seed_id": seed_passage["id"],
      "seed_title": seed_passage["title"], "seed_text": seed_passage["text"],
      "positive_id": pos["id"], "positive_title": pos["title"], "positive_text": pos["text"],
      "negative_id": neg["id"], "negative_title": neg["title"], "negative_text": neg["text"],
      "positive_is_seed": pos["id"] == seed_passage["id"],
      "positive_ql": _at(ql, chosen.positive), "positive_rc": _at(rc, chosen.positive),
      "negative_ql": _at(ql, chosen.negative), "negative_rc": _at(rc, chosen.negative),
      "llm": llm_label}
  return record, ql, rc
