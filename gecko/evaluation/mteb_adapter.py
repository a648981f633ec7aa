"""Gecko models inside the `mteb` package (2.x): an encoder and local tasks.

`GeckoEncoder` implements mteb's encoder protocol, so the official benchmark runs on any
Gecko model (packaged name, Hugging Face directory, or a model saved by `gecko.train`):

    import mteb
    from gecko.evaluation.mteb_adapter import GeckoEncoder
    model = GeckoEncoder(model="all-MiniLM-L6-v2", gecko_format=False)
    mteb.evaluate(model, tasks=mteb.get_tasks(tasks=["STSBenchmark", "SciFact"]))

mteb's prompt types map to Gecko's input format: `query` → `task: {task} | query: {text}`,
`document` → `title: {title} | text: {text}`, none (symmetric tasks) → the query format.
The task string comes from `task_strings` (by mteb task name, then task type), then
the defaults of `gecko.evaluation.tasks`. With `gecko_format=False` texts go in as
mteb gives them (for models not trained with task strings).

`mteb_task` turns a local STS or retrieval task of `gecko.evaluation.tasks` into an mteb
task reading the same files, so mteb's own evaluators score local data offline.

Needs the optional dependency: `pip install -e ".[mteb]"` (install `torch==2.13.0`, or
the CPU build of torch, first).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from datasets import Dataset, DatasetDict
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta
from mteb.types import PromptType

from gecko import encode as encode_lib
from gecko.data import input_format
from gecko.data.packaged_models import DEFAULT_MODEL
from gecko.evaluation import datasets as local_datasets
from gecko.evaluation import tasks as local_tasks
from gecko.models import embedder as embedder_lib

REFERENCE = "https://arxiv.org/abs/2403.20327"


class GeckoEncoder(AbsEncoder):
  """A Gecko dual encoder for `mteb.evaluate`.

  Args:
    model_name: mteb's name for the model, `organization/name` (default
      `gecko/<model directory name>`); results are filed under it.
    revision: mteb's revision string (e.g. a training step).
    model: An `Embedder`, packaged model name, or model directory (see
      `gecko.models.embedder.load`).
    dim: A Matryoshka dim to evaluate at (None: full size).
    gecko_format: Apply Gecko's task/title templates (see the module docstring).
    task_strings: Overrides of the task string by mteb task name or task type.
    batch_size: Texts per forward pass.
    release_date: `YYYY-MM-DD` for the model card (default: today).
  """

  def __init__(self, model_name: str | None = None, revision: str | None = None, *,
               model: embedder_lib.PathLike | embedder_lib.Embedder = DEFAULT_MODEL,
               dim: int | None = None, gecko_format: bool = True,
               task_strings: Mapping[str, str] | None = None, batch_size: int = 32,
               release_date: str | None = None, device: str | None = None,
               **unused: Any) -> None:
    del device, unused  # JAX places the model; mteb's loader may pass more options.
    self.model = embedder_lib.load(model)
    if dim is not None and dim not in self.model.dims:
      raise ValueError(f"dim={dim!r} is not one of the model's Matryoshka dims "
                       f"{self.model.dims}; pick one of them or None.")
    self.dim = dim
    self.format = input_format.GECKO if gecko_format else input_format.UNFORMATTED
    self.task_strings = dict(task_strings or {})
    self.batch_size = batch_size
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(self.model.params))
    name = model_name or "gecko/" + (
        "gecko" if isinstance(model, embedder_lib.Embedder) else embedder_lib.model_name(model))
    if dim is not None and model_name is None:
      name += f"-{dim}"
    self.mteb_model_meta = ModelMeta(
        loader=None, name=name, revision=revision or "local",
        release_date=release_date or datetime.date.today().isoformat(),
        languages=["eng-Latn"], n_parameters=n_params,
        memory_usage_mb=round(n_params * 4 / 2**20, 1),
        max_tokens=self.model.tokenizer.max_length,
        embed_dim=dim or self.model.output_dim, license="apache-2.0", open_weights=True,
        public_training_code=None, public_training_data=None, framework=["JAX"],
        reference=REFERENCE, similarity_fn_name="cosine", use_instructions=gecko_format,
        training_datasets=None)

  def task_string(self, task_metadata: TaskMetadata) -> str:
    """The Gecko task string for an mteb task: by name, by type, then the default."""
    for key in (task_metadata.name, task_metadata.type):
      if key in self.task_strings:
        return self.task_strings[key]
    return input_format.TASK_STRINGS.get(task_metadata.type, input_format.DEFAULT_TASK_STRING)

  def format_batch(self, batch: Mapping[str, Any], *, task_metadata: TaskMetadata,
                   prompt_type: PromptType | None) -> list[str]:
    """The texts of one mteb batch in Gecko's input format."""
    if prompt_type == PromptType.document and "body" in batch:
      titles = batch.get("title") or [""] * len(batch["body"])
      return self.format.documents([{"title": t, "text": b}
                                   for t, b in zip(titles, batch["body"])])
    return self.format.queries(list(batch["text"]), self.task_string(task_metadata))

  def encode(self, inputs, *, task_metadata: TaskMetadata, hf_split: str, hf_subset: str,
             prompt_type: PromptType | None = None, **kwargs: Any) -> np.ndarray:
    """Embeds every batch of `inputs` (an mteb DataLoader); unit-norm float32 rows."""
    del hf_split, hf_subset, kwargs
    texts: list[str] = []
    for batch in inputs:
      texts.extend(self.format_batch(batch, task_metadata=task_metadata,
                                     prompt_type=prompt_type))
    return encode_lib.encode(texts, model=self.model, batch_size=self.batch_size,
                             dim=self.dim)


_METADATA = dict(
    reference=REFERENCE, category="t2t", eval_langs=["eng-Latn"],
    date=("2024-01-01", "2024-01-01"), dialect=[], domains=[], task_subtypes=[],
    license="not specified", annotations_creators="derived", modalities=["text"],
    sample_creation="found", bibtex_citation="")


def _metadata(task: local_tasks.Task, *, mteb_type: str, main_score: str) -> TaskMetadata:
  return TaskMetadata(
      name=f"Local{task.name}", description=f"Local data at {task.path} (split {task.split}).",
      dataset={"path": os.fspath(task.path), "revision": "local"}, type=mteb_type,
      main_score=main_score, eval_splits=[task.split], **_METADATA)


def mteb_task(task: local_tasks.Task):
  """An mteb task reading the files of a local `STSTask` or `RetrievalTask`.

  Named `Local<task.name>`; scores land under mteb's metric names (`cosine_spearman`,
  `ndcg_at_10`, ...). Raises TypeError for other task families.
  """
  if isinstance(task, local_tasks.STSTask):
    data = local_datasets.load_sts(task.path, split=task.split)
    low, high = float(min(data.scores)), float(max(data.scores))

    class LocalSTS(AbsTaskSTS):
      metadata = _metadata(task, mteb_type="STS", main_score="cosine_spearman")
      min_score, max_score = low, (high if high > low else low + 1.0)

      def load_data(self, **kwargs: Any) -> None:
        self.dataset = DatasetDict({task.split: Dataset.from_dict({
            "sentence1": list(data.sentence1), "sentence2": list(data.sentence2),
            "score": [float(s) for s in data.scores]})})
        self.data_loaded = True

    return LocalSTS()
  if isinstance(task, local_tasks.RetrievalTask):
    beir = local_datasets.load_beir(task.path, split=task.split)

    class LocalRetrieval(AbsTaskRetrieval):
      metadata = _metadata(task, mteb_type="Retrieval", main_score="ndcg_at_10")

      def load_data(self, **kwargs: Any) -> None:
        split = RetrievalSplitData(
            corpus=Dataset.from_list([{"id": d, "title": doc.get("title", ""),
                                       "text": doc["text"]} for d, doc in beir.corpus.items()]),
            queries=Dataset.from_list([{"id": q, "text": t} for q, t in beir.queries.items()]),
            relevant_docs={q: {d: int(s) for d, s in rel.items()}
                           for q, rel in beir.qrels.items()},
            top_ranked=None)
        self.dataset = {"default": {task.split: split}}
        self.data_loaded = True

    return LocalRetrieval()
  raise TypeError(f"mteb_task supports STSTask and RetrievalTask, got {type(task).__name__}; "
                  "run other families with gecko.eval.")
