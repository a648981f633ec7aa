"""The FRet record: the one schema the FRet pipeline writes and the FRet SeqIO task reads.

A FRet shard is JSONL (one record per line) or TFRecord (one `tf.train.Example` per
record, with the same feature names). Example record:

  {"id": "wiki-000123", "task_type": "question answering",
   "task": "Given a question, retrieve a passage that answers it",
   "query": "how do geckos climb walls",
   "seed_id": "d17", "seed_title": "Gecko", "seed_text": "Geckos climb using ...",
   "positive_id": "d17", "positive_title": "Gecko", "positive_text": "Geckos climb using ...",
   "negative_id": "d902", "negative_title": "Wall", "negative_text": "A wall is ...",
   "positive_is_seed": true, "positive_ql": -12.3, "positive_rc": -0.11,
   "negative_ql": -40.2, "negative_rc": -3.9,
   "candidate_ids": ["d17", "d5", "d902"], "candidate_ql": [-12.3, -20.8, -40.2],
   "candidate_rc": [-0.11, -1.7, -3.9], "llm": "llama_cpp:SmolLM2-135M-Instruct"}

Titles may be empty strings. Training reads `TRAINING_FIELDS`; the rest documents
how the record was made (scores are log-probabilities from the LLM: QL = log P(query |
passage), RC = log P(relevant label | query, passage)). `candidate_*` are every
candidate the LLM ranked (the retrieved neighbours, the seed among them), in retrieval
order, with its QL and RC score: a teacher's graded judgement for distillation (the
positive and the negative are two of them).
"""

from __future__ import annotations

from collections.abc import Mapping

# name -> Python type of the value
FIELDS: dict[str, type] = {
    "id": str, "task_type": str, "task": str, "query": str,
    "seed_id": str, "seed_title": str, "seed_text": str,
    "positive_id": str, "positive_title": str, "positive_text": str,
    "negative_id": str, "negative_title": str, "negative_text": str,
    "positive_is_seed": bool,
    "positive_ql": float, "positive_rc": float, "negative_ql": float, "negative_rc": float,
    "candidate_ids": list, "candidate_ql": list, "candidate_rc": list,
    "llm": str,
}
# The type of each element of a list field.
ELEMENTS: dict[str, type] = {"candidate_ids": str, "candidate_ql": float, "candidate_rc": float}

# LLM scores; None when the run's ranking did not compute it (e.g. RC under ranking='ql'),
# or when no LLM ranked the candidates (then candidate_ids is None too).
OPTIONAL = frozenset({"positive_ql", "positive_rc", "negative_ql", "negative_rc",
                      "candidate_ids", "candidate_ql", "candidate_rc"})

# What the FRet SeqIO task needs (the seed passage serves the "seed-labelled" ablation).
TRAINING_FIELDS = ("task", "query", "seed_title", "seed_text", "positive_title",
                   "positive_text", "negative_title", "negative_text")


def problems(record: Mapping[str, object], *, fields=tuple(FIELDS)) -> list[str]:
  """What is wrong with `record` for `fields` (missing or mistyped); empty when valid."""
  out = []
  for name in fields:
    if name not in record:
      out.append(f"missing field {name!r}")
    elif record[name] is None and name in OPTIONAL:
      continue
    elif FIELDS[name] is float and isinstance(record[name], (int, float)):
      continue
    elif not isinstance(record[name], FIELDS[name]):
      out.append(f"field {name!r} should be {FIELDS[name].__name__}, got {record[name]!r:.60}")
    elif name in ELEMENTS and not all(_is(x, ELEMENTS[name]) for x in record[name]):
      out.append(f"field {name!r} should be a list of {ELEMENTS[name].__name__}, got "
                 f"{record[name]!r:.60}")
  lengths = {len(record[n]) for n in ELEMENTS if isinstance(record.get(n), list)}
  if len(lengths) > 1:
    out.append(f"the candidate_* lists differ in length: {sorted(lengths)}")
  return out


def _is(value: object, kind: type) -> bool:
  if kind is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  return isinstance(value, kind)


def tf_example(record: Mapping[str, object]) -> bytes:
  """A record as a serialized `tf.train.Example` (the TFRecord shard format)."""
  import tensorflow as tf

  def feature(value):
    if isinstance(value, str):
      return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode("utf-8")]))
    if isinstance(value, bool):
      return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
      return tf.train.Feature(bytes_list=tf.train.BytesList(value=[x.encode("utf-8")
                                                                   for x in value]))
    values = value if isinstance(value, list) else [value]
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(x) for x in values]))
  return tf.train.Example(features=tf.train.Features(feature={
      k: feature(v) for k, v in record.items() if k in FIELDS and v is not None})
  ).SerializeToString()
