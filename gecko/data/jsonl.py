"""JSON Lines, read and written in one place: errors name `file:line`, writes are atomic.

  records = jsonl.read_objects("train.jsonl", what="Training data")  # [dict, ...]
  for number, value in jsonl.parse(lines, path=path): ...             # any line source
  jsonl.write("out/records.jsonl", records)                           # tmp file + rename
  jsonl.write_beir("eval/task", corpus=..., queries=..., qrels=...)   # a BEIR directory

Blank lines are skipped everywhere; `.gz` files are read transparently.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from gecko.data import paths


def decode(line: str | bytes, *, where: str) -> Any:
  """One JSON value; a ValueError naming `where` (e.g. "file:12") when it is not JSON."""
  try:
    if isinstance(line, bytes):
      line = line.decode("utf-8")
    return json.loads(line)
  except UnicodeDecodeError as e:
    raise ValueError(f"{where}: not valid UTF-8 ({e.reason} at byte {e.start}).") from e
  except json.JSONDecodeError as e:
    raise ValueError(f"{where}: not valid JSON ({e.msg}).") from e


def parse(lines: Iterable[str | bytes], *, path: str) -> Iterator[tuple[int, Any]]:
  """(line number, value) of every non-blank line of `lines`, read from `path`."""
  for number, line in enumerate(lines, 1):
    if line.strip():
      yield number, decode(line, where=f"{path}:{number}")


def _open(path: str):
  """A binary reader of a local or bucket (gs://) file; `.gz` decompressed."""
  raw = paths.open_binary(path)
  return gzip.open(raw, "rb") if path.endswith(".gz") else raw


def read_numbered(path: str | os.PathLike, *, what: str = "JSONL file"
                  ) -> list[tuple[int, dict[str, Any]]]:
  """(line number, object) of every line; `what` names the file's role in the
  not-found error, and a line that is not a JSON object is an error naming it."""
  path = os.fspath(path)
  if not paths.exists(path):
    raise FileNotFoundError(f"{what} not found: {path!r}.")
  records = []
  with _open(path) as f:
    for number, value in parse(f, path=path):
      if not isinstance(value, dict):
        raise ValueError(f"{path}:{number}: expected a JSON object, got "
                         f"{type(value).__name__} ({json.dumps(value)[:60]}).")
      records.append((number, value))
  return records


class LineIndex:
  """Random access to a JSONL file's records by number, without decoding the others.

  One pass over the file's bytes finds where each non-blank line starts; `read(numbers)`
  then seeks to just those lines and decodes them (errors name `file:line`).
  `records_read` counts the records decoded, so callers can show they read only their
  share. A `.gz` file cannot be seeked: its lines are held decompressed in memory.
  """

  def __init__(self, path: str | os.PathLike, *, what: str = "JSONL file"):
    self.path = os.fspath(path)
    if not paths.exists(self.path):
      raise FileNotFoundError(f"{what} not found: {self.path!r}.")
    self.records_read = 0
    self._lines: list[bytes] | None = None
    starts, numbers = [], []
    with _open(self.path) as f:
      if self.path.endswith(".gz"):
        self._lines = []
      offset = 0
      for number, line in enumerate(f, 1):
        if line.strip():
          starts.append(offset)
          numbers.append(number)
          if self._lines is not None:
            self._lines.append(line)
        offset += len(line)
    self._starts = np.asarray(starts, np.int64)
    self._numbers = np.asarray(numbers, np.int64)

  def __len__(self) -> int:
    return len(self._starts)

  def where(self, index: int) -> str:
    """`file:line` of record `index`."""
    return f"{self.path}:{self._numbers[index]}"

  def read(self, indices: Iterable[int]) -> dict[int, Any]:
    """{record index: its JSON value} for `indices` (each decoded once)."""
    wanted = sorted(set(int(i) for i in indices))
    out = {}
    if self._lines is not None:
      for i in wanted:
        out[i] = decode(self._lines[i], where=self.where(i))
    else:
      with paths.open_binary(self.path) as f:
        for i in wanted:
          f.seek(int(self._starts[i]))
          out[i] = decode(f.readline(), where=self.where(i))
    self.records_read += len(wanted)
    return out


def read_objects(path: str | os.PathLike, *, what: str = "JSONL file") -> list[dict[str, Any]]:
  """Every line's JSON object (see `read_numbered`)."""
  return [record for _, record in read_numbered(path, what=what)]


def write(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> int:
  """Writes `records` one per line (UTF-8, not ASCII-escaped) through a temporary file
  renamed into place, so a reader never sees half a file; returns the count."""
  path = os.fspath(path)
  directory, name = os.path.split(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = os.path.join(directory, f".{name}.partial")  # matches no `prefix-*` glob
  count = 0
  try:
    with open(tmp, "w", encoding="utf-8") as f:
      for record in records:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        count += 1
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return count


def write_beir(directory: str | os.PathLike, *, corpus: Iterable[Mapping[str, str]],
               queries: Iterable[Mapping[str, str]],
               qrels: Mapping[str, Sequence[tuple[str, str]]]) -> None:
  """A BEIR task directory: `corpus.jsonl` ({"_id", "title", "text"} from passages with
  "id"), `queries.jsonl` ({"_id", "text"} from {"id", "text"}) and one
  `qrels/<split>.tsv` per entry of `qrels` (split -> [(query id, passage id)], score 1)."""
  directory = os.fspath(directory)
  write(os.path.join(directory, "corpus.jsonl"),
        ({"_id": p["id"], "title": p.get("title") or "", "text": p["text"]} for p in corpus))
  write(os.path.join(directory, "queries.jsonl"),
        ({"_id": q["id"], "text": q["text"]} for q in queries))
  os.makedirs(os.path.join(directory, "qrels"), exist_ok=True)
  for split, pairs in qrels.items():
    with open(os.path.join(directory, "qrels", f"{split}.tsv"), "w", encoding="utf-8") as f:
      f.write("query-id\tcorpus-id\tscore\n")
      f.writelines(f"{query}\t{passage}\t1\n" for query, passage in pairs)
