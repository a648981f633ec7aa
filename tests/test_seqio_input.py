"""SeqIO input per shard: each input shard reads only its byte ranges (or files), the
shards together read one epoch, and a pipeline resumes from a saved position without
re-reading what came before."""

import gzip
import json
import re
import subprocess
import sys

import gecko_tasks  # noqa: F401  (registers the tasks)
import numpy as np
import pytest
import seqio
import tensorflow as tf

from gecko.data import sources
from gecko.data.seqio_batches import SeqioBatches

FIELDS = {"query": str, "positive_text": str}


def _records(start, stop):
  return [{"query": f"query number {i}", "positive_text": f"passage {i} " + "x" * (i % 7)}
          for i in range(start, stop)]


def _write(path, records, *, blank_every=0, gz=False):
  lines = []
  for n, record in enumerate(records):
    lines.append(json.dumps(record) + "\n")
    if blank_every and n % blank_every == 0:
      lines.append("\n")
  data = "".join(lines).encode()
  path.write_bytes(gzip.compress(data) if gz else data)
  return path


def _queries(ds):
  return [r["query"].decode() for r in ds.as_numpy_iterator()]


@pytest.fixture
def small_chunks(monkeypatch):
  monkeypatch.setattr(sources, "CHUNK_BYTES", 97)  # lines straddle chunk boundaries


@pytest.mark.parametrize("shards", [1, 2, 3, 5])
def test_shards_read_disjoint_byte_ranges_that_make_one_epoch(tmp_path, small_chunks, shards):
  files = [str(_write(tmp_path / "a.jsonl", _records(0, 23), blank_every=4)),
           str(_write(tmp_path / "b.jsonl", _records(23, 30)))]
  seen, reads = [], []
  for index in range(shards):
    before = sum(sources.RECORDS_READ[f] for f in files)
    seen.append(_queries(sources.file_dataset(
        files, fields=FIELDS, shard=seqio.ShardInfo(index=index, num_shards=shards))))
    reads.append(sum(sources.RECORDS_READ[f] for f in files) - before)
  assert reads == [len(s) for s in seen]  # a shard decodes its own records, no others
  assert all(s for s in seen)
  union = [q for s in seen for q in s]
  assert sorted(union) == sorted(f"query number {i}" for i in range(30))  # each once
  if shards == 1:  # unsharded and unshuffled: the files' order
    assert union == [f"query number {i}" for i in range(30)]


def test_gzip_files_are_dealt_by_file_or_else_by_record(tmp_path):
  files = [str(_write(tmp_path / f"p{i}.jsonl.gz", _records(10 * i, 10 * i + 10), gz=True))
           for i in range(2)]
  by_file = [_queries(sources.file_dataset(files, fields=FIELDS,
                                           shard=seqio.ShardInfo(index=i, num_shards=2)))
             for i in range(2)]
  assert by_file == [[f"query number {i}" for i in range(0, 10)],
                     [f"query number {i}" for i in range(10, 20)]]
  by_record = [_queries(sources.file_dataset(files, fields=FIELDS,
                                             shard=seqio.ShardInfo(index=i, num_shards=3)))
               for i in range(3)]
  assert sorted(q for s in by_record for q in s) == sorted(f"query number {i}" for i in range(20))
  assert all(len(s) in (6, 7) for s in by_record)


def test_a_bad_record_in_a_later_byte_range_names_its_line(tmp_path, small_chunks):
  path = tmp_path / "bad.jsonl"
  lines = [json.dumps(r) for r in _records(0, 12)]
  lines[9] = '{"query": "broken", '
  path.write_text("\n".join(lines) + "\n")
  shard = seqio.ShardInfo(index=1, num_shards=2)  # line 10 is in the second half
  with pytest.raises(tf.errors.OpError, match=re.escape(f"{path}:10: not valid JSON")):
    _queries(sources.file_dataset([str(path)], fields=FIELDS, shard=shard))


def test_a_shard_without_bytes_is_named(tmp_path):
  path = _write(tmp_path / "one.jsonl", _records(0, 1))
  with pytest.raises(ValueError, match="input shard 100 of 400 has no bytes"):
    sources.file_dataset([str(path)], fields=FIELDS, shard=seqio.ShardInfo(index=100, num_shards=400))


def _fret_dir(root, count=40):
  from test_seqio_tasks import fret_record, write_jsonl
  write_jsonl(root / "fret" / "fret-00000.jsonl", [fret_record(i) for i in range(count)])
  return root


def _batches(minilm, root, **kw):
  return SeqioBatches(mixture_or_task_name="gecko_fret_only", tokenizer=minilm.tokenizer,
                      batch_size=4, query_length=16, passage_length=8, data_dir=str(root),
                      shuffle_buffer=8, **kw)


def _read(path):
  return sum(n for f, n in sources.RECORDS_READ.items() if f.startswith(str(path)))


def test_a_new_pipeline_seeks_to_a_saved_position_without_rereading(tmp_path, minilm, small_chunks,
                                                                     capsys):
  root = _fret_dir(tmp_path)
  run = _batches(minilm, root)
  for step in range(25):  # past the first epoch (40 records, 4 a batch)
    run.batch(step)
  position = run.position(25)
  expected = [run.batch(step) for step in range(25, 30)]
  before = _read(root)
  restarted = _batches(minilm, root)
  assert restarted.seek(25, position)
  again = [restarted.batch(step) for step in range(25, 30)]
  for a, b in zip(expected, again):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  resumed_reads = _read(root) - before
  # Five batches (20 records, less what the restored shuffle buffer already held), a
  # byte range, and what tf.data's prefetch threads read ahead meanwhile (timing-
  # dependent: 17 to 28 seen), far below the 100 records a skip to step 25 re-reads
  # (asserted below).
  assert 0 < resumed_reads <= 2 * (5 * 4 + 4), resumed_reads
  assert "skipping" not in capsys.readouterr().err
  before = _read(root)
  skipped = _batches(minilm, root)  # no position: skips, re-reading, and says so
  np.testing.assert_array_equal(skipped.batch(25)["query_key"], expected[0]["query_key"])
  assert _read(root) - before > 25 * 4
  assert "no input position for step 25; skipping 25 batches" in capsys.readouterr().err


def test_a_position_from_another_pipeline_is_refused_and_the_run_skips(tmp_path, minilm, capsys):
  root = _fret_dir(tmp_path)
  run = _batches(minilm, root)
  run.batch(0)
  position = run.position(1)
  with pytest.raises(ValueError, match="a position is taken right after the batch before it"):
    run.position(3)
  other = _batches(minilm, root, seed=1)
  assert not other.seek(1, position)
  assert '"seed": 0' in capsys.readouterr().err
  np.testing.assert_array_equal(other.batch(1)["query_key"], _batches(minilm, root, seed=1)
                                .batch(1)["query_key"])


_HOST_SCRIPT = r"""
import json, sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
coordinator, pid, root, out, position_dir = sys.argv[1:6]
pid = int(pid)
jax.distributed.initialize(coordinator_address=coordinator, num_processes=2, process_id=pid)
import gecko_tasks
from gecko.data import sources
from gecko.data.seqio_batches import SeqioBatches
from gecko.models import embedder
from gecko.training import partitioning

sources.CHUNK_BYTES = 200
decoded = []
original = sources._Decoder.__call__
def logged(self, line, **kw):
  record = original(self, line, **kw)
  decoded.append(record["query"])
  return record
sources._Decoder.__call__ = logged

index, count = partitioning.data_shard(partitioning.make_mesh({"data": -1}))
def open_data():
  return SeqioBatches(mixture_or_task_name="gecko_fret_only", batch_size=8, query_length=16,
                      passage_length=8, data_dir=root, shuffle_buffer=4, shard_index=index,
                      shard_count=count, tokenizer=embedder.load("all-MiniLM-L6-v2").tokenizer)
position_file = f"{position_dir}/process-{pid}"
if sys.argv[6] == "first":
  data = open_data()
  for step in range(10):  # 40 records, 4 rows a shard per batch: one epoch
    data.batch(step)
  epoch = sorted(set(decoded))  # read-ahead (shuffle buffer, prefetch) may reach epoch 2
  for step in range(10, 20):
    data.batch(step)
  open(position_file, "wb").write(data.position(20))
  after = [data.batch(step)["query_key"].tolist() for step in range(20, 23)]
  json.dump({"shard": [index, count], "epoch": epoch, "after": after}, open(out, "w"))
  data.close()
else:  # a restarted process
  data = open_data()
  assert data.seek(20, open(position_file, "rb").read())
  after = [data.batch(step)["query_key"].tolist() for step in range(20, 23)]
  json.dump({"after": after, "reads": len(decoded)}, open(out, "w"))
  data.close()  # tf.data's threads left to interpreter exit can hang it
"""


def _hosts(tmp_path, root, which):
  from conftest import REPO, cli_env, free_port
  port = free_port()
  procs = [subprocess.Popen(
      [sys.executable, "-c", _HOST_SCRIPT, f"127.0.0.1:{port}", str(i), str(root),
       str(tmp_path / f"{which}{i}.json"), str(tmp_path), which], cwd=REPO,
      env=cli_env(devices=2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-3000:]
  return [json.loads((tmp_path / f"{which}{i}.json").read_text()) for i in range(2)]


@pytest.mark.slow
def test_two_processes_read_their_own_shards_and_resume_from_a_position(tmp_path):
  """Shards follow the batch sharding of a real two-process mesh; their records are
  disjoint and make one epoch; restarted processes seek to a saved position, give the
  uninterrupted batches, and read about one batch's records."""
  root = _fret_dir(tmp_path / "data")
  first = _hosts(tmp_path, root, "first")
  assert sorted(h["shard"][0] for h in first) == [0, 1] and all(h["shard"][1] == 2 for h in first)
  assert not set(first[0]["epoch"]) & set(first[1]["epoch"])
  assert sorted(first[0]["epoch"] + first[1]["epoch"]) == sorted(
      f"which passage is number {i}" for i in range(40))
  restarted = _hosts(tmp_path, root, "again")
  for before, after in zip(first, restarted):
    assert after["after"] == before["after"]
    assert after["reads"] <= 3 * 4 + 4, after["reads"]  # three batches' rows and a range


@pytest.mark.slow
def test_a_killed_seqio_run_resumes_from_its_input_position_exactly(tmp_path):
  import os
  import signal
  import time

  import jax

  from conftest import REPO, assert_trees_close, cli_env, run_cli
  from gecko.models import embedder
  root = _fret_dir(tmp_path / "data")

  def command(model_dir):
    return [sys.executable, "-m", "gecko.train", "--gin_file=gin/models/tiny.gin",
            "--gin_file=gin/runs/finetune.gin", "--gin_file=gin/data/seqio.gin",
            "--gin_file=gin/overlays/local_tiny.gin", f"--gin.TASK_DATA_DIR='{root}'",
            "--gin.MIXTURE_OR_TASK_NAME='gecko_fret_only'", "--gin.TRAIN_STEPS=8", "--gin.CHECKPOINT_EVERY=4",
            "--gin.seqio_batches.SeqioBatches.shuffle_buffer=8", f"--gin.MODEL_DIR='{model_dir}'"]
  # The uninterrupted run trains beside the one to be killed (they share nothing).
  whole_log = tmp_path / "whole.log"
  whole = subprocess.Popen(command(tmp_path / "whole"), cwd=REPO, env=cli_env(),
                           stdout=subprocess.DEVNULL, stderr=open(whole_log, "w"))  # noqa: SIM115
  killed = tmp_path / "killed"
  proc = subprocess.Popen(command(killed), cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 900
  while time.time() < deadline and not (killed / "checkpoints" / "4").exists():
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  assert proc.wait() == -signal.SIGKILL
  assert not (killed / "export").exists(), "the run finished before it could be killed"
  assert whole.wait(timeout=900) == 0, whole_log.read_text()[-3000:]
  assert "process-00000-of-00001" in os.listdir(killed / "checkpoints" / "4" / "input")
  resumed = run_cli(command(killed))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resuming from step 4" in resumed.stderr and "skipping" not in resumed.stderr

  def exported(run):
    return jax.device_get(embedder.load(str(run / "export")).params)
  assert_trees_close(exported(killed), exported(tmp_path / "whole"), atol=1e-6)

  # The finished run started again, its last checkpoint without an input position (as
  # one written by another number of processes is, for this one): nothing to train, no
  # checkpoint to write, so the input is asked for no position.
  import shutil
  shutil.rmtree(killed / "checkpoints" / "8" / "input")
  again = run_cli(command(killed))
  assert again.returncode == 0, again.stderr[-3000:]
  assert "resuming from step 8" in again.stderr
  assert sorted(p for p in os.listdir(killed / "checkpoints") if p.isdigit()) == ["4", "8"]


def test_the_private_tf_iterator_handle_gecko_reads_still_exists():
  """`seqio_batches.iterator_resource` reads tf.data's private `_iterator_resource`
  (no public handle exists); a TensorFlow that renames it fails here by name."""
  from gecko.data import seqio_batches
  iterator = iter(tf.data.Dataset.range(3))
  next(iterator)
  state = tf.raw_ops.SerializeIterator(
      resource_handle=seqio_batches.iterator_resource(iterator), external_state_policy=1)
  restored = iter(tf.data.Dataset.range(3))
  tf.raw_ops.DeserializeIterator(resource_handle=seqio_batches.iterator_resource(restored),
                                 serialized=state)
  assert int(next(restored)) == 1  # where the first one stood
