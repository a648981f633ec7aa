"""Preprocessors for Gecko's SeqIO tasks: example conversions and the input format.

Conversions (plain Python, over a whole split; `gecko.data.sources.rows_source`):
  `nli_triples`             premise -> entailed hypothesis (positive), contradicted
                            hypothesis (hard negative); symmetric.
  `classification_triples`  text -> another text with the same label (positive), a text
                            with another label (negative); the paper's unique id is
                            appended to all three so that in-batch negatives are not
                            false negatives.
  `sts_triples`             STS pairs scored >= a threshold, in both directions.

Formatting (tf.data, reading the active `DataOptions.input_format` when the pipeline
is built), producing the task features `query`, `positive` and `negative` strings:
  `format_asymmetric`  fields task?, query, positive_title, positive_text,
                       negative_title?, negative_text?  (query format / document format)
  `format_symmetric`   fields task?, query, positive, negative?  (query format on all sides)
  `fret_fields`        FRet records -> the asymmetric fields, positive from the LLM's
                       top-ranked passage or (ablation) the seed passage.
  `fret_teacher`       FRet records' QL or RC scores of the positive and the negative ->
                       float32 `teacher_positive` / `teacher_negative` (the scored FRet
                       tasks), which the formatting passes on untouched.
  `no_teacher`         NaN `teacher_positive` / `teacher_negative` for a task without a
                       teacher, so that it mixes with the scored FRet tasks (the
                       distillation term skips those rows).
  `gecko_formatted`    checks that the run's input format is Gecko's, for records whose
                       texts were written in it (`gecko.fret.triples`).
  `candidate_lists`    a triples file's `candidates` and `teacher_candidates` (list
                       fields, `sources.ListOf`) -> a `[K]` vector of passages and
                       float32 `[K]` scores (the listwise loss over every candidate).
  `no_candidates`      no candidates (`[0]` passages and scores) for a task without them,
                       so that it mixes with the candidates task; the feature converter
                       fills its K rows and NaN scores (the listwise term skips them).
"""

from __future__ import annotations

import collections
import random
from collections.abc import Sequence

import tensorflow as tf

from gecko.data import sources as seqio_sources
from gecko.data.features import TEACHER, TEACHER_CANDIDATES
from gecko.data.input_format import GECKO

# TFDS SNLI/MNLI label ids.
ENTAILMENT, NEUTRAL, CONTRADICTION = 0, 1, 2


def nli_triples(rows: Sequence[dict], seed: int = 0) -> list[dict[str, str]]:
  """One (premise, entailment, contradiction) triple per entailed hypothesis.

  Args:
    rows: Dicts with "premise", "hypothesis" and an int "label" (0 entailment,
      1 neutral, 2 contradiction; others ignored).
    seed: Unused (the conversion is deterministic); kept for `rows_source`.

  Premises without both an entailed and a contradicted hypothesis are dropped; a
  premise's contradictions are paired with its entailments in turn.
  """
  del seed
  by_premise: dict[str, dict[int, list[str]]] = collections.defaultdict(
      lambda: collections.defaultdict(list))
  for row in rows:
    if int(row["label"]) in (ENTAILMENT, CONTRADICTION):
      by_premise[row["premise"]][int(row["label"])].append(row["hypothesis"])
  out = []
  for premise, hypotheses in by_premise.items():
    contradictions = hypotheses[CONTRADICTION]
    for i, entailed in enumerate(hypotheses[ENTAILMENT]):
      if contradictions:
        out.append({"query": premise, "positive": entailed,
                    "negative": contradictions[i % len(contradictions)]})
  return out


def with_id(text: str, uid: str) -> str:
  return f"{text} (id {uid})"


def classification_triples(rows: Sequence[dict], seed: int = 0) -> list[dict[str, str]]:
  """(x, x+, x-) per text: x+ shares x's label, x- has another; `(id n)` appended to all.

  Args:
    rows: Dicts with "text" and "label" (any hashable); an optional "task" is kept.
    seed: Picks the partners.

  Texts whose label has no other text are dropped; a single-label dataset is an error.
  """
  by_label: dict[object, list[int]] = collections.defaultdict(list)
  for i, row in enumerate(rows):
    by_label[row["label"]].append(i)
  if len(by_label) < 2:
    raise ValueError(f"classification data needs at least two labels, got {list(by_label)}.")
  rng = random.Random(seed)
  labels = list(by_label)
  out = []
  for i, row in enumerate(rows):
    same = by_label[row["label"]]
    if len(same) < 2:
      continue
    j = same[rng.randrange(len(same) - 1)]
    j = same[-1] if j == i else j
    other = rng.choice([label for label in labels if label != row["label"]])
    k = rng.choice(by_label[other])
    uid = str(len(out))
    example = {"query": with_id(row["text"], uid), "positive": with_id(rows[j]["text"], uid),
               "negative": with_id(rows[k]["text"], uid)}
    if "task" in row:
      example["task"] = row["task"]
    out.append(example)
  return out


def sts_triples(rows: Sequence[dict], seed: int = 0, *, min_score: float = 4.0
                ) -> list[dict[str, str]]:
  """STS pairs scored >= `min_score`, both directions; the negative is the second
  sentence of a random pair scored below 2."""
  rng = random.Random(seed)
  low = [r["sentence2"] for r in rows if float(r["score"]) < 2.0]
  if not low:
    raise ValueError("STS data has no pair scored below 2 to draw negatives from.")
  out = []
  for r in rows:
    if float(r["score"]) >= min_score:
      for a, b in ((r["sentence1"], r["sentence2"]), (r["sentence2"], r["sentence1"])):
        out.append({"query": a, "positive": b, "negative": rng.choice(low)})
  return out


def _task(example, task: str | None):
  return example["task"] if task is None else tf.constant(task)


def format_asymmetric(dataset: tf.data.Dataset, *, task: str | None = None) -> tf.data.Dataset:
  """query -> query format (with `task`, or the record's "task"); passages -> document format."""
  fmt = seqio_sources.active().input_format

  def apply(example):
    out = {"query": fmt.query_tf(example["query"], task=_task(example, task)),
           "positive": fmt.document_tf(example["positive_text"],
                                       title=example.get("positive_title"))}
    if "negative_text" in example:
      out["negative"] = fmt.document_tf(example["negative_text"],
                                        title=example.get("negative_title"))
    return {**out, **_teacher(example)}
  return dataset.map(apply, num_parallel_calls=tf.data.AUTOTUNE)


def _teacher(example) -> dict:
  """The example's teacher scores, which every preprocessor passes on."""
  return {name: example[name] for name in TEACHER if name in example}


def format_symmetric(dataset: tf.data.Dataset, *, task: str | None = None) -> tf.data.Dataset:
  """The query format on query, positive and negative (STS, NLI, classification)."""
  fmt = seqio_sources.active().input_format

  def apply(example):
    task_text = _task(example, task)
    return {name: fmt.query_tf(example[name], task=task_text)
            for name in ("query", "positive", "negative") if name in example}
  return dataset.map(apply, num_parallel_calls=tf.data.AUTOTUNE)


def fret_fields(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """FRet records -> asymmetric fields; `DataOptions.fret_positive` picks the positive.

  With "seed", records whose hard negative is the seed passage itself are dropped.
  """
  source = {"llm": "positive", "seed": "seed"}[seqio_sources.active().fret_positive]
  if source == "seed":
    dataset = dataset.filter(lambda x: tf.not_equal(x["seed_text"], x["negative_text"]))

  def apply(x):
    return {"task": x["task"], "query": x["query"],
            "positive_title": x[f"{source}_title"], "positive_text": x[f"{source}_text"],
            "negative_title": x["negative_title"], "negative_text": x["negative_text"],
            **_teacher(x)}
  return dataset.map(apply, num_parallel_calls=tf.data.AUTOTUNE)


def no_teacher(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """NaN teacher scores on every example: a human-annotated task in a mixture with the
  scored FRet tasks (SeqIO mixes only tasks with the same features). `GeckoLoss` takes
  the distillation term over the rows whose scores are finite; these train on Eq. 3."""
  nan = tf.constant(float("nan"), tf.float32)
  return dataset.map(lambda x: {**x, **{name: nan for name in TEACHER}},
                     num_parallel_calls=tf.data.AUTOTUNE)


def fret_teacher(dataset: tf.data.Dataset, *, score: str) -> tf.data.Dataset:
  """A FRet record's LLM scores of its positive and hard negative (`score`: "ql" or
  "rc", as decoded strings) -> float32 `teacher_positive` / `teacher_negative`, for a
  distillation loss (`GeckoLoss.distillation`). Runs before `fret_fields`."""
  if seqio_sources.active().fret_positive != "llm":
    raise ValueError("the scored FRet tasks score the LLM's positive; the seed-labelled "
                     "ablation (fret_positive='seed') has no teacher score for its positive: "
                     "use gecko_fret with it.")

  def apply(x):
    return {**x, TEACHER[0]: tf.strings.to_number(x[f"positive_{score}"], tf.float32),
            TEACHER[1]: tf.strings.to_number(x[f"negative_{score}"], tf.float32)}
  return dataset.map(apply, num_parallel_calls=tf.data.AUTOTUNE)


def gecko_formatted(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """The dataset unchanged, when the run's input format is Gecko's: the records' texts
  were written in it (`gecko.fret.triples`), so another format cannot be applied."""
  if seqio_sources.active().input_format != GECKO:
    raise ValueError("this task's texts are already in Gecko's input format (written by "
                     "gecko.fret.triples): train it with input_format=GECKO, or write the "
                     "triples in the other format and train them as JSONL pairs.")
  return dataset


def candidate_lists(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """`candidates` / `teacher_candidates` as joined strings (`sources.ListOf`) -> a `[K]`
  string vector of formatted passages and their float32 `[K]` teacher scores."""
  def apply(x):
    split = lambda name: tf.strings.split(x[name], seqio_sources.ITEM_SEPARATOR)  # noqa: E731
    return {**x, "candidates": split("candidates"),
            TEACHER_CANDIDATES: tf.strings.to_number(split(TEACHER_CANDIDATES), tf.float32)}
  return dataset.map(apply, num_parallel_calls=tf.data.AUTOTUNE)


def no_candidates(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """Empty `candidates` and `teacher_candidates` on every example: a task without
  candidates, to mix with `gecko_fret_candidates`. The feature converter repeats the
  positive K times with NaN scores, which the listwise term skips."""
  def apply(x):
    return {**x, "candidates": tf.zeros([0], tf.string),
            TEACHER_CANDIDATES: tf.zeros([0], tf.float32)}
  return dataset.map(apply, num_parallel_calls=tf.data.AUTOTUNE)
