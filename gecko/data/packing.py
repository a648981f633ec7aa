"""Packing token sequences into rows, and rows into batches by a token budget.

Padding is wasted compute: a batch of texts padded to its longest spends FLOPs on
pad tokens (1.4x the real tokens for STS-B sentences at batch 64, 1.8x for
docstring paragraphs). Here several texts share a row of `row_length` tokens, each
a segment (ids 1, 2, ...; 0 pads the row's tail), and the model keeps attention and
pooling within a segment (`DualEncoder(..., segments=...)`).

* Rows come in a few lengths (`row_lengths`: powers of two up to the model's
  maximum). A text goes to the shortest row class at least `SPREAD` times its length
  (the longest class if none): rows then hold several texts, so little is left over,
  and short texts do not pay for long rows' attention (which grows with the row).
* Within a class, first-fit decreasing: texts longest first, each into the open row
  with the least room that still fits it.
* `batches` cuts each class's rows into batches of about `token_budget` tokens, so
  short texts come in many rows per batch and long ones in few. Row counts are
  rounded up to a power of two (few distinct shapes, few compiles).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

SPREAD = 4  # a text goes to rows at least this many times its length (measured: 2, 4, 8)


@dataclasses.dataclass(frozen=True)
class Row:
  """Texts (indices into the input) sharing one row, in segment order."""

  texts: tuple[int, ...]
  length: int  # the row's padded length (its class)


def row_lengths(max_length: int, *, shortest: int = 32) -> list[int]:
  """Powers of two from `shortest` below `max_length`, then `max_length` itself."""
  if max_length < 1:
    raise ValueError(f"max_length must be >= 1, got {max_length}.")
  sizes, size = [], shortest
  while size < max_length:
    sizes.append(size)
    size *= 2
  return sizes + [max_length]


def pack(lengths: Sequence[int], *, max_length: int, max_segments: int) -> list[Row]:
  """Packs sequences of the given lengths (each <= max_length) into rows.

  Args:
    lengths: Token count of each text.
    max_length: The longest row (and text) the model takes.
    max_segments: At most this many texts per row (a static size of the model's output).

  Returns:
    Rows; every index of `lengths` appears in exactly one row.
  """
  if max_segments < 1:
    raise ValueError(f"max_segments must be >= 1, got {max_segments}.")
  lengths = np.asarray(lengths, dtype=np.int64)
  if lengths.size and (lengths.max() > max_length or lengths.min() < 0):
    raise ValueError(f"text lengths must lie in [0, {max_length}], got "
                     f"[{lengths.min()}, {lengths.max()}]; truncate the texts first.")
  classes = row_lengths(max_length)
  klass = np.searchsorted(np.asarray(classes), SPREAD * lengths, side="left")
  klass = np.minimum(klass, len(classes) - 1)
  order = np.argsort(-lengths, kind="stable")
  rows: list[Row] = []
  for c, size in enumerate(classes):
    members = order[klass[order] == c]
    rows.extend(_first_fit_decreasing(members, lengths, size=size, max_segments=max_segments))
  return rows


def _first_fit_decreasing(members: np.ndarray, lengths: np.ndarray, *, size: int,
                          max_segments: int) -> list[Row]:
  """Best-fit packing of `members` (sorted longest first) into rows of `size` tokens."""
  contents: list[list[int]] = []
  room: list[int] = []
  # open_rows[r] = rows with exactly r tokens of room that can still take a text.
  open_rows: list[list[int]] = [[] for _ in range(size + 1)]
  for index in members.tolist():
    need = int(lengths[index])
    row = next((open_rows[r].pop() for r in range(need, size + 1) if open_rows[r]), None)
    if row is None:
      row = len(contents)
      contents.append([])
      room.append(size)
    contents[row].append(index)
    room[row] -= need
    if len(contents[row]) < max_segments and room[row] > 0:
      open_rows[room[row]].append(row)
  return [Row(texts=tuple(c), length=size) for c in contents]


def batches(rows: Sequence[Row], *, token_budget: int) -> list[list[Row]]:
  """Consecutive rows of one length, about `token_budget` tokens per batch."""
  if token_budget < 1:
    raise ValueError(f"token_budget must be >= 1, got {token_budget}.")
  out: list[list[Row]] = []
  by_length: dict[int, list[Row]] = {}
  for row in rows:
    by_length.setdefault(row.length, []).append(row)
  for length in sorted(by_length, reverse=True):
    group = by_length[length]
    per_batch = max(1, token_budget // length)
    out.extend(group[i:i + per_batch] for i in range(0, len(group), per_batch))
  return out


def padded_rows(count: int, *, limit: int) -> int:
  """`count` rounded up to a power of two, at most `limit` (a batch's compiled row count)."""
  return min(limit, 1 << max(0, count - 1).bit_length())


def arrays(batch: Sequence[Row], ids: Sequence[Sequence[int]], *, rows: int, pad_id: int
           ) -> tuple[np.ndarray, np.ndarray]:
  """(token ids, segment ids), both int32 `[rows, length]`, for a batch of packed rows."""
  length = batch[0].length
  token_ids = np.full((rows, length), pad_id, np.int32)
  segment_ids = np.zeros((rows, length), np.int32)
  for r, row in enumerate(batch):
    start = 0
    for s, index in enumerate(row.texts, 1):
      seq = ids[index]
      token_ids[r, start:start + len(seq)] = seq
      segment_ids[r, start:start + len(seq)] = s
      start += len(seq)
  return token_ids, segment_ids
