"""Step-indexed training batches: deterministic, per-process shares, bad records named."""

import numpy as np
import pytest

from gecko.data import pairs as pair_data


@pytest.fixture(scope="module")
def tokenizer(minilm):
  return minilm.tokenizer


RECORDS = [{"query": f"query {i}", "positive": f"passage {i}", "negative": f"other {i}"}
           for i in range(10)]


def test_batches_are_a_pure_function_of_the_step(tokenizer):
  a = pair_data.PairBatches(records=RECORDS, tokenizer=tokenizer, batch_size=4, query_length=8)
  b = pair_data.PairBatches(records=RECORDS, tokenizer=tokenizer, batch_size=4, query_length=8)
  for step in (0, 3, 7):
    for key, value in a.batch(step).items():
      np.testing.assert_array_equal(value, b.batch(step)[key])
  seen = np.concatenate([a.global_indices(s) for s in range(5)])  # 20 = two epochs
  assert sorted(seen[:10].tolist()) == list(range(10)) and sorted(seen[10:].tolist()) == list(range(10))
  assert a.batch(0)["query_tokens"].shape == (4, 8)


def test_processes_split_the_global_batch(tokenizer):
  whole = pair_data.PairBatches(records=RECORDS, tokenizer=tokenizer, batch_size=4)
  parts = [pair_data.PairBatches(records=RECORDS, tokenizer=tokenizer, batch_size=4,
                                 process_index=i, process_count=2) for i in range(2)]
  for key, value in whole.batch(5).items():
    np.testing.assert_array_equal(value, np.concatenate([p.batch(5)[key] for p in parts]))


def test_long_texts_keep_their_final_sep(tokenizer):
  batches = pair_data.PairBatches(records=[{"query": "word " * 50, "positive": "p"}] * 2,
                                  tokenizer=tokenizer, batch_size=2, query_length=8)
  tokens = batches.batch(0)["query_tokens"]
  assert tokens.shape == (2, 8) and tokens[0, 0] == 101 and tokens[0, -1] == 102
  assert "negative_tokens" not in batches.batch(0)


@pytest.mark.parametrize("records, message", [
    ([{"query": "q"}] * 4, r"records\[0\]: needs a string 'positive'"),
    ([{"query": "q", "positive": "p", "negative": "n"}, {"query": "q", "positive": "p"}] * 2,
     r"records\[1\]: has no string 'negative'"),
    ([{"query": "q", "positive": "p"}], "cannot fill one batch of 2"),
])
def test_bad_records_are_named(tokenizer, records, message):
  with pytest.raises(ValueError, match=message):
    pair_data.PairBatches(records=records, tokenizer=tokenizer, batch_size=2)
