"""The FRet domain-adaptation experiment end to end at toy size (real SmolLM2, real
MiniLM, real training and evaluation), so that the script behind EXPERIMENTS.md
cannot rot."""

import dataclasses
import functools
import json
import shlex
import shutil

import jax
import pytest
from conftest import read_metrics, report_table

from gecko.data import jsonl
from gecko.evaluation import datasets
from gecko.experiments import adaptation_data, domain_adaptation, human_dev, recipes, stages
from gecko.fret import records as fret_files

TINY = "+2steps+batch8"  # the budget of _run's rows, in their names
SEEDS = "+15seeds"  # _run's FRet seed passages, in the names of its FRet rows


def _run(corpus, out, variant, **overrides):
  args = dict(corpus_dir=str(corpus), output_dir=str(out), variant=variant, seed=0,
              passages=15, neighbors=3, steps=2, batch_size=8, learning_rate=2e-5,
              sts_dir=None)
  return domain_adaptation.run(**{**args, **overrides})


@pytest.mark.slow
def test_experiment_rows_and_report_end_to_end(beir_corpus, human_dirs, tmp_path, monkeypatch):
  # Training runs in this process (gecko.train.main), on the session's 8 fake devices.
  assert jax.device_count() == 8
  sts, banking = (str(d) for d in human_dirs)
  main = _run(beir_corpus, tmp_path, "main", sts_dir=sts, banking77_dir=banking)
  assert main["records"] >= 10 and main["train"] + main["dev"] == main["records"]
  for fmt in ("plain", "gecko"):  # both input formats, every task
    assert set(main[f"scores_{fmt}_format"]) == {
        f"{t}@{d}" for t in ("test", "dev", "STSBenchmark", "Banking77") for d in (256, 384)}
    assert set(main["per_query"][fmt]["384"]) == {"t0", "t1", "t2", "t3"}
  assert main["queries"]["median_pairwise_cosine"] is not None
  # The dev set is carved from the generated queries, relevant passage = FRet's label;
  # the corpus's own test queries never reach training or dev.
  records = {json.loads(line)["id"]: json.loads(line) for line in
             (tmp_path / "fret_rrf_lowest" / "fret-00000.jsonl").read_text().splitlines()}
  dev = datasets.load_beir(str(tmp_path / "dev" / "fret_rrf_lowest_15seeds"), split="test")
  assert dev.qrels and all(dev.qrels[q] == {records[q]["positive_id"]: 1} for q in dev.qrels)
  train = (tmp_path / "data" / "fret_rrf_lowest_15seeds" / "fret" / "fret-00000.jsonl").read_text()
  assert not set(dev.qrels) & {json.loads(line)["id"] for line in train.splitlines()}
  assert "what does" not in train
  # The run's LLM calls are kept as text; a fresh output dir holding only them (a clone
  # of a committed run) replays the same records without an LLM call.
  calls = tmp_path / adaptation_data.CALLS_DIR / "fret_rrf_lowest.jsonl"
  clone = tmp_path / "clone"
  (clone / adaptation_data.CALLS_DIR).mkdir(parents=True)
  shutil.copy(calls, clone / adaptation_data.CALLS_DIR)
  adaptation_data.write_corpus(str(beir_corpus), str(clone / "corpus.jsonl"))
  _, replayed, _ = adaptation_data.training_records(
      variant=adaptation_data.BASE, recipe=recipes.Recipe(), corpus_dir=str(beir_corpus),
      output_dir=str(clone), corpus_path=str(clone / "corpus.jsonl"), passages=15,
      neighbors=3, llm_url=None, llm_model=None)
  summary = json.loads((clone / "fret_rrf_lowest" / "summary.json").read_text())
  assert summary["llm_calls_this_run"] == 0 and summary["llm_cache_hits_this_run"] > 0
  assert sorted(json.dumps(r, sort_keys=True) for r in replayed) == sorted(
      json.dumps(r, sort_keys=True) for r in fret_files.read(str(tmp_path / "fret_rrf_lowest")))
  assert (clone / adaptation_data.CALLS_DIR / "fret_rrf_lowest.jsonl").read_text() == (
      calls.read_text())
  # Fewer seed passages: the same FRet directory, the records of the first 10 seeds
  # alone, as a data directory of their own.
  name, fewer, _ = adaptation_data.training_records(
      variant=adaptation_data.BASE, recipe=recipes.Recipe(), corpus_dir=str(beir_corpus),
      output_dir=str(tmp_path), corpus_path=str(tmp_path / "corpus.jsonl"), passages=10,
      neighbors=3, llm_url=None, llm_model=None)
  first = {p["id"] for p in jsonl.read_objects(tmp_path / "corpus.jsonl")[:10]}
  assert name == "fret_rrf_lowest_10seeds"
  assert fewer and {r["id"] for r in fewer} == set(records) & first

  # A ranking variant and the consistency filter relabel the same queries from the base
  # run's cache: no LLM call.
  recipe = recipes.Recipe(consistency_top_k=2)
  ql = _run(beir_corpus, tmp_path, "ql", recipe=recipe)
  summary = json.loads((tmp_path / "fret_ql_lowest_consistent2" / "summary.json").read_text())
  assert summary["llm_calls_this_run"] == 0 and ql["row"] == "ql+consistent2" + SEEDS + TINY
  assert ql["records"] + summary["consistency"]["dropped_this_run"] == main["records"]
  assert "--gin_file=gin/experiments/fret_adaptation.gin" in ql["command"]

  # Soft labels in the human mixture, which trains through SeqIO on FRet + STS-B +
  # Banking77 (links, not copies): the LLM's QL of each pair, MarginMSE beside Eq. 3 on
  # the FRet rows (the human rows carry NaN scores); every step finite.
  soft = _run(beir_corpus, tmp_path, "margin_mse", sts_dir=sts, banking77_dir=banking,
              recipe=recipes.Recipe(human=True, loss=(("teacher_scale", 0.05),)))
  assert soft["row"] == f"margin_mse{SEEDS}+human+teacher_scale0.05{TINY}"
  assert "human_mixture.gin" in soft["command"]
  assert "--gin.MIXTURE_OR_TASK_NAME='gecko_fret_ql_human'" in shlex.split(soft["command"])
  assert (tmp_path / "data" / "fret_rrf_lowest_15seeds+human" / "stsb").resolve() == human_dirs[0]
  steps = read_metrics(tmp_path / "runs" / f"{soft['row']}_seed0")
  assert steps[-1]["step"] == 2 and all(s["finite"] == 1.0 and s["distillation/384"] > 0
                                       for s in steps)
  # Over every candidate: triples with the N = 3 candidates of each training record,
  # through SeqIO (gecko_fret_candidates), beside the human tasks (tests/
  # test_seqio_candidates.py trains the task alone).
  mixed = _run(beir_corpus, tmp_path, "candidates_kl", recipe=recipes.Recipe(human=True),
               sts_dir=sts, banking77_dir=banking)
  assert {"--gin.MIXTURE_OR_TASK_NAME='gecko_fret_candidates_human'",
          "--gin.seqio_batches.SeqioBatches.candidates=3"} <= set(shlex.split(mixed["command"]))
  triples_file = tmp_path / "data" / "fret_rrf_lowest_15seeds" / "fret_candidates" / "candidates.jsonl"
  lines = jsonl.read_objects(triples_file)
  assert len(lines) == mixed["train"] and {len(t["candidates"]) for t in lines} == {3}
  steps = read_metrics(tmp_path / "runs" / f"{mixed['row']}_seed0")
  assert steps[-1]["step"] == 2 and all(
      s["finite"] == 1.0 and s["distillation/384"] > 0 for s in steps)

  # The in-domain reference, the corpus's own train queries FRet-shaped, with the human
  # dev split (r4 here): it trains on the other queries' 6 pairs (r0's two relevant
  # passages included), and the split is scored as a task of its own.
  apart = _run(beir_corpus, tmp_path, "in_domain", recipe=recipes.Recipe(human_dev=True))
  assert human_dev.split(str(beir_corpus)).dev == ("r4",)
  assert apart["row"] == "in_domain+trainpart" + TINY and apart["records"] == apart["train"] == 6
  assert {"human_dev@256", "human_dev@384"} <= set(apart["scores_plain_format"])

  # Claim-shaped queries: one task type, the corpus's own training queries (not the dev
  # split's r4) as the prompt's examples; trained on the seed, without same-tower terms.
  monkeypatch.setattr(adaptation_data, "FEW_SHOT", 3)
  claims = _run(beir_corpus, tmp_path, "seed_no_same_tower",
                recipe=recipes.Recipe(few_shot_type="fact checking"))
  assert claims["row"] == "seed_no_same_tower+fewshot-fact-checking" + SEEDS + TINY
  examples = jsonl.read_objects(tmp_path / "few_shot_fact_checking.jsonl")
  queries = {q["_id"]: q["text"] for q in jsonl.read_objects(beir_corpus / "queries.jsonl")}
  assert len(examples) == 3 and queries["r4"] not in {e["query"] for e in examples}
  assert {e["query"] for e in examples} <= {queries[f"r{i}"] for i in range(6)}
  made = jsonl.read_objects(tmp_path / "fret_fewshot-fact-checking_rrf_lowest" / "fret-00000.jsonl")
  assert made and {r["task_type"] for r in made} == {"fact checking"}
  assert "no_same_tower.gin" in claims["command"] and "fret_seed_positive.gin" in claims["command"]

  start = _run(beir_corpus, tmp_path, "start", sts_dir=sts, banking77_dir=banking)
  assert "test@384" in start["scores_plain_format"] and "per_query" in start

  # Model selection: a checkpoint every step. The first step's checkpoint scored as a row
  # of its own trains the 2-step schedule to step 1 alone; then each checkpoint is scored
  # on the human dev split alone, the run resuming from step 1; then step 1 alone.
  select = dict(recipe=recipes.Recipe(human_dev=True), checkpoint_every=1)
  at_1 = _run(beir_corpus, tmp_path, "main", eval_step=1, **select)
  assert at_1["row"] == f"main{SEEDS}{TINY}@1" and "dev_by_step" not in at_1
  run_dir = tmp_path / "runs" / f"main{SEEDS}{TINY}+ckpt1_seed0"
  assert [r["step"] for r in read_metrics(run_dir)] == [1] and not (run_dir / "export").exists()
  card = (tmp_path / "steps" / f"main{SEEDS}{TINY}+ckpt1_seed0" / "1" / "README.md").read_text()
  assert f"step 1 of main{SEEDS}{TINY}+ckpt1_seed0" in card  # what at_1 scored
  chosen = _run(beir_corpus, tmp_path, "main", dev_only=True, **select)
  assert chosen["row"] == "main" + SEEDS + TINY and "scores_plain_format" not in chosen
  assert set(chosen["dev_by_step"]) == {"1", "2"} and (run_dir / "export").exists()
  assert (tmp_path / "results" / "selection" / f"main{SEEDS}{TINY}_seed0.json").exists()
  assert at_1["scores_plain_format"]["human_dev@384"] == pytest.approx(
      chosen["dev_by_step"]["1"]["human_dev@384"], abs=1e-6)  # one checkpoint, scored twice
  only_1 = _run(beir_corpus, tmp_path, "main", dev_only=True, eval_step=1, **select)
  assert only_1["dev_by_step"] == {"1": chosen["dev_by_step"]["1"]}
  # One scored checkpoint keeps its dev scores per query (a row's and a setting's alike,
  # the step scored again for them); several do not.
  assert "human_dev_per_query" not in chosen
  dev_queries = {q["_id"] for q in jsonl.read_objects(tmp_path / "human_dev" / "queries.jsonl")}
  for scored in (at_1, only_1):
    per_query = scored["human_dev_per_query"]["384"]
    assert set(per_query) == dev_queries
    assert sum(per_query.values()) / len(per_query) == pytest.approx(
        at_1["scores_plain_format"]["human_dev@384"], abs=1e-6)
  # The start model's dev row, the dev table's paired baseline.
  start_dev = _run(beir_corpus, tmp_path, "start", dev_only=True,
                   recipe=recipes.Recipe(human_dev=True))
  assert set(start_dev["human_dev_per_query"]["384"]) == dev_queries
  assert "scores_plain_format" not in start_dev
  assert (tmp_path / "results" / "selection" / "start_seed0.json").exists()
  text = domain_adaptation.report(str(tmp_path), dev_versus=f"main{SEEDS}{TINY}@1")
  dev_table = text[text.index("On the human dev split, each run"):]
  assert f"| main{SEEDS}{TINY}@1 | 1 | {at_1['scores_plain_format']['human_dev@384']:.4f} |" \
      in dev_table and "| start | 1 |" in dev_table

  # A soup of two rows (one run each) is evaluated as a row of its own; it scores the
  # human dev split when its first row did.
  rows = f"main{SEEDS}{TINY},margin_mse{SEEDS}+human+teacher_scale0.05{TINY}"
  assert domain_adaptation.main([f"--corpus_dir={beir_corpus}", f"--output_dir={tmp_path}",
                                 "--soup", rows]) == 0
  soup = json.loads((tmp_path / "results" / f"soup({rows})_seed0.json").read_text())
  assert len(soup["soup_of"]) == 2 and f"2 runs of main{SEEDS}{TINY}, margin_mse+" in soup[
      "description"]
  dev_rows = f"in_domain+trainpart{TINY},main{SEEDS}{TINY}"
  assert domain_adaptation.main([f"--corpus_dir={beir_corpus}", f"--output_dir={tmp_path}",
                                 "--soup", dev_rows]) == 0
  dev_soup = json.loads((tmp_path / "results" / f"soup({dev_rows})_seed0.json").read_text())
  assert {"human_dev@256", "human_dev@384"} <= set(dev_soup["scores_plain_format"])
  assert "human_dev@384" not in soup["scores_plain_format"]
  text = domain_adaptation.report(str(tmp_path), versus="main" + SEEDS + TINY)
  table = report_table(text)
  assert list(table)[0] == "start" and {
      f"main{SEEDS}{TINY}", f"ql+consistent2{SEEDS}{TINY}", f"margin_mse{SEEDS}+human+teacher_scale0.05{TINY}",
      f"in_domain+trainpart{TINY}", f"soup({rows})", f"main{SEEDS}{TINY}@1"} <= set(table)
  assert table["main" + SEEDS + TINY][1] == "1"
  assert table["start"][2] == f"{start['scores_plain_format']['test@384']:.4f}"
  assert table["main" + SEEDS + TINY][12].count("[") == 1  # Δ plain @384 with its interval
  assert "Model selection" in text and f"| main{SEEDS}{TINY} | 0 | " in text
  assert (tmp_path / "results.md").read_text() == text
  assert (tmp_path / "results.png").exists()


def test_budgets_name_rows_and_choose_checkpoints():
  main, start = recipes.Recipe(), "start"
  assert main.row_name("main", recipes.Budget()) == "main"  # the default budget
  select = recipes.Budget(steps=300, learning_rate=5e-5, checkpoint_every=50)
  assert select.checkpoint_steps() == [50, 100, 150, 200, 250, 300]
  assert main.row_name("main", select) == "main+300steps+lr5e-05"
  chosen = recipes.Budget(steps=300, learning_rate=5e-5, checkpoint_every=50, eval_step=150)
  assert main.row_name("main", chosen) == "main+300steps+lr5e-05@150"
  assert main.row_name("main", recipes.Budget(steps=300, checkpoint_every=50,
                                              eval_step=300)) == "main+300steps"  # the last
  assert main.row_name(start, chosen) == "start"  # not trained
  assert select.scored_steps() == select.checkpoint_steps() and chosen.scored_steps() == [150]
  # The chosen row's run trains the 300-step schedule to step 150 and stops: the macros
  # keep the schedule (TRAIN_STEPS, WARMUP_STEPS), train.train stops and exports nothing.
  stops = domain_adaptation.fine_tuning(
      variant=recipes.VARIANTS["main"], recipe=main, model_dir="m", data_dir="d",
      budget=chosen, seed=0).bindings()
  assert {k: stops[k] for k in ("TRAIN_STEPS", "WARMUP_STEPS", "train.train.train_steps",
                                "train.train.export")} == {
      "TRAIN_STEPS": "300", "WARMUP_STEPS": "30", "train.train.train_steps": "150",
      "train.train.export": "False"}
  whole = domain_adaptation.fine_tuning(
      variant=recipes.VARIANTS["main"], recipe=main, model_dir="m", data_dir="d",
      budget=select, seed=0).bindings()
  assert "train.train.train_steps" not in whole and "train.train.export" not in whole
  assert "GRAD_CACHE_CHUNK" not in whole
  # GradCache changes the memory, not the model: the same run (name) with the chunk bound.
  cached = dataclasses.replace(select, batch_size=8, grad_cache_chunk=2)
  assert main.row_name("main", cached) == "main+300steps+batch8+lr5e-05"
  assert domain_adaptation.fine_tuning(
      variant=recipes.VARIANTS["main"], recipe=main, model_dir="m", data_dir="d",
      budget=cached, seed=0).bindings()["GRAD_CACHE_CHUNK"] == "2"
  with pytest.raises(ValueError, match="grad_cache_chunk=3 must divide the batch size 8"):
    recipes.Budget(batch_size=8, grad_cache_chunk=3)
  with pytest.raises(ValueError, match="stop_at=301 is not a step of this 300-step run"):
    stages.FineTuning(gin_files=(), model_dir="m", data_dir="d", steps=300, batch_size=8,
                      learning_rate=1e-5, stop_at=301)
  assert recipes.Budget(steps=70, checkpoint_every=30).checkpoint_steps() == [30, 60, 70]
  assert recipes.Budget(batch_size=64).name_parts() == ["batch64"]
  with pytest.raises(ValueError, match=r"eval_step=70 is not a checkpoint .*\[50, 100"):
    recipes.Budget(steps=300, checkpoint_every=50, eval_step=70)
  with pytest.raises(ValueError, match="steps must be >= 1, got 0"):
    recipes.Budget(steps=0)
  with pytest.raises(ValueError, match="learning_rate must be > 0, got -1"):
    recipes.Budget(learning_rate=-1)


def test_recipes_name_rows_and_directories():
  plain = recipes.Recipe()
  assert plain.fret_name(recipes.VARIANTS["main"]) == "fret_rrf_lowest"  # older runs' names
  assert plain.row_name("main") == "main"
  levers = recipes.Recipe(teacher="gemma3-270m", sampling=True, temperature=0.7, top_p=0.9,
                          dedup_cosine=0.9, consistency_top_k=3, human=True)
  assert levers.fret_name(recipes.VARIANTS["ql"]) == (
      "fret_gemma3-270m_sampled0.7p0.9_dedup0.9_ql_lowest_consistent3")
  assert levers.row_name("main") == "main+gemma3-270m+sampled0.7p0.9+dedup0.9+consistent3+human"
  assert levers.row_name("in_domain") == "in_domain+human"  # no FRet lever applies
  assert levers.row_name("start") == "start"
  with pytest.raises(ValueError, match="unknown teacher 'gpt'"):
    recipes.Recipe(teacher="gpt")
  claims = recipes.Recipe(teacher="gemma3-270m", few_shot_type="fact checking")
  assert claims.fret_name(recipes.VARIANTS["main"]) == (
      "fret_gemma3-270m_fewshot-fact-checking_rrf_lowest")
  assert claims.row_name("seed_no_same_tower") == (
      "seed_no_same_tower+gemma3-270m+fewshot-fact-checking")
  assert recipes.VARIANTS["seed_no_same_tower"].trains_on_seed
  with pytest.raises(ValueError, match="unknown few-shot task type 'claims'"):
    recipes.Recipe(few_shot_type="claims")
  capped = recipes.Recipe(teacher="gemma3-270m", human=True, human_dev=True, max_records=92)
  assert capped.row_name("in_domain") == "in_domain+human+trainpart+records92"
  assert capped.row_name("main") == "main+gemma3-270m+human+records92"
  assert capped.row_name("start") == "start"
  assert plain.row_name("main", passages=600) == "main+600seeds"
  assert plain.row_name("main", passages=recipes.DEFAULT_PASSAGES) == "main"
  assert capped.row_name("in_domain", passages=600) == "in_domain+human+trainpart+records92"
  assert capped.fret_name(recipes.VARIANTS["main"]) == "fret_gemma3-270m_rrf_lowest"  # shared
  with pytest.raises(ValueError, match="max_records must be >= 1, got 0"):
    recipes.Recipe(max_records=0)


@pytest.mark.parametrize("human, mixture", [(True, "gecko_fret_ql_human"),
                                            (False, "gecko_fret_ql")])
def test_soft_label_rows_train_on_the_scored_task_with_their_loss_settings(human, mixture):
  """A scored variant's run reads the LLM's QL of each pair (alone, or mixed with the
  human tasks), its gin file turns the distillation term on, and the recipe's --loss
  settings are bound and name the row; the configuration parses as gecko.train reads it."""
  import gin

  from gecko import gin_flags
  from gecko.training import losses
  recipe = recipes.Recipe(teacher="gemma3-270m", human=human,
                          loss=(("teacher_scale", 0.05), ("distillation_weight", 2.0)))
  assert recipe.row_name("margin_mse", recipes.Budget(steps=300)) == (
      "margin_mse+gemma3-270m" + "+human" * human
      + "+teacher_scale0.05+distillation_weight2+300steps")
  stage = domain_adaptation.fine_tuning(
      variant=recipes.VARIANTS["margin_mse"], recipe=recipe, model_dir="/tmp/m",
      data_dir="/tmp/d", budget=recipes.Budget(steps=300), seed=0)
  assert "--gin.losses.GeckoLoss.teacher_scale=0.05" in stage.command_line()
  gin_flags.configure(list(stage.gin_files),
                      [f"{k} = {v}" for k, v in stage.bindings().items()])
  try:
    assert gin.query_parameter("%MIXTURE_OR_TASK_NAME") == mixture
    with gin.config_scope(None):
      loss = gin.get_configurable(losses.GeckoLoss)()
    assert (loss.distillation, loss.teacher_scale, loss.distillation_weight) == (
        "margin_mse", 0.05, 2.0)
  finally:
    gin.clear_config()
  kl = domain_adaptation.fine_tuning(
      variant=recipes.VARIANTS["listwise_kl"], recipe=recipes.Recipe(), model_dir="/tmp/m",
      data_dir="/tmp/d", budget=recipes.Budget(), seed=0)
  assert kl.bindings()["MIXTURE_OR_TASK_NAME"] == "'gecko_fret_ql'"
  assert "gin/ablations/distill_listwise_kl.gin" in kl.gin_files
  with pytest.raises(ValueError, match="unknown loss setting 'tau'"):
    recipes.Recipe(loss=(("tau", 0.1),))
  with pytest.raises(SystemExit):
    domain_adaptation.main(["--corpus_dir=x", "--loss", "teacher_scale=-1"])


def test_bad_inputs_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="BEIR directory"):
    adaptation_data.write_corpus(str(tmp_path), str(tmp_path / "c.jsonl"))
  with pytest.raises(ValueError, match="Unknown variant 'best'"):
    _run(tmp_path, tmp_path, "best")
  with pytest.raises(ValueError, match="score the human dev split: add --human_dev"):
    _run(tmp_path, tmp_path, "main", checkpoint_every=1)
  with pytest.raises(ValueError, match="--dev_only scores each kept checkpoint on dev"):
    _run(tmp_path, tmp_path, "main", dev_only=True, recipe=recipes.Recipe(human_dev=True))
  with pytest.raises(FileNotFoundError, match="run the variants first"):
    domain_adaptation.report(str(tmp_path))
  (tmp_path / "results").mkdir()
  soup = functools.partial(domain_adaptation.soup_row, corpus_dir=str(tmp_path),
                           output_dir=str(tmp_path), sts_dir=None, banking77_dir=None)
  with pytest.raises(ValueError, match=r"no results/main_seed\*.json; evaluate its seeds"):
    soup(row="main")
  (tmp_path / "results" / "main_seed0.json").write_text("{}")
  (tmp_path / "runs" / "main_seed0" / "export").mkdir(parents=True)
  with pytest.raises(ValueError, match="--soup 'main' needs at least two finished seeds "
                                       ".* found 1"):
    soup(row="main")
  with pytest.raises(ValueError, match=r"--soup 'main,ql': no results/ql_seed\*.json"):
    soup(row="main,ql")


def test_ranker_accuracy_orders_and_hits_by_hand():
  from gecko.experiments import ranker_accuracy
  # QL ranks [1, 2, 3], RC ranks [3, 1, 2]: fused 1/1+1/3, 1/2+1/1, 1/3+1/2.
  orders = ranker_accuracy.rankings([0.0, -1.0, -3.0], [-2.0, -0.5, -1.0])
  assert orders == {"encoder": [0, 1, 2], "ql": [0, 1, 2], "rc": [1, 2, 0], "rrf": [1, 0, 2]}
  ids = ["a", "b", "c"]
  assert ranker_accuracy.first_judged([1, 0, 2], ids=ids, judged={"b": 1}) == (1.0, 1.0)
  assert ranker_accuracy.first_judged([1, 0, 2], ids=ids, judged={"c": 2, "b": 0}) == (0.0, 1 / 3)
  assert ranker_accuracy.first_judged([1, 0, 2], ids=ids, judged={"z": 1}) == (0.0, 0.0)


def test_ranker_accuracy_scores_a_real_teacher_against_the_qrels(beir_corpus, tmp_path):
  from gecko import retrieval
  from gecko.data.input_format import GECKO
  from gecko.encode import encode
  from gecko.experiments import ranker_accuracy
  argv = [f"--corpus_dir={beir_corpus}", f"--output_dir={tmp_path}", "--teacher=smollm2-135m",
          "--queries=4", "--neighbors=3"]
  assert ranker_accuracy.main(argv) == 0
  result = json.loads((tmp_path / "ranker_smollm2-135m.json").read_text())
  assert result["queries"] == 4 and result["llm_calls"] == 4 * 3 * 2  # QL and RC per passage
  data = datasets.load_beir(str(beir_corpus), split="train")
  sample = sorted(result["per_query"]["encoder"])
  assert len(sample) == 4 and set(sample) <= set(data.qrels)
  # The encoder's accuracy is its own top-1, recomputed here from the same retrieval.
  corpus_ids = list(data.corpus)
  vectors = encode([GECKO.document(d["text"], title=d["title"]) for d in data.corpus.values()],
                   model="all-MiniLM-L6-v2")
  queries = encode([GECKO.query(data.queries[q], task=ranker_accuracy.DEFAULT_TASK)
                    for q in sample], model="all-MiniLM-L6-v2")
  top, _ = retrieval.top_n(queries, vectors, 1)
  expected = {q: float(data.qrels[q].get(corpus_ids[int(row[0])], 0) > 0)
              for q, row in zip(sample, top, strict=True)}
  assert result["per_query"]["encoder"] == expected
  for name in ranker_accuracy.RANKERS:
    assert result["accuracy_at_1"][name] == pytest.approx(
        sum(result["per_query"][name].values()) / 4)
    assert result["accuracy_at_1"][name] <= result["mrr"][name] <= 1
  assert "rrf" in result["vs_encoder"] and "[" in result["vs_encoder"]["rrf"]
  assert 0 < result["chance_at_1"] <= result["judged_in_top_n"] / 4 <= 1
  assert ranker_accuracy.main(argv) == 0  # a rerun answers from the LLM cache
  assert json.loads((tmp_path / "ranker_smollm2-135m.json").read_text())["llm_calls"] == 0
