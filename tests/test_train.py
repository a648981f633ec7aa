"""The training entrypoint: gin CLI, kill-and-resume, two real processes, real MiniLM."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import (REPO, SHARED_DATA, TINY_RUN_GIN, assert_trees_close, cli_env, free_port,
                      read_metrics, run_cli)

from gecko.experiments import stages
from gecko.models import embedder

WORDS = ("gecko lizard wall climb tree forest river ocean mountain city music piano guitar "
         "code python java rust compiler kernel memory cache network packet router").split()
TINY_RUN = [f"--gin_file={f}" for f in TINY_RUN_GIN]


@pytest.fixture(scope="module")
def triples(tmp_path_factory):
  rng = np.random.default_rng(0)
  path = tmp_path_factory.mktemp("data") / "triples.jsonl"
  with open(path, "w") as f:
    for i in range(64):
      a, b, c = rng.choice(WORDS, 3, replace=False)
      f.write(json.dumps({"query": f"what about {a} {b}", "positive": f"{a} and {b} here {i}",
                          "negative": f"{c} is something else {i}"}) + "\n")
  return str(path)


def _train_cmd(model_dir, data, steps, *extra):
  return [sys.executable, "-m", "gecko.train", *TINY_RUN, f"--gin.MODEL_DIR='{model_dir}'",
          f"--gin.TRAIN_DATA='{data}'", f"--gin.TRAIN_STEPS={steps}", *extra]


def _exported(model_dir):
  return jax.device_get(embedder.load(os.path.join(model_dir, "export")).params)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, triples):
  model_dir = tmp_path_factory.mktemp("runs") / "full"
  result = run_cli(_train_cmd(model_dir, triples, 12))
  assert result.returncode == 0, result.stderr[-3000:]
  return model_dir


def test_run_writes_config_metrics_checkpoints_and_export(tiny_run):
  config = (tiny_run / "config.gin").read_text()
  assert "TRAIN_STEPS = 4" in config and "losses.GeckoLoss.same_tower_negatives = True" in config
  rows = read_metrics(tiny_run)
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  for key in ("loss", "loss/16", "loss/64", "accuracy/64", "learning_rate", "examples_per_second",
              "step_time", "grad_norm"):
    assert np.isfinite(rows[-1][key]), key
  assert [r["loss"] for r in rows] == sorted((r["loss"] for r in rows), reverse=True)
  assert sorted(os.listdir(tiny_run / "checkpoints")) == ["2", "3", "4"]  # keep 3
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tiny_run))
  assert (tiny_run / "export" / "gecko_model.json").exists()


@pytest.mark.slow
def test_sigkill_then_resume_reproduces_the_uninterrupted_run(tmp_path, triples, uninterrupted):
  model_dir = tmp_path / "killed"
  cmd = _train_cmd(model_dir, triples, 12)
  proc = subprocess.Popen(cmd, cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 900  # generous: a loaded machine compiles slowly
  while time.time() < deadline and not (model_dir / "checkpoints" / "4").exists():
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  assert (model_dir / "checkpoints" / "4").exists(), "no step-4 checkpoint within 900 s"
  assert proc.wait() == -signal.SIGKILL
  assert not (model_dir / "export").exists(), "the run finished before it could be killed"
  resumed = run_cli(cmd)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resuming from step" in resumed.stderr
  assert_trees_close(_exported(model_dir), _exported(uninterrupted), atol=1e-6)


@pytest.mark.slow
def test_two_processes_agree_with_one(tmp_path, triples, uninterrupted):
  model_dir = tmp_path / "two"
  port = free_port()
  procs = [subprocess.Popen(
      _train_cmd(model_dir, triples, 12, f"--coordinator_address=127.0.0.1:{port}",
                 "--num_processes=2", f"--process_id={i}"),
      cwd=REPO, env=cli_env(devices=4), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  rows = read_metrics(model_dir)
  single = read_metrics(uninterrupted)
  np.testing.assert_allclose([r["loss"] for r in rows], [r["loss"] for r in single], atol=1e-5)
  assert_trees_close(_exported(model_dir), _exported(uninterrupted), atol=1e-5)


def _metrics_steps(model_dir):
  return [r["step"] for r in read_metrics(model_dir)] if (model_dir / "metrics.jsonl").exists() else []


def _wait_for_step(procs, model_dir, step, timeout=900):
  deadline = time.time() + timeout
  while time.time() < deadline and all(p.poll() is None for p in procs):
    if any(s >= step for s in _metrics_steps(model_dir)):
      return
    time.sleep(0.05)
  raise AssertionError(f"no step {step} in {model_dir}/metrics.jsonl while the run lived")


@pytest.mark.slow
def test_sigterm_saves_the_step_it_reached_exits_0_and_resumes_exactly(tmp_path, triples,
                                                                        uninterrupted):
  """A spot VM's notice between checkpoint steps: that step is saved, the run exits 0
  with one line, and the resumed run equals an uninterrupted one."""
  model_dir = tmp_path / "preempted"
  cmd = _train_cmd(model_dir, triples, 12, "--gin.CHECKPOINT_EVERY=100")  # none due before 12
  proc = subprocess.Popen(cmd, cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  _wait_for_step([proc], model_dir, 3)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  saved = [int(n) for n in os.listdir(model_dir / "checkpoints")]
  assert len(saved) == 1 and 3 <= saved[0] < 12, saved
  assert f"preempted (SIGTERM); saved step {saved[0]} in {model_dir}" in err
  assert not (model_dir / "export").exists()
  resumed = run_cli(cmd)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"resuming from step {saved[0]}" in resumed.stderr
  assert_trees_close(_exported(model_dir), _exported(uninterrupted), atol=1e-6)


@pytest.mark.slow
def test_a_drivers_preempted_fine_tuning_ends_the_driver_before_anything_is_scored(
    tmp_path, triples):
  """SIGTERM during a driver's fine-tuning stage (`stages.FineTuning.run`): the step is
  saved, and the driver ends with one line and exit status 1 instead of going on to
  score checkpoints the run has not written."""
  model_dir, unused = tmp_path / "stage", tmp_path / "task_data_dir.gin"
  unused.write_text("TASK_DATA_DIR = None  # a stage binds it; this run reads TRAIN_DATA\n")
  gin_files = [*TINY_RUN_GIN, str(unused)]
  stage = (f"stages.FineTuning(gin_files={gin_files!r}, model_dir={str(model_dir)!r}, "
           "data_dir='unused', steps=12, batch_size=8, learning_rate=1e-3, "
           f"macros={{'TRAIN_DATA': {triples!r}}}).run()")
  proc = subprocess.Popen(
      [sys.executable, "-c", f"from gecko.experiments import stages\n{stage}\nprint('scored')"],
      cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  _wait_for_step([proc], model_dir, 3)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  saved = [int(n) for n in os.listdir(model_dir / "checkpoints")]
  assert proc.returncode == 1 and "scored" not in out, err[-3000:]
  assert len(saved) == 1 and 3 <= saved[0] < 12, saved
  assert (f"fine-tuning stopped at step {saved[0]} on SIGTERM (preemption), its checkpoint "
          f"saved in {model_dir}; nothing was scored. The same command resumes it.") in err
  assert "Traceback" not in err


@pytest.mark.slow
def test_a_run_stopped_early_keeps_the_whole_schedules_checkpoint(tmp_path, triples,
                                                                  uninterrupted):
  """A row scored at an earlier checkpoint (`stages.FineTuning(stop_at=4)`) trains the
  12-step schedule to step 4 alone: the same steps and learning rates as the whole
  run, its checkpoint and no export; the command without the stop resumes to its end."""
  stop = [a for a in stages.FineTuning(gin_files=(), model_dir="m", data_dir="d", steps=12,
                                       batch_size=8, learning_rate=1e-3, stop_at=4).args()
          if a.startswith("--gin.train.train.")]
  assert sorted(stop) == ["--gin.train.train.export=False", "--gin.train.train.train_steps=4"]
  model_dir = tmp_path / "stopped"
  cmd = _train_cmd(model_dir, triples, 12)
  stopped = run_cli(cmd + stop)
  assert stopped.returncode == 0, stopped.stderr[-3000:]
  assert (model_dir / "checkpoints" / "4").exists() and not (model_dir / "export").exists()
  rows, whole = read_metrics(model_dir), read_metrics(uninterrupted)
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  assert rows[-1]["learning_rate"] > 0  # a 4-step schedule would have decayed to 0
  for key in ("learning_rate", "loss"):
    np.testing.assert_allclose([r[key] for r in rows], [r[key] for r in whole[:4]], atol=1e-6)
  resumed = run_cli(cmd)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resuming from step 4" in resumed.stderr
  assert_trees_close(_exported(model_dir), _exported(uninterrupted), atol=1e-6)


@pytest.mark.slow
def test_sigterm_to_one_of_two_processes_stops_both_at_one_agreed_step(tmp_path, triples):
  """JAX's preemption service: the notice reaches one host; both save the same step."""
  model_dir = tmp_path / "two_preempted"
  port = free_port()
  procs = [subprocess.Popen(
      _train_cmd(model_dir, triples, 40, f"--coordinator_address=127.0.0.1:{port}",
                 "--num_processes=2", f"--process_id={i}", "--gin.CHECKPOINT_EVERY=100"),
      cwd=REPO, env=cli_env(devices=4), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
      text=True) for i in range(2)]
  _wait_for_step(procs, model_dir, 3)
  procs[1].send_signal(signal.SIGTERM)
  errors = [p.communicate(timeout=300)[1] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for e in errors]
  saved = [int(n) for n in os.listdir(model_dir / "checkpoints")]
  assert len(saved) == 1 and saved[0] < 40, saved
  assert all(f"saved step {saved[0]}" in e for e in errors), [e[-500:] for e in errors]


@pytest.mark.parametrize("extra, message", [
    ([], "TRAIN_STEPS"),
    (["--gin.TRAIN_STEPS=3", "--gin.losses.GeckoLoss.temprature=0.1"], "temprature"),
    (["--gin.TRAIN_STEPS=3", "--gin_file=gin/runs/nope.gin"], "nope.gin"),
])
def test_configuration_mistakes_exit_with_one_line(tmp_path, triples, extra, message):
  cmd = [sys.executable, "-m", "gecko.train", *TINY_RUN, f"--gin.MODEL_DIR='{tmp_path}'",
         f"--gin.TRAIN_DATA='{triples}'", *extra]
  result = run_cli(cmd, timeout=120)
  assert result.returncode == 2
  lines = [line for line in result.stderr.splitlines() if "configuration error" in line]
  assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
  assert "Traceback" not in result.stderr


def _assert_losses_add_up(run, *, distillation_weight):
  """Each of the run's 2 logged losses is, per dim, the contrastive term plus the
  weighted distillation term (which is on)."""
  rows = read_metrics(run)
  assert len(rows) == 2
  for row in rows:
    assert row["distillation/16"] > 0 and row["distillation/64"] > 0
    want = sum(row[f"loss/{d}"] + distillation_weight * row[f"distillation/{d}"]
               for d in (16, 64))
    assert row["loss"] == pytest.approx(want, rel=1e-5)


def test_a_run_distils_the_teachers_scores_beside_the_contrastive_loss(tmp_path, capsys):
  """Triples with a teacher's scores, MarginMSE bound from gin: each logged loss is the
  contrastive and the distillation term of both dims, weighted; data without the scores
  is refused before anything is compiled."""
  from gecko import train
  from gecko.data import jsonl
  data = tmp_path / "scored.jsonl"
  jsonl.write(data, ({"query": f"what about topic {i}", "positive": f"topic {i} is here",
                      "negative": f"something else {i}", "teacher_positive": -5.0 - i % 3,
                      "teacher_negative": -30.0 + i % 5} for i in range(16)))
  args = TINY_RUN + [f"--gin.MODEL_DIR='{tmp_path / 'run'}'", "--gin.TRAIN_STEPS=2",
                     "--gin.losses.GeckoLoss.distillation='margin_mse'",
                     "--gin.losses.GeckoLoss.distillation_weight=0.5",
                     "--gin.losses.GeckoLoss.teacher_scale=0.02"]
  assert train.main(args + [f"--gin.TRAIN_DATA='{data}'"]) == 0
  _assert_losses_add_up(tmp_path / "run", distillation_weight=0.5)
  assert "losses.GeckoLoss.distillation = 'margin_mse'" in (
      tmp_path / "run" / "config.gin").read_text()
  plain = tmp_path / "plain.jsonl"
  jsonl.write(plain, ({k: v for k, v in r.items() if not k.startswith("teacher")}
                      for r in jsonl.read_objects(str(data), what="triples")))
  capsys.readouterr()
  assert train.main(args[:-4] + [f"--gin.MODEL_DIR='{tmp_path / 'run2'}'", "--gin.TRAIN_STEPS=2",
                                 "--gin.losses.GeckoLoss.distillation='margin_mse'",
                                 f"--gin.TRAIN_DATA='{plain}'"]) == 1
  assert ("GeckoLoss needs the model features ['teacher_positive', 'teacher_negative']"
          in capsys.readouterr().err)


def test_a_run_distils_the_teachers_ranking_of_every_candidate(tmp_path):
  """Records with 4 candidates each, listwise KL over them bound from gin: the candidate
  tower trains through gecko.train (GradCache on, so its rows are split with the
  batch's), and each logged loss is the contrastive and the KL term, weighted."""
  from gecko import train
  from gecko.data import jsonl
  data = tmp_path / "candidates.jsonl"
  jsonl.write(data, ({"query": f"what about topic {i}", "positive": f"topic {i} is here",
                      "candidates": [f"topic {i} is here", f"topic {i + 1}", "unrelated",
                                     f"more on {i}"],
                      "teacher_candidates": [-3.0, -9.0 - i % 4, -30.0, -12.0]}
                     for i in range(16)))
  args = TINY_RUN + [f"--gin.MODEL_DIR='{tmp_path / 'run'}'", "--gin.TRAIN_STEPS=2",
                     f"--gin.TRAIN_DATA='{data}'",
                     "--gin.losses.GeckoLoss.hard_negatives=False",
                     "--gin.losses.GeckoLoss.distillation='listwise_kl'",
                     "--gin.losses.GeckoLoss.distill_over='candidates'",
                     "--gin.losses.GeckoLoss.teacher_standardize=True",
                     "--gin.losses.GeckoLoss.distillation_weight=0.5",
                     "--gin.train.train.grad_cache_chunk=8"]
  assert train.main(args) == 0
  _assert_losses_add_up(tmp_path / "run", distillation_weight=0.5)


def test_help_explains_the_flags():
  result = run_cli([sys.executable, "-m", "gecko.train", "--help"], timeout=120)
  assert result.returncode == 0
  for flag in ("--gin_file", "--gin.", "--coordinator_address", "config.gin"):
    assert flag in result.stdout


def test_a_batch_that_does_not_split_over_the_devices_is_named_and_the_run_exits(tmp_path,
                                                                                  triples):
  result = run_cli(_train_cmd(tmp_path, triples, 2, "--gin.BATCH_SIZE=6"), devices=8,
                   timeout=180)
  assert result.returncode == 1
  assert "batch_size=6 must be divisible by data x fsdp = 8" in result.stderr


def test_too_many_non_finite_steps_abort_and_write_no_checkpoint(tmp_path, triples, capsys):
  import gin

  from gecko import train
  from gecko.models import bert
  from gecko.models.dual_encoder import DualEncoder
  gin.clear_config()
  gin.add_config_file_search_path(str(REPO / "gecko"))  # tiny.gin includes gin/models/...
  gin.parse_config_files_and_bindings([str(REPO / "gin/models/tiny.gin")], [])
  backbone = bert.BertConfig(**{f: gin.query_parameter(f"bert.BertConfig.{f}")
                                for f in ("hidden_size", "num_layers", "num_heads", "mlp_dim",
                                          "max_length", "dropout_rate")})
  gin.clear_config()
  module = DualEncoder(backbone=backbone, embed_dim=64, dims=(16, 64))
  params = embedder.init_params(module)
  params["encoder"]["layer_0"]["mlp"]["output"]["bias"] = np.full((32,), np.nan, np.float32)
  tokenizer = embedder.load("all-MiniLM-L6-v2").tokenizer
  bad = embedder.save(embedder.Embedder(module=module, params=params, tokenizer=tokenizer),
                      tmp_path / "bad_model")
  cmd = _train_cmd(tmp_path / "run", triples, 20, f"--gin.INIT_FROM='{bad}'",
                   "--gin.CHECKPOINT_EVERY=1", "--gin.train.train.max_nonfinite_steps=3")
  assert train.main(cmd[3:]) == 1
  assert "3 consecutive non-finite steps" in capsys.readouterr().err
  assert os.listdir(tmp_path / "run" / "checkpoints") == []


@pytest.mark.slow
def test_minilm_fine_tunes_on_the_stsb_seqio_task_with_falling_loss(tmp_path):
  """The gecko_stsb task read from the STS-B directory given as TASK_DATA_DIR (gin)."""
  import gin

  from gecko import gin_flags, train
  if not (SHARED_DATA / "stsb" / "sts-train.csv").exists():
    pytest.skip(f"STS-B not available under {SHARED_DATA} (a fresh clone has no ../shared/data)")
  # Gecko's head on MiniLM: a new (random) 768-d projection with Matryoshka 256/768.
  bindings = [f"MODEL_DIR = '{tmp_path}'", f"TASK_DATA_DIR = '{SHARED_DATA}'",
              "MIXTURE_OR_TASK_NAME = 'gecko_stsb'", "TRAIN_STEPS = 40", "BATCH_SIZE = 16",
              "QUERY_LENGTH = 24", "PASSAGE_LENGTH = 24", "EMBED_DIM = 768",
              "MATRYOSHKA_DIMS = (256, 768)", "TEMPERATURE = 0.02", "LEARNING_RATE = 5e-5",
              "WARMUP_STEPS = 5", "MESH_AXES = {'data': 1}", "CHECKPOINT_EVERY = 40",
              "train.train.log_every = 10", "seqio_batches.SeqioBatches.shuffle_buffer = 256"]
  gin.clear_config()
  try:
    gin_flags.configure(["gin/models/minilm_l6.gin", "gin/runs/finetune.gin",
                         "gin/data/seqio.gin"], bindings)
    gin_flags.call_configured(train.train)
  finally:
    gin.clear_config()
  assert "MIXTURE_OR_TASK_NAME = 'gecko_stsb'" in (tmp_path / "config.gin").read_text()
  rows = read_metrics(tmp_path)
  assert [r["step"] for r in rows] == list(range(10, 41, 10))
  assert all(r["finite"] == 1.0 for r in rows)
  losses = [r["loss"] for r in rows]  # batch-to-batch noise is large: compare windows
  assert np.mean(losses[1:]) < 0.8 * losses[0], losses


def test_periodic_evaluation_logs_scores_to_the_run(tmp_path, triples):
  import functools

  from gecko import eval as eval_lib
  from gecko import train
  from gecko.data import pairs as pair_data
  from gecko.evaluation.tasks import STSTask
  from gecko.models import bert
  from gecko.models.dual_encoder import DualEncoder
  from gecko.training import optimizers
  from gecko.training.losses import GeckoLoss
  (tmp_path / "sts").mkdir()
  (tmp_path / "sts" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
      {"sentence1": "gecko wall", "sentence2": "a gecko on a wall", "score": 4.5},
      {"sentence1": "piano music", "sentence2": "kernel memory", "score": 0.5},
      {"sentence1": "python code", "sentence2": "rust code", "score": 3.0}]))
  model = DualEncoder(backbone=bert.BertConfig(hidden_size=32, num_layers=1, num_heads=2,
                                               mlp_dim=64, max_length=32, dropout_rate=0.0),
                      embed_dim=16, dims=(8, 16))
  eval_fn = functools.partial(eval_lib.evaluate, gecko_format=True,
                              tasks=[STSTask(name="TinySTS", path=str(tmp_path / "sts"))])
  train.train(model=model, loss=GeckoLoss(dims=(8, 16)),
              optimizer=optimizers.AdamW(learning_rate=1e-3, total_steps=4),
              data_fn=functools.partial(pair_data.PairBatches, path=triples, batch_size=8,
                                        query_length=16, passage_length=16),
              model_dir=str(tmp_path / "run"), train_steps=4, log_every=2,
              mesh_axes={"data": 1}, eval_every=2, eval_fn=eval_fn)
  rows = read_metrics(tmp_path / "run")
  evals = [r for r in rows if "eval/TinySTS/16" in r]
  assert [r["step"] for r in evals] == [2, 4]
  assert all(-1 <= r["eval/TinySTS/8"] <= 1 for r in evals)
  assert (tmp_path / "run" / "eval" / "4" / "results.md").exists()


def test_a_run_without_a_data_file_names_the_two_data_files(tmp_path):
  """A run is model + run + data: leaving the data out is a configuration error that
  says which files provide it."""
  from gecko import gin_flags, train
  gin_flags.configure(["gin/models/tiny.gin", "gin/runs/finetune.gin"],
                      [f"MODEL_DIR = '{tmp_path}'", "TRAIN_STEPS = 1"])
  with pytest.raises(gin_flags.ConfigError, match=r"\['data_fn'\]: add a data file.*"
                     r"gin/data/seqio.gin.*gin/data/jsonl.gin"):
    gin_flags.call_configured(train.train)


def test_importing_the_entry_points_starts_no_jax_backend():
  """`jax.distributed.initialize` must come before any backend starts: an import that
  creates an array (a module-level constant) breaks every multi-host run."""
  code = ("import gecko.train, gecko.eval, gecko.compile_step, gecko.export, gecko.encode\n"
          "from jax._src import xla_bridge\n"
          "assert not xla_bridge.backends_are_initialized(), 'a backend started at import'\n")
  result = run_cli([sys.executable, "-c", code], timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]


def test_the_preemption_service_attribute_gecko_reads_still_exists():
  """gecko.training.preemption reads jax._src.distributed.global_state's
  preemption_sync_manager (no public accessor): fail loudly if JAX renames it."""
  from jax._src import distributed
  assert hasattr(distributed.global_state, "preemption_sync_manager")
