"""When things go wrong (docs/troubleshooting.md): every command line with bad input or a fault says what
is wrong, where, and how to fix it, and loses nothing. One test per defect; the
messages are asserted."""

import json
import math
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import (REPO, SHARED_DATA, TINY_RUN_GIN, assert_trees_close, cli_env,
                      read_metrics, tiny_run_args, write_triples)

from gecko import gin_flags
from gecko.data import jsonl
from gecko.fret.config import FretConfig
from gecko.fret.llm import OpenAICompatible



@pytest.fixture(scope="module")
def triples(tmp_path_factory):
  return str(write_triples(tmp_path_factory.mktemp("data") / "triples.jsonl"))


def _configure(triples, tmp_path, *extra):
  gin_flags.configure(TINY_RUN_GIN, [f"MODEL_DIR = '{tmp_path}'", f"TRAIN_DATA = '{triples}'",
                            "TRAIN_STEPS = 2", *extra])


# 1. A validator's own message, not "nothing configures gecko.train.train".
@pytest.mark.parametrize("binding, message", [
    ("LEARNING_RATE = -1e-3", "AdamW needs learning_rate > 0"),
    ("TRAIN_STEPS = 0", r"AdamW needs .*total_steps > 0.*got 0.001, 0"),
    ("TEMPERATURE = 0", "GeckoLoss.temperature must be > 0, got 0"),
    ("optimizers.AdamW.decay = 'exp'", "AdamW.decay='exp'; choose 'linear'"),
])
def test_validation_errors_keep_their_own_message(triples, tmp_path, binding, message):
  from gecko import train
  _configure(triples, tmp_path, binding)
  with pytest.raises(gin_flags.ConfigError, match=message) as error:
    gin_flags.call_configured(train.train)
  assert "nothing configures" not in str(error.value)


# 5. A misspelled macro is an error with the closest names; 9. so is an unquoted string.
def test_a_misspelled_macro_names_the_closest_known_ones(triples, tmp_path):
  with pytest.raises(gin_flags.ConfigError,
                     match="--gin.LERNING_RATE: no loaded gin file declares or uses the macro "
                           "LERNING_RATE; did you mean LEARNING_RATE"):
    _configure(triples, tmp_path, "LERNING_RATE = 0.1")
  _configure(triples, tmp_path, "MIXTURE_OR_TASK_NAME = 'x'")  # declared, unused here: fine


def test_an_unquoted_gin_string_says_how_to_quote_it(triples, tmp_path):
  with pytest.raises(gin_flags.ConfigError,
                     match=r"--gin.MODEL_DIR=/tmp/x .*a string needs inner quotes: "
                           r"--gin.MODEL_DIR=\"'/tmp/x'\""):
    gin_flags.configure(TINY_RUN_GIN, [f"TRAIN_DATA = '{triples}'", "MODEL_DIR = /tmp/x"])


# 6. Non-finite hyper-parameters are refused; metrics.jsonl is valid JSON.
def test_non_finite_hyper_parameters_are_refused():
  from gecko.training.losses import GeckoLoss
  from gecko.training.optimizers import AdamW
  with pytest.raises(ValueError, match="AdamW needs finite numbers.*learning_rate"):
    AdamW(learning_rate=math.nan)
  with pytest.raises(ValueError, match="AdamW needs finite numbers.*weight_decay"):
    AdamW(weight_decay=math.inf)
  with pytest.raises(ValueError, match="temperature must be > 0, got nan"):
    GeckoLoss(temperature=math.nan)
  with pytest.raises(ValueError, match="dim_weights must be finite"):
    GeckoLoss(dims=(8, 16), dim_weights=(1.0, math.nan))


def test_metrics_jsonl_writes_non_finite_values_as_null(tmp_path):
  from gecko import train

  def refuse(constant):
    raise ValueError(f"not JSON: {constant}")
  log = train._MetricsLog(str(tmp_path))
  log(1, {"loss": math.nan, "grad_norm": math.inf, "accuracy/16": 0.5})
  log.close()
  (row,) = read_metrics(tmp_path, parse_constant=refuse)
  assert row == {"step": 1, "loss": None, "grad_norm": None, "accuracy/16": 0.5}


# 2. A corrupt latest checkpoint is set aside and the run resumes from the one before.
def _corrupt(step_dir, how):
  if how == "truncated array file":
    for data in (step_dir / "state").rglob("d/*"):
      data.write_bytes(data.read_bytes()[:10])
  elif how == "empty metadata":
    (step_dir / "state" / "_METADATA").write_text("")
    return step_dir / "state" / "_METADATA"
  else:
    (step_dir / "meta" / "metadata").write_text('{"step": 8, "seed"')
    return step_dir / "meta" / "metadata"


@pytest.mark.slow
def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(triples, tmp_path, capfd):
  from gecko import train
  from gecko.models import embedder
  args = [f"--gin_file={f}" for f in TINY_RUN_GIN] + [f"--gin.TRAIN_DATA='{triples}'",
                                             "--gin.TRAIN_STEPS=8"]
  done = tmp_path / "done"
  assert train.main(args + [f"--gin.MODEL_DIR='{done}'"]) == 0
  expected = embedder.load(str(done / "export")).params
  assert sorted(p.name for p in (done / "checkpoints").iterdir()) == ["4", "6", "8"]
  capfd.readouterr()
  for n, how in enumerate(("truncated array file", "empty metadata", "garbled JSON")):
    run = tmp_path / f"run{n}"
    shutil.copytree(done, run)
    shutil.rmtree(run / "export")
    bad_file = _corrupt(run / "checkpoints" / "8", how)
    assert train.main(args + [f"--gin.MODEL_DIR='{run}'"]) == 0, how
    err = capfd.readouterr().err
    assert "checkpoint step 8 cannot be restored" in err, (how, err[-2000:])
    assert "resuming from step 6" in err and "Traceback" not in err, (how, err[-3000:])
    if bad_file is not None:
      assert f"{bad_file} is not valid JSON" in err
    else:
      # the truncated data file and the array read from it, whichever tensorstore read first
      assert re.search(r"checkpoints/8/state/d/\w+ cannot be read \(OUT_OF_RANGE: .*\), so "
                       r"the array \S+ cannot be restored", err), err[-2000:]
    assert (run / "checkpoints_unreadable" / "8" / "state").is_dir()  # kept aside
    assert_trees_close(embedder.load(str(run / "export")).params, expected, atol=0)

  # No checkpoint restores: one clear line, exit 1, and nothing is started over.
  run = tmp_path / "run0"
  for step in ("6", "8"):
    _corrupt(run / "checkpoints" / step, "garbled JSON")
  _corrupt(run / "checkpoints" / "4", "empty metadata")
  assert train.main(args + [f"--gin.MODEL_DIR='{run}'"]) == 1
  err = capfd.readouterr().err
  assert "error: no checkpoint under" in err and "checkpoints_unreadable" in err
  assert train.main(args + [f"--gin.MODEL_DIR='{run}'"]) == 1  # still refuses to start over


# 3. FRet against a dead server stops in seconds with one line naming the URL.
def test_fret_against_a_dead_server_exits_at_once_naming_the_url(tmp_path):
  corpus = tmp_path / "p.jsonl"
  jsonl.write(corpus, ({"id": str(i), "text": f"passage {i}"} for i in range(4)))
  command = [sys.executable, "-m", "gecko.fret", "--gin_file=gin/runs/fret.gin",
             "--gin_file=gin/overlays/fret_server.gin",
             "--gin.LLM_BASE_URL='http://127.0.0.1:9/v1'", "--gin.LLM_MODEL='m'",
             f"--gin.CORPUS='{corpus}'", f"--gin.OUTPUT_DIR='{tmp_path / 'out'}'",
             "--gin.NUM_NEIGHBORS=2", "--gin.RANKING='rc'"]
  start = time.perf_counter()
  result = subprocess.run(command, cwd=REPO, env=cli_env(1), capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 1 and time.perf_counter() - start < 60
  lines = [line for line in result.stderr.splitlines() if "error:" in line]
  assert len(lines) == 1 and "cannot reach the LLM server at http://127.0.0.1:9/v1" in lines[0]
  keyless = subprocess.run(command + ["--gin.API_KEY_ENV='GECKO_NO_SUCH_KEY'"], cwd=REPO,
                           env=cli_env(1), capture_output=True, text=True, timeout=120)
  assert keyless.returncode == 1 and "GECKO_NO_SUCH_KEY (api_key_env) is not set" in keyless.stderr


def _dies_after_check(tmp_path):
  """A real OpenAI-compatible backend on a real llama.cpp server that answers the run's
  check and is killed right after it: a server gone mid-run. The kill's timing is the
  one thing arranged; every call after it is a real HTTP call to a dead port."""
  from conftest import start_llama_server

  from gecko.fret import llm
  proc, url = start_llama_server(tmp_path)

  class DiesAfterCheck(llm.OpenAICompatible):
    def check(self):
      super().check()  # answered by the live server
      proc.kill()
      proc.wait(timeout=30)
  return DiesAfterCheck(base_url=url, model="smollm2", backoff=0.01, max_retries=1)


def test_fret_stops_when_the_first_calls_all_fail_and_when_nothing_was_written(tmp_path):
  from gecko.fret import pipeline
  from gecko.fret.llm import LLMError

  corpus = tmp_path / "p.jsonl"
  jsonl.write(corpus, ({"id": str(i), "text": f"passage number {i}"} for i in range(40)))
  with pytest.raises(LLMError, match=r"the first 8 passages' LLM calls all failed.*127\.0\.0\.1"):
    pipeline.run(FretConfig(corpus=str(corpus), output_dir=str(tmp_path / "out"),
                            num_neighbors=2, ranking="rc"), llm=_dies_after_check(tmp_path))
  with pytest.raises(pipeline.NoRecordsError, match="no FRet record was written: 3 passages"):
    pipeline.run(FretConfig(corpus=str(corpus), output_dir=str(tmp_path / "out"),
                            num_neighbors=2, num_seeds=3, ranking="rc"),
                 llm=_dies_after_check(tmp_path))


# 4. Counts that would mean "all" by accident are refused up front.
@pytest.mark.parametrize("kwargs, message", [
    ({"num_seeds": 0}, "num_seeds must be an int >= 1 or None"),
    ({"num_seeds": -1}, "num_seeds must be an int >= 1 or None"),
    ({"num_neighbors": 1}, "num_neighbors must be an int >= 2"),
    ({"shard_size": 0}, "shard_size must be an int >= 1"),
    ({"negative_window": (0, 5)}, r"negative_window must be \(first, last\) ranks with 1 <= first"),
    ({"negative_window": (9, 5)}, r"negative_window must be .* got \(9, 5\)"),
    ({"negative_window": (1, 2, 3)}, r"negative_window must be .* got \(1, 2, 3\)"),
    ({"negative_max_ratio": 0.0}, r"negative_max_ratio must be in \(0, 1\], got 0.0"),
    ({"min_spread": -0.1}, r"min_spread must be a cosine difference in \[0, 2\) or None"),
])
def test_fret_counts_are_checked_before_any_work(tmp_path, kwargs, message):
  from gecko.fret import pipeline
  shard_size = kwargs.pop("shard_size", 1000)  # the writer's; the rest are FretConfig's
  with pytest.raises(ValueError, match=message):
    pipeline.run(FretConfig(corpus=str(tmp_path / "missing.jsonl"), output_dir=str(tmp_path),
                            **kwargs), llm=OpenAICompatible(base_url="http://127.0.0.1:9/v1",
                                                            model="never-called"),
                 shard_size=shard_size)


@pytest.mark.parametrize("flags, message", [
    (["--seeds", "0"], "argument --seeds: must be >= 1, got 0"),
    (["--steps", "-1"], "argument --steps: must be >= 1, got -1"),
    (["--neighbors", "1"], "argument --neighbors: must be >= 2, got 1"),
    (["--learning_rate", "nan"], "argument --learning_rate: must be a finite number > 0"),
])
def test_demo_counts_are_checked_before_any_work(capsys, flags, message):
  from gecko.experiments import demo
  with pytest.raises(SystemExit) as exit_:
    demo.main(["--output_dir", "/nonexistent/never/made", *flags])
  assert exit_.value.code == 2 and message in capsys.readouterr().err


# 7. TFDS tasks never download unless asked to.
def test_a_missing_tfds_dataset_names_the_build_command(tmp_path):
  from gecko.data import sources
  load = sources.tfds_rows("snli:1.*.*", fields={"premise": "premise"})
  with pytest.raises(FileNotFoundError, match=rf"'snli:1.\*.\*' is not prepared in {tmp_path}: "
                     rf"prepare it once with `tfds build snli --data_dir={tmp_path}`.*"
                     "tfds_download=True"):
    load(sources.DataOptions(tfds_data_dir=str(tmp_path)), "train")
  assert not any(tmp_path.rglob("*.tfrecord*"))  # nothing was fetched


# 8. gecko.encode checks its output before encoding and leaves no temporary behind.
def _encode_cli(*args, cwd):
  return subprocess.run([sys.executable, "-m", "gecko.encode", *args], capture_output=True,
                        text=True, cwd=cwd, timeout=300, env=cli_env(1))


def test_encode_checks_the_output_path_first(tmp_path):
  (tmp_path / "in.txt").write_text("one\ntwo\n")
  (tmp_path / "a_file").write_text("")
  (tmp_path / "a_dir.npy").mkdir()
  for output, message in (("emb.txt", "must end in .npy"),
                          ("a_dir.npy", "is a directory"),
                          ("a_file/emb.npy", "cannot create its folder")):
    # A model that does not exist: the output is checked before the model is even loaded.
    result = _encode_cli("--model", str(tmp_path / "no_model"), "--input", "in.txt",
                         "--output", output, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a_dir.npy", "a_file", "in.txt"]


# 9. Errors name their place.
def test_invalid_utf8_in_encode_input_names_the_line(tmp_path):
  from gecko.encode import read_texts
  (tmp_path / "in.txt").write_bytes(b"fine\nbad \xff byte\n")
  with pytest.raises(ValueError, match=r"in.txt:2: not valid UTF-8"):
    read_texts(str(tmp_path / "in.txt"))
  (tmp_path / "in.jsonl").write_bytes(b'{"text": "fine"}\n{"text": "bad \xff"}\n')
  with pytest.raises(ValueError, match=r"in.jsonl:2: not valid UTF-8"):
    read_texts(str(tmp_path / "in.jsonl"))


def test_training_data_errors_name_file_and_line(tmp_path):
  from gecko.data.pairs import PairBatches
  from gecko.models import embedder
  tokenizer = embedder.load("all-MiniLM-L6-v2").tokenizer
  good = {"query": "q", "positive": "p"}
  for lines, message in (
      ([good, ["a", "list"], good], r"bad.jsonl:2: expected a JSON object, got list"),
      ([good, good, {"query": "q"}], r"bad.jsonl:3: needs a string 'positive'")):
    (tmp_path / "bad.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(ValueError, match=message):
      PairBatches(path=str(tmp_path / "bad.jsonl"), tokenizer=tokenizer, batch_size=1)


def test_a_non_numeric_sts_score_names_file_and_line(tmp_path):
  from gecko.evaluation import datasets
  (tmp_path / "test.jsonl").write_text(
      '{"sentence1": "a", "sentence2": "b", "score": 1}\n\n'
      '{"sentence1": "a", "sentence2": "c", "score": "high"}\n')
  with pytest.raises(ValueError, match=r"test.jsonl:3: the score 'high' is not a number"):
    datasets.load_sts(str(tmp_path), split="test")


def _sts_dir(root, pairs):
  root.mkdir()
  jsonl.write(root / "test.jsonl", ({"sentence1": a, "sentence2": b, "score": s}
                                    for a, b, s in pairs))
  return str(root)


def test_one_failing_task_does_not_lose_the_others(tmp_path):
  from gecko import eval as eval_lib
  from gecko.evaluation import tasks
  good = _sts_dir(tmp_path / "good", [("a cat", "a kitten", 4.5), ("a cat", "a car", 0.5),
                                      ("rain", "water", 3.0)])
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "test.jsonl").write_text('{"sentence1": "a"}\n')
  with pytest.raises(eval_lib.EvaluationError, match=r"1 of 3 tasks failed \(Broken: "
                     r"ValueError: .*test.jsonl:1: lacks \['sentence2', 'score'\]"):
    eval_lib.evaluate(checkpoint="all-MiniLM-L6-v2", output_dir=str(tmp_path / "out"), tasks=[
        tasks.STSTask(name="First", path=good), tasks.STSTask(name="Broken", path=str(bad)),
        tasks.STSTask(name="Last", path=good)])
  report = (tmp_path / "out" / "results.md").read_text()
  assert "| First |" in report and "| Last |" in report and "- Broken failed:" in report
  assert (tmp_path / "out" / "results" / "all-MiniLM-L6-v2" / "Last.json").exists()


# 10. Bad data is said where the user looks.
def test_dropped_qrels_are_said_on_stderr_and_in_the_report(tmp_path, capsys):
  from gecko import eval as eval_lib
  from gecko.evaluation import tasks
  beir = tmp_path / "beir"
  jsonl.write_beir(beir, corpus=[{"id": f"d{i}", "text": f"document {i}"} for i in range(3)],
                   queries=[{"id": "q0", "text": "document 0"}, {"id": "q1", "text": "x"}],
                   qrels={"test": [("q0", "d0"), ("q1", "d9")]})
  eval_lib.evaluate(checkpoint="all-MiniLM-L6-v2", output_dir=str(tmp_path / "out"),
                    tasks=[tasks.RetrievalTask(name="R", path=str(beir))])
  err = capsys.readouterr().err
  assert "warning: R: 1 qrels unknown document dropped (not scored)" in err
  assert "- R: 1 qrels unknown document dropped" in (tmp_path / "out" / "results.md").read_text()


def test_empty_training_texts_warn_and_all_empty_ones_stop(capsys):
  from gecko.data.pairs import PairBatches
  from gecko.models import embedder
  tokenizer = embedder.load("all-MiniLM-L6-v2").tokenizer
  records = [{"query": "q", "positive": "p"}, {"query": " ", "positive": "p"}]
  PairBatches(records=records, tokenizer=tokenizer, batch_size=2)
  assert ("warning: 1 of 2 training records have an empty 'query' (first: records[1])"
          in capsys.readouterr().err)
  with pytest.raises(ValueError, match=r"every record's 'positive' is empty \(first: records"):
    PairBatches(records=[{"query": "q", "positive": ""}] * 2, tokenizer=tokenizer, batch_size=2)


@pytest.mark.skipif(not (SHARED_DATA / "stsb").exists(),
                    reason=f"STS-B not under {SHARED_DATA} (a fresh clone has no ../shared/data)")
def test_the_shared_sts_file_still_loads():
  from gecko.evaluation import datasets
  data = datasets.load_sts(str(SHARED_DATA / "stsb"), split="test")
  assert len(data.scores) > 1000 and all(np.isfinite(data.scores))


# A run folder protects itself: one run at a time, and a resume whose settings would
# change what its checkpoints mean is refused before anything is moved or written.
@pytest.fixture(scope="module")
def trained(tiny_run, tmp_path_factory):
  """A copy of the session's tiny run (4 steps), and its command line."""
  run = tmp_path_factory.mktemp("runs") / "trained"
  shutil.copytree(tiny_run, run)
  return run, tiny_run_args(tiny_run, model_dir=run)


def _listing(run):
  return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.name != ".lock")


def test_a_second_run_on_a_busy_model_dir_stops_at_once(trained, capsys):
  from gecko import train
  from gecko.data import paths
  run, args = trained
  before = _listing(run)
  with paths.locked(run, what="MODEL_DIR"):  # a run under way (the lock is the OS's flock)
    assert train.main(args + ["--gin.TRAIN_STEPS=8"]) == 1
  err = capsys.readouterr().err
  assert f"MODEL_DIR '{run}' is in use by pid" in err and "another folder" in err
  assert _listing(run) == before


@pytest.mark.parametrize("change, message", [
    (["--gin.TRAIN_STEPS=3"], r"is at step 4, past TRAIN_STEPS=3.*Raise TRAIN_STEPS above 4"),
    (["--gin.TRAIN_STEPS=8", "--gin.BATCH_SIZE=16"],
     r"trained with batch size 8, and this run's is 16.*BATCH_SIZE=8"),
    (["--gin.TRAIN_STEPS=8", "--gin.EMBED_DIM=32", "--gin.MATRYOSHKA_DIMS=(16, 32)"],
     r"hold another model than this run's: .*\['projection'\].* -> \[(32, )?32\].*"
     r"Nothing was moved"),
    (["--gin.TRAIN_STEPS=8", "--gin.TEMPERATURE=0.1"],
     r"the loss changed since .* \(losses.GeckoLoss.temperature 0.05 -> 0.1\).*new MODEL_DIR"),
])
def test_a_resume_with_changed_settings_is_refused_and_loses_nothing(trained, capsys, change,
                                                                     message):
  from gecko import train
  run, args = trained
  before = {p: (run / p).read_bytes() for p in _listing(run) if (run / p).is_file()}
  assert train.main(args + change) == 1
  assert re.search(message, capsys.readouterr().err)
  after = {p: (run / p).read_bytes() for p in _listing(run) if (run / p).is_file()}
  assert after == before  # no checkpoint moved or pruned, config.gin not rewritten
  assert not (run / "checkpoints_unreadable").exists()
  assert train.main(args) == 0  # the original settings still resume


def test_a_second_fret_run_on_a_busy_output_dir_does_no_llm_work(tmp_path):
  from gecko.data import paths
  from gecko.fret import pipeline

  corpus = tmp_path / "p.jsonl"
  jsonl.write(corpus, ({"id": str(i), "text": f"passage number {i}"} for i in range(4)))
  out = tmp_path / "out"
  with paths.locked(out, what="OUTPUT_DIR"):
    # Any LLM call would fail on the dead server: the lock's error shows none was made.
    with pytest.raises(paths.FolderInUseError, match=f"OUTPUT_DIR '{out}' is in use by pid"):
      pipeline.run(FretConfig(corpus=str(corpus), output_dir=str(out), num_neighbors=2,
                              ranking="rc"), llm=_dies_after_check(tmp_path))
  assert sorted(p.name for p in out.iterdir()) == [".lock"]


def test_a_resume_with_another_learning_rate_goes_on_and_says_so(trained, tmp_path, capsys):
  from gecko import train
  run, args = trained
  copy = tmp_path / "copy"
  shutil.copytree(run, copy)
  args = [a for a in args if not a.startswith("--gin.MODEL_DIR")] + [f"--gin.MODEL_DIR='{copy}'"]
  assert train.main(args + ["--gin.TRAIN_STEPS=8", "--gin.LEARNING_RATE=0.002"]) == 0
  err = capsys.readouterr().err
  assert "settings changed since step 4: LEARNING_RATE 0.001 -> 0.002; " in err
  assert "TRAIN_STEPS 4 -> 8" in err and "optimizers.AdamW.learning_rate" not in err
  assert "resuming from step 4" in err and (copy / "checkpoints" / "8").exists()


def test_the_lock_of_a_killed_run_is_taken_over_with_a_line(tmp_path, capsys):
  import signal

  from gecko.data import paths
  run = tmp_path / "run"
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time\nfrom gecko.data import paths\n"
       f"with paths.locked({str(run)!r}, what='MODEL_DIR'):\n  print('held', flush=True)\n"
       "  time.sleep(600)"], cwd=REPO, stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == "held"
  with pytest.raises(paths.FolderInUseError, match=f"is in use by pid {holder.pid} on "):
    with paths.locked(run, what="MODEL_DIR"):
      pass
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  with paths.locked(run, what="MODEL_DIR"):
    assert f"took over the lock of MODEL_DIR '{run}' from pid {holder.pid} on " in (
        capsys.readouterr().err)
  with paths.locked(run, what="MODEL_DIR"):  # a clean end leaves nothing to take over
    assert "took over" not in capsys.readouterr().err


# Legal but suspicious input is said; input that would give a wrong result is refused.
def test_the_same_model_twice_in_a_soup_is_said(minilm, capsys):
  from gecko.models import averaging
  averaging.average([minilm, minilm])
  assert "models 0 and 1 of the soup have the same parameters" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["spearman", "pearson"])
def test_constant_gold_scores_are_refused_not_nan(name):
  from gecko.evaluation import metrics
  with pytest.raises(ValueError, match="every gold score is 3.0: .* undefined for constant"):
    getattr(metrics, name)([0.1, 0.5, 0.9], [3.0, 3.0, 3.0])
  assert 0.99 < getattr(metrics, name)([0.1, 0.5, 0.9], [1.0, 2.0, 3.0]) <= 1.0


def test_a_placeholder_other_than_text_in_a_prompt_is_refused(minilm):
  from gecko.encode import encode
  with pytest.raises(ValueError, match=r"has the placeholder\(s\) \{query\}; the only one"):
    encode(["a text"], model=minilm, prompt="task: search | query: {query}")
  plain, templated = encode(["a text"], model=minilm, prompt="query: "), encode(
      ["a text"], model=minilm, prompt="query: {text}")
  np.testing.assert_array_equal(plain, templated)


def test_fret_says_what_its_corpus_reader_skipped(tmp_path, capsys):
  from gecko.fret import pipeline
  corpus = tmp_path / "c.jsonl"
  corpus.write_text('{"id": "a", "text": "one"}\n{"id": "a", "text": "again"}\n'
                    '{"id": "b", "text": "  "}\n{"id": "c", "text": "two"}\n'
                    '{"id": "d", "text": "three"}\n')
  with pytest.raises(pipeline.NoRecordsError):
    pipeline.run(FretConfig(corpus=str(corpus), output_dir=str(tmp_path / "out"),
                            num_neighbors=2, num_seeds=9, ranking="rc"),
                 llm=_dies_after_check(tmp_path))
  err = capsys.readouterr().err
  assert f"gecko.fret: 1 passages repeat an earlier id in {corpus}; skipped." in err
  assert f"gecko.fret: 1 passages are empty in {corpus}; skipped." in err
  assert f"NUM_SEEDS=9 but {corpus} has 3 passages; every passage is a seed." in err
