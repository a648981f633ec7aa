"""FRet building blocks: rank fusion and labelling, the LLM
call cache (surviving SIGKILL), atomic resumable shards read back by the FRet task."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from gecko.fret import label, schema
from gecko.fret.cache import LLMCache, call_key, through
from gecko.fret.records import ShardWriter


def test_ranks_and_reciprocal_rank_fusion_by_hand():
  assert label.ranks([-5.0, -1.0, -3.0, -1.0]).tolist() == [4, 1, 3, 2]  # tie: earlier first
  np.testing.assert_allclose(label.reciprocal_rank_fusion([3, 2, 1], [1, 2, 3]),
                             [1 / 3 + 1, 1 / 2 + 1 / 2, 1 + 1 / 3])
  with pytest.raises(ValueError, match="finite"):
    label.ranks([0.0, float("nan")])


def test_choose_positive_and_negative_by_hand():
  # QL ranks [3, 1, 2], RC ranks [1, 3, 2]: fused [4/3, 4/3, 1]; the tie goes to the
  # better QL rank (neighbour 1), the lowest fused is neighbour 2.
  ql, rc = [-5.0, -1.0, -3.0], [-0.1, -2.0, -0.5]
  chosen = label.choose(ql, rc)
  assert (chosen.positive, chosen.negative) == (1, 2)
  assert chosen.ql_ranks == (3, 1, 2) and chosen.rc_ranks == (1, 3, 2)
  rng = np.random.default_rng(0)
  negatives = {label.choose(ql, rc, negative="random", rng=rng).negative for _ in range(50)}
  assert negatives == {0, 2}  # any but the positive
  with pytest.raises(ValueError, match="negative='worst'"):
    label.choose(ql, rc, negative="worst")
  with pytest.raises(ValueError, match="at least 2 neighbours"):
    label.choose([1.0], [1.0])
  # The ranking ablation: one score alone.
  by_ql, by_rc = label.choose(ql, rc, ranking="ql"), label.choose(ql, rc, ranking="rc")
  assert (by_ql.positive, by_ql.negative) == (1, 0)
  assert (by_rc.positive, by_rc.negative) == (0, 1)
  with pytest.raises(ValueError, match="ranking='bm25'"):
    label.choose(ql, rc, ranking="bm25")
  # A score the ranking does not use need not be computed; one it uses must be.
  alone = label.choose(ql, None, ranking="ql")
  assert (alone.positive, alone.negative) == (1, 0) and alone.rc_ranks == ()
  assert label.choose(None, rc, ranking="rc").positive == 0
  with pytest.raises(ValueError, match="needs the RC scores"):
    label.choose(ql, None, ranking="rrf")
  with pytest.raises(ValueError, match="ranking='seed' has no LLM score to rank by"):
    label.choose(ql, rc, ranking="seed")


def test_choose_the_seed_without_any_score_by_hand():
  # Four candidates in the encoder's order, the seed third: it is the positive, and the
  # encoder's lowest other candidate the negative (the second-lowest when the seed is last).
  chosen = label.choose_seed(4, seed_at=2)
  assert (chosen.positive, chosen.negative) == (2, 3) and chosen.fused == chosen.ql_ranks == ()
  assert label.choose_seed(4, seed_at=3).negative == 2
  assert label.choose_seed(4, seed_at=0, negative="window").negative is None
  rng = np.random.default_rng(0)
  assert {label.choose_seed(3, seed_at=1, negative="random", rng=rng).negative
          for _ in range(50)} == {0, 2}
  with pytest.raises(ValueError, match="needs an rng"):
    label.choose_seed(3, seed_at=1, negative="random")
  with pytest.raises(ValueError, match="seed_at=4 of 4"):
    label.choose_seed(4, seed_at=4)
  with pytest.raises(ValueError, match="negative='worst'"):
    label.choose_seed(4, seed_at=0, negative="worst")


def test_window_negatives_and_the_generic_query_guard_by_hand():
  from gecko.fret import relabel
  ranked = [("p", 0.9), ("a", 0.88), ("s", 0.8), ("b", 0.86), ("c", 0.7), ("d", 0.5)]
  # Ranks 2-5: a (0.88 > 0.95 x 0.9 = 0.855: a likely positive), the seed, b (0.86, too
  # close as well), then c.
  assert label.window_negative(ranked, window=(2, 5), positive_score=0.9, max_ratio=0.95,
                               exclude=("p", "s")) == (5, "c")
  assert label.window_negative(ranked, window=(2, 4), positive_score=0.9, max_ratio=0.95,
                               exclude=("p", "s")) is None  # nothing left in the window
  assert label.window_negative(ranked, window=(2, 5), positive_score=0.9, max_ratio=1.0,
                               exclude=("p", "s")) == (2, "a")
  assert label.window_negative(ranked, window=(6, 60), positive_score=0.9, max_ratio=0.95) == (
      6, "d")  # a window past the retrieval ends with it
  assert label.choose([-1.0, -2.0], [-0.1, -0.2], negative="window").negative is None
  # The guard: top-1 minus the num_neighbors-th cosine (0.9 - 0.8 = 0.1 at 3).
  assert relabel.generic([0.9, 0.88, 0.8, 0.1], num_neighbors=3, min_spread=0.11)
  assert not relabel.generic([0.9, 0.88, 0.8, 0.1], num_neighbors=3, min_spread=0.09)
  assert not relabel.generic([0.9, 0.88, 0.8, 0.1], num_neighbors=9, min_spread=0.5)


def test_the_seed_always_competes_and_the_random_negative_is_per_record():
  from gecko.fret import relabel
  assert relabel.with_seed([3, 1, 2], 5) == [3, 1, 5]  # not retrieved: takes the last place
  assert relabel.with_seed([3, 5, 2], 5) == [3, 5, 2]  # retrieved: left where it is
  assert relabel.with_seed(np.array([4, 0]), 0) == [4, 0]
  draws = [relabel.record_rng(0, "q1").integers(1 << 30) for _ in range(2)]
  assert draws[0] == draws[1]  # the same record draws the same negative on every run
  assert relabel.record_rng(0, "q2").integers(1 << 30) != draws[0]
  assert relabel.record_rng(1, "q1").integers(1 << 30) != draws[0]


def test_cache_round_trip_keys_and_counts(tmp_path):
  key = call_key(backend="llama_cpp", model="m", kind="generate", prompt="p",
                 params={"temperature": 0.0})
  assert key != call_key(backend="llama_cpp", model="m", kind="generate", prompt="p",
                         params={"temperature": 0.7})
  cache = LLMCache(tmp_path / "sub" / "calls.sqlite")
  calls = []
  compute = lambda missing: calls.append(missing) or [{"text": "answer"}] * len(missing)  # noqa: E731
  assert through(cache, [key], compute) == [{"text": "answer"}]
  assert through(cache, [key], compute) == [{"text": "answer"}] and calls == [[0]]
  assert (cache.hits, cache.misses) == (1, 1)
  other = call_key(backend="llama_cpp", model="m", kind="generate", prompt="q")
  assert through(cache, [key, other], compute) == [{"text": "answer"}] * 2
  assert calls == [[0], [1]]  # one batched call for the one missing key
  cache.close()
  assert LLMCache(tmp_path / "sub" / "calls.sqlite").get(key) == {"text": "answer"}


def test_cache_keeps_every_committed_call_through_sigkill(tmp_path):
  path = tmp_path / "calls.sqlite"
  code = textwrap.dedent(f"""
      import sys
      from gecko.fret.cache import LLMCache
      cache = LLMCache({str(path)!r})
      for i in range(100000):
        cache.put(f"k{{i}}", {{"i": i}})
        print(i, flush=True)
  """)
  proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
  done = [int(proc.stdout.readline()) for _ in range(200)]
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  cache = LLMCache(path)
  assert all(cache.get(f"k{i}") == {"i": i} for i in done)
  assert len(cache) >= len(done)


def _record(i):
  return {"id": f"r{i}", "task_type": "question answering", "task": "Find the passage",
          "query": f"query number {i}", "seed_id": f"d{i}", "seed_title": "", "seed_text":
          f"seed text {i}", "positive_id": f"d{i}", "positive_title": "Title",
          "positive_text": f"seed text {i}", "negative_id": f"d{i + 1}", "negative_title": "",
          "negative_text": f"other text {i}", "positive_is_seed": True, "positive_ql": -3.5,
          "positive_rc": -0.2, "negative_ql": -9.0, "negative_rc": -4.0,
          "candidate_ids": [f"d{i}", f"d{i + 2}", f"d{i + 1}"], "candidate_ql": [-3.5, -5, -9.0],
          "candidate_rc": [-0.2, -1.5, -4.0], "llm": "test"}


def test_shards_are_atomic_and_resume_without_loss_or_duplicates(tmp_path):
  out = tmp_path / "fret"
  writer = ShardWriter(str(out), shard_size=10, tfrecord=True)
  for i in range(25):
    writer.add(_record(i))
  # "Crash": the last 5 records were never flushed; no partial file is left visible.
  assert [os.path.basename(p) for p in writer.shards()] == ["fret-00000.jsonl", "fret-00001.jsonl"]
  resumed = ShardWriter(str(out), shard_size=10, tfrecord=True)
  done = resumed.done_ids()
  assert done == {f"r{i}" for i in range(20)}
  for i in range(25):
    if f"r{i}" not in done:
      resumed.add(_record(i))
  resumed.close()
  assert len(resumed.shards()) == 3 and resumed.done_ids() == {f"r{i}" for i in range(25)}
  assert not [f for f in os.listdir(out) if "partial" in f]
  with pytest.raises(ValueError, match="missing field 'query'"):
    resumed.add({k: v for k, v in _record(99).items() if k != "query"})


def test_the_fret_task_reads_the_shards(tmp_path):
  import gecko_tasks  # noqa: F401
  import seqio
  from gecko_tasks.vocabulary import VOCABULARY

  from gecko.data import sources as seqio_sources
  writer = ShardWriter(str(tmp_path / "fret"), shard_size=4, tfrecord=True)
  for i in range(6):
    writer.add(_record(i))
  writer.close()
  (tmp_path / "fret" / "failures.jsonl").write_text('{"id": "r9", "reason": "no query"}\n')
  task = seqio.get_mixture_or_task("gecko_fret")

  def queries():
    with seqio_sources.using(seqio_sources.DataOptions(data_dir=str(tmp_path))):
      examples = task.get_dataset(sequence_length=None, split="train", shuffle=False)
      return sorted(VOCABULARY.decode(e["query"].tolist()) for e in examples.as_numpy_iterator())
  from_tfrecord = queries()  # each record once: TFRecord and JSONL are copies
  assert len(from_tfrecord) == 6  # and failures.jsonl is not a shard
  assert from_tfrecord[0] == "task : find the passage | query : query number 0"
  for name in os.listdir(tmp_path / "fret"):
    if name.endswith(".tfrecord"):
      os.remove(tmp_path / "fret" / name)
  assert queries() == from_tfrecord  # the JSONL shards alone
  assert set(schema.TRAINING_FIELDS) <= set(_record(0))


def test_records_carry_every_candidates_scores_in_both_shard_formats(tmp_path):
  import tensorflow as tf
  record = _record(3)
  assert schema.problems(record) == []
  assert schema.problems(dict(record, candidate_ql=None, candidate_rc=None,
                              candidate_ids=None)) == []  # no LLM ranked them
  assert schema.problems(dict(record, candidate_ql=[-3.5, -5.0])) == [
      "the candidate_* lists differ in length: [2, 3]"]
  assert schema.problems(dict(record, candidate_ids=["d3", 4, "d5"])) == [
      "field 'candidate_ids' should be a list of str, got ['d3', 4, 'd5']"]
  assert schema.problems(dict(record, candidate_rc=-0.2)) == [
      "field 'candidate_rc' should be list, got -0.2"]
  writer = ShardWriter(str(tmp_path), shard_size=4, tfrecord=True)
  writer.add(record)
  writer.close()
  (shard,) = tmp_path.glob("fret-*.tfrecord")
  spec = {"candidate_ids": tf.io.VarLenFeature(tf.string),
          **{n: tf.io.VarLenFeature(tf.float32) for n in ("candidate_ql", "candidate_rc")}}
  (example,) = [tf.io.parse_single_example(x, spec) for x in tf.data.TFRecordDataset(str(shard))]
  assert [x.decode() for x in example["candidate_ids"].values.numpy()] == ["d3", "d5", "d4"]
  assert example["candidate_ql"].values.numpy().tolist() == [-3.5, -5.0, -9.0]
  np.testing.assert_allclose(example["candidate_rc"].values.numpy(), [-0.2, -1.5, -4.0], rtol=1e-7)
  (line,) = (tmp_path / "fret-00000.jsonl").read_text().splitlines()
  assert json.loads(line)["candidate_ql"] == [-3.5, -5, -9.0]


def test_fret_records_become_triples_with_the_teachers_scores(tmp_path, capsys, minilm):
  from gecko.data.pairs import PairBatches
  from gecko.fret import triples
  writer = ShardWriter(str(tmp_path / "fret"), shard_size=4)
  for i in range(6):
    writer.add(_record(i))
  writer.close()
  out = tmp_path / "triples.jsonl"
  assert triples.main(["--fret", str(tmp_path / "fret"), "--output", str(out)]) == 0
  assert f"wrote 6 triples to {out}" in capsys.readouterr().err
  lines = [json.loads(line) for line in out.read_text().splitlines()]
  assert lines[2] == {"query": "task: Find the passage | query: query number 2",
                      "positive": "title: Title | text: seed text 2",
                      "negative": "title: none | text: other text 2",
                      "teacher_positive": -3.5, "teacher_negative": -9.0}
  data = PairBatches(path=str(out), tokenizer=minilm.tokenizer, batch_size=2, shuffle=False)
  assert data.batch(1)["teacher_negative"].tolist() == [-9.0, -9.0]
  assert triples.main(["--fret", str(tmp_path / "fret"), "--output", str(out),
                       "--teacher", "rc"]) == 2
  assert f"{out} exists; pass --overwrite" in capsys.readouterr().err
  assert triples.main(["--fret", str(tmp_path / "fret"), "--output", str(out), "--teacher",
                       "rc", "--overwrite"]) == 0
  assert json.loads(out.read_text().splitlines()[0])["teacher_positive"] == -0.2
  writer = ShardWriter(str(tmp_path / "ql_only"), shard_size=4)
  writer.add(dict(_record(0), positive_rc=None, negative_rc=None, candidate_rc=None))
  writer.close()
  assert triples.main(["--fret", str(tmp_path / "ql_only"), "--output", str(tmp_path / "t2"),
                       "--teacher", "rc"]) == 2
  assert ("record 'r0' has no RC scores (its run's ranking did not compute them): use "
          "--teacher ql or none" in capsys.readouterr().err)
  assert not (tmp_path / "t2").exists()
  assert triples.main(["--fret", str(tmp_path / "none"), "--output", str(tmp_path / "t3")]) == 2
  assert "holds no FRet records" in capsys.readouterr().err
  assert triples.main(["--fret", str(tmp_path / "fret"), "--output",
                       str(tmp_path / "fret" / "fret-00009.jsonl")]) == 2
  assert "is named like a FRet shard" in capsys.readouterr().err


def test_triples_carry_every_candidate_with_the_teachers_score(tmp_path, capsys, minilm):
  """--candidates CORPUS: each record's N candidates, in its order, as Gecko-format
  passages from the corpus, with the teacher's score of each; a candidate the corpus
  lacks, or --teacher none, is named and nothing is written."""
  from gecko.data import jsonl
  from gecko.data.pairs import PairBatches
  from gecko.fret import triples
  writer = ShardWriter(str(tmp_path / "fret"), shard_size=4)
  for i in range(4):
    writer.add(_record(i))
  writer.close()
  corpus = tmp_path / "corpus.jsonl"
  jsonl.write(corpus, [{"id": f"d{i}", "title": "T" if i % 2 else "", "text": f"passage {i}"}
                       for i in range(6)])
  out = tmp_path / "triples.jsonl"
  assert triples.main(["--fret", str(tmp_path / "fret"), "--output", str(out), "--teacher",
                       "rc", "--candidates", str(corpus)]) == 0
  line = json.loads(out.read_text().splitlines()[1])
  assert line["candidates"] == ["title: T | text: passage 1", "title: T | text: passage 3",
                                "title: none | text: passage 2"]
  assert line["teacher_candidates"] == [-0.2, -1.5, -4.0]
  assert line["teacher_positive"] == -0.2  # the pair's scores stay beside them
  data = PairBatches(path=str(out), tokenizer=minilm.tokenizer, batch_size=2, shuffle=False,
                     passage_length=16)
  assert data.batch(0)["candidate_tokens"].shape == (2, 3, 16)
  jsonl.write(corpus, [{"id": f"d{i}", "title": "", "text": f"passage {i}"} for i in range(4)])
  assert triples.main(["--fret", str(tmp_path / "fret"), "--output", str(tmp_path / "t2"),
                       "--candidates", str(corpus)]) == 2
  assert ("record 'r2': candidate 'd4' is not in the --candidates corpus"
          in capsys.readouterr().err)
  assert triples.main(["--fret", str(tmp_path / "fret"), "--output", str(tmp_path / "t2"),
                       "--teacher", "none", "--candidates", str(corpus)]) == 2
  assert "use --teacher ql or rc with it" in capsys.readouterr().err
  assert not (tmp_path / "t2").exists()


def test_the_scored_fret_tasks_carry_the_teachers_scores_into_the_batches(tmp_path, minilm):
  """gecko_fret_ql / gecko_fret_rc: each row's teacher_positive / teacher_negative are its
  record's QL (RC) scores of the positive and the negative, beside the same token rows
  as gecko_fret's; a record whose run did not compute the score is named."""
  from gecko.data.seqio_batches import SeqioBatches
  writer = ShardWriter(str(tmp_path / "fret"), shard_size=4)
  for i in range(8):
    writer.add(dict(_record(i), positive_ql=-1.0 - i, negative_ql=-20.0 - i,
                    positive_rc=-0.5 * i, negative_rc=-3.0 - i))
  writer.close()

  def batches(task):
    data = SeqioBatches(mixture_or_task_name=task, tokenizer=minilm.tokenizer, batch_size=8,
                        data_dir=str(tmp_path), shuffle_buffer=1, query_length=16,
                        passage_length=16)
    try:
      return data.feature_names, data.batch(0)
    finally:
      data.close()
  names, plain = batches("gecko_fret")
  assert "teacher_positive" not in names and "teacher_positive" not in plain
  for score, positive, negative in (("ql", lambda i: -1.0 - i, lambda i: -20.0 - i),
                                    ("rc", lambda i: -0.5 * i, lambda i: -3.0 - i)):
    names, batch = batches(f"gecko_fret_{score}")
    assert names[-4:-2] == ("teacher_positive", "teacher_negative")
    assert batch["teacher_positive"].dtype == np.float32
    # The record of each row, by its query's last token before [SEP]: "query number i".
    token = minilm.tokenizer.vocab  # id -> token
    ids = [int(token[int(row[row > 0][-2])]) for row in batch["query_tokens"]]
    assert sorted(ids) == list(range(8))
    assert batch["teacher_positive"].tolist() == [positive(i) for i in ids]
    assert batch["teacher_negative"].tolist() == [negative(i) for i in ids]
    for name in plain:  # the same token rows as gecko_fret's, in the same order
      np.testing.assert_array_equal(batch[name], plain[name])
  writer = ShardWriter(str(tmp_path / "ql_only" / "fret"), shard_size=4)
  for i in range(8):
    writer.add(dict(_record(i), positive_rc=None, negative_rc=None, candidate_rc=None))
  writer.close()
  with pytest.raises(Exception, match=r"fret-00000.jsonl:1: field 'positive_rc' has the wrong "
                                      r"type \(None\)"):
    SeqioBatches(mixture_or_task_name="gecko_fret_rc", tokenizer=minilm.tokenizer,
                 batch_size=8, data_dir=str(tmp_path / "ql_only")).batch(0)
  import seqio  # a mixture of scored and unscored tasks is refused when registered
  with pytest.raises(ValueError, match="contains Tasks with different output features"):
    seqio.MixtureRegistry.add("test_fret_scored_and_not", [("gecko_fret_ql", 1), ("gecko_fret", 1)])
