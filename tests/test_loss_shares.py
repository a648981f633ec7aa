"""gecko.experiments.loss_shares: Eq. 3's denominator split by hand, and on real FRet
shards under the real MiniLM."""

import functools
import json
import math

import numpy as np
import pytest

from gecko.experiments import loss_shares
from gecko.fret.records import ShardWriter


def _unit(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_shares_by_hand():
  """One batch of three: each query's e^{s/tau} over its positive, the other two
  positives, the other two queries and its negative, written out term by term."""
  q = _unit([[1, 0], [0.6, 0.8], [0, 1]])
  p = _unit([[0.8, 0.6], [0.6, 0.8], [1, 1]])
  n = _unit([[1, -1], [-1, 0], [0.2, 1]])
  tau = 0.5
  got = loss_shares.shares(q, p, n, temperature=tau, batch_size=3)
  e = lambda a, b: math.exp(float(np.dot(a, b)) / tau)  # noqa: E731
  want = {part: [] for part in loss_shares.PARTS}
  for i in range(3):
    others = [j for j in range(3) if j != i]
    terms = {"positive": e(q[i], p[i]),
             "in_batch_positives": sum(e(q[i], p[j]) for j in others),
             "same_tower": sum(e(q[i], q[j]) for j in others),
             "hard_negative": e(q[i], n[i])}
    total = sum(terms.values())
    for part, value in terms.items():
      want[part].append(value / total)
  for part in loss_shares.PARTS:
    assert got["share"][part] == pytest.approx(np.mean(want[part]), rel=1e-9)
  assert sum(got["share"].values()) == pytest.approx(1.0)
  s = [float(np.dot(q[i], p[i])) for i in range(3)]
  assert got["s_positive"]["mean"] == pytest.approx(np.mean(s))
  assert got["s_positive"]["p50"] == pytest.approx(np.median(s))
  low_first = np.argsort(s)  # one query per tertile
  assert got["same_tower_share_by_s_positive_tertile"] == pytest.approx(
      [want["same_tower"][i] for i in low_first])
  assert got["queries"] == 3


def test_batches_follow_the_seed_and_leave_the_last_partial_batch_out():
  rng = np.random.default_rng(0)
  q, p, n = (_unit(rng.normal(size=(10, 4))) for _ in range(3))
  a = loss_shares.shares(q, p, n, temperature=0.1, batch_size=4, seed=1)
  assert a["queries"] == 8  # two batches of 4
  assert a == loss_shares.shares(q, p, n, temperature=0.1, batch_size=4, seed=1)
  assert a["share"] != loss_shares.shares(q, p, n, temperature=0.1, batch_size=4,
                                          seed=2)["share"]
  with pytest.raises(ValueError, match="batch_size=11 must be in 1..10"):
    loss_shares.shares(q, p, n, temperature=0.1, batch_size=11)


def _record(i, query, positive, negative):
  return {"id": f"r{i}", "task_type": "fact checking", "task": "Given a claim, find support",
          "query": query, "seed_id": f"d{i}", "seed_title": "", "seed_text": positive,
          "positive_id": f"d{i}", "positive_title": "", "positive_text": positive,
          "negative_id": f"n{i}", "negative_title": "", "negative_text": negative,
          "positive_is_seed": True, "positive_ql": None, "positive_rc": None,
          "negative_ql": None, "negative_rc": None, "candidate_ids": None,
          "candidate_ql": None, "candidate_rc": None, "llm": "test"}


TOPICS = ["vitamin D deficiency lowers birth weight", "aspirin reduces the risk of stroke",
          "smoking raises the risk of lung cancer", "exercise improves insulin sensitivity",
          "sleep loss impairs memory consolidation", "statins lower LDL cholesterol"]


def test_measure_on_fret_shards_with_the_real_minilm(tmp_path, capsys, minilm_dir):
  """Claims and their own abstracts: s(q, p+) is high and the positive holds most of the
  denominator; the CLI prints and writes the same result; no records is named."""
  writer = ShardWriter(str(tmp_path / "fret"), shard_size=4)
  for i, topic in enumerate(TOPICS):
    writer.add(_record(i, topic, f"A trial found that {topic} in adults.",
                       f"The history of {TOPICS[(i + 3) % 6].split()[0]} research."))
  writer.close()
  out = tmp_path / "shares.json"
  assert loss_shares.main(["--fret", str(tmp_path / "fret"), "--model", minilm_dir,
                           "--batch_size", "6", "--output", str(out)]) == 0
  result = json.loads(out.read_text())
  assert result["queries"] == 6 and result["s_positive"]["p10"] > 0.5
  assert result["command"] == ("python -m gecko.experiments.loss_shares --fret "
                               f"{tmp_path / 'fret'} --model {minilm_dir} --batch_size 6 "
                               f"--output {out}")
  assert result["share"]["positive"] > 0.5
  assert sum(result["share"].values()) == pytest.approx(1.0)
  assert "gecko.experiments.loss_shares: 6 queries" in capsys.readouterr().err
  assert loss_shares.main(["--fret", str(tmp_path / "none"), "--model", minilm_dir]) == 2
  assert "holds no FRet records" in capsys.readouterr().err


def test_the_seed_as_positive_measures_what_seed_positive_rows_train_on(tmp_path, minilm_dir):
  """The same records, the LLM's top passage an unrelated one and the seed the claim's
  own abstract: the seed raises s(q, p+) and the positive's share; a record whose
  negative is its seed is dropped, as training drops it."""
  writer = ShardWriter(str(tmp_path / "fret"), shard_size=8)
  for i, topic in enumerate(TOPICS):
    record = _record(i, topic, f"The history of {TOPICS[(i + 3) % 6].split()[0]} research.",
                     "Weather reports for the coming week.")
    writer.add({**record, "seed_text": f"A trial found that {topic} in adults.",
                "positive_is_seed": False})
  writer.add({**_record(6, "coffee improves attention", "Coffee trial.", "Coffee trial."),
              "seed_text": "Coffee trial."})  # its negative is its seed
  writer.close()
  measure = functools.partial(loss_shares.measure, fret=str(tmp_path / "fret"),
                              model=minilm_dir, batch_size=6)
  llm, seed = measure(positive="record"), measure(positive="seed")
  assert llm["positive"] == "record" and seed["positive"] == "seed"
  assert [measure(positive=p, batch_size=1)["queries"] for p in ("record", "seed")] == [7, 6]
  assert seed["s_positive"]["p10"] > 0.5 > llm["s_positive"]["p90"]
  assert seed["share"]["positive"] > 0.5 > llm["share"]["positive"]
  with pytest.raises(ValueError, match="positive='gold'; use one of"):
    measure(positive="gold")
