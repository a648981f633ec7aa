"""MTEB task families over local data: retrieval, STS, pair classification,
classification, clustering, reranking, summarization.

Each task formats its inputs (`gecko.data.input_format`), embeds them once at full size through
the given `embed` function, and scores every requested Matryoshka dim from prefixes
of the same vectors. Results are {dim: {metric: value, "main_score": value}}.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from gecko import retrieval
from gecko.data.input_format import TASK_STRINGS, InputFormat
from gecko.evaluation import datasets, metrics
from gecko.models.matryoshka import prefix_numpy as matryoshka_prefix

Embed = Callable[[list[str]], np.ndarray]  # texts -> [n, D] unit-norm rows
Scores = dict[int, dict[str, float]]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Task:
  """What every task has: a report name, its data (a directory or file), a split.

  Subclasses add `task` (the Gecko task string), `main_score` and `type` (the MTEB
  family) and implement `evaluate(embed, *, dims, fmt) -> {dim: scores}`.
  """

  name: str
  path: str
  split: str = "test"
  main_score: str = "main_score"

  def scored(self, scores: dict[str, float]) -> dict[str, float]:
    """`scores` plus `main_score`, the value of this task's main metric."""
    return dict(scores, main_score=scores[self.main_score])


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetrievalTask(Task):
  """BEIR-layout retrieval; main score nDCG@10 (also MAP@10, recall@100, MRR@10).

  `per_query=True` adds "ndcg_at_10_per_query" {query id: nDCG@10} to each dim's
  scores (for a paired bootstrap between models, `gecko.evaluation.bootstrap`)."""

  task: str = TASK_STRINGS["Retrieval"]
  main_score: str = "ndcg_at_10"
  type: str = "Retrieval"
  per_query: bool = False

  def evaluate(self, embed: Embed, *, dims: Sequence[int], fmt: InputFormat) -> Scores:
    data = datasets.load_beir(self.path, split=self.split)
    doc_ids = list(data.corpus)
    query_ids = list(data.queries)
    corpus = embed(fmt.documents([data.corpus[d] for d in doc_ids]))
    queries = embed(fmt.queries([data.queries[q] for q in query_ids], self.task))
    out: Scores = {}
    for dim in dims:
      idx, _ = retrieval.top_n(matryoshka_prefix(queries, dim), matryoshka_prefix(corpus, dim),
                               min(100, len(doc_ids)))
      rankings = {q: [doc_ids[i] for i in row] for q, row in zip(query_ids, idx)}
      per_metric = {
          "ndcg_at_10": (metrics.ndcg_at_k, 10), "map_at_10": (metrics.average_precision_at_k, 10),
          "recall_at_100": (metrics.recall_at_k, 100), "mrr_at_10": (metrics.mrr_at_k, 10)}
      each = {name: [fn(data.qrels[q], rankings[q], k) for q in query_ids]
              for name, (fn, k) in per_metric.items()}
      scores = {name: float(np.mean(values)) for name, values in each.items()}
      if self.per_query:
        scores["ndcg_at_10_per_query"] = {
            q: float(v) for q, v in zip(query_ids, each["ndcg_at_10"], strict=True)}
      scores.update({f"dropped_{k}": float(v) for k, v in data.dropped.items()},
                    num_queries=float(len(query_ids)))
      out[dim] = self.scored(scores)
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class STSTask(Task):
  """Semantic similarity; main score Spearman of cosine vs gold (symmetric format)."""

  task: str = TASK_STRINGS["STS"]
  main_score: str = "cosine_spearman"
  type: str = "STS"

  def evaluate(self, embed: Embed, *, dims: Sequence[int], fmt: InputFormat) -> Scores:
    data = datasets.load_sts(self.path, split=self.split)
    a = embed(fmt.queries(data.sentence1, self.task))
    b = embed(fmt.queries(data.sentence2, self.task))
    out: Scores = {}
    for dim in dims:
      cosine = np.sum(matryoshka_prefix(a, dim) * matryoshka_prefix(b, dim), axis=1)
      out[dim] = self.scored({"cosine_spearman": metrics.spearman(cosine, data.scores),
                              "cosine_pearson": metrics.pearson(cosine, data.scores)})
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class PairClassificationTask(Task):
  """Binary pair classification; main score max AP over cosine, dot product, and
  (negated) Euclidean and Manhattan distances, as MTEB reports `max_ap`."""

  task: str = TASK_STRINGS["PairClassification"]
  main_score: str = "max_ap"
  type: str = "PairClassification"

  def evaluate(self, embed: Embed, *, dims: Sequence[int], fmt: InputFormat) -> Scores:
    data = datasets.load_labelled_pairs(self.path, split=self.split)
    a = embed(fmt.queries(data.sentence1, self.task))
    b = embed(fmt.queries(data.sentence2, self.task))
    labels = [int(x) for x in data.scores]
    out: Scores = {}
    for dim in dims:
      x, y = matryoshka_prefix(a, dim), matryoshka_prefix(b, dim)
      similarity = {"cosine": np.sum(x * y, axis=1), "dot": np.sum(x * y, axis=1),
                    "euclidean": -np.linalg.norm(x - y, axis=1),
                    "manhattan": -np.sum(np.abs(x - y), axis=1)}
      scores = {f"{k}_ap": metrics.average_precision(v, labels) for k, v in similarity.items()}
      scores["max_ap"] = max(scores.values())
      out[dim] = self.scored(scores)
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClassificationTask(Task):
  """Logistic-regression probe, MTEB's protocol: `n_experiments` draws of
  `samples_per_label` training texts per label (numpy RandomState(seed) re-shuffling
  the same index list each experiment), LogisticRegression(max_iter=100), mean
  accuracy on the test split."""

  task: str = TASK_STRINGS["Classification"]
  samples_per_label: int = 8
  n_experiments: int = 10
  seed: int = 42
  main_score: str = "accuracy"
  type: str = "Classification"

  def training_draws(self, labels: Sequence[int]) -> list[list[int]]:
    idxs = list(range(len(labels)))
    draws = []
    for _ in range(self.n_experiments):
      np.random.RandomState(self.seed).shuffle(idxs)
      counts: dict[int, int] = {}
      chosen = []
      for i in idxs:
        if counts.get(labels[i], 0) < self.samples_per_label:
          chosen.append(i)
          counts[labels[i]] = counts.get(labels[i], 0) + 1
      draws.append(chosen)
    return draws

  def evaluate(self, embed: Embed, *, dims: Sequence[int], fmt: InputFormat) -> Scores:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    train, test = datasets.load_classification(self.path)
    draws = self.training_draws(train.labels)
    union = sorted(set().union(*draws))
    position = {j: p for p, j in enumerate(union)}
    train_emb = embed(fmt.queries([train.texts[j] for j in union], self.task))
    test_emb = embed(fmt.queries(test.texts, self.task))
    out: Scores = {}
    for dim in dims:
      x_train, x_test = matryoshka_prefix(train_emb, dim), matryoshka_prefix(test_emb, dim)
      accuracy, f1 = [], []
      for chosen in draws:
        clf = LogisticRegression(max_iter=100)
        clf.fit(x_train[[position[j] for j in chosen]], [train.labels[j] for j in chosen])
        predicted = clf.predict(x_test)
        accuracy.append(accuracy_score(test.labels, predicted))
        f1.append(f1_score(test.labels, predicted, average="macro"))
      out[dim] = self.scored({"accuracy": float(np.mean(accuracy)), "f1": float(np.mean(f1)),
                              "accuracy_std": float(np.std(accuracy))})
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClusteringTask(Task):
  """Clustering (MTEB's legacy protocol): per set of texts, MiniBatchKMeans with as many
  clusters as labels (batch 500, n_init="auto"), V-measure; mean over sets. Data: JSONL
  rows {"sentences": [...], "labels": [...]}."""

  task: str = TASK_STRINGS["Clustering"]
  seed: int = 42
  main_score: str = "v_measure"
  type: str = "Clustering"

  def evaluate(self, embed: Embed, *, dims: Sequence[int], fmt: InputFormat) -> Scores:
    from sklearn.cluster import MiniBatchKMeans
    sets = datasets.load_rows(self.path, self.split, ("sentences", "labels"))
    vectors = [embed(fmt.queries(row["sentences"], self.task)) for row in sets]
    out: Scores = {}
    for dim in dims:
      values = []
      for row, x in zip(sets, vectors):
        kmeans = MiniBatchKMeans(n_clusters=len(set(row["labels"])), batch_size=500,
                                 n_init="auto", random_state=self.seed)
        values.append(metrics.v_measure(row["labels"], kmeans.fit_predict(matryoshka_prefix(x, dim))))
      out[dim] = self.scored({"v_measure": float(np.mean(values)),
                              "v_measure_std": float(np.std(values))})
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class RerankingTask(Task):
  """Reranking: each query's candidates (positives + negatives) ordered by cosine; MAP
  over all candidates and MRR@10. Data: JSONL {"query", "positive": [...], "negative": [...]}."""

  task: str = TASK_STRINGS["Reranking"]
  main_score: str = "map"
  type: str = "Reranking"

  def evaluate(self, embed: Embed, *, dims: Sequence[int], fmt: InputFormat) -> Scores:
    rows = datasets.load_rows(self.path, self.split, ("query", "positive", "negative"))
    queries = embed(fmt.queries([r["query"] for r in rows], self.task))
    candidates = [r["positive"] + r["negative"] for r in rows]
    flat = embed(fmt.documents([{"text": c} for cs in candidates for c in cs]))
    bounds = np.cumsum([0] + [len(cs) for cs in candidates])
    out: Scores = {}
    for dim in dims:
      q, docs = matryoshka_prefix(queries, dim), matryoshka_prefix(flat, dim)
      ap, rr = [], []
      for i, row in enumerate(rows):
        scores = docs[bounds[i]:bounds[i + 1]] @ q[i]
        ranking = [str(j) for j in np.argsort(-scores, kind="stable")]
        relevant = {str(j): 1 for j in range(len(row["positive"]))}
        ap.append(metrics.average_precision_at_k(relevant, ranking, len(ranking)))
        rr.append(metrics.mrr_at_k(relevant, ranking, 10))
      out[dim] = self.scored({"map": float(np.mean(ap)), "mrr_at_10": float(np.mean(rr))})
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class SummarizationTask(Task):
  """Summarization (SummEval style): each machine summary is scored by its highest cosine
  to the human summaries; Spearman with the human relevance scores per text, averaged.
  Texts whose relevance scores are all equal cannot be ranked and are counted, not used.
  Data: JSONL {"human_summaries": [...], "machine_summaries": [...], "relevance": [...]}."""

  task: str = TASK_STRINGS["Summarization"]
  main_score: str = "cosine_spearman"
  type: str = "Summarization"

  def evaluate(self, embed: Embed, *, dims: Sequence[int], fmt: InputFormat) -> Scores:
    rows = datasets.load_rows(self.path, self.split,
                       ("human_summaries", "machine_summaries", "relevance"))
    for n, row in enumerate(rows, 1):
      if len(row["relevance"]) != len(row["machine_summaries"]):
        raise ValueError(f"{self.path}: row {n} has {len(row['machine_summaries'])} machine "
                         f"summaries but {len(row['relevance'])} relevance scores.")
    human = [embed(fmt.queries(r["human_summaries"], self.task)) for r in rows]
    machine = [embed(fmt.queries(r["machine_summaries"], self.task)) for r in rows]
    out: Scores = {}
    for dim in dims:
      values, skipped = [], 0
      for row, h, m in zip(rows, human, machine):
        if len(set(row["relevance"])) < 2:
          skipped += 1
          continue
        predicted = np.max(matryoshka_prefix(m, dim) @ matryoshka_prefix(h, dim).T, axis=1)
        values.append(metrics.spearman(predicted, row["relevance"]))
      if not values:
        raise ValueError(f"{self.path}: no text has varying relevance scores.")
      out[dim] = self.scored({"cosine_spearman": float(np.mean(values)),
                              "skipped_texts": float(skipped)})
    return out


def standard_tasks(data_dir: str) -> dict[str, object]:
  """The tasks of the layout in `../shared/data` (STS-B, SciFact, Banking77) by short name."""
  import os
  return {
      "stsb": STSTask(name="STSBenchmark", path=os.path.join(data_dir, "stsb")),
      "scifact": RetrievalTask(name="SciFact", path=os.path.join(data_dir, "scifact"),
                               task="fact checking"),
      "banking77": ClassificationTask(name="Banking77Classification",
                                      path=os.path.join(data_dir, "banking77")),
  }
