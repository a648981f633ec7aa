"""The SeqIO path of the listwise loss over every candidate: `gecko_fret_candidates` reads
the triples `gecko.fret.triples --candidates` writes, the feature converter pads each
query's K candidates, and `gecko_fret_candidates_human` mixes them with the human tasks
(their rows: the positive K times, NaN scores)."""

import json

import gecko_tasks  # noqa: F401  (registers the tasks)
import numpy as np
import pytest
import tensorflow as tf

from gecko.data import input_format
from gecko.data import sources as seqio_sources
from gecko.data.feature_converters import truncate_keep_last, truncate_rows_keep_last
from gecko.data.pairs import PairBatches
from gecko.data.seqio_batches import SeqioBatches

K = 4
FMT = input_format.GECKO


def triple(i: int, *, k: int = K) -> dict:
  """A triples-file line as `gecko.fret.triples --candidates` writes it."""
  long = " ".join(f"word{j}" for j in range(40))  # cut to the passage length, [SEP] kept
  return {"query": FMT.query(f"which passage is number {i}", task="Given a question, "
                             "retrieve a passage that answers it"),
          "positive": FMT.document(f"the passage number {i}", title="T"),
          "negative": FMT.document(f"an unrelated passage {i}", title=""),
          "teacher_positive": -1.0 - i, "teacher_negative": -30.0 - i,
          "candidates": [FMT.document(f"candidate {c} of {i} {long if c == 1 else ''}",
                                      title="C") for c in range(k)],
          "teacher_candidates": [-1.0 - i - 2 * c for c in range(k)]}


def write(path, records) -> str:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  return str(path)


def seqio_batch(minilm, data_dir, name="gecko_fret_candidates", *, batch_size=8, k=K,
                **options):
  data = SeqioBatches(mixture_or_task_name=name, tokenizer=minilm.tokenizer,
                      batch_size=batch_size, data_dir=str(data_dir), query_length=24,
                      passage_length=16, shuffle_buffer=16, candidates=k, **options)
  try:
    return data.batch(0)
  finally:
    data.close()


def test_rows_are_cut_as_each_text_alone_is_cut():
  rows = [[101, 5, 6, 7, 8, 9, 102], [101, 5, 102], [101, 102], [101, 1, 2, 3, 4, 102]]
  tokens, mask = truncate_rows_keep_last(tf.ragged.constant(rows, dtype=tf.int32), 6)
  for row, got, got_mask in zip(rows, tokens.numpy(), mask.numpy()):
    want = truncate_keep_last(tf.constant(row), 6).numpy()
    np.testing.assert_array_equal(got[:len(want)], want)
    assert not got[len(want):].any()
    assert got_mask.tolist() == [1] * len(want) + [0] * (6 - len(want))


def test_the_task_gives_the_candidates_and_scores_the_jsonl_path_gives(tmp_path, minilm):
  """Row for row (matched by query), the SeqIO batch's candidates, masks and teacher
  scores equal PairBatches' on the same triples file."""
  path = write(tmp_path / "fret_candidates" / "triples.jsonl", [triple(i) for i in range(8)])
  got = seqio_batch(minilm, tmp_path)
  want = PairBatches(tokenizer=minilm.tokenizer, batch_size=8, path=path, query_length=24,
                     passage_length=16, shuffle=False).batch(0)
  assert got["candidate_tokens"].shape == (8, K, 16) and got["teacher_candidates"].shape == (8, K)
  order = {tuple(q): n for n, q in enumerate(want["query_tokens"].tolist())}
  rows = [order[tuple(q)] for q in got["query_tokens"].tolist()]
  assert len(set(rows)) > 1  # the shuffled stream repeats (num_epochs=None): some twice
  for name in ("candidate_tokens", "candidate_mask", "teacher_candidates", "positive_tokens",
               "negative_tokens"):
    np.testing.assert_array_equal(got[name], want[name][rows], err_msg=name)
  assert (got["candidate_mask"][:, 1].sum(-1) == 16).all()  # the long candidate was cut


def test_the_human_rows_of_the_mixture_repeat_their_positive_with_nan_scores(tmp_path, minilm):
  (tmp_path / "stsb").mkdir()
  sts = [(5.0, "a man plays a guitar", "a man is playing a guitar"),
         (4.2, "a cat sleeps", "a cat is sleeping"), (0.5, "a dog runs", "a woman cooks rice")]
  (tmp_path / "stsb" / "sts-train.csv").write_text("".join(
      f"main-captions\tMSRvid\t2012test\t{i:04d}\t{s}\t{a}\t{b}\n"
      for i, (s, a, b) in enumerate(sts)))
  write(tmp_path / "classification" / "intents.jsonl",
        [{"text": f"intent {label} example {i}", "label": label}
         for label in ("card", "loan") for i in range(4)])
  write(tmp_path / "fret_candidates" / "triples.jsonl", [triple(i) for i in range(12)])
  batch = seqio_batch(minilm, tmp_path, "gecko_fret_candidates_human", batch_size=32)
  scored = np.isfinite(batch["teacher_candidates"]).all(-1)
  assert 0 < scored.sum() < 32
  assert np.isnan(batch["teacher_candidates"][~scored]).all()
  for name in ("tokens", "mask"):
    np.testing.assert_array_equal(batch[f"candidate_{name}"][~scored],
                                  np.repeat(batch[f"positive_{name}"][~scored, None], K, 1))
  assert (batch["candidate_tokens"][scored] != batch["positive_tokens"][scored, None]).any(-1).any()


@pytest.mark.parametrize("records, message", [
    ([triple(0), triple(1, k=3)], "a number of candidates other than candidates=4"),
    ([dict(triple(0), teacher_candidates=["-1"] * K)],
     r"triples.jsonl:1: field 'teacher_candidates' should hold only int or float items"),
    ([dict(triple(0), candidates=[])], r"triples.jsonl:1: field 'candidates' should be a "
                                       "non-empty list"),
    ([dict(triple(0), candidates=["a\x1eb"] * K)], "reserved character"),
])
def test_bad_candidates_are_named(tmp_path, minilm, records, message):
  write(tmp_path / "fret_candidates" / "triples.jsonl", records * 4)
  with pytest.raises((tf.errors.OpError, ValueError), match=message):
    seqio_batch(minilm, tmp_path, batch_size=4)


def test_the_number_of_candidates_and_the_format_are_checked(tmp_path, minilm):
  write(tmp_path / "fret_candidates" / "triples.jsonl", [triple(i) for i in range(4)])
  with pytest.raises(ValueError, match="give SeqioBatches.candidates the number"):
    seqio_batch(minilm, tmp_path, batch_size=4, k=0)
  with pytest.raises(ValueError, match="leave SeqioBatches.candidates at 0"):
    seqio_batch(minilm, tmp_path, "gecko_fret_only", batch_size=4)
  with pytest.raises(ValueError, match="already in Gecko's input format"):
    seqio_batch(minilm, tmp_path, batch_size=4, input_format=input_format.PLAIN)
  with pytest.raises(ValueError, match="read from JSONL only"):
    seqio_sources.file_dataset([str(tmp_path / "x.tfrecord")],
                               fields={"candidates": seqio_sources.ListOf(str)})


def test_a_run_distils_every_candidate_through_seqio(tmp_path):
  """gin/ablations/distill_candidates.gin on the SeqIO mixture: each step's loss is both
  dims' contrastive and listwise terms, all finite."""
  from conftest import read_metrics

  from gecko import train
  write(tmp_path / "data" / "fret_candidates" / "triples.jsonl", [triple(i) for i in range(16)])
  assert train.main([
      "--gin_file=gin/models/tiny.gin", "--gin_file=gin/runs/finetune.gin",
      "--gin_file=gin/data/seqio.gin", "--gin_file=gin/overlays/local_tiny.gin",
      "--gin_file=gin/ablations/distill_candidates.gin",
      f"--gin.TASK_DATA_DIR='{tmp_path / 'data'}'", "--gin.TRAIN_STEPS=2",
      "--gin.MIXTURE_OR_TASK_NAME='gecko_fret_candidates'",
      f"--gin.seqio_batches.SeqioBatches.candidates={K}",
      "--gin.seqio_batches.SeqioBatches.shuffle_buffer=16",
      f"--gin.MODEL_DIR='{tmp_path / 'run'}'"]) == 0
  rows = read_metrics(tmp_path / "run")
  assert len(rows) == 2
  for row in rows:
    assert row["distillation/16"] > 0 and row["distillation/64"] > 0
    want = sum(row[f"loss/{d}"] + row[f"distillation/{d}"] for d in (16, 64))
    assert row["loss"] == pytest.approx(want, rel=1e-5)
