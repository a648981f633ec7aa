"""Gecko's input formats and task strings, one place for training, evaluation and FRet.

The paper's unified format (Appendix B, Table 7):

  query, every task                  "task: {task} | query: {text}"
  document of an asymmetric task     "title: {title} | text: {text}"   ("none" when untitled)
  symmetric tasks (STS, NLI,         the query format on *both* sides
  classification, clustering)

Three formats are named: `GECKO` (the above), `PLAIN` (the Table 7 ablation, "{task}
{text}" and "{title} {text}") and `UNFORMATTED` (the text alone, and "{title} {text}"
for documents: what MTEB feeds a model not trained with a format, e.g. an imported
sentence-transformers model). `TASK_STRINGS` gives the task string of each MTEB task
type. A format is a plain frozen dataclass, so gin can bind a custom one:

  seqio_batches.SeqioBatches.input_format = @input_format.InputFormat()
  input_format.InputFormat.query_template = '{task} {text}'

The same template gives the same string in Python (`query`, `document`) and inside
a `tf.data` map (`query_tf`, `document_tf`, imported lazily so this module stays
free of TensorFlow).
"""

from __future__ import annotations

import dataclasses
import re
import string
from collections.abc import Mapping, Sequence

_ALLOWED = {"query_template": ({"text"}, {"task", "text"}),
            "document_template": ({"text"}, {"title", "text"})}


def _fields(template: str) -> list[str]:
  return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


@dataclasses.dataclass(frozen=True, kw_only=True)
class InputFormat:
  """Templates for the query and document sides.

  Attributes:
    query_template: Uses `{text}` and optionally `{task}`.
    document_template: Uses `{text}` and optionally `{title}`.
    empty_title: What `{title}` becomes for an untitled document.
  """

  query_template: str = "task: {task} | query: {text}"
  document_template: str = "title: {title} | text: {text}"
  empty_title: str = "none"

  def __post_init__(self):
    for attribute, (required, allowed) in _ALLOWED.items():
      template = getattr(self, attribute)
      names = _fields(template)
      bad = sorted(set(names) - allowed)
      if bad or not required <= set(names):
        raise ValueError(f"InputFormat.{attribute}={template!r} must use {sorted(required)} "
                         f"and may use {sorted(allowed)}; it has {names}.")

  def query(self, text: str, *, task: str) -> str:
    """The query side (and both sides of a symmetric task)."""
    return self.query_template.format(task=task, text=text).strip()

  def document(self, text: str, *, title: str | None = None) -> str:
    """The document side of an asymmetric task."""
    return self.document_template.format(title=title or self.empty_title, text=text).strip()

  def queries(self, texts: Sequence[str], task: str) -> list[str]:
    """`query` over a list."""
    return [self.query(text, task=task) for text in texts]

  def documents(self, docs: Sequence[Mapping[str, str | None]]) -> list[str]:
    """`document` over dicts with "text" and optionally "title"."""
    return [self.document(doc["text"], title=doc.get("title")) for doc in docs]

  def query_tf(self, text, *, task):
    """`query` on string tensors (any shape; `task` broadcasts)."""
    return _fill_tf(self.query_template, task=task, text=text)

  def document_tf(self, text, *, title=None):
    """`document` on string tensors; empty titles become `empty_title`."""
    import tensorflow as tf
    text = tf.convert_to_tensor(text, tf.string)
    if title is None:
      title = tf.fill(tf.shape(text), self.empty_title)
    else:
      title = tf.convert_to_tensor(title, tf.string)
      title = tf.where(tf.strings.length(tf.strings.strip(title)) > 0, title, self.empty_title)
    return _fill_tf(self.document_template, title=title, text=text)


def _fill_tf(template: str, **values):
  """`template.format(**values)` for string tensors, then stripped (as `str.strip`)."""
  import tensorflow as tf
  values = {k: tf.convert_to_tensor(v, tf.string) for k, v in values.items()}
  shape_of = next(iter(values.values()))
  parts = []
  for literal, name, _, _ in string.Formatter().parse(template):
    if literal:
      parts.append(tf.fill(tf.shape(shape_of), literal))
    if name is not None:
      parts.append(values[name] + tf.zeros_like(shape_of))  # broadcast scalars
  return tf.strings.strip(tf.strings.join(parts))


GECKO = InputFormat()
PLAIN = InputFormat(query_template="{task} {text}", document_template="{title} {text}",
                    empty_title="")
UNFORMATTED = InputFormat(query_template="{text}", document_template="{title} {text}",
                          empty_title="")

# The Gecko task string of each MTEB task type; `DEFAULT_TASK_STRING` for any other.
TASK_STRINGS: dict[str, str] = {
    "Retrieval": "search result", "Reranking": "search result",
    "InstructionRetrieval": "search result",
    "STS": "semantic similarity", "PairClassification": "semantic similarity",
    "Summarization": "semantic similarity", "BitextMining": "semantic similarity",
    "Classification": "classification", "MultilabelClassification": "classification",
    "Clustering": "clustering",
}
DEFAULT_TASK_STRING = "search result"


def apply_prompt(texts: Sequence[str], prompt: str | None) -> list[str]:
  """`prompt` with `{text}` is a template; otherwise it is a prefix (None: unchanged)."""
  if prompt is None:
    return list(texts)
  if not isinstance(prompt, str):
    raise TypeError(f"prompt must be a str or None, got {type(prompt).__name__}: {prompt!r}.")
  others = sorted(set(re.findall(r"\{(\w+)\}", prompt)) - {"text"})
  if others:
    raise ValueError(f"prompt {prompt!r} has the placeholder(s) {{{'}, {'.join(others)}}}; the "
                     "only one a template takes is {text} (anything else is a prefix).")
  if "{text}" in prompt:
    return [prompt.replace("{text}", t) for t in texts]
  return [prompt + t for t in texts]
