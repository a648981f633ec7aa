"""Fine-tuning tasks (paper §3.3, Eq. 3): FRet and the human-annotated sets.

Every task yields `query`, `positive` and `negative`, so that they mix freely.
"""

import functools

import seqio
from gecko_tasks.vocabulary import candidate_features, scored_triple_features, triple_features

from gecko.data import preprocessors as pp
from gecko.data import sources
from gecko.data.input_format import TASK_STRINGS
from gecko.evaluation import datasets as eval_datasets
from gecko.fret import schema as fret_schema

# --- FRet: the LLM-distilled data (gecko.fret writes it, gecko.fret.schema defines it).
seqio.TaskRegistry.add(
    "gecko_fret",
    source=sources.file_source(  # TFRecord copies when written, else the JSONL shards
        ("fret/fret-*.tfrecord*", "fret/fret-*.jsonl*"), alternatives=True,
        fields={name: str for name in fret_schema.TRAINING_FIELDS}),
    preprocessors=[pp.fret_fields, pp.format_asymmetric, seqio.preprocessors.tokenize],
    output_features=triple_features())

# The same records with the LLM's score of the positive and of the hard negative, QL or
# RC, for a distillation loss (GeckoLoss.distillation). They read the JSONL shards (the
# scores are numbers there); a record without the score (its run's ranking did not
# compute it) is a bad record. Each trains alone: the other tasks have no scores.
for _score in ("ql", "rc"):
  seqio.TaskRegistry.add(
      f"gecko_fret_{_score}",
      source=sources.file_source(
          "fret/fret-*.jsonl*",
          fields={**{name: str for name in fret_schema.TRAINING_FIELDS},
                  f"positive_{_score}": (int, float), f"negative_{_score}": (int, float)}),
      preprocessors=[functools.partial(pp.fret_teacher, score=_score), pp.fret_fields,
                     pp.format_asymmetric, seqio.preprocessors.tokenize],
      output_features=scored_triple_features())

# FRet triples with each query's N candidates and the LLM's score of each, for the
# listwise loss over every candidate (GeckoLoss(distill_over="candidates")): the file
# `gecko.fret.triples --candidates` writes, in DATA_DIR/fret_candidates, whose texts are
# already in Gecko's input format. SeqioBatches.candidates must be its N.
seqio.TaskRegistry.add(
    "gecko_fret_candidates",
    source=sources.file_source("fret_candidates/*.jsonl*", fields={
        "query": str, "positive": str, "negative": str,
        "candidates": sources.ListOf(str), "teacher_candidates": sources.ListOf((int, float))}),
    preprocessors=[pp.gecko_formatted, pp.candidate_lists, seqio.preprocessors.tokenize],
    output_features=candidate_features())

# --- Retrieval triples from files: query, positive and hard-negative passages.
RETRIEVAL_TASKS = {
    "nq": "Given a question, retrieve Wikipedia passages that answer the question",
    "hotpotqa": "Given a multi-hop question, retrieve documents that can help answer the question",
    "fever": "Given a claim, retrieve documents that support or refute the claim",
    "medmcqa": "Given a medical exam question, retrieve the answer and its explanation",
    "miracl": "Given a question, retrieve Wikipedia passages that answer the question",
}
_TRIPLE_FIELDS = {"query": str, "positive_title": (str, type(None)), "positive_text": str,
                  "negative_title": (str, type(None)), "negative_text": str}

for _name, _task in RETRIEVAL_TASKS.items():
  seqio.TaskRegistry.add(
      f"gecko_{_name}",
      source=sources.file_source(f"{_name}/*.jsonl*", fields=_TRIPLE_FIELDS,
                                 optional=("positive_title", "negative_title")),
      preprocessors=[functools.partial(pp.format_asymmetric, task=_task),
                     seqio.preprocessors.tokenize],
      output_features=triple_features())

# --- NLI (symmetric): premise -> entailment (positive), contradiction (hard negative).
NLI_TASK = "Given a premise, retrieve a hypothesis that is entailed by the premise"
_NLI_FIELDS = {"premise": "premise", "hypothesis": "hypothesis", "label": "label"}

for _name, _tfds in (("snli", "snli:1.*.*"), ("mnli", "multi_nli:1.*.*")):
  seqio.TaskRegistry.add(
      f"gecko_{_name}",
      source=sources.rows_source(sources.tfds_rows(_tfds, fields=_NLI_FIELDS), pp.nli_triples,
                                 fields=("query", "positive", "negative")),
      preprocessors=[functools.partial(pp.format_symmetric, task=NLI_TASK),
                     seqio.preprocessors.tokenize],
      output_features=triple_features())

# --- Classification (symmetric): same-label positive, other-label negative, unique ids.
CLASSIFICATION_TASK = TASK_STRINGS["Classification"]


def _ag_news_rows(options, split):
  rows = sources.tfds_rows("ag_news_subset:1.*.*", fields={
      "title": "title", "description": "description", "label": "label"})(options, split)
  return [{"text": f"{r['title']} {r['description']}".strip(), "label": r["label"]}
          for r in rows]


_CLASSIFICATION_SOURCES = {
    "ag_news": (_ag_news_rows, "Classify the given news articles into topics"),
    "imdb": (sources.tfds_rows("imdb_reviews/plain_text:1.*.*",
                               fields={"text": "text", "label": "label"}),
             "Classify the sentiment expressed in the given movie review text"),
}
for _name, (_load, _task) in _CLASSIFICATION_SOURCES.items():
  seqio.TaskRegistry.add(
      f"gecko_{_name}",
      source=sources.rows_source(_load, pp.classification_triples,
                                 fields=("query", "positive", "negative")),
      preprocessors=[functools.partial(pp.format_symmetric, task=_task),
                     seqio.preprocessors.tokenize],
      output_features=triple_features())


def _classification_files(rows, seed=0):
  """Triples within each file's dataset (labels of different datasets never mix)."""
  by_task = {}
  for row in rows:
    by_task.setdefault(row["task"] or CLASSIFICATION_TASK, []).append(row)
  out = []
  for task, task_rows in sorted(by_task.items()):
    for example in pp.classification_triples(task_rows, seed):
      out.append({**example, "task": task})
  return out


seqio.TaskRegistry.add(
    "gecko_classification",
    source=sources.rows_source(
        sources.jsonl_rows("classification/*.jsonl*", fields={
            "text": str, "label": (str, int), "task": (str, type(None))}, optional=("task",)),
        _classification_files, fields=("task", "query", "positive", "negative")),
    preprocessors=[pp.format_symmetric, seqio.preprocessors.tokenize],
    output_features=triple_features())


# --- STS-B train split (symmetric), from DATA_DIR/stsb (the STS-B distribution's files).
def _stsb_rows(options, split):
  data = eval_datasets.load_sts(options.path("stsb"), split=split)
  return [{"sentence1": a, "sentence2": b, "score": s}
          for a, b, s in zip(data.sentence1, data.sentence2, data.scores)]


seqio.TaskRegistry.add(
    "gecko_stsb",
    source=sources.rows_source(_stsb_rows, pp.sts_triples,
                               fields=("query", "positive", "negative"),
                               splits=("train", "dev")),
    preprocessors=[functools.partial(pp.format_symmetric, task=TASK_STRINGS["STS"]),
                   seqio.preprocessors.tokenize],
    output_features=triple_features())

# The human tasks again, to mix with a FRet task that carries a teacher's scores. SeqIO
# mixes only tasks with the same features, so each gets the same features, empty:
# - `<name>_no_teacher`: NaN scores of the pair, to mix with gecko_fret_ql / _rc
#   (mixtures gecko_fret_ql_human / gecko_fret_rc_human);
# - `<name>_no_candidates`: no candidates, to mix with gecko_fret_candidates (mixture
#   gecko_fret_candidates_human); the feature converter gives each row its positive K
#   times with NaN scores.
# The distillation term skips their rows; Eq. 3 trains on them as in gecko_fret_human.
UNSCORED_HUMAN_TASKS = ("gecko_stsb", "gecko_classification")
for _suffix, _empty, _features in (("no_teacher", pp.no_teacher, scored_triple_features()),
                                   ("no_candidates", pp.no_candidates, candidate_features())):
  for _name in UNSCORED_HUMAN_TASKS:
    _task = seqio.TaskRegistry.get(_name)
    *_formatting, _tokenize = _task.preprocessors
    seqio.TaskRegistry.add(f"{_name}_{_suffix}", source=_task.source,
                           preprocessors=[*_formatting, _empty, _tokenize],
                           output_features=_features)
