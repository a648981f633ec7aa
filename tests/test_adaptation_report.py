"""The domain-adaptation report (`gecko.experiments.adaptation_report`) on results
written by hand: seeds averaged, paired bootstrap intervals, the model-selection table
and each row's command."""

import json

import pytest
from conftest import report_table

from gecko.data import jsonl
from gecko.experiments import domain_adaptation


def _write_result(directory, row, seed, score, per_query, variant=None, **extra):
  (directory / "results" / f"{row}_seed{seed}.json").write_text(json.dumps({
      "row": row, "variant": variant or row.split("+")[0], "seed": seed,
      "positive_not_seed_fraction": 0.84,
      "scores_plain_format": {"test@384": score}, "scores_gecko_format": {"test@384": score - 0.01,
                                                                         "dev@384": score / 2},
      "per_query": {"plain": {"384": per_query}, "gecko": {"384": per_query}}, **extra}))


def test_report_averages_seeds_and_bootstraps_against_start(tmp_path):
  (tmp_path / "results").mkdir()
  _write_result(tmp_path, "start", 0, 0.50, {"a": 0.5, "b": 0.5})
  _write_result(tmp_path, "main", 0, 0.60, {"a": 0.6, "b": 0.6})
  _write_result(tmp_path, "main", 1, 0.62, {"a": 0.6, "b": 0.7})
  _write_result(tmp_path, "seed_positive", 0, 0.63, {"a": 0.5, "b": 0.5})
  text = domain_adaptation.report(str(tmp_path), versus="main")
  rows = report_table(text)
  assert list(rows) == ["start", "main", "seed_positive"]
  assert rows["main"][1:3] == ["2", "0.6100 ± 0.0100"] and rows["main"][-1] == "84% |"
  assert rows["main"][3] == "—"  # no plain test@256 in these results
  # Per query, main's seeds average to (0.6, 0.65): differences 0.1 and 0.15 to start.
  assert rows["main"][12] == "+0.1250 [+0.1000, +0.1500] *"
  assert rows["seed_positive"][12] == "+0.0000 [+0.0000, +0.0000]"
  # FRet moved 84% of the positives, but this row trains on the seed passages.
  assert rows["seed_positive"][-1] == "0% |"
  assert (tmp_path / "results.png").exists() and (tmp_path / "results_delta.png").exists()
  # Between rows: seed_positive (0.5, 0.5) minus main's seeds averaged (0.6, 0.65).
  between = text[text.index("Between rows: each row − main"):]
  assert "--report --versus=main\n```" in between
  assert ("| seed_positive | -0.1250 [-0.1500, -0.1000] * | -0.1250 [-0.1500, -0.1000] * |"
          in between)
  assert "| start | -0.1250" in between and "| main |" not in between
  assert text.startswith(f"```bash\npython -m gecko.experiments.domain_adaptation "
                         f"--output_dir={tmp_path} --report\n```\n")
  assert "Model selection" not in text and "commands that made" not in text
  with pytest.raises(ValueError, match="--versus 'best' is not a row"):
    domain_adaptation.report(str(tmp_path), versus="best")
  # Without query a: main's seeds average 0.65 on b, start 0.5 there.
  text = domain_adaptation.report(str(tmp_path), exclude=["a"])
  without = text[text.index("Without the test queries a"):]
  assert "--report --exclude_queries=a\n```" in without
  assert "| main | 0.6500 | 0.6500 | +0.1500 [+0.1500, +0.1500] * |" in without
  assert "| start | 0.5000 | 0.5000 | — | — |" in without


def test_report_tabulates_model_selection_and_commands(tmp_path):
  (tmp_path / "results" / "selection").mkdir(parents=True)
  for seed, scores in ((0, {"50": 0.61, "100": 0.64, "150": 0.63}), (1, {"50": 0.6, "100": 0.6})):
    (tmp_path / "results" / "selection" / f"main+150steps_seed{seed}.json").write_text(
        json.dumps({"row": "main+150steps", "variant": "main", "seed": seed,
                    "driver_command": f"python -m gecko.experiments.domain_adaptation "
                                      f"--seed={seed}",
                    "dev_by_step": {s: {"human_dev@384": v, "human_dev@256": 0.0}
                                    for s, v in scores.items()}}))
  text = domain_adaptation.report(str(tmp_path))  # selection runs alone: no row yet
  assert "| main+150steps | 0 | 0.6100 | **0.6400** | 0.6300 | 100 |" in text
  # A tie goes to the earlier step; a step a run did not keep is a dash.
  assert "| main+150steps | 1 | **0.6000** | 0.6000 | — | 50 |" in text
  assert ("# main+150steps (selection), seed 1\n"
          "python -m gecko.experiments.domain_adaptation --seed=1\n") in text
  assert "Settings scored at one checkpoint" not in text
  assert "Where Eq. 3's denominator goes" not in text  # no results/shares
  for name, score in (("margin_mse+150steps@100", 0.65), ("listwise_kl+150steps@100", 0.62)):
    (tmp_path / "results" / "selection" / f"{name}_seed0.json").write_text(json.dumps(
        {"row": name, "variant": name.split("+")[0], "seed": 0,
         "dev_by_step": {"100": {"human_dev@384": score, "human_dev@256": 0.0}}}))
  text = domain_adaptation.report(str(tmp_path))
  assert "| main+150steps | 0 | 0.6100 | **0.6400** | 0.6300 | 100 |" in text  # curves alone
  assert "| margin_mse+150steps@100 |" not in text.split("Settings scored at one")[0]
  grid = text.split("Settings scored at one checkpoint")[1]
  assert "| listwise_kl+150steps@100 | 0 | 100 | 0.6200 |" in grid
  assert "| margin_mse+150steps@100 | 0 | 100 | **0.6500** |" in grid  # the best setting


def test_report_tabulates_where_the_denominator_goes(tmp_path):
  shares = tmp_path / "results" / "shares"
  shares.mkdir(parents=True)
  for name, positive, low in (("main_llm", "record", 0.5), ("claims_seed", "seed", 0.25)):
    (shares / f"{name}.json").write_text(json.dumps({
        "fret": f"out/data/{name}/fret", "model": "all-MiniLM-L6-v2", "positive": positive,
        "queries": 64, "s_positive": {"mean": 0.3, "p10": 0.1, "p50": 0.25, "p90": low},
        "share": {"positive": 0.1, "in_batch_positives": 0.02, "same_tower": 0.8,
                  "hard_negative": 0.08},
        "same_tower_share_by_s_positive_tertile": [0.95, 0.8, low],
        "command": f"python -m gecko.experiments.loss_shares --fret out/data/{name}/fret"}))
  _write_result(tmp_path, "start", 0, 0.50, {"a": 0.5, "b": 0.5})
  text = domain_adaptation.report(str(tmp_path))
  table = text[text.index("Where Eq. 3's denominator goes"):]
  assert ("| main_llm | all-MiniLM-L6-v2 | record | 64 | 0.100 / 0.250 / 0.500 | 0.100 | 0.020 "
          "| 0.800 | 0.080 | 0.950 / 0.800 / 0.500 |") in table
  assert "| claims_seed | all-MiniLM-L6-v2 | seed | 64 |" in table
  assert ("```bash\npython -m gecko.experiments.loss_shares --fret out/data/claims_seed/fret\n"
          "python -m gecko.experiments.loss_shares --fret out/data/main_llm/fret\n```") in table


def test_report_scores_rows_on_the_test_queries_about_unseen_documents(tmp_path, capsys):
  (tmp_path / "results").mkdir()
  _write_result(tmp_path, "start", 0, 0.50, {"a": 0.5, "b": 0.5, "c": 0.4})
  _write_result(tmp_path, "in_domain", 0, 0.70, {"a": 0.9, "b": 0.6, "c": 0.5})
  beir = tmp_path / "beir"
  jsonl.write(beir / "corpus.jsonl", [{"_id": f"d{i}", "title": "", "text": f"doc {i}"}
                                      for i in range(3)])
  jsonl.write(beir / "queries.jsonl", [{"_id": q, "text": q} for q in "abcx"])
  (beir / "qrels").mkdir()
  (beir / "qrels" / "test.tsv").write_text(
      "query-id\tcorpus-id\tscore\na\td0\t1\nb\td1\t1\nc\td2\t1\n")
  (beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nx\td0\t1\n")
  text = domain_adaptation.report(str(tmp_path), unseen_of=str(beir))
  table = text[text.index("On the test queries none of whose judged documents"):]
  assert "(1 test queries left out)" in table.splitlines()[0]
  assert f"--report --corpus_dir={beir} --unseen_documents\n```" in table
  # b and c: in_domain 0.55 against start 0.45, a difference of 0.1 on each.
  assert "| in_domain | 0.5500 | 0.5500 | +0.1000 [+0.1000, +0.1000] * |" in table
  assert "| start | 0.4500 | 0.4500 | — | — |" in table
  assert "On the test queries" not in domain_adaptation.report(str(tmp_path))
  # With --versus, each row's plain difference to that row on the same queries as well.
  text = domain_adaptation.report(str(tmp_path), unseen_of=str(beir), versus="in_domain")
  table = text[text.index("On the test queries none of whose judged documents"):]
  assert f"--unseen_documents --versus=in_domain\n```" in table
  assert "| Δ plain vs start [95% CI] | Δ Gecko vs start [95% CI] | Δ plain vs in_domain" in table
  assert "| start | 0.4500 | 0.4500 | — | — | -0.1000 [-0.1000, -0.1000] * |" in table
  assert "| in_domain | 0.5500 | 0.5500 | +0.1000 [+0.1000, +0.1000] * | " in table
  assert table.split("| in_domain |")[1].splitlines()[0].endswith("| — |")
  with pytest.raises(SystemExit):
    domain_adaptation.main(["--output_dir", str(tmp_path), "--report", "--unseen_documents"])
  assert "--unseen_documents needs --corpus_dir" in capsys.readouterr().err


def test_report_pairs_runs_on_the_human_dev_split(tmp_path):
  selection = tmp_path / "results" / "selection"
  selection.mkdir(parents=True)

  def dev_run(folder, name, seed, per_query):
    (folder / f"{name}_seed{seed}.json").write_text(json.dumps(
        {"row": name, "variant": name.split("+")[0].split("@")[0], "seed": seed,
         "dev_by_step": {"0" if name == "start" else "50": {"human_dev@384": 0.0}},
         "human_dev_per_query": {"384": per_query, "256": {}}}))

  dev_run(selection, "start", 0, {"a": 0.5, "b": 0.5})
  dev_run(selection, "unranked@50", 0, {"a": 0.3, "b": 0.4})
  dev_run(selection, "unranked@50", 1, {"a": 0.5, "b": 0.4})
  dev_run(selection, "in_domain@50", 0, {"a": 0.0, "b": 0.0})  # a row's seed wins
  dev_run(tmp_path / "results", "in_domain@50", 0, {"a": 0.7, "b": 0.6})
  (selection / "main_seed0.json").write_text(json.dumps(  # a curve: no per-query scores
      {"row": "main", "variant": "main", "seed": 0, "dev_by_step": {"50": {"human_dev@384": 0.6}}}))
  text = domain_adaptation.report(str(tmp_path), dev_versus="unranked@50")
  table = text[text.index("On the human dev split, each run"):]
  assert "--report --dev_versus=unranked@50\n```" in table
  assert ("| run | seeds | human dev plain | Δ vs start [95% CI] | Δ vs unranked@50 [95% CI] |"
          in table)
  lines = [line for line in table.splitlines() if line.startswith("| ") and "seeds" not in line]
  assert [line.split(" | ")[0] for line in lines] == ["| start", "| in_domain@50", "| unranked@50"]
  # unranked's seeds average to (0.4, 0.4): 0.1 under start on each query.
  assert lines[0] == "| start | 1 | 0.5000 | — | +0.1000 [+0.1000, +0.1000] * |"
  assert lines[2] == "| unranked@50 | 2 | 0.4000 | -0.1000 [-0.1000, -0.1000] * | — |"
  # in_domain (0.7, 0.6): against start +0.2 / +0.1, against unranked +0.3 / +0.2.
  assert lines[1].startswith("| in_domain@50 | 1 | 0.6500 | +0.1500 [+0.1000, +0.2000] * |")
  assert lines[1].endswith("| +0.2500 [+0.2000, +0.3000] * |")
  assert "| main |" not in table
  # The start model's dev row is a setting of its own, at step 0, not a curve.
  grid = text.split("Settings scored at one checkpoint")[1]
  assert "| start | 0 | 0 | 0.0000 |" in grid and "Model selection on" in text
  with pytest.raises(ValueError, match="--dev_versus 'main' has no per-query"):
    domain_adaptation.report(str(tmp_path), dev_versus="main")
  assert "Δ vs unranked" not in domain_adaptation.report(str(tmp_path))
