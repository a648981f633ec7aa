"""The FRet domain-adaptation experiment end to end at toy size (real SmolLM2, real
MiniLM, real training and evaluation), so that the script behind EXPERIMENTS.md
cannot rot."""

import json

import jax
import pytest

from gecko.data import jsonl
from gecko.evaluation import datasets
from gecko.experiments import domain_adaptation
from gecko.fret import docstrings, schema


@pytest.fixture(scope="module")
def beir_corpus(tmp_path_factory):
  """A BEIR directory: 40 docstring passages, 4 test queries with their qrels."""
  root = tmp_path_factory.mktemp("beir")
  passages = docstrings.passages(limit=40)
  jsonl.write(root / "corpus.jsonl", [{"_id": p["id"], "title": p["title"], "text": p["text"]}
                                      for p in passages])
  queries = [{"_id": f"t{i}", "text": f"what does {p['title']} do"}
             for i, p in enumerate(passages[:4])]
  jsonl.write(root / "queries.jsonl", queries)
  (root / "qrels").mkdir()
  (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
      f"t{i}\t{p['id']}\t1\n" for i, p in enumerate(passages[:4])))
  return root


def _run(corpus, out, variant, **overrides):
  args = dict(corpus_dir=str(corpus), output_dir=str(out), variant=variant, seed=0,
              passages=15, neighbors=3, steps=2, batch_size=8, learning_rate=2e-5,
              sts_dir=None)
  return domain_adaptation.run(**{**args, **overrides})


@pytest.mark.slow
def test_experiment_rows_and_report_end_to_end(beir_corpus, tmp_path):
  # Training runs in this process (gecko.train.main), on the session's 8 fake devices.
  assert jax.device_count() == 8
  main = _run(beir_corpus, tmp_path, "main")
  assert main["records"] >= 10 and main["train"] + main["dev"] == main["records"]
  assert set(main["scores"]) == {"test@256", "test@384", "dev@256", "dev@384"}
  assert all(0.0 <= v <= 1.0 for v in main["scores"].values())
  # The dev set is carved from the generated queries, relevant passage = FRet's label;
  # the corpus's own test queries never reach training or dev.
  records = {json.loads(line)["id"]: json.loads(line) for line in
             (tmp_path / "fret_rrf_lowest" / "fret-00000.jsonl").read_text().splitlines()}
  dev = datasets.load_beir(str(tmp_path / "dev" / "fret_rrf_lowest"), split="test")
  assert dev.qrels and all(dev.qrels[q] == {records[q]["positive_id"]: 1} for q in dev.qrels)
  train = (tmp_path / "data" / "fret_rrf_lowest" / "fret" / "fret-00000.jsonl").read_text()
  assert not set(dev.qrels) & {json.loads(line)["id"] for line in train.splitlines()}
  assert "what does" not in train

  # A ranking variant relabels the same queries from the base run's cache: no LLM call.
  ql = _run(beir_corpus, tmp_path, "ql")
  summary = json.loads((tmp_path / "fret_ql_lowest" / "summary.json").read_text())
  assert summary["llm_calls_this_run"] == 0 and ql["records"] == main["records"]
  ql_records = [json.loads(line) for line in
                (tmp_path / "fret_ql_lowest" / "fret-00000.jsonl").read_text().splitlines()]
  assert all(r["positive_rc"] is None and isinstance(r["positive_ql"], float)  # RC unused
             and not schema.problems(r) for r in ql_records)
  assert "--gin_file=gin/experiments/fret_adaptation.gin" in ql["command"]

  start = _run(beir_corpus, tmp_path, "start")
  assert set(start["scores_plain_format"]) == {"test@384"}

  table = domain_adaptation.report(str(tmp_path))
  rows = table.splitlines()[2:]
  assert [line.split(" | ")[0] for line in rows] == ["| start_plain", "| start", "| main", "| ql"]
  assert rows[0].split(" | ")[2] == f"{start['scores_plain_format']['test@384']:.4f}"
  assert (tmp_path / "results.md").read_text() == table and (tmp_path / "results.png").exists()


def test_bad_inputs_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="BEIR directory"):
    domain_adaptation.write_corpus(str(tmp_path), str(tmp_path / "c.jsonl"))
  with pytest.raises(ValueError, match="Unknown variant 'best'"):
    _run(tmp_path, tmp_path, "best")
  with pytest.raises(FileNotFoundError, match="run the variants first"):
    domain_adaptation.report(str(tmp_path))


def test_report_averages_seeds_and_counts_seed_positives_as_the_seed(tmp_path):
  (tmp_path / "results").mkdir()
  def write(variant, seed, score):
    (tmp_path / "results" / f"{variant}_seed{seed}.json").write_text(json.dumps({
        "variant": variant, "seed": seed, "positive_not_seed_fraction": 0.84,
        "scores": {"test@384": score, "dev@384": score / 2}}))
  write("main", 0, 0.60)
  write("main", 1, 0.62)
  write("seed_positive", 0, 0.63)
  rows = {line.split(" | ")[0]: line.split(" | ")
          for line in domain_adaptation.report(str(tmp_path)).splitlines()[2:]}
  assert rows["| main"][1:3] == ["2", "0.6100 ± 0.0100"] and rows["| main"][-1] == "84% |"
  # FRet moved 84% of the positives, but this row trains on the seed passages.
  assert rows["| seed_positive"][2] == "0.6300" and rows["| seed_positive"][-1] == "0% |"
  assert rows["| main"][3] == "—"  # no test@256 in these results
