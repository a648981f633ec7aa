"""A whole run in a bucket: MODEL_DIR=gs://..., training data read from the bucket,
SIGKILL and resume from the bucket, export and evaluation with their outputs in the
bucket, against a GCS emulator on 127.0.0.1 (the libraries' own variables point at it).
The result equals a local run's exactly, and nothing is written under the working
directory."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import REPO, assert_trees_close, cli_env

from gecko.data import paths
from gecko.models import embedder

BUCKET = "gs://gecko-test"
RUN = ["--gin_file=gin/models/tiny.gin", "--gin_file=gin/runs/finetune.gin",
       "--gin_file=gin/data/jsonl.gin", "--gin_file=gin/overlays/local_tiny.gin"]


@pytest.fixture
def bucket_env(gcs_emulator, monkeypatch):
  for name, value in gcs_emulator.items():
    monkeypatch.setenv(name, value)
  return dict(cli_env(), **gcs_emulator)


def _triples(n=64):
  rng = np.random.default_rng(1)
  words = "gecko lizard wall tree river ocean piano guitar code python kernel cache".split()
  rows = []
  for i in range(n):
    a, b, c = rng.choice(words, 3, replace=False)
    rows.append(json.dumps({"query": f"about {a} {b}", "positive": f"{a} and {b} {i}",
                            "negative": f"{c} else {i}"}))
  return "\n".join(rows) + "\n"


def _train(model_dir, data, cwd, env, steps=12):
  return [sys.executable, "-m", "gecko.train", *RUN, f"--gin.MODEL_DIR='{model_dir}'",
          f"--gin.TRAIN_DATA='{data}'", f"--gin.TRAIN_STEPS={steps}", "--gin.CHECKPOINT_EVERY=2"]


def _params(model):
  return jax.device_get(embedder.load(model).params)


@pytest.mark.slow
def test_a_run_in_a_bucket_is_killed_resumed_exported_and_evaluated(tmp_path, bucket_env):
  work = tmp_path / "cwd"  # the commands' working directory: must stay empty
  work.mkdir()
  local_data = tmp_path / "triples.jsonl"
  local_data.write_text(_triples())
  remote_data = f"{BUCKET}/data/triples.jsonl"
  paths.upload(local_data, remote_data)
  env = dict(bucket_env, PYTHONPATH=str(REPO))

  def run(cmd, **kwargs):
    return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True,
                          timeout=900, **kwargs)

  # The local twin, uninterrupted.
  local = tmp_path / "local_run"
  result = run(_train(local, local_data, work, env))
  assert result.returncode == 0, result.stderr[-3000:]

  # In the bucket: killed after its step-4 checkpoint, then resumed.
  model_dir = f"{BUCKET}/runs/tiny"
  cmd = _train(model_dir, remote_data, work, env)
  proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  marker = f"{model_dir}/checkpoints/4/_CHECKPOINT_METADATA"
  deadline = time.time() + 900
  while time.time() < deadline and proc.poll() is None and not paths.exists(marker):
    time.sleep(0.2)
  assert proc.poll() is None, "the run ended before its step-4 checkpoint"
  proc.send_signal(signal.SIGKILL)
  assert proc.wait() == -signal.SIGKILL
  assert paths.exists(marker), "no step-4 checkpoint in the bucket within 900 s"
  assert not paths.exists(f"{model_dir}/export"), "the run finished before it was killed"
  resumed = run(cmd)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resuming from step" in resumed.stderr
  assert_trees_close(_params(f"{model_dir}/export"), _params(local / "export"), atol=0)

  # What a run leaves in its MODEL_DIR, all in the bucket.
  names = paths.listdir(model_dir)
  for name in ("checkpoints", "config.gin", "metrics.jsonl", "export"):
    assert name in names, names
  assert any(n.startswith("events.out.tfevents") for n in names), names
  steps = [json.loads(line)["step"] for line in
           paths.read_text(f"{model_dir}/metrics.jsonl").splitlines()]
  assert steps[-1] == 12 and 4 in steps

  # Export from the bucket to the bucket; evaluation from the bucket to the bucket.
  exported = run([sys.executable, "-m", "gecko.export", "--model", model_dir,
                  "--output", f"{BUCKET}/st"])
  assert exported.returncode == 0, exported.stderr[-3000:]
  for name in ("config.json", "model.safetensors", "modules.json", "README.md"):
    assert paths.exists(f"{BUCKET}/st/{name}"), name
  sts = tmp_path / "sts.jsonl"
  sts.write_text("".join(json.dumps(r) + "\n" for r in [
      {"sentence1": "the gecko", "sentence2": "the gecko climbs", "score": 4.5},
      {"sentence1": "a piano", "sentence2": "python code", "score": 0.5},
      {"sentence1": "the river", "sentence2": "the ocean river", "score": 3.0}]))
  evaluated = run([sys.executable, "-m", "gecko.eval", "--gin_file=gin/runs/eval.gin",
                   f"--gin.CHECKPOINT='{model_dir}/export'", f"--gin.OUTPUT_DIR='{BUCKET}/eval'",
                   "--gin.EVAL_TASKS=[@tasks.STSTask()]", "--gin.tasks.STSTask.name='TinySTS'",
                   f"--gin.tasks.STSTask.path='{sts}'", "--gin.GECKO_FORMAT=True"])
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  assert "| TinySTS | cosine_spearman |" in paths.read_text(f"{BUCKET}/eval/results.md")
  assert paths.exists(f"{BUCKET}/eval/results.png")
  assert os.listdir(work) == []  # nothing landed under the working directory
