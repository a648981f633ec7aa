"""The demo's data plumbing (its full run is `make demo`): the held-out split becomes a
BEIR task that gecko.eval reads, the rest the gecko_fret task's shards."""

import json

import pytest

from gecko.evaluation import datasets
from gecko.experiments import demo


def _record(i):
  return {"id": f"q{i}", "query": f"question {i}", "seed_id": f"p{i}",
          "positive_id": f"p{(i + 1) % 40}", "task": "t"}


def test_split_records_writes_training_shards_and_a_held_out_beir_task(tmp_path):
  corpus = [{"id": f"p{i}", "title": f"T{i}", "text": f"passage {i}"} for i in range(40)]
  records = [_record(i) for i in range(40)]
  n_train, n_test = demo.split_records(records, data_dir=str(tmp_path / "data"),
                                       eval_dir=str(tmp_path / "heldout"), corpus=corpus)
  held = [r["id"] for r in records if demo.held_out(r["id"])]
  assert (n_train, n_test) == (40 - len(held), len(held)) and 0 < len(held) < 20
  shard = tmp_path / "data" / "fret" / "fret-00000.jsonl"
  assert [json.loads(line)["id"] for line in shard.read_text().splitlines()] == [
      r["id"] for r in records if r["id"] not in held]
  data = datasets.load_beir(str(tmp_path / "heldout"), split="test")
  assert sorted(data.queries) == sorted(held) and len(data.corpus) == 40
  assert all(data.qrels[q] == {f"p{(int(q[1:]) + 1) % 40}": 1} for q in held)  # FRet's label
  seed = datasets.load_beir(str(tmp_path / "heldout"), split="seed")
  assert all(seed.qrels[q] == {f"p{q[1:]}": 1} for q in held)
  with pytest.raises(ValueError, match="raise --seeds"):
    demo.split_records(records[:1], data_dir=str(tmp_path / "d2"),
                       eval_dir=str(tmp_path / "e2"), corpus=corpus)


def test_train_command_fine_tunes_minilm_on_fret_with_matryoshka_heads(tmp_path):
  training = demo.fine_tuning(model_dir="/m", data_dir="/d", steps=30, batch_size=8,
                              learning_rate=2e-5)
  command = training.args()
  for flag in ("--gin_file=gin/runs/finetune.gin", "--gin_file=gin/data/seqio.gin",
               "--gin.MIXTURE_OR_TASK_NAME='gecko_fret_only'", "--gin.TRAIN_STEPS=30",
               "--gin.MATRYOSHKA_DIMS=(128, 384)", "--gin.INIT_FROM='all-MiniLM-L6-v2'",
               "--gin.TASK_DATA_DIR='/d'", "--gin.BATCH_SIZE=8", "--gin.LEARNING_RATE=2e-05"):
    assert flag in command
  assert training.command_line().startswith("python -m gecko.train --gin_file=")


def test_paths_with_quotes_reach_gin_as_they_are():
  """A quote in --output_dir is quoted for gin, never pasted into its syntax."""
  import gin

  from gecko import gin_flags
  odd = "/tmp/it's \\ \"here\""
  command = demo.fine_tuning(model_dir=odd, data_dir=odd + "/data", steps=2, batch_size=8,
                             learning_rate=2e-5).args()
  bindings = [f[len("--gin."):].replace("=", " = ", 1) for f in command
              if f.startswith(("--gin.MODEL_DIR", "--gin.TASK_DATA_DIR"))]
  gin.clear_config()
  try:
    gin.parse_config(bindings)
    assert gin.query_parameter("%MODEL_DIR") == odd
    assert gin.query_parameter("%TASK_DATA_DIR") == odd + "/data"
  finally:
    gin.clear_config()
  with pytest.raises(TypeError, match="takes a str"):
    gin_flags.gin_string(None)
