"""Training batches from (query, positive[, negative]) text records, indexed by step.

`PairBatches.batch(step)` is a pure function of (records, seed, step): epoch `e`
visits the records in the order of a permutation seeded by (seed, e), so a resumed run
that restarts at step k sees exactly the batches an uninterrupted run saw (the data
position *is* the step). Each process builds only its own rows of the global batch.

Records come from Python (`records=`) or a JSONL file whose lines hold the texts:
`{"query": ..., "positive": ..., "negative": ...}` (negative optional), already in
Gecko's format (`task: ... | query: ...`, `title: ... | text: ...`) or given a
`query_prompt` / `passage_prompt` to format them. Batches follow `gecko.data.features`.
Records with a negative may also carry a teacher's scores of the positive and the
negative, `"teacher_positive": -12.3, "teacher_negative": -40.2` (e.g. a FRet record's
`positive_ql` / `negative_ql`), for a distillation loss (`GeckoLoss(distillation=...)`):
every record, or none. For a listwise loss over more than those two, records may carry
K candidate passages and the teacher's score of each, `"candidates": ["title: ... |
text: ...", ...], "teacher_candidates": [-12.3, ...]` (a FRet record's N retrieved
passages and their `candidate_ql`; `gecko.fret.triples --candidates`): the same K in
every record, or none (`GeckoLoss(distill_over="candidates")`).
"""

from __future__ import annotations

import json
import math
import sys
import zlib
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from gecko.data import features, jsonl, tokenization
from gecko.data.input_format import apply_prompt


def text_key(text: str) -> int:
  """A stable int32 hash of a text (for false-negative masking)."""
  return zlib.crc32(text.encode("utf-8")) & 0x7FFFFFFF


def _check_empty(numbered, fields) -> None:
  """All-empty texts in a field are an error; some empty ones a warning on stderr."""
  for field in fields:
    empty = [where for where, r in numbered if not r[field].strip()]
    if len(empty) == len(numbered):
      raise ValueError(f"every record's {field!r} is empty (first: {empty[0]}); nothing to "
                       "train on.")
    if empty:
      print(f"gecko: warning: {len(empty)} of {len(numbered)} training records have an empty "
            f"{field!r} (first: {empty[0]}); they train as empty texts.", file=sys.stderr)


# Files up to this many records are read and checked whole when opened (a CPU run's
# data: errors before the first step); larger ones record by record as batches need them.
EAGER_CHECK_RECORDS = 100_000


class PairBatches:
  """Deterministic, step-indexed, per-process batches of tokenized text pairs.

  A JSONL file is indexed by one pass over its bytes (`gecko.data.jsonl.LineIndex`);
  a process then reads only the records of the rows it holds (`rows`), so a resumed
  run goes straight to its step and the processes of a pod share the file without
  each reading all of it. Files of up to `EAGER_CHECK_RECORDS` records are read and
  checked whole when opened.

  Args:
    tokenizer: The model's WordPiece tokenizer.
    batch_size: Global batch size (all processes together).
    query_length, passage_length: Fixed padded lengths (<= the tokenizer's max).
    records: Dicts with "query", "positive" and optionally "negative" strings.
    path: Alternatively, a JSONL file of such records (local or gs://).
    query_prompt, passage_prompt: Optional prefixes/templates (see `gecko.encode`).
    seed: Shuffling seed.
    shuffle: Visit records in a new random order each epoch; False keeps the file
      order (e.g. records pre-grouped so that each batch holds one topic or task).
    shard_index, shard_count: This process's share of each global batch (`batch`; the
      trainer asks for its devices' rows directly through `rows`).
    check_records: Read and check every record when opened; None: when the file has
      at most `EAGER_CHECK_RECORDS` records (always for `records=`).
  """

  def __init__(self, *, tokenizer: tokenization.Tokenizer, batch_size: int,
               query_length: int = 64, passage_length: int = 64,
               records: Sequence[dict[str, str]] | None = None, path: str | None = None,
               query_prompt: str | None = None, passage_prompt: str | None = None,
               seed: int = 0, shuffle: bool = True, shard_index: int = 0,
               shard_count: int = 1, check_records: bool | None = None):
    if (records is None) == (path is None):
      raise ValueError("PairBatches needs exactly one of records= or path=.")
    if not 0 <= shard_index < shard_count or batch_size % shard_count:
      raise ValueError(f"input shard {shard_index} of {shard_count} does not split "
                       f"batch_size={batch_size}: the batch must divide into the shards.")
    self._index = jsonl.LineIndex(path, what="Training data") if path is not None else None
    self.num_records = len(records) if records is not None else len(self._index)
    if self.num_records < batch_size:
      raise ValueError(f"{self.num_records} records cannot fill one batch of {batch_size}.")
    self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
    self.shard_index, self.shard_count = shard_index, shard_count
    self._tokenizer, self._prompts = tokenizer, {"query": query_prompt,
                                                 "positive": passage_prompt,
                                                 "negative": passage_prompt}
    self._lengths = {"query": min(query_length, tokenizer.max_length),
                     "positive": min(passage_length, tokenizer.max_length),
                     "negative": min(passage_length, tokenizer.max_length)}
    eager = records is not None or (check_records if check_records is not None
                                    else self.num_records <= EAGER_CHECK_RECORDS)
    if eager:
      numbered = ([(f"records[{n}]", r) for n, r in enumerate(records)] if records is not None
                  else [(self._index.where(i), r) for i, r in
                        sorted(self._index.read(range(self.num_records)).items())])
      self._fields = _check_records(numbered)
      self._encoded = self._encode([r for _, r in numbered])  # every row, tokenized once
    else:
      first = self._index.read([0])[0]
      self._fields = _check_records([(self._index.where(0), first)])
      self._encoded = None

  @property
  def records_read(self) -> int:
    """Records decoded from the file so far (0 for `records=`)."""
    return self._index.records_read if self._index is not None else 0

  @property
  def feature_names(self) -> tuple[str, ...]:
    names = features.QUERY + features.POSITIVE
    if self._fields.negative:
      names += features.NEGATIVE
    if self._fields.teacher:
      names += features.TEACHER
    if self._fields.candidates:
      names += features.CANDIDATE + (features.TEACHER_CANDIDATES,)
    return names + (features.POSITIVE_KEY, features.QUERY_KEY)

  def global_indices(self, step: int) -> np.ndarray:
    """Record indices of the global batch at `step`."""
    start = step * self.batch_size
    out = []
    while len(out) < self.batch_size:
      epoch, offset = divmod(start + len(out), self.num_records)
      order = (np.random.default_rng([self.seed, epoch]).permutation(self.num_records)
               if self.shuffle else np.arange(self.num_records))
      out.extend(order[offset:offset + self.batch_size - len(out)].tolist())
    return np.asarray(out)

  def rows(self, step: int, start: int, stop: int) -> dict[str, np.ndarray]:
    """Rows `start:stop` of the global batch at `step` (a `gecko.data.features` dict),
    reading only their records."""
    indices = self.global_indices(step)[start:stop]
    if self._encoded is not None:
      return {name: values[indices] for name, values in self._encoded.items()}
    numbered = [(self._index.where(i), r) for i, r in self._index.read(indices).items()]
    found = _check_records(numbered, empties=False)
    for has, had, what, fix in ((found.negative, self._fields.negative, "a 'negative'",
                                 "a hard negative, or none (Eq. 2)"),
                                (found.teacher, self._fields.teacher, "teacher scores",
                                 "teacher scores, or none")):
      if has != had:
        raise ValueError(f"{numbered[0][0]}: records {'have' if has else 'lack'} {what} "
                         f"that the file's first record {'lacks' if has else 'has'}; give "
                         f"every record {fix}.")
    if found.candidates != self._fields.candidates:
      raise ValueError(f"{numbered[0][0]}: records have {found.candidates} 'candidates' where "
                       f"the file's first record has {self._fields.candidates}; give every "
                       "record the same number, or none.")
    by_index = {i: r for i, (_, r) in zip(sorted(set(indices.tolist())), numbered)}
    return self._encode([by_index[int(i)] for i in indices])

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """Shard `shard_index`'s rows of the global batch at `step`."""
    rows = self.batch_size // self.shard_count
    return self.rows(step, self.shard_index * rows, (self.shard_index + 1) * rows)

  def _encode(self, records: Sequence[dict[str, str]]) -> dict[str, np.ndarray]:
    """Tokenized, padded towers and text keys of `records`, in order."""
    out = {}
    texts = {}
    towers = ("query", "positive", "negative") if self._fields.negative else ("query", "positive")
    for tower in towers:
      texts[tower] = apply_prompt([r[tower] for r in records], self._prompts[tower])
      ids, mask = self._tokenizer.pad(self._tokenizer.encode_batch(texts[tower]),
                                      self._lengths[tower])
      out[f"{tower}_tokens"], out[f"{tower}_mask"] = ids, mask
    out[features.POSITIVE_KEY] = np.array([text_key(t) for t in texts["positive"]], np.int32)
    out[features.QUERY_KEY] = np.array([text_key(t) for t in texts["query"]], np.int32)
    if self._fields.teacher:
      for name in features.TEACHER:
        out[name] = np.array([r[name] for r in records], np.float32)
    if self._fields.candidates:
      flat = apply_prompt([c for r in records for c in r["candidates"]],
                          self._prompts["positive"])
      ids, mask = self._tokenizer.pad(self._tokenizer.encode_batch(flat),
                                      self._lengths["positive"])
      shape = (len(records), self._fields.candidates, -1)
      out["candidate_tokens"], out["candidate_mask"] = ids.reshape(shape), mask.reshape(shape)
      out[features.TEACHER_CANDIDATES] = np.array([r[features.TEACHER_CANDIDATES]
                                                   for r in records], np.float32)
    return out

  def close(self) -> None:
    """Nothing to release (files are opened per read); the same interface as
    `SeqioBatches.close`."""


class _Fields(NamedTuple):
  """What every record of a source carries besides its query and positive."""

  negative: bool  # a hard negative
  teacher: bool  # teacher scores of the positive and the negative
  candidates: int  # K candidates with a teacher's score each (0: none)


def _check_records(numbered: Sequence[tuple[str, object]], *, empties: bool = True
                   ) -> _Fields:
  """Checks (where, record) pairs (objects, string texts, a negative, teacher scores
  and candidates in all or none and, with `empties`, empty texts); returns what they
  carry."""
  for where, record in numbered:
    if not isinstance(record, dict):
      raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__} "
                       f"({json.dumps(record)[:60]}).")
    for field in ("query", "positive"):
      if not isinstance(record.get(field), str):
        raise ValueError(f"{where}: needs a string {field!r}, got {record!r:.120}.")
  with_negative = [isinstance(r.get("negative"), str) for _, r in numbered]
  has_negative = all(with_negative)
  if any(with_negative) and not has_negative:
    where = numbered[with_negative.index(False)][0]
    raise ValueError(f"{where}: has no string 'negative' while other records do; give "
                     "every record a hard negative, or none (Eq. 2).")
  if empties:
    _check_empty(numbered, ("query", "positive", "negative") if has_negative
                 else ("query", "positive"))
  return _Fields(negative=has_negative,
                 teacher=_check_teacher(numbered, has_negative=has_negative),
                 candidates=_check_candidates(numbered))


def _check_candidates(numbered: Sequence[tuple[str, dict]]) -> int:
  """K, the candidates every record carries with a teacher's score of each (0: none)."""
  fields = ("candidates", features.TEACHER_CANDIDATES)
  present = [any(name in r for name in fields) for _, r in numbered]
  if not any(present):
    return 0
  count = None
  for (where, record), has in zip(numbered, present):
    if not has:
      raise ValueError(f"{where}: has no 'candidates' while other records do; give every "
                       "record its candidates and their teacher scores, or none.")
    texts, scores = record.get("candidates"), record.get(features.TEACHER_CANDIDATES)
    if not (isinstance(texts, list) and all(isinstance(t, str) for t in texts)):
      raise ValueError(f"{where}: 'candidates' must be a list of passage texts, got "
                       f"{texts!r:.60}.")
    if not (isinstance(scores, list) and len(scores) == len(texts)
            and all(_is_score(x) for x in scores)):
      raise ValueError(f"{where}: {features.TEACHER_CANDIDATES!r} must be {len(texts)} finite "
                       f"numbers, one teacher score per candidate, got {scores!r:.60}.")
    if len(texts) < 2 or len(texts) != (count or len(texts)):
      want = "a listwise loss needs 2 or more" if len(texts) < 2 else f"the first has {count}"
      raise ValueError(f"{where}: has {len(texts)} 'candidates' where {want}; give every "
                       "record the same number K >= 2.")
    count = len(texts)
  return count


def _is_score(value: object) -> bool:
  """Whether `value` is a teacher's score: a finite number (not a bool)."""
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def _check_teacher(numbered: Sequence[tuple[str, dict]], *, has_negative: bool) -> bool:
  """Whether the records carry teacher scores (finite numbers, in all or none)."""
  present = [any(name in r for name in features.TEACHER) for _, r in numbered]
  if not any(present):
    return False
  for (where, record), has in zip(numbered, present):
    if not has:
      raise ValueError(f"{where}: has no teacher scores while other records do; give every "
                       f"record {features.TEACHER_POSITIVE!r} and "
                       f"{features.TEACHER_NEGATIVE!r}, or none.")
    bad = [name for name in features.TEACHER if not _is_score(record.get(name))]
    if bad:
      raise ValueError(f"{where}: {bad[0]!r} must be a finite number (a teacher's score), "
                       f"got {record.get(bad[0])!r:.60}.")
  if not has_negative:
    raise ValueError(f"{numbered[0][0]}: teacher scores score the positive against the hard "
                     "negative; these records have no 'negative'.")
  return True
