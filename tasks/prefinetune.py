"""Pre-finetuning tasks: question-answer and title-body pairs (paper §3.1, Eq. 2)."""

import functools

import seqio
from gecko_tasks.vocabulary import pair_features

from gecko.data import preprocessors as pp
from gecko.data import sources

QUESTION_ANSWERING = "question answering"
SEARCH_RESULT = "search result"


def _rename(dataset, **mapping):
  return dataset.map(lambda x: {new: x[old] for new, old in mapping.items()})


seqio.TaskRegistry.add(
    "gecko_pft_qa",
    source=sources.file_source("prefinetune/qa/*.jsonl*", fields={
        "question": str, "answer": str, "title": (str, type(None))}, optional=("title",)),
    preprocessors=[
        functools.partial(_rename, query="question", positive_text="answer",
                          positive_title="title"),
        functools.partial(pp.format_asymmetric, task=QUESTION_ANSWERING),
        seqio.preprocessors.tokenize,
    ],
    output_features=pair_features())

seqio.TaskRegistry.add(
    "gecko_pft_title_body",
    source=sources.file_source("prefinetune/title_body/*.jsonl*",
                               fields={"title": str, "body": str}),
    preprocessors=[
        functools.partial(_rename, query="title", positive_text="body"),
        functools.partial(pp.format_asymmetric, task=SEARCH_RESULT),
        seqio.preprocessors.tokenize,
    ],
    output_features=pair_features())


def _squad_pairs(rows, seed=0):
  del seed
  return [{"query": r["question"], "positive_title": r["title"], "positive_text": r["context"]}
          for r in rows]


seqio.TaskRegistry.add(
    "gecko_pft_squad",
    source=sources.rows_source(
        sources.tfds_rows("squad/v1.1:3.*.*", fields={
            "question": "question", "title": "title", "context": "context"}),
        _squad_pairs, fields=("query", "positive_title", "positive_text")),
    preprocessors=[
        functools.partial(pp.format_asymmetric, task=QUESTION_ANSWERING),
        seqio.preprocessors.tokenize,
    ],
    output_features=pair_features())
