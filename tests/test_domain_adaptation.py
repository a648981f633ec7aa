"""The FRet domain-adaptation experiment end to end at toy size (real SmolLM2, real
MiniLM, real training and evaluation), so that the script behind EXPERIMENTS.md
cannot rot."""

import functools
import json
import os
import shlex
import shutil
import zlib

import jax
import pytest
from conftest import SHARED_DATA, read_metrics, report_table

from gecko.data import jsonl
from gecko.evaluation import datasets
from gecko.experiments import (adaptation_data, domain_adaptation, human_dev, in_domain,
                                recipes, stages)
from gecko.fret import docstrings, schema
from gecko.fret import records as fret_files

SCIFACT = SHARED_DATA / "scifact"


@pytest.fixture(scope="module")
def beir_corpus(tmp_path_factory):
  """A BEIR directory: 40 docstring passages, 4 test queries and 6 train queries with
  their qrels."""
  root = tmp_path_factory.mktemp("beir")
  passages = docstrings.passages(limit=40)
  jsonl.write(root / "corpus.jsonl", [{"_id": p["id"], "title": p["title"], "text": p["text"]}
                                      for p in passages])
  queries = [{"_id": f"t{i}", "text": f"what does {p['title']} do"}
             for i, p in enumerate(passages[:4])]
  queries += [{"_id": f"r{i}", "text": f"how is {p['title']} used"}
              for i, p in enumerate(passages[10:16])]
  jsonl.write(root / "queries.jsonl", queries)
  (root / "qrels").mkdir()
  (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
      f"t{i}\t{p['id']}\t1\n" for i, p in enumerate(passages[:4])))
  (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
      f"r{i}\t{p['id']}\t1\n" for i, p in enumerate(passages[10:16])) + "r0\t"
      f"{passages[20]['id']}\t1\n")  # a query with two relevant passages
  return root


@pytest.fixture(scope="module")
def human_dirs(tmp_path_factory):
  """Tiny STS-B and Banking77 directories in their JSONL layouts."""
  root = tmp_path_factory.mktemp("human")
  pairs = [("a cat sits", "a cat is sitting", 4.6), ("a dog runs", "the dog is running", 4.2),
           ("a man cooks", "stocks fell today", 0.4), ("rain falls", "it is raining", 4.8),
           ("a bird sings", "the car is red", 1.0), ("kids play", "children are playing", 4.4)]
  for split in ("train", "test"):
    jsonl.write(root / "stsb" / f"{split}.jsonl",
                [{"sentence1": a, "sentence2": b, "score": s} for a, b, s in pairs])
    jsonl.write(root / "banking77" / f"{split}.jsonl", [
        {"text": f"{word} question {i}", "label": label}
        for label, word in enumerate(["card", "transfer", "refund"]) for i in range(4)])
  return root / "stsb", root / "banking77"


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


def test_in_domain_records_take_judged_positives_and_unjudged_negatives(beir_corpus, tmp_path):
  corpus_path = tmp_path / "corpus.jsonl"
  adaptation_data.write_corpus(str(beir_corpus), str(corpus_path))
  made = in_domain.records(corpus_dir=str(beir_corpus), corpus_path=str(corpus_path),
                           output_dir=str(tmp_path / "in_domain"), neighbors=4,
                           encoder="all-MiniLM-L6-v2")
  qrels = datasets.load_beir(str(beir_corpus), split="train").qrels
  assert len(made) == sum(len(docs) for docs in qrels.values()) == 7
  for r in made:
    query_id = r["id"].split("-")[0]
    assert not schema.problems(r), r
    assert r["positive_id"] in qrels[query_id] and r["negative_id"] not in qrels[query_id]
    assert r["positive_is_seed"] and r["llm"] == "human" and r["task"] == "fact checking"


def test_the_human_dev_split_keeps_queries_that_share_a_document_together():
  # a-b share d1, b-c share d2: one group {a, b, c}; e alone; f-g share d9.
  qrels = {"a": {"d1": 1}, "b": {"d1": 1, "d2": 1}, "c": {"d2": 1, "d3": 0},
           "e": {"d4": 1, "d3": 1}, "f": {"d9": 1}, "g": {"d9": 2, "d8": 1}}
  for fraction in (2, 3, 7):  # each puts some groups on either side (5 puts none in dev)
    dev, train = human_dev.split_qrels(qrels, fraction=fraction)
    assert sorted(dev + train) == sorted(qrels) and not set(dev) & set(train)
    for group in ({"a", "b", "c"}, {"e"}, {"f", "g"}):
      assert group <= set(dev) or group <= set(train), (fraction, group)
    by_hand = {q for group in ({"a", "b", "c"}, {"e"}, {"f", "g"})
               if zlib.crc32(min(group).encode()) % fraction == 0 for q in group}
    assert set(dev) == by_hand
    positives = lambda ids: {d for q in ids for d, r in qrels[q].items() if r > 0}  # noqa: E731
    assert not positives(dev) & positives(train)
  with pytest.raises(ValueError, match="fraction=1 must be >= 2"):
    human_dev.split_qrels(qrels, fraction=1)
  with pytest.raises(ValueError, match="leaves no dev query: too few queries"):
    human_dev.split_qrels(qrels, fraction=5)  # crc32 of a, e, f: 2, 4, 1 (mod 5)


def test_the_human_dev_split_of_beir_training_queries_is_a_task_and_trains_in_domain_apart(
    beir_corpus, tmp_path):
  split = human_dev.split(str(beir_corpus), fraction=2)
  assert split.dev and split.train
  task = human_dev.write_task(str(beir_corpus), split, str(tmp_path / "dev"))
  dev = datasets.load_beir(task, split="test")
  train = datasets.load_beir(str(beir_corpus), split="train")
  assert sorted(dev.qrels) == list(split.dev)
  assert dev.qrels == {q: train.qrels[q] for q in split.dev}
  assert dev.corpus == train.corpus and dev.queries == {q: train.queries[q] for q in split.dev}
  assert recipes.Recipe(human_dev=True).row_name("in_domain") == "in_domain+trainpart"
  assert recipes.Recipe(human_dev=True).row_name("main") == "main"
  with pytest.raises(ValueError, match=r"query_ids \['nope'\] are not judged"):
    in_domain.records(corpus_dir=str(beir_corpus), corpus_path=str(tmp_path / "c.jsonl"),
                      output_dir=str(tmp_path), neighbors=2, encoder="all-MiniLM-L6-v2",
                      query_ids=["nope"])


@pytest.mark.skipif(not SCIFACT.is_dir(), reason=f"needs SciFact in {SCIFACT} (../shared/data)")
def test_scifacts_human_dev_split_is_the_one_round_5_states():
  split = human_dev.split(str(SCIFACT))
  qrels = datasets.load_beir(str(SCIFACT), split="train").qrels
  pairs = lambda ids: sum(1 for q in ids for r in qrels[q].values() if r > 0)  # noqa: E731
  assert (len(split.dev), pairs(split.dev), len(split.train), pairs(split.train)) == (
      179, 213, 630, 706)
  positives = lambda ids: {d for q in ids for d, r in qrels[q].items() if r > 0}  # noqa: E731
  assert not positives(split.dev) & positives(split.train)
  # The test claims judged on a training claim's document, and the two that are
  # verbatim training claims among them.
  seen = human_dev.on_training_documents(str(SCIFACT))
  assert len(seen) == 196 and {"870", "1292"} <= set(seen)
  test = datasets.load_beir(str(SCIFACT)).qrels
  assert len({d for docs in test.values() for d, r in docs.items() if r > 0}
             & positives(qrels)) == 181


def test_test_queries_on_training_documents(tmp_path):
  jsonl.write(tmp_path / "corpus.jsonl", [{"_id": f"d{i}", "title": "", "text": f"doc {i}"}
                                          for i in range(4)])
  jsonl.write(tmp_path / "queries.jsonl", [{"_id": q, "text": f"query {q}"} for q in "abcxy"])
  (tmp_path / "qrels").mkdir()
  (tmp_path / "qrels" / "test.tsv").write_text(
      "query-id\tcorpus-id\tscore\na\td1\t1\nb\td2\t1\nc\td3\t1\nc\td0\t1\n")
  (tmp_path / "qrels" / "train.tsv").write_text(  # y judges d2 not relevant
      "query-id\tcorpus-id\tscore\nx\td1\t1\nx\td0\t2\ny\td2\t0\ny\td3\t0\n")
  assert human_dev.on_training_documents(str(tmp_path)) == ("a", "c")


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


def test_a_seed_ranked_variant_calls_the_llm_itself_and_replays_from_its_calls(
    beir_corpus, tmp_path, smollm2):
  """unranked_no_same_tower: generation alone, without running the base variant; its
  calls are kept as text, and a directory holding only them replays the records."""
  variant = recipes.VARIANTS["unranked_no_same_tower"]
  assert variant.ranking == "seed" and recipes.NO_SAME_TOWER_GIN in variant.gin_files
  assert recipes.VARIANTS["unranked"].ranking == "seed"  # the same records, Eq. 3 whole
  assert recipes.VARIANTS["unranked"].gin_files == ()
  fret = functools.partial(adaptation_data.run_fret, corpus_dir=str(beir_corpus),
                           variant=variant, recipe=recipes.Recipe(), passages=4, neighbors=3,
                           llm=smollm2)
  for out in (tmp_path / "run", tmp_path / "clone"):
    adaptation_data.write_corpus(str(beir_corpus), str(out / "corpus.jsonl"))
  made, summary = fret(output_dir=str(tmp_path / "run"),
                       corpus_path=str(tmp_path / "run" / "corpus.jsonl"))
  assert made and all(r["positive_id"] == r["seed_id"] and r["candidate_ql"] is None
                      for r in made)
  assert not (tmp_path / "run" / "fret_rrf_lowest").exists()  # the base never ran
  calls = tmp_path / "run" / adaptation_data.CALLS_DIR / "fret_seed_lowest.jsonl"
  assert len(calls.read_text().splitlines()) == summary["llm_calls_this_run"] > 0
  (tmp_path / "clone" / adaptation_data.CALLS_DIR).mkdir()
  shutil.copy(calls, tmp_path / "clone" / adaptation_data.CALLS_DIR)
  replayed, again = fret(output_dir=str(tmp_path / "clone"),
                         corpus_path=str(tmp_path / "clone" / "corpus.jsonl"))
  assert again["llm_calls_this_run"] == 0 and replayed == made


def test_capped_records_keep_the_held_out_ones_and_nest(beir_corpus, tmp_path):
  made = [{"id": f"q{i}-d{i}"} for i in range(40)]
  held = [r["id"] for r in made if zlib.crc32(r["id"].encode()) % adaptation_data.DEV_FRACTION == 0]
  assert 0 < len(held) < 40
  by_hash = sorted((r["id"] for r in made if r["id"] not in held),
                   key=lambda i: zlib.crc32(i.encode()))
  small = adaptation_data.capped(made, count=5, keep_held_out=True)
  assert [r["id"] for r in small] == [r["id"] for r in made
                                      if r["id"] in set(held) | set(by_hash[:5])]  # in order
  larger = {r["id"] for r in adaptation_data.capped(made, count=9, keep_held_out=True)}
  assert {r["id"] for r in small} < larger
  assert len(adaptation_data.capped(made, count=5, keep_held_out=False)) == 5
  with pytest.raises(ValueError, match="max_records=41 exceeds the 40 training records"):
    adaptation_data.capped(made, count=41, keep_held_out=False)

  # in_domain with the human dev split trains on all its records: the cap takes 4 of 6
  # pairs, in a data directory of its own.
  corpus_path = tmp_path / "corpus.jsonl"
  adaptation_data.write_corpus(str(beir_corpus), str(corpus_path))
  data = functools.partial(
      adaptation_data.row_data, variant=recipes.VARIANTS["in_domain"], corpus_dir=str(beir_corpus),
      output_dir=str(tmp_path), corpus_path=str(corpus_path), passages=15, neighbors=3,
      sts_dir=None, banking77_dir=None, llm_url=None, llm_model=None)
  every = data(recipe=recipes.Recipe(human_dev=True))
  four = data(recipe=recipes.Recipe(human_dev=True, max_records=4))
  assert every.counts["train"] == 6 and four.counts["train"] == 4 and four.dev_dir is None
  assert four.data_dir == str(tmp_path / "data" / "in_domain_trainpart_records4")
  shard = lambda d: jsonl.read_objects(os.path.join(d, "fret", "fret-00000.jsonl"))  # noqa: E731
  assert [r["id"] for r in shard(four.data_dir)] == [
      r["id"] for r in adaptation_data.capped(shard(every.data_dir), count=4,
                                              keep_held_out=False)]


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


def test_human_data_links_sts_and_writes_banking77(human_dirs, tmp_path):
  sts, banking = human_dirs
  (tmp_path / "data" / "fret").mkdir(parents=True)
  mixed = adaptation_data.human_data(output_dir=str(tmp_path), data_dir=str(tmp_path / "data"),
                                       sts_dir=str(sts), banking77_dir=str(banking))
  assert mixed.endswith("data+human")
  assert os.path.realpath(os.path.join(mixed, "stsb")) == str(sts)
  assert os.path.realpath(os.path.join(mixed, "fret")) == str(tmp_path / "data" / "fret")
  rows = jsonl.read_objects(os.path.join(mixed, "classification", "banking77.jsonl"),
                            what="classification")
  assert len(rows) == 12 and {r["label"] for r in rows} == {0, 1, 2}
  with pytest.raises(ValueError, match="--human needs --banking77_dir"):
    adaptation_data.human_data(output_dir=str(tmp_path), data_dir=str(tmp_path / "data"),
                                 sts_dir=str(sts), banking77_dir=None)


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
