"""The model-feature contract: what a training batch holds (the one place it is defined).

A batch is a dict of NumPy/JAX arrays, one row per example, produced by the SeqIO
feature converter (`gecko.data.feature_converters`) or by `gecko.data.pairs`:

  query_tokens     int32 [B, Lq]  "[CLS] task: {task} | query: {query} [SEP]", 0-padded
  query_mask       int32 [B, Lq]  1 for tokens, 0 for padding
  positive_tokens  int32 [B, Lp]  the positive passage ("title: {title} | text: {text}")
  positive_mask    int32 [B, Lp]
  negative_tokens  int32 [B, Lp]  the example's hard negative       (fine-tuning only)
  negative_mask    int32 [B, Lp]                                      (fine-tuning only)
  positive_key     int32 [B]      a hash of the positive text        (optional: masks
  query_key        int32 [B]      a hash of the query text            in-batch false negatives)
  teacher_positive float32 [B]    a teacher's score of the positive   (optional: a
  teacher_negative float32 [B]    ... and of the hard negative         distillation loss)
  candidate_tokens int32 [B, K, Lp] each query's K candidate passages  (optional: a
  candidate_mask   int32 [B, K, Lp]                                     listwise loss over
  teacher_candidates float32 [B, K] a teacher's score of each one       every candidate)

Example (B=2, Lq=Lp=6, MiniLM ids):

  {"query_tokens":    [[101, 4708, 1024, 2054, 102, 0], [101, 4708, 1024, 2129, 2079, 102]],
   "query_mask":      [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]],
   "positive_tokens": [[101, 2516, 1024, 3793, 102, 0], ...], "positive_mask": [...],
   "negative_tokens": [...], "negative_mask": [...], "positive_key": [812, -33]}

Losses declare what they need (`required_features`) and `validate_features` checks a
feature set against that at construction, before anything is compiled. A training
data source is any `BatchSource` (`gecko.data.pairs.PairBatches`,
`gecko.data.seqio_batches.SeqioBatches`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import numpy as np

QUERY = ("query_tokens", "query_mask")
POSITIVE = ("positive_tokens", "positive_mask")
NEGATIVE = ("negative_tokens", "negative_mask")
POSITIVE_KEY = "positive_key"
QUERY_KEY = "query_key"

TEACHER_POSITIVE = "teacher_positive"
TEACHER_NEGATIVE = "teacher_negative"
TEACHER = (TEACHER_POSITIVE, TEACHER_NEGATIVE)
CANDIDATE = ("candidate_tokens", "candidate_mask")
TEACHER_CANDIDATES = "teacher_candidates"
FLOATS = frozenset(TEACHER + (TEACHER_CANDIDATES,))  # float32; every other feature is int32

ALL = (QUERY + POSITIVE + NEGATIVE + (POSITIVE_KEY, QUERY_KEY) + TEACHER + CANDIDATE
       + (TEACHER_CANDIDATES,))
# The towers the encoder embeds; "candidate" is [B, K, Lp], embedded as B * K passages.
TOWERS = {"query": QUERY, "positive": POSITIVE, "negative": NEGATIVE, "candidate": CANDIDATE}


def validate_features(available: Iterable[str], required: Iterable[str], *, who: str) -> None:
  """Raises ValueError naming the missing features (or unknown ones)."""
  available = set(available)
  unknown = sorted(available - set(ALL))
  if unknown:
    raise ValueError(f"{who}: unknown model features {unknown}; the contract "
                     f"(gecko/features.py) defines {list(ALL)}.")
  missing = [f for f in required if f not in available]
  if missing:
    raise ValueError(f"{who} needs the model features {missing}, which the data does not "
                     f"provide (it has {sorted(available)}).")


class BatchSource(Protocol):
  """What the trainer needs of its data: step-indexed batches of this contract."""

  batch_size: int  # the global batch (all processes together)

  @property
  def feature_names(self) -> tuple[str, ...]:
    """The model features every batch holds."""

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """This process's rows of the global batch at `step`."""

  def close(self) -> None:
    """Releases what the source holds open."""


@runtime_checkable
class RowSource(Protocol):
  """A `BatchSource` that reads any rows of any step's global batch directly: the
  trainer asks each process for the rows its devices hold (`gecko.data.pairs.PairBatches`)."""

  batch_size: int

  def rows(self, step: int, start: int, stop: int) -> dict[str, np.ndarray]:
    """Rows `start:stop` of the global batch at `step`."""


@runtime_checkable
class ResumableSource(Protocol):
  """A `BatchSource` whose position is more than its step (a streaming pipeline's
  buffers and read offsets): the trainer saves it with every checkpoint and seeks to it
  on resume (`gecko.data.seqio_batches.SeqioBatches`)."""

  def position(self, step: int) -> bytes:
    """The state before batch `step`, right after batch `step - 1` was read."""

  def seek(self, step: int, position: bytes) -> bool:
    """Restores `position(step)`; False when it does not fit (the source then says so
    and reaches `step` another way)."""
