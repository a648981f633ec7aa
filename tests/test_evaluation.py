"""Evaluation: metrics on hand-made cases, loaders' bad input, reports, published scores."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, SHARED_DATA, write_hf_checkpoint

from gecko import eval as eval_lib
from gecko.data import input_format
from gecko.evaluation import datasets, metrics, tasks
from gecko.models import embedder


def test_ndcg_with_graded_relevance_by_hand():
  relevant = {"a": 3, "b": 1, "c": 2}
  ranking = ["b", "x", "a", "c"]
  dcg = 1 / math.log2(2) + 0 + 3 / math.log2(4) + 2 / math.log2(5)
  idcg = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
  assert metrics.ndcg_at_k(relevant, ranking, 10) == pytest.approx(dcg / idcg)
  assert metrics.ndcg_at_k(relevant, ranking, 1) == pytest.approx(1 / 3)
  assert metrics.ndcg_at_k({"a": 1}, ["a"], 10) == 1.0


def test_map_recall_mrr_by_hand():
  relevant = {"a": 1, "b": 1, "c": 1}
  ranking = ["x", "a", "y", "b"]
  assert metrics.average_precision_at_k(relevant, ranking, 10) == pytest.approx((1 / 2 + 2 / 4) / 3)
  assert metrics.average_precision_at_k(relevant, ranking, 2) == pytest.approx((1 / 2) / 3)
  assert metrics.recall_at_k(relevant, ranking, 10) == pytest.approx(2 / 3)
  assert metrics.recall_at_k(relevant, ranking, 1) == 0.0
  assert metrics.mrr_at_k(relevant, ranking, 10) == 0.5
  assert metrics.mrr_at_k(relevant, ranking, 1) == 0.0


def test_spearman_with_ties_uses_average_ranks():
  predicted = [1.0, 2.0, 2.0, 3.0]   # ranks 1, 2.5, 2.5, 4
  gold = [1.0, 3.0, 2.0, 4.0]        # ranks 1, 3, 2, 4
  rp, rg = np.array([1, 2.5, 2.5, 4]), np.array([1, 3, 2, 4])
  expected = np.corrcoef(rp, rg)[0, 1]
  assert metrics.spearman(predicted, gold) == pytest.approx(expected)
  with pytest.raises(ValueError, match="equal-length"):
    metrics.spearman([1.0], [1.0, 2.0])


def test_average_precision_and_v_measure_by_hand():
  # scores ranked: 0.9(1) 0.8(0) 0.7(1) 0.1(0): AP = (1/1 + 2/3) / 2
  assert metrics.average_precision([0.9, 0.8, 0.7, 0.1], [1, 0, 1, 0]) == pytest.approx(5 / 6)
  assert metrics.v_measure([0, 0, 1, 1], [5, 5, 7, 7]) == pytest.approx(1.0)
  assert metrics.v_measure([0, 0, 1, 1], [1, 2, 1, 2]) == pytest.approx(0.0, abs=1e-12)


def _write_beir(directory, qrels_rows, corpus=None):
  directory.mkdir(parents=True, exist_ok=True)
  corpus = corpus if corpus is not None else [
      {"_id": "d1", "title": "gecko", "text": "the gecko climbs"},
      {"_id": "d2", "title": "", "text": "embed text model"},
      {"_id": "d3", "title": "music", "text": "a piano"}]
  (directory / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
  (directory / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in
                                                   [("q1", "gecko"), ("q2", "embed model"), ("q3", "piano")]))
  (directory / "qrels").mkdir(exist_ok=True)
  (directory / "qrels" / "test.tsv").write_text(
      "query-id\tcorpus-id\tscore\n" + "".join("\t".join(map(str, r)) + "\n" for r in qrels_rows))
  return directory


def test_beir_loader_counts_what_it_drops(tmp_path):
  data = datasets.load_beir(str(_write_beir(tmp_path / "b", [
      ("q1", "d1", 1), ("q1", "ghost", 1), ("q2", "d2", 1), ("q9", "d3", 1), ("q3", "d3", 0)])))
  assert data.qrels == {"q1": {"d1": 1}, "q2": {"d2": 1}}
  assert data.dropped == {"qrels_unknown_document": 1, "qrels_unknown_query": 1,
                          "queries_without_judgements": 1}
  with pytest.raises(ValueError, match="holds no documents"):
    datasets.load_beir(str(_write_beir(tmp_path / "empty", [("q1", "d1", 1)], corpus=[])))
  with pytest.raises(ValueError, match="no usable judgements"):
    datasets.load_beir(str(_write_beir(tmp_path / "none", [("q1", "ghost", 1)])))
  with pytest.raises(FileNotFoundError, match="corpus.jsonl"):
    datasets.load_beir(str(tmp_path / "missing"))


def test_classification_draws_follow_mteb_protocol():
  labels = [i % 5 for i in range(200)]
  task = tasks.ClassificationTask(name="x", path="unused", samples_per_label=3, n_experiments=4)
  draws = task.training_draws(labels)
  assert len(draws) == 4 and all(len(d) == 15 for d in draws)
  for d in draws:
    assert sorted(np.bincount([labels[i] for i in d]).tolist()) == [3] * 5
  assert draws == task.training_draws(labels)  # deterministic
  assert len({tuple(d) for d in draws}) == 4  # each experiment re-shuffles


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
  directory = write_hf_checkpoint(tmp_path_factory.mktemp("m") / "hf")
  model = embedder.from_huggingface(directory, embed_dim=24, dims=(8, 24))
  return embedder.save(model, tmp_path_factory.mktemp("m") / "tiny")


def test_evaluate_writes_mteb_layout_and_markdown_for_every_dim(tmp_path, tiny_model_dir):
  beir = _write_beir(tmp_path / "beir", [("q1", "d1", 1), ("q2", "d2", 1), ("q3", "d3", 1)])
  (tmp_path / "sts").mkdir()
  (tmp_path / "sts" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
      {"sentence1": "the gecko", "sentence2": "the gecko climbs", "score": 4.5},
      {"sentence1": "a piano", "sentence2": "embed text", "score": 0.5},
      {"sentence1": "the model", "sentence2": "the text model", "score": 3.0}]))
  task_list = [tasks.RetrievalTask(name="TinyRetrieval", path=str(beir)),
               tasks.STSTask(name="TinySTS", path=str(tmp_path / "sts"))]
  results = eval_lib.evaluate(checkpoint=tiny_model_dir, tasks=task_list,
                              output_dir=str(tmp_path / "out"), gecko_format=True)
  assert set(results) == {"TinyRetrieval", "TinySTS"}
  assert set(results["TinyRetrieval"]) == {8, 24}
  # Encoding split over the 8 devices scores the same.
  on_mesh = eval_lib.evaluate(checkpoint=tiny_model_dir, tasks=task_list,
                              output_dir=str(tmp_path / "mesh"), gecko_format=True,
                              mesh_axes={"data": -1})
  for task, by_dim in results.items():
    for dim, scores in by_dim.items():
      for metric, value in scores.items():
        if isinstance(value, float):
          assert on_mesh[task][dim][metric] == pytest.approx(value, abs=1e-4), (task, metric)
  report = json.loads((tmp_path / "out" / "results" / "tiny" / "TinyRetrieval.json").read_text())
  rows = report["scores"]["test"]
  assert [r["dim"] for r in rows] == [8, 24]
  for row in rows:  # the report holds what was computed, dim by dim
    assert row["ndcg_at_10"] == results["TinyRetrieval"][row["dim"]]["ndcg_at_10"]
    assert row["main_score"] == row["ndcg_at_10"]
  assert 0 < report["encode_time"] <= report["evaluation_time"]
  assert report["scoring_time"] == pytest.approx(report["evaluation_time"] - report["encode_time"])
  table = (tmp_path / "out" / "results.md").read_text().splitlines()
  assert len(table) == 2 + 4 and "| tiny | TinySTS | cosine_spearman | 24 |" in table[-1]
  png = (tmp_path / "out" / "results.png").read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
  with pytest.raises(ValueError, match=r"dims \[100\]"):
    eval_lib.evaluate(checkpoint=tiny_model_dir, tasks=task_list, output_dir=str(tmp_path), dims=(100,))
  with pytest.raises(ValueError, match="Unknown task 'nope'"):
    eval_lib.evaluate(checkpoint=tiny_model_dir, tasks=["nope"], output_dir=str(tmp_path))


def test_tasks_over_the_same_corpus_encode_it_once(tmp_path, tiny_model_dir, monkeypatch):
  beir = _write_beir(tmp_path / "beir", [("q1", "d1", 1), ("q2", "d2", 1), ("q3", "d3", 1)])
  (beir / "qrels" / "other.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\n")
  calls = []
  real = eval_lib.encode
  monkeypatch.setattr(eval_lib, "encode", lambda texts, **kw: calls.append(len(texts)) or
                      real(texts, **kw))
  reordered = _write_beir(tmp_path / "reordered", [("q1", "d1", 1), ("q3", "d3", 1)], corpus=[
      {"_id": "d3", "title": "music", "text": "a piano"},
      {"_id": "d1", "title": "gecko", "text": "the gecko climbs"}])
  results = eval_lib.evaluate(
      checkpoint=tiny_model_dir, output_dir=str(tmp_path / "out"), dims=(24,),
      tasks=[tasks.RetrievalTask(name="A", path=str(beir)),
             tasks.RetrievalTask(name="B", path=str(beir), split="other"),
             tasks.RetrievalTask(name="C", path=str(reordered))])
  # corpus and queries of A; B's corpus and query are among A's; C's corpus is a subset
  # of A's in another order and its queries a subset of A's: nothing more to encode
  assert calls == [3, 3]
  assert results["A"][24]["num_queries"] == 3 and results["B"][24]["num_queries"] == 1
  alone = eval_lib.evaluate(checkpoint=tiny_model_dir, output_dir=str(tmp_path / "out2"),
                            dims=(24,), tasks=[tasks.RetrievalTask(name="C", path=str(reordered))])
  assert results["C"][24]["ndcg_at_10"] == pytest.approx(alone["C"][24]["ndcg_at_10"], abs=1e-6)
  assert calls[2:] == [2, 2]


def test_pair_classification_scores_ap_and_rejects_bad_labels(tmp_path, tiny_model_dir):
  rows = [{"sentence1": "the gecko", "sentence2": "the gecko climbs", "label": 1},
          {"sentence1": "a piano", "sentence2": "embed text", "label": 0},
          {"sentence1": "the model", "sentence2": "the text model", "label": 1},
          {"sentence1": "music", "sentence2": "kernel", "label": 0}]
  (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  task = tasks.PairClassificationTask(name="TinyPairs", path=str(tmp_path))
  model = embedder.load(tiny_model_dir)
  results = eval_lib.evaluate(checkpoint=model, tasks=[task], output_dir=str(tmp_path / "o"),
                              model_name="tiny")
  scores = results["TinyPairs"][24]
  assert scores["cosine_ap"] == scores["dot_ap"]  # unit-norm embeddings
  assert scores["max_ap"] == max(v for k, v in scores.items() if k.endswith("_ap"))
  # Each AP as scikit-learn computes it from this model's own embeddings (as MTEB does).
  from sklearn.metrics import average_precision_score

  from gecko.encode import encode
  a, b = (encode([r[key] for r in rows], model=model) for key in ("sentence1", "sentence2"))
  labels = [r["label"] for r in rows]
  expected = {"cosine": np.sum(a * b, axis=1), "euclidean": -np.linalg.norm(a - b, axis=1),
              "manhattan": -np.sum(np.abs(a - b), axis=1)}
  expected = {name: average_precision_score(labels, s) for name, s in expected.items()}
  for name, value in expected.items():
    assert scores[f"{name}_ap"] == pytest.approx(value, abs=1e-6), name
  assert scores["main_score"] == pytest.approx(max(expected.values()), abs=1e-6)
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "test.jsonl").write_text(json.dumps(dict(rows[0], label=2)) + "\n")
  with pytest.raises(ValueError, match="label must be 0 or 1, got 2"):
    datasets.load_labelled_pairs(str(tmp_path / "bad"))


class _OneHot:
  """An embedder whose vector for a text is the one-hot of its first word's group."""

  groups = {"gecko": 0, "lizard": 0, "piano": 1, "guitar": 1, "kernel": 2, "cache": 2}

  def __call__(self, texts):
    out = np.zeros((len(texts), 4), np.float32)
    for i, text in enumerate(texts):
      out[i, self.groups.get(text.split()[0], 3)] = 1.0
    return out


def _jsonl_file(path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path.parent)


def test_clustering_reranking_summarization_on_exact_embeddings(tmp_path):
  fmt = input_format.UNFORMATTED
  clusters = _jsonl_file(tmp_path / "clu" / "test.jsonl", [
      {"sentences": ["gecko a", "lizard b", "piano c", "guitar d", "kernel e", "cache f"],
       "labels": [0, 0, 1, 1, 2, 2]}])
  result = tasks.ClusteringTask(name="c", path=clusters).evaluate(_OneHot(), dims=(4,), fmt=fmt)
  assert result[4]["v_measure"] == pytest.approx(1.0)

  rerank = _jsonl_file(tmp_path / "rr" / "test.jsonl", [
      {"query": "gecko q", "positive": ["lizard x"], "negative": ["piano y", "cache z"]},
      {"query": "piano q", "positive": ["kernel x"], "negative": ["guitar y"]}])
  result = tasks.RerankingTask(name="r", path=rerank).evaluate(_OneHot(), dims=(4,), fmt=fmt)
  assert result[4]["map"] == pytest.approx((1.0 + 0.5) / 2)
  assert result[4]["mrr_at_10"] == pytest.approx((1.0 + 0.5) / 2)

  summ = _jsonl_file(tmp_path / "sum" / "test.jsonl", [
      {"human_summaries": ["gecko h"], "machine_summaries": ["lizard m", "piano m", "gecko n"],
       "relevance": [5.0, 1.0, 4.0]},
      {"human_summaries": ["piano h"], "machine_summaries": ["piano m", "kernel m"],
       "relevance": [3.0, 3.0]}])
  result = tasks.SummarizationTask(name="s", path=summ).evaluate(_OneHot(), dims=(4,), fmt=fmt)
  # predicted [1, 0, 1] vs relevance [5, 1, 4]: ranks [2.5, 1, 2.5] vs [3, 1, 2]
  assert result[4]["cosine_spearman"] == pytest.approx(np.corrcoef([2.5, 1, 2.5], [3, 1, 2])[0, 1])
  assert result[4]["skipped_texts"] == 1.0

  bad = _jsonl_file(tmp_path / "bad" / "test.jsonl", [
      {"human_summaries": ["a"], "machine_summaries": ["b", "c"], "relevance": [1.0]}])
  with pytest.raises(ValueError, match="2 machine summaries but 1 relevance"):
    tasks.SummarizationTask(name="s", path=bad).evaluate(_OneHot(), dims=(4,), fmt=fmt)


def test_eval_cli_with_a_gin_task_object(tmp_path, tiny_model_dir):
  sts = _jsonl_file(tmp_path / "sts" / "test.jsonl", [
      {"sentence1": "the gecko", "sentence2": "the gecko climbs", "score": 4.5},
      {"sentence1": "a piano", "sentence2": "embed text", "score": 0.5},
      {"sentence1": "the model", "sentence2": "the text model", "score": 3.0}])
  result = subprocess.run(
      [sys.executable, "-m", "gecko.eval", "--gin_file=gin/runs/eval.gin",
       f"--gin.CHECKPOINT='{tiny_model_dir}'", f"--gin.OUTPUT_DIR='{tmp_path / 'out'}'",
       "--gin.EVAL_TASKS=[@tasks.STSTask()]", "--gin.tasks.STSTask.name='TinySTS'",
       f"--gin.tasks.STSTask.path='{sts}'", "--gin.GECKO_FORMAT=True"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  table = (tmp_path / "out" / "results.md").read_text()
  assert "| tiny | TinySTS | cosine_spearman | 8 |" in table and "| 24 |" in table


def test_eval_cli_requires_its_macros(tmp_path):
  result = subprocess.run([sys.executable, "-m", "gecko.eval", "--gin_file=gin/runs/eval.gin",
                           f"--gin.OUTPUT_DIR='{tmp_path}'"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 2 and "CHECKPOINT" in result.stderr
  assert "Traceback" not in result.stderr


PUBLISHED = {"STSBenchmark": (0.8203, 0.002), "SciFact": (0.6451, 0.003),
             "Banking77Classification": (0.8004, 0.01)}


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.exists(),
                    reason=f"published-score data not available at {SHARED_DATA}")
def test_imported_minilm_reproduces_published_mteb_scores(tmp_path, minilm):
  results = eval_lib.evaluate(checkpoint=minilm, tasks=["stsb", "scifact", "banking77"],
                              data_dir=str(SHARED_DATA), output_dir=str(tmp_path),
                              model_name="all-MiniLM-L6-v2")
  for task, (published, tolerance) in PUBLISHED.items():
    score = results[task][384]["main_score"]
    assert abs(score - published) <= tolerance, (task, score, published)
  assert results["SciFact"][384]["recall_at_100"] == pytest.approx(0.925, abs=0.005)
