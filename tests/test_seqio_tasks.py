"""SeqIO tasks and mixtures: every file task's formatted, tokenized examples from tiny
files written here (the TFDS-backed tasks: test_tfds_tasks.py), the NLI and
classification conversions, mixing rates, homogeneous batches, bad records."""

import collections
import gzip
import json
import re

import gecko_tasks  # noqa: F401  (registers the tasks)
import numpy as np
import pytest
import seqio
import tensorflow as tf
from gecko_tasks.finetune import RETRIEVAL_TASKS
from gecko_tasks.vocabulary import VOCABULARY

from gecko.data import input_format
from gecko.data import preprocessors as pp
from gecko.data import sources as seqio_sources
from gecko.data.feature_converters import DualEncoderFeatureConverter
from gecko.data.seqio_batches import SeqioBatches

FMT = input_format.GECKO


def norm(text: str) -> str:
  """What a text looks like after tokenizing and decoding."""
  return VOCABULARY.decode(VOCABULARY.encode(text))


def write_jsonl(path, records, *, gz=False):
  path.parent.mkdir(parents=True, exist_ok=True)
  lines = "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")
  path.write_bytes(gzip.compress(lines) if gz else lines)


def fret_record(i):
  seed = {"seed_title": f"Seed {i}", "seed_text": f"the seed passage number {i}"}
  moved = i % 3 == 0  # the LLM preferred a neighbour over the seed
  positive = ({"positive_title": "", "positive_text": f"a better passage {i}"} if moved else
              {"positive_title": seed["seed_title"], "positive_text": seed["seed_text"]})
  return {"id": f"f{i}", "task_type": "question answering",
          "task": "Given a question, retrieve a passage that answers it",
          "query": f"which passage is number {i}", **seed, **positive,
          "negative_title": "", "negative_text": f"an unrelated passage {i}",
          "positive_is_seed": not moved}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """A DATA_DIR with every file task's layout; returns (dir, expected examples by task)."""
  root = tmp_path_factory.mktemp("gecko_data")
  expected = {}
  qa = [{"question": f"what is item {i}", "answer": f"item {i} is a kind of gecko",
         "title": f"Item {i}" if i % 2 else None} for i in range(12)]
  write_jsonl(root / "prefinetune" / "qa" / "part-0.jsonl", qa)
  expected["gecko_pft_qa"] = [
      (FMT.query(r["question"], task="question answering"),
       FMT.document(r["answer"], title=r["title"])) for r in qa]
  tb = [{"title": f"how to climb wall {i}", "body": f"geckos climb walls with setae {i}"}
        for i in range(12)]
  write_jsonl(root / "prefinetune" / "title_body" / "part-0.jsonl.gz", tb, gz=True)
  expected["gecko_pft_title_body"] = [
      (FMT.query(r["title"], task="search result"), FMT.document(r["body"])) for r in tb]

  fret = [fret_record(i) for i in range(15)]
  write_jsonl(root / "fret" / "fret-00000.jsonl", fret[:10])  # TFRecord: see test_fret.py
  write_jsonl(root / "fret" / "fret-00001.jsonl", fret[10:])
  expected["gecko_fret"] = [
      (FMT.query(r["query"], task=r["task"]),
       FMT.document(r["positive_text"], title=r["positive_title"]),
       FMT.document(r["negative_text"])) for r in fret]

  for name, task in RETRIEVAL_TASKS.items():
    rows = [{"query": f"{name} question {i}", "positive_title": "Doc", "positive_text":
             f"{name} answer {i}", "negative_text": f"{name} distractor {i}"} for i in range(6)]
    write_jsonl(root / name / "train.jsonl", rows)
    expected[f"gecko_{name}"] = [
        (FMT.query(r["query"], task=task), FMT.document(r["positive_text"], title="Doc"),
         FMT.document(r["negative_text"])) for r in rows]

  write_jsonl(root / "classification" / "intents.jsonl",
              [{"text": f"intent {label} example {i}", "label": label, "task": "Classify intents"}
               for label in ("card", "loan") for i in range(4)])
  write_jsonl(root / "classification" / "topics.jsonl",
              [{"text": f"topic {label} text {i}", "label": label} for label in (0, 1, 2)
               for i in range(3)])

  (root / "stsb").mkdir()
  lines = [f"main-captions\tMSRvid\t2012test\t{i:04d}\t{score}\t{a}\t{b}"
           for i, (score, a, b) in enumerate([
               (5.0, "a man plays a guitar", "a man is playing a guitar"),
               (4.2, "a cat sleeps", "a cat is sleeping"),
               (0.5, "a dog runs", "a woman cooks rice"),
               (3.0, "kids play", "children run")])]
  (root / "stsb" / "sts-train.csv").write_text("\n".join(lines) + "\n")
  return root, expected


def task_examples(name, options):
  """One pass over a task's train split, decoded, in source order."""
  task = seqio.get_mixture_or_task(name)
  with seqio_sources.using(options):
    ds = task.get_dataset(sequence_length=None, split="train", shuffle=False)
  out = []
  for example in ds.as_numpy_iterator():
    out.append(tuple(VOCABULARY.decode(example[k].tolist())
                     for k in ("query", "positive", "negative") if k in example))
  return out


FILE_TASKS = ["gecko_pft_qa", "gecko_pft_title_body", "gecko_fret"] + [
    f"gecko_{name}" for name in RETRIEVAL_TASKS]


@pytest.mark.parametrize("name", FILE_TASKS)
def test_file_tasks_yield_formatted_tokenized_examples(data_dir, name):
  root, expected = data_dir
  got = task_examples(name, seqio_sources.DataOptions(data_dir=str(root)))
  assert sorted(got) == sorted(tuple(norm(t) for t in example) for example in expected[name])
  assert got[0][0].startswith("task : ")  # the unified format, tokenized


def test_fret_seed_positive_ablation_labels_with_the_seed(data_dir):
  root, _ = data_dir
  got = task_examples("gecko_fret", seqio_sources.DataOptions(data_dir=str(root),
                                                              fret_positive="seed"))
  want = [norm(FMT.document(r["seed_text"], title=r["seed_title"]))
          for r in map(fret_record, range(15))]
  assert sorted(g[1] for g in got) == sorted(want)


def test_plain_format_ablation(data_dir):
  root, _ = data_dir
  got = task_examples("gecko_pft_qa", seqio_sources.DataOptions(
      data_dir=str(root), input_format=input_format.PLAIN))
  assert (norm("question answering what is item 1"), norm("Item 1 item 1 is a kind of gecko")) in got
  assert (norm("question answering what is item 0"), norm("item 0 is a kind of gecko")) in got


def test_input_format_is_the_same_in_python_and_tensorflow():
  for fmt in (input_format.GECKO, input_format.PLAIN):
    texts, titles = ["geckos climb", "walls"], ["Gecko", ""]
    q = fmt.query_tf(tf.constant(texts), task="search result").numpy()
    d = fmt.document_tf(tf.constant(texts), title=tf.constant(titles)).numpy()
    assert [x.decode() for x in q] == [fmt.query(t, task="search result") for t in texts]
    assert [x.decode() for x in d] == [fmt.document(t, title=s) for t, s in zip(texts, titles)]
  assert input_format.GECKO.document("walls", title="") == "title: none | text: walls"
  with pytest.raises(ValueError, match="query_template='{query}'"):
    input_format.InputFormat(query_template="{query}")


def test_classification_files_keep_datasets_apart(data_dir):
  root, _ = data_dir
  got = task_examples("gecko_classification", seqio_sources.DataOptions(data_dir=str(root)))
  assert len(got) == 8 + 9
  for example in got:
    kinds = {("intent" if "intent" in side else "topic") for side in example}
    assert len(kinds) == 1  # positives and negatives come from the same dataset
    task = "classify intents" if kinds == {"intent"} else "classification"
    assert all(side.startswith(f"task : {task} | query : ") for side in example)


def test_stsb_task_from_a_data_dir(data_dir):
  root, _ = data_dir
  got = task_examples("gecko_stsb", seqio_sources.DataOptions(data_dir=str(root)))
  sym = lambda t: norm(FMT.query(t, task="semantic similarity"))  # noqa: E731
  assert sorted((q, p) for q, p, _ in got) == sorted([
      (sym("a man plays a guitar"), sym("a man is playing a guitar")),
      (sym("a man is playing a guitar"), sym("a man plays a guitar")),
      (sym("a cat sleeps"), sym("a cat is sleeping")),
      (sym("a cat is sleeping"), sym("a cat sleeps"))])
  assert {n for _, _, n in got} == {sym("a woman cooks rice")}


def test_scored_fret_mixes_with_human_tasks_whose_teacher_scores_are_nan(data_dir, tmp_path,
                                                                        minilm):
  """gecko_fret_ql_human: the human tasks give the same examples as their plain tasks,
  with NaN teacher scores, so they share batches with gecko_fret_ql's scored rows."""
  root, _ = data_dir
  options = seqio_sources.DataOptions(data_dir=str(root))
  for name in ("gecko_stsb", "gecko_classification"):
    assert task_examples(f"{name}_no_teacher", options) == task_examples(name, options)
    task = seqio.get_mixture_or_task(f"{name}_no_teacher")
    with seqio_sources.using(options):
      example = next(task.get_dataset(sequence_length=None, split="train",
                                      shuffle=False).as_numpy_iterator())
    assert np.isnan(example["teacher_positive"]) and np.isnan(example["teacher_negative"])
  for name in ("stsb", "classification"):
    (tmp_path / name).symlink_to(root / name)
  write_jsonl(tmp_path / "fret" / "fret-00000.jsonl",
              [dict(fret_record(i), positive_ql=-1.0 - i, negative_ql=-20.0 - i)
               for i in range(15)])
  data = SeqioBatches(mixture_or_task_name="gecko_fret_ql_human", tokenizer=minilm.tokenizer,
                      batch_size=32, data_dir=str(tmp_path), query_length=48,
                      passage_length=16)
  try:
    batch = data.batch(0)
  finally:
    data.close()
  scored = np.isfinite(batch["teacher_positive"])
  assert 0 < scored.sum() < 32 and np.isnan(batch["teacher_negative"][~scored]).all()
  fret_queries = {int(row[row > 0][-2]) for row in batch["query_tokens"][scored]}
  human_queries = {int(row[row > 0][-2]) for row in batch["query_tokens"][~scored]}
  numbers = {minilm.tokenizer.encode_batch([str(i)])[0][1] for i in range(15)}
  assert fret_queries <= numbers and not human_queries & numbers  # "... number {i}"
  np.testing.assert_array_equal(batch["teacher_negative"][scored],  # each row's own pair
                                batch["teacher_positive"][scored] - 19.0)
  from conftest import read_metrics

  from gecko import train  # a run on the mixture: every step finite, the term logged
  assert train.main(["--gin_file=gin/models/tiny.gin", "--gin_file=gin/runs/finetune.gin",
                     "--gin_file=gin/data/seqio.gin", "--gin_file=gin/overlays/local_tiny.gin",
                     "--gin_file=gin/ablations/distill_margin_mse.gin",
                     "--gin.MIXTURE_OR_TASK_NAME='gecko_fret_ql_human'",
                     f"--gin.TASK_DATA_DIR='{tmp_path}'", f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
                     "--gin.TRAIN_STEPS=2"]) == 0
  rows = read_metrics(tmp_path / "run")
  assert len(rows) == 2 and all(r["finite"] == 1.0 and r["distillation/64"] > 0 for r in rows)


# --- The conversions themselves, on hand-made rows.
def test_nli_triples_by_hand():
  rows = [{"premise": "p1", "hypothesis": "e1", "label": 0},
          {"premise": "p1", "hypothesis": "c1", "label": 2},
          {"premise": "p1", "hypothesis": "e2", "label": 0},
          {"premise": "p1", "hypothesis": "n1", "label": 1},
          {"premise": "p2", "hypothesis": "e3", "label": 0},
          {"premise": "p3", "hypothesis": "c3", "label": 2},
          {"premise": "p3", "hypothesis": "x", "label": -1}]
  assert pp.nli_triples(rows) == [
      {"query": "p1", "positive": "e1", "negative": "c1"},
      {"query": "p1", "positive": "e2", "negative": "c1"}]


def test_classification_triples_by_hand():
  rows = [{"text": f"{label}{i}", "label": label} for label in "ab" for i in range(3)]
  rows.append({"text": "c0", "label": "c"})  # a label with a single text: no positive
  triples = pp.classification_triples(rows, seed=1)
  assert len(triples) == 6
  for n, t in enumerate(triples):
    assert t["query"].endswith(f" (id {n})") and t["positive"].endswith(f" (id {n})")
    q, p, neg = (t[k].rsplit(" (id", 1)[0] for k in ("query", "positive", "negative"))
    assert q != p and q[0] == p[0] and neg[0] != q[0]
  assert pp.classification_triples(rows, seed=1) == triples  # deterministic per seed
  with pytest.raises(ValueError, match="at least two labels"):
    pp.classification_triples([{"text": "x", "label": 1}, {"text": "y", "label": 1}])


def test_feature_converter_truncates_keeping_sep_and_keys_duplicates():
  ds = tf.data.Dataset.from_tensor_slices({
      "query": tf.ragged.constant([[101, 5, 6, 7, 8, 102], [101, 5, 102], [101, 5, 102]]),
      "positive": tf.ragged.constant([[101, 9, 102], [101, 9, 9, 102], [101, 10, 102]])})
  ds = ds.map(lambda x: {k: v for k, v in x.items()})
  out = list(DualEncoderFeatureConverter(with_negative=False)(
      ds, {"query": 4, "positive": 5}).as_numpy_iterator())
  assert out[0]["query_tokens"].tolist() == [101, 5, 6, 102]
  assert out[1]["query_tokens"].tolist() == [101, 5, 102, 0]
  assert out[1]["query_mask"].tolist() == [1, 1, 1, 0]
  assert out[1]["positive_tokens"].tolist() == [101, 9, 9, 102, 0]
  assert out[1]["query_key"] == out[2]["query_key"] != out[0]["query_key"]
  assert len({o["positive_key"] for o in out}) == 3
  assert "negative_tokens" not in out[0]


def test_the_loss_checks_the_features_of_the_mixture(minilm):
  from gecko.training.losses import GeckoLoss
  pairs = SeqioBatches(mixture_or_task_name="gecko_prefinetune", tokenizer=minilm.tokenizer,
                       batch_size=4)
  GeckoLoss(same_tower_negatives=False, hard_negatives=False,
            mask_false_negatives=True).validate_features(pairs.feature_names)
  with pytest.raises(ValueError, match=r"needs the model features \['negative_tokens'"):
    GeckoLoss().validate_features(pairs.feature_names)


# --- Batches: mixing rates, homogeneous batches, determinism, process shards.
def _is_qa(query_tokens: np.ndarray) -> np.ndarray:
  """Row-wise: does the query say 'task: question answering' (vs 'search result')?"""
  return query_tokens[:, 3] == VOCABULARY.encode("question")[1]


def test_mixture_rates_hold_over_10000_examples(data_dir, minilm):
  root, _ = data_dir
  batches = SeqioBatches(mixture_or_task_name="gecko_prefinetune", tokenizer=minilm.tokenizer,
                         batch_size=500, query_length=8, passage_length=8, data_dir=str(root),
                         shuffle_buffer=64,
                         rates={"gecko_pft_qa": 0.7, "gecko_pft_title_body": 0.3})
  # gecko_pft_squad (default rate 0) is not even opened: no TFDS data is needed.
  assert batches.rates == pytest.approx({"gecko_pft_qa": 0.7, "gecko_pft_title_body": 0.3})
  qa = np.concatenate([_is_qa(batches.batch(s)["query_tokens"]) for s in range(20)])
  assert qa.size == 10_000 and abs(qa.mean() - 0.7) < 0.02


def test_homogeneous_batches_hold_one_task(data_dir, minilm):
  root, _ = data_dir
  batches = SeqioBatches(mixture_or_task_name="gecko_prefinetune", tokenizer=minilm.tokenizer,
                         batch_size=6, query_length=8, passage_length=8, data_dir=str(root),
                         homogeneous=True, shuffle_buffer=64)
  kinds = [_is_qa(batches.batch(s)["query_tokens"]) for s in range(30)]
  assert all(k.all() or not k.any() for k in kinds)
  assert 5 < sum(k.all() for k in kinds) < 25  # both tasks, about half each


def test_batches_are_deterministic_resumable_and_sharded(data_dir, minilm):
  root, _ = data_dir
  make = lambda **kw: SeqioBatches(  # noqa: E731
      mixture_or_task_name="gecko_fret_only", tokenizer=minilm.tokenizer, batch_size=4,
      query_length=32, passage_length=12, data_dir=str(root), shuffle_buffer=16, **kw)
  run = make()
  sequential = [run.batch(s) for s in range(5)]
  resumed = make().batch(3)
  for key, value in resumed.items():
    np.testing.assert_array_equal(value, sequential[3][key])
  parts = [make(shard_index=i, shard_count=2) for i in range(2)]
  keys = [{int(k) for s in range(3) for k in p.batch(s)["query_key"]} for p in parts]
  assert parts[0].batch(0)["query_tokens"].shape == (2, 32)
  assert not keys[0] & keys[1]  # each process reads its own shard of the examples


# --- Bad input.
@pytest.fixture
def bad_data(tmp_path):
  path = tmp_path / "prefinetune" / "qa" / "bad.jsonl"
  path.parent.mkdir(parents=True)
  path.write_text('{"question": "q1", "answer": "a1"}\n{"question": "q2", "answer": \n'
                  '{"question": "q3"}\n{"question": "q4", "answer": "a4"}\n')
  return tmp_path, path


def test_malformed_jsonl_line_names_file_and_line(bad_data):
  root, path = bad_data
  with pytest.raises(tf.errors.OpError, match=re.escape(f"{path}:2: not valid JSON")):
    task_examples("gecko_pft_qa", seqio_sources.DataOptions(data_dir=str(root)))


def test_missing_field_names_file_and_line(bad_data):
  root, path = bad_data
  path.write_text('{"question": "q1", "answer": "a1"}\n{"question": "q3"}\n')
  with pytest.raises(tf.errors.OpError, match=re.escape(f"{path}:2: missing field 'answer'")):
    task_examples("gecko_pft_qa", seqio_sources.DataOptions(data_dir=str(root)))


def test_bad_records_can_be_skipped_and_counted(bad_data):
  root, path = bad_data
  before = seqio_sources.SKIPPED[str(path)]
  got = task_examples("gecko_pft_qa", seqio_sources.DataOptions(data_dir=str(root),
                                                                skip_bad_records=True))
  assert len(got) == 2 and seqio_sources.SKIPPED[str(path)] - before == 2


@pytest.mark.parametrize("kwargs, message", [
    ({"mixture_or_task_name": "gecko_nope"}, "unknown SeqIO task or mixture 'gecko_nope'"),
    ({"rates": {"gecko_snli": 1.0}}, r"rates name tasks not in 'gecko_prefinetune'"),
    ({"fret_positive": "top1"}, "fret_positive='top1'"),
    ({"rates": {"gecko_pft_qa": 0, "gecko_pft_title_body": 0}}, "every task"),
])
def test_bad_options_are_named(minilm, kwargs, message):
  kwargs = {"mixture_or_task_name": "gecko_prefinetune", **kwargs}
  with pytest.raises(ValueError, match=message):
    SeqioBatches(tokenizer=minilm.tokenizer, batch_size=4, **kwargs)


def test_missing_data_dir_is_explained(monkeypatch, tmp_path):
  monkeypatch.delenv("GECKO_DATA_DIR", raising=False)
  with pytest.raises(ValueError, match="GECKO_DATA_DIR"):
    task_examples("gecko_fret", seqio_sources.DataOptions())
  with pytest.raises(FileNotFoundError, match="no files match"):
    task_examples("gecko_fret", seqio_sources.DataOptions(data_dir=str(tmp_path)))


def test_every_task_is_in_a_mixture_and_mixtures_share_features():
  # The scored FRet tasks (a teacher's scores besides the triple) train alone.
  names = [n for n in seqio.TaskRegistry.names() if n.startswith("gecko_")
           and n not in ("gecko_fret_ql", "gecko_fret_rc")]
  mixed = collections.Counter(t.name for m in seqio.MixtureRegistry.names() if m.startswith("gecko")
                              for t in seqio.get_mixture_or_task(m).tasks)
  assert set(names) <= set(mixed)
  finetune = seqio.get_mixture_or_task("gecko_finetune")
  assert {tuple(sorted(t.output_features)) for t in finetune.tasks} == {
      ("negative", "positive", "query")}


def test_a_run_distils_the_scored_fret_tasks_teacher(tmp_path, capsys):
  """MIXTURE_OR_TASK_NAME='gecko_fret_ql' and a MarginMSE term: each logged loss is both
  dims' contrastive and distillation terms; the plain task is refused by the loss."""
  from conftest import read_metrics

  from gecko import train
  write_jsonl(tmp_path / "data" / "fret" / "fret-00000.jsonl",
              [dict(fret_record(i), positive_ql=-4.0 - i % 3, negative_ql=-25.0 + i % 4)
               for i in range(16)])
  args = ["--gin_file=gin/models/tiny.gin", "--gin_file=gin/runs/finetune.gin",
          "--gin_file=gin/data/seqio.gin", "--gin_file=gin/overlays/local_tiny.gin",
          f"--gin.TASK_DATA_DIR='{tmp_path / 'data'}'", "--gin.TRAIN_STEPS=2",
          "--gin.seqio_batches.SeqioBatches.shuffle_buffer=16",
          "--gin.losses.GeckoLoss.distillation='margin_mse'",
          "--gin.losses.GeckoLoss.teacher_scale=0.02"]
  assert train.main(args + ["--gin.MIXTURE_OR_TASK_NAME='gecko_fret_ql'",
                            f"--gin.MODEL_DIR='{tmp_path / 'run'}'"]) == 0
  for row in read_metrics(tmp_path / "run"):
    assert row["distillation/16"] > 0 and row["distillation/64"] > 0
    want = sum(row[f"loss/{d}"] + row[f"distillation/{d}"] for d in (16, 64))
    assert row["loss"] == pytest.approx(want, rel=1e-5)
  capsys.readouterr()
  assert train.main(args + ["--gin.MIXTURE_OR_TASK_NAME='gecko_fret_only'",
                            f"--gin.MODEL_DIR='{tmp_path / 'run2'}'"]) == 1
  assert ("GeckoLoss needs the model features ['teacher_positive', 'teacher_negative']"
          in capsys.readouterr().err)


# --- Gin: the two-stage run.
def _losses(model_dir):
  from conftest import read_metrics
  return [r["loss"] for r in read_metrics(model_dir)]


@pytest.mark.slow
def test_two_stage_run_prefinetune_then_finetune_through_seqio(data_dir, tmp_path):
  import sys

  from conftest import run_cli
  root, _ = data_dir
  tiny = ["--gin_file=gin/models/tiny.gin"]
  common = ["--gin_file=gin/overlays/local_tiny.gin", f"--gin.TASK_DATA_DIR='{root}'",
            "--gin.TRAIN_STEPS=8", "--gin.seqio_batches.SeqioBatches.shuffle_buffer=32"]
  stage1, stage2 = tmp_path / "pft", tmp_path / "ft"
  result = run_cli([sys.executable, "-m", "gecko.train", *tiny, "--gin_file=gin/runs/prefinetune.gin", "--gin_file=gin/data/seqio.gin",
                    *common, f"--gin.MODEL_DIR='{stage1}'"])
  assert result.returncode == 0, result.stderr[-3000:]
  result = run_cli([sys.executable, "-m", "gecko.train", *tiny, "--gin_file=gin/runs/finetune.gin", "--gin_file=gin/data/seqio.gin",
                    *common, "--gin.MIXTURE_OR_TASK_NAME='gecko_fret_only'",
                    f"--gin.INIT_FROM='{stage1 / 'export'}'", f"--gin.MODEL_DIR='{stage2}'"])
  assert result.returncode == 0, result.stderr[-3000:]
  config = (stage2 / "config.gin").read_text()
  assert str(stage1 / "export") in config and "train.train.init_from = %INIT_FROM" in config
  assert "MIXTURE_OR_TASK_NAME = 'gecko_fret_only'" in config
  assert "losses.GeckoLoss.hard_negatives = True" in config
  assert "losses.GeckoLoss.hard_negatives = False" in (stage1 / "config.gin").read_text()
  for run in (stage1, stage2):
    losses = _losses(run)
    assert len(losses) == 8 and np.mean(losses[-3:]) < losses[0], (run, losses)
