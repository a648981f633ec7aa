"""The FRet pipeline end to end with real components: SmolLM2 through llama.cpp writes
tasks and queries and relabels MiniLM's neighbours; a rerun repeats no LLM call, and a
lost shard is rebuilt from the cache."""

import json
import os
import sys

import pytest

from conftest import run_cli
from gecko.fret import schema

TOPICS = {
    "gecko": ["Geckos are lizards whose toe pads carry millions of tiny hairs.",
              "The tiny hairs on gecko feet stick to walls by van der Waals forces.",
              "Many geckos have no eyelids and lick their eyes to clean them."],
    "moon": ["The Moon orbits the Earth about every 27 days.",
             "Tides are caused mostly by the gravity of the Moon.",
             "The far side of the Moon was first photographed in 1959."],
    "bread": ["Yeast ferments sugars in dough and makes carbon dioxide bubbles.",
              "Sourdough bread is leavened by wild yeast and lactic acid bacteria.",
              "Kneading develops gluten, which traps the gas in the dough."],
    "python": ["A Python dictionary maps hashable keys to values.",
               "Lists in Python are mutable sequences of items.",
               "Tuples are immutable sequences, often used as dictionary keys."],
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  pytest.importorskip("llama_cpp", reason="the embedded LLM needs the [local] extra")
  path = tmp_path_factory.mktemp("corpus") / "passages.jsonl"
  with open(path, "w") as f:
    for topic, texts in TOPICS.items():
      for i, text in enumerate(texts):
        f.write(json.dumps({"id": f"{topic}{i}", "title": topic.title(), "text": text}) + "\n")
  return path


def _records(out):
  records = []
  for name in sorted(os.listdir(out)):
    if name.endswith(".jsonl") and name.startswith("fret-"):
      with open(out / name) as f:
        records.extend(json.loads(line) for line in f)
  return records


def test_pipeline_writes_records_summary_and_resumes_from_the_cache(corpus, tmp_path):
  out = tmp_path / "fret"
  cmd = [sys.executable, "-m", "gecko.fret.pipeline", "--gin_file=gin/runs/fret.gin",
         f"--gin.CORPUS='{corpus}'", f"--gin.OUTPUT_DIR='{out}'", "--gin.NUM_SEEDS=4",
         "--gin.NUM_NEIGHBORS=4", "--gin.SHARD_SIZE=2", "--gin.llm.LlamaCpp.n_ctx=1024"]
  result = run_cli(cmd, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((out / "summary.json").read_text())
  records = _records(out)
  assert summary["records"] == len(records) >= 3 and summary["llm_calls_this_run"] > 0
  for r in records:
    assert not schema.problems(r), r
    assert r["positive_id"] != r["negative_id"]
    assert r["positive_is_seed"] == (r["positive_id"] == r["seed_id"])
    assert r["positive_id"][:-1] in TOPICS and r["llm"].startswith("llama_cpp:SmolLM2")
  assert (out / "summary.png").stat().st_size > 0
  assert "pipeline.run.num_neighbors = %NUM_NEIGHBORS" in (out / "config.gin").read_text()

  # Rerun: everything is done; no LLM call, nothing written twice.
  result = run_cli(cmd, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  again = json.loads((out / "summary.json").read_text())
  assert again["llm_calls_this_run"] == 0 and again["skipped_already_written"] == 4
  assert _records(out) == records

  # A lost shard is rebuilt from the LLM cache, again without an LLM call.
  last = sorted(p for p in os.listdir(out) if p.startswith("fret-") and p.endswith(".jsonl"))[-1]
  os.remove(out / last)
  result = run_cli(cmd, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  rebuilt = json.loads((out / "summary.json").read_text())
  assert rebuilt["llm_calls_this_run"] == 0 and rebuilt["llm_cache_hits_this_run"] > 0
  assert sorted(_records(out), key=lambda r: r["id"]) == sorted(records, key=lambda r: r["id"])


def test_bad_corpus_is_named(tmp_path):
  from gecko.fret.pipeline import read_corpus
  path = tmp_path / "c.jsonl"
  path.write_text('{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n')
  with pytest.raises(ValueError, match="record 2 repeats the id '1'"):
    read_corpus(str(path))
  path.write_text('{"id": 1}\n')
  with pytest.raises(ValueError, match="record 1 needs a string 'text'"):
    read_corpus(str(path))


def test_a_killed_run_resumes_without_losing_or_duplicating_records(corpus, tmp_path):
  import signal
  import subprocess
  import time

  from conftest import cli_env, REPO
  out = tmp_path / "fret"
  cmd = [sys.executable, "-m", "gecko.fret.pipeline", "--gin_file=gin/runs/fret.gin",
         f"--gin.CORPUS='{corpus}'", f"--gin.OUTPUT_DIR='{out}'", "--gin.NUM_SEEDS=6",
         "--gin.NUM_NEIGHBORS=3", "--gin.SHARD_SIZE=2", "--gin.llm.LlamaCpp.n_ctx=1024"]
  proc = subprocess.Popen(cmd, cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while not (out / "fret-00000.jsonl").exists() and time.time() < deadline:
    assert proc.poll() is None, "the run ended before it could be killed"
    time.sleep(0.05)
  os.kill(proc.pid, signal.SIGKILL)  # mid-run: one shard written, the next in progress
  proc.wait()
  assert len(_records(out)) == 2
  result = run_cli(cmd, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((out / "summary.json").read_text())
  ids = [r["id"] for r in _records(out)]
  assert len(ids) == len(set(ids)) == summary["records"] == 6 - summary["failures_this_run"]
  assert summary["skipped_already_written"] == 2 and summary["llm_cache_hits_this_run"] > 0
