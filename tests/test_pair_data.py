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
  b.batch(5)  # another step read first changes nothing
  for step in (0, 3, 7):
    batch = a.batch(step)
    for key, value in batch.items():
      np.testing.assert_array_equal(value, b.batch(step)[key])
    # The rows are the records global_indices names, tokenized on their own.
    chosen = [RECORDS[i] for i in a.global_indices(step)]
    for tower, length in (("query", 8), ("positive", 64), ("negative", 64)):
      ids = tokenizer.encode_batch([r[tower] for r in chosen])
      assert all(len(i) <= length for i in ids)  # nothing cut: each row is its text
      expected = np.zeros((4, length), np.int32)
      for row, seq in enumerate(ids):
        expected[row, :len(seq)] = seq
      np.testing.assert_array_equal(batch[f"{tower}_tokens"], expected)
      np.testing.assert_array_equal(batch[f"{tower}_mask"], expected != 0)
    np.testing.assert_array_equal(batch["positive_key"],
                                  [pair_data.text_key(r["positive"]) for r in chosen])
  other = pair_data.PairBatches(records=RECORDS, tokenizer=tokenizer, batch_size=4, seed=1)
  assert [other.global_indices(s).tolist() for s in range(3)] != [
      a.global_indices(s).tolist() for s in range(3)]  # the order is the seed's
  seen = np.concatenate([a.global_indices(s) for s in range(5)])  # 20 = two epochs
  assert sorted(seen[:10].tolist()) == list(range(10)) and sorted(seen[10:].tolist()) == list(range(10))
  assert a.batch(0)["query_tokens"].shape == (4, 8)


def test_processes_split_the_global_batch(tokenizer):
  whole = pair_data.PairBatches(records=RECORDS, tokenizer=tokenizer, batch_size=4)
  parts = [pair_data.PairBatches(records=RECORDS, tokenizer=tokenizer, batch_size=4,
                                 shard_index=i, shard_count=2) for i in range(2)]
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
    ([{"query": "q", "positive": "p", "negative": "n", "teacher_positive": -1.0,
       "teacher_negative": -2.0}, {"query": "q", "positive": "p", "negative": "n"}],
     r"records\[1\]: has no teacher scores while other records do"),
    ([{"query": "q", "positive": "p", "negative": "n", "teacher_positive": -1.0,
       "teacher_negative": None}] * 2,
     r"records\[0\]: 'teacher_negative' must be a finite number .*got None"),
    ([{"query": "q", "positive": "p", "teacher_positive": -1, "teacher_negative": -2}] * 2,
     "these records have no 'negative'"),
    ([{"query": "q", "positive": "p", "candidates": ["a", "b"], "teacher_candidates": [1, 2]},
      {"query": "q", "positive": "p", "candidates": ["a", "b", "c"],
       "teacher_candidates": [1, 2, 3]}],
     r"records\[1\]: has 3 'candidates' where the first has 2"),
    ([{"query": "q", "positive": "p", "candidates": ["a", "b"], "teacher_candidates": [1]}] * 2,
     r"records\[0\]: 'teacher_candidates' must be 2 finite numbers"),
    ([{"query": "q", "positive": "p", "candidates": ["a"], "teacher_candidates": [1]}] * 2,
     "needs 2 or more"),
    ([{"query": "q", "positive": "p", "candidates": ["a", "b"], "teacher_candidates": [1, 2]},
      {"query": "q", "positive": "p"}], r"records\[1\]: has no 'candidates' while"),
])
def test_bad_records_are_named(tokenizer, records, message):
  with pytest.raises(ValueError, match=message):
    pair_data.PairBatches(records=records, tokenizer=tokenizer, batch_size=2)


def test_teacher_scores_become_float_features_of_their_rows(tokenizer, tmp_path):
  from gecko.data import jsonl
  records = [dict(r, teacher_positive=-float(i), teacher_negative=-10.0 - i)
             for i, r in enumerate(RECORDS)]
  jsonl.write(tmp_path / "t.jsonl", records)
  eager = pair_data.PairBatches(records=records, tokenizer=tokenizer, batch_size=4)
  lazy = pair_data.PairBatches(path=str(tmp_path / "t.jsonl"), tokenizer=tokenizer,
                               batch_size=4, check_records=False)
  assert eager.feature_names[-4:-2] == ("teacher_positive", "teacher_negative")
  for data in (eager, lazy):
    batch = data.batch(3)
    rows = data.global_indices(3)
    assert batch["teacher_positive"].dtype == np.float32
    np.testing.assert_array_equal(batch["teacher_positive"], -rows.astype(np.float32))
    np.testing.assert_array_equal(batch["teacher_negative"], -10.0 - rows)
  assert "teacher_positive" not in pair_data.PairBatches(
      records=RECORDS, tokenizer=tokenizer, batch_size=4).feature_names


def test_candidates_become_a_tower_of_k_passages_per_row(tokenizer, tmp_path):
  """Each row's K candidates are tokenized like its positive (the passage prompt and
  length), as `[B, K, Lp]`, beside the teacher's `[B, K]` scores; a lazily read file
  gives the same rows, and a record with another K is named when its batch is read."""
  from gecko.data import jsonl
  records = [dict(r, candidates=[f"candidate {i} {k}" for k in range(3)],
                  teacher_candidates=[-float(i), -1.0 - i, -2.5])
             for i, r in enumerate(RECORDS)]
  jsonl.write(tmp_path / "c.jsonl", records)
  eager = pair_data.PairBatches(records=records, tokenizer=tokenizer, batch_size=4,
                                passage_length=8, passage_prompt="title: | text: ")
  lazy = pair_data.PairBatches(path=str(tmp_path / "c.jsonl"), tokenizer=tokenizer,
                               batch_size=4, passage_length=8, passage_prompt="title: | text: ",
                               check_records=False)
  assert eager.feature_names[-5:-2] == ("candidate_tokens", "candidate_mask",
                                        "teacher_candidates")
  for data in (eager, lazy):
    batch, rows = data.batch(1), data.global_indices(1)
    assert batch["candidate_tokens"].shape == batch["candidate_mask"].shape == (4, 3, 8)
    assert batch["teacher_candidates"].dtype == np.float32
    np.testing.assert_array_equal(batch["teacher_candidates"][:, 0], -rows.astype(np.float32))
    for b, row in enumerate(rows):
      for k in range(3):
        want = tokenizer.pad(tokenizer.encode_batch([f"title: | text: candidate {row} {k}"]), 8)
        np.testing.assert_array_equal(batch["candidate_tokens"][b, k], want[0][0])
        np.testing.assert_array_equal(batch["candidate_mask"][b, k], want[1][0])
  records[5] = dict(records[5], candidates=["x", "y"], teacher_candidates=[0.0, 1.0])
  jsonl.write(tmp_path / "c.jsonl", records)
  lazy = pair_data.PairBatches(path=str(tmp_path / "c.jsonl"), tokenizer=tokenizer,
                               batch_size=4, shuffle=False, check_records=False)
  with pytest.raises(ValueError, match=r"c\.jsonl:6: has 2 'candidates' where the first has 3"):
    lazy.batch(1)  # rows 4-7
  jsonl.write(tmp_path / "c.jsonl", [records[0]] + [records[5]] * 7)
  lazy = pair_data.PairBatches(path=str(tmp_path / "c.jsonl"), tokenizer=tokenizer,
                               batch_size=4, shuffle=False, check_records=False)
  with pytest.raises(ValueError, match="records have 2 'candidates' where the file's first "
                                       "record has 3"):
    lazy.batch(1)


_HOST_SCRIPT = r"""
import json, sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
coordinator, pid, path, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
jax.distributed.initialize(coordinator_address=coordinator, num_processes=2, process_id=pid)
import numpy as np
from jax.experimental import multihost_utils
from gecko.data import jsonl
from gecko.data.pairs import PairBatches
from gecko.models import bert, dual_encoder, embedder
from gecko.training import trainer
from gecko.training.losses import GeckoLoss
from gecko.training.optimizers import AdamW

reads = []
original = jsonl.LineIndex.read
def logged(self, indices):
  indices = list(indices)
  reads.append(sorted(set(int(i) for i in indices)))
  return original(self, indices)
jsonl.LineIndex.read = logged

tokenizer = embedder.load("all-MiniLM-L6-v2").tokenizer
model = dual_encoder.DualEncoder(backbone=bert.BertConfig(
    vocab_size=len(tokenizer.vocab), hidden_size=32, num_layers=1, num_heads=2, mlp_dim=64))
program = trainer.build(model=model, loss=GeckoLoss(temperature=0.05), batch_size=16,
                        optimizer=AdamW(learning_rate=1e-4, total_steps=10), mesh_axes={"data": -1})

def open_data():
  return PairBatches(path=path, tokenizer=tokenizer, batch_size=16, check_records=False,
                     shard_index=pid, shard_count=2)

data, epoch = open_data(), {}
reads.clear()  # opening reads record 0 (the file's shape); the epoch's reads start here
for step in range(4):  # 64 records, batches of 16: one epoch
  before = len(reads)
  batch = program.batch_at(data, step)
  epoch[step] = {"reads": sorted(i for r in reads[before:] for i in r),
                 "queries": multihost_utils.process_allgather(batch["query_tokens"], tiled=True).tolist()}
resumed = open_data()  # a restarted process
opened = resumed.records_read
batch = program.batch_at(resumed, 2)
again = multihost_utils.process_allgather(batch["query_tokens"], tiled=True).tolist()
json.dump({"epoch": epoch, "resume_reads": resumed.records_read - opened,
           "resumed_equal": again == epoch[2]["queries"]}, open(out, "w"))
"""


@pytest.mark.slow
def test_two_processes_read_disjoint_shares_and_resume_by_seeking(tmp_path):
  """Each process decodes only the records of the rows its devices hold: the shares are
  disjoint, make one epoch together, and a restarted process reads one batch's share."""
  import json
  import subprocess
  import sys

  from conftest import REPO, cli_env, free_port
  path = tmp_path / "pairs.jsonl"
  path.write_text("".join(json.dumps({"query": f"query {i}", "positive": f"passage {i}",
                                      "negative": f"other {i}"}) + "\n" for i in range(64)))
  port = free_port()
  procs = [subprocess.Popen([sys.executable, "-c", _HOST_SCRIPT, f"127.0.0.1:{port}", str(i),
                             str(path), str(tmp_path / f"host{i}.json")], cwd=REPO,
                            env=cli_env(devices=4), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
  hosts = [json.loads((tmp_path / f"host{i}.json").read_text()) for i in range(2)]
  shares = [[i for step in h["epoch"].values() for i in step["reads"]] for h in hosts]
  assert all(len(share) == 32 for share in shares)  # each host decoded half of the epoch
  assert not set(shares[0]) & set(shares[1])
  assert sorted(shares[0] + shares[1]) == list(range(64))
  for step in ("0", "1", "2", "3"):
    assert hosts[0]["epoch"][step]["queries"] == hosts[1]["epoch"][step]["queries"]
  assert all(h["resume_reads"] == 8 and h["resumed_equal"] for h in hosts), hosts
