"""Training batches from (query, positive[, negative]) text records, indexed by step.

`PairBatches.batch(step)` is a pure function of (records, seed, step): epoch `e`
visits the records in the order of a permutation seeded by (seed, e), so a resumed run
that restarts at step k sees exactly the batches an uninterrupted run saw (the data
position *is* the step). Each process builds only its own rows of the global batch.

Records come from Python (`records=`) or a JSONL file whose lines hold the texts:
`{"query": ..., "positive": ..., "negative": ...}` (negative optional), already in
Gecko's format (`task: ... | query: ...`, `title: ... | text: ...`) or given a
`query_prompt` / `passage_prompt` to format them. Batches follow `gecko.data.features`.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Sequence

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


class PairBatches:
  """Deterministic, step-indexed, per-process batches of tokenized text pairs.

  Args:
    tokenizer: The model's WordPiece tokenizer.
    batch_size: Global batch size (all processes together).
    query_length, passage_length: Fixed padded lengths (<= the tokenizer's max).
    records: Dicts with "query", "positive" and optionally "negative" strings.
    path: Alternatively, a JSONL file of such records.
    query_prompt, passage_prompt: Optional prefixes/templates (see `gecko.encode`).
    seed: Shuffling seed.
    shuffle: Visit records in a new random order each epoch; False keeps the file
      order (e.g. records pre-grouped so that each batch holds one topic or task).
    process_index, process_count: This process's share of each global batch.
  """

  def __init__(self, *, tokenizer: tokenization.Tokenizer, batch_size: int,
               query_length: int = 64, passage_length: int = 64,
               records: Sequence[dict[str, str]] | None = None, path: str | None = None,
               query_prompt: str | None = None, passage_prompt: str | None = None,
               seed: int = 0, shuffle: bool = True, process_index: int = 0,
               process_count: int = 1):
    if (records is None) == (path is None):
      raise ValueError("PairBatches needs exactly one of records= or path=.")
    if records is not None:
      numbered = [(f"records[{n}]", r) for n, r in enumerate(records)]
    else:
      numbered = [(f"{path}:{line}", r)
                  for line, r in jsonl.read_numbered(path, what="Training data")]
    records = [r for _, r in numbered]
    if len(records) < batch_size:
      raise ValueError(f"{len(records)} records cannot fill one batch of {batch_size}.")
    if batch_size % process_count:
      raise ValueError(f"batch_size={batch_size} is not divisible by {process_count} processes.")
    for where, record in numbered:
      for field in ("query", "positive"):
        if not isinstance(record.get(field), str):
          raise ValueError(f"{where}: needs a string {field!r}, got {record!r:.120}.")
    with_negative = [isinstance(r.get("negative"), str) for r in records]
    has_negative = all(with_negative)
    if any(with_negative) and not has_negative:
      where = numbered[with_negative.index(False)][0]
      raise ValueError(f"{where}: has no string 'negative' while other records do; give "
                       "every record a hard negative, or none (Eq. 2).")
    _check_empty(numbered, ("query", "positive", "negative") if has_negative
                 else ("query", "positive"))
    self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
    self.process_index, self.process_count = process_index, process_count
    self.num_records = len(records)
    self._lengths = {"query": min(query_length, tokenizer.max_length),
                     "positive": min(passage_length, tokenizer.max_length),
                     "negative": min(passage_length, tokenizer.max_length)}
    texts = {
        "query": apply_prompt([r["query"] for r in records], query_prompt),
        "positive": apply_prompt([r["positive"] for r in records], passage_prompt),
    }
    if has_negative:
      texts["negative"] = apply_prompt([r["negative"] for r in records], passage_prompt)
    self._tokens = {}
    for tower, values in texts.items():
      ids, mask = tokenizer.pad(tokenizer.encode_batch(values), self._lengths[tower])
      self._tokens[tower] = ids, mask
    self._keys = {features.POSITIVE_KEY: np.array([text_key(t) for t in texts["positive"]],
                                                  np.int32),
                  features.QUERY_KEY: np.array([text_key(t) for t in texts["query"]], np.int32)}

  @property
  def feature_names(self) -> tuple[str, ...]:
    names = features.QUERY + features.POSITIVE
    if "negative" in self._tokens:
      names += features.NEGATIVE
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

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """This process's rows of the global batch at `step` (a `gecko.data.features` dict)."""
    rows = self.batch_size // self.process_count
    idx = self.global_indices(step)[self.process_index * rows:(self.process_index + 1) * rows]
    out = {}
    for tower, (ids, mask) in self._tokens.items():
      out[f"{tower}_tokens"], out[f"{tower}_mask"] = ids[idx], mask[idx]
    for name, keys in self._keys.items():
      out[name] = keys[idx]
    return out

  def close(self) -> None:
    """Nothing to release (batches are built from memory); the same interface as
    `SeqioBatches.close`."""

