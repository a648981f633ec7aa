"""MTEB task families over local data: retrieval, STS, classification.

Each task formats its inputs (`InputFormat`), embeds them once at full size through
the given `embed` function, and scores every requested Matryoshka dim from prefixes
of the same vectors. Results are {dim: {metric: value, "main_score": value}}.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from gecko.evaluation import datasets, metrics

Embed = Callable[[list[str]], np.ndarray]  # texts -> [n, D] unit-norm rows
Scores = dict[int, dict[str, float]]


@dataclasses.dataclass(frozen=True, kw_only=True)
class InputFormat:
  """Gecko's unified input format, or plain text for models not trained with it.

  Attributes:
    gecko: Use `task: {task} | query: {text}` on queries (both sides of symmetric
      tasks) and `title: {title} | text: {text}` on documents. False: queries are the
      plain text and documents `"{title} {text}"`, as MTEB feeds sentence-transformers.
    query_template, document_template: The Gecko templates.
  """

  gecko: bool = False
  query_template: str = "task: {task} | query: {text}"
  document_template: str = "title: {title} | text: {text}"

  def query(self, texts: Sequence[str], task: str) -> list[str]:
    if not self.gecko:
      return list(texts)
    return [self.query_template.format(task=task, text=t) for t in texts]

  def document(self, docs: Sequence[dict[str, str]]) -> list[str]:
    if not self.gecko:
      return [f"{d.get('title', '')} {d['text']}".strip() for d in docs]
    return [self.document_template.format(title=d.get("title") or "none", text=d["text"])
            for d in docs]


def _prefix(embeddings: np.ndarray, dim: int) -> np.ndarray:
  if dim > embeddings.shape[1]:
    raise ValueError(f"Matryoshka dim {dim} exceeds the embedding size {embeddings.shape[1]}.")
  x = embeddings[:, :dim]
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def top_k(queries: np.ndarray, corpus: np.ndarray, k: int, *, block: int = 65536
          ) -> tuple[np.ndarray, np.ndarray]:
  """Exact top-k by inner product, corpus processed in blocks; (indices, scores) best first."""
  if queries.shape[1] != corpus.shape[1]:
    raise ValueError(f"query dim {queries.shape[1]} != corpus dim {corpus.shape[1]}.")
  k = min(k, corpus.shape[0])
  best_idx = np.zeros((queries.shape[0], 0), np.int64)
  best_val = np.zeros((queries.shape[0], 0), np.float32)
  for start in range(0, corpus.shape[0], block):
    scores = queries @ corpus[start:start + block].T
    idx = np.concatenate([best_idx, np.arange(start, start + scores.shape[1])[None].repeat(
        len(queries), 0)], axis=1)
    val = np.concatenate([best_val, scores], axis=1)
    keep = np.argpartition(-val, min(k, val.shape[1]) - 1, axis=1)[:, :k]
    best_idx = np.take_along_axis(idx, keep, 1)
    best_val = np.take_along_axis(val, keep, 1)
  order = np.argsort(-best_val, axis=1, kind="stable")
  return np.take_along_axis(best_idx, order, 1), np.take_along_axis(best_val, order, 1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetrievalTask:
  """BEIR-layout retrieval; main score nDCG@10 (also MAP@10, recall@100, MRR@10)."""

  name: str
  path: str
  split: str = "test"
  task: str = "search result"
  main_score: str = "ndcg_at_10"
  type: str = "Retrieval"

  def evaluate(self, embed: Embed, *, dims: Sequence[int], fmt: InputFormat) -> Scores:
    data = datasets.load_beir(self.path, split=self.split)
    doc_ids = list(data.corpus)
    query_ids = list(data.queries)
    corpus = embed(fmt.document([data.corpus[d] for d in doc_ids]))
    queries = embed(fmt.query([data.queries[q] for q in query_ids], self.task))
    out: Scores = {}
    for dim in dims:
      idx, _ = top_k(_prefix(queries, dim), _prefix(corpus, dim), 100)
      rankings = {q: [doc_ids[i] for i in row] for q, row in zip(query_ids, idx)}
      per_metric = {
          "ndcg_at_10": (metrics.ndcg_at_k, 10), "map_at_10": (metrics.average_precision_at_k, 10),
          "recall_at_100": (metrics.recall_at_k, 100), "mrr_at_10": (metrics.mrr_at_k, 10)}
      scores = {name: float(np.mean([fn(data.qrels[q], rankings[q], k) for q in query_ids]))
                for name, (fn, k) in per_metric.items()}
      scores.update({f"dropped_{k}": float(v) for k, v in data.dropped.items()},
                    num_queries=float(len(query_ids)), main_score=scores[self.main_score])
      out[dim] = scores
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class STSTask:
  """Semantic similarity; main score Spearman of cosine vs gold (symmetric format)."""

  name: str
  path: str
  split: str = "test"
  task: str = "semantic similarity"
  main_score: str = "cosine_spearman"
  type: str = "STS"

  def evaluate(self, embed: Embed, *, dims: Sequence[int], fmt: InputFormat) -> Scores:
    data = datasets.load_sts(self.path, split=self.split)
    a = embed(fmt.query(data.sentence1, self.task))
    b = embed(fmt.query(data.sentence2, self.task))
    out: Scores = {}
    for dim in dims:
      cosine = np.sum(_prefix(a, dim) * _prefix(b, dim), axis=1)
      out[dim] = {"cosine_spearman": metrics.spearman(cosine, data.scores),
                  "cosine_pearson": metrics.pearson(cosine, data.scores)}
      out[dim]["main_score"] = out[dim][self.main_score]
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClassificationTask:
  """Logistic-regression probe, MTEB's protocol: `n_experiments` draws of
  `samples_per_label` training texts per label (numpy RandomState(seed) re-shuffling
  the same index list each experiment), LogisticRegression(max_iter=100), mean
  accuracy on the test split."""

  name: str
  path: str
  task: str = "classification"
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
    train_emb = embed(fmt.query([train.texts[j] for j in union], self.task))
    test_emb = embed(fmt.query(test.texts, self.task))
    out: Scores = {}
    for dim in dims:
      x_train, x_test = _prefix(train_emb, dim), _prefix(test_emb, dim)
      accuracy, f1 = [], []
      for chosen in draws:
        clf = LogisticRegression(max_iter=100)
        clf.fit(x_train[[position[j] for j in chosen]], [train.labels[j] for j in chosen])
        predicted = clf.predict(x_test)
        accuracy.append(accuracy_score(test.labels, predicted))
        f1.append(f1_score(test.labels, predicted, average="macro"))
      out[dim] = {"accuracy": float(np.mean(accuracy)), "f1": float(np.mean(f1)),
                  "accuracy_std": float(np.std(accuracy))}
      out[dim]["main_score"] = out[dim][self.main_score]
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
