"""An on-disk cache of LLM calls, so that a killed FRet run resumes without repeating them.

One SQLite file; every call's result is committed as soon as it returns (SQLite
commits are atomic, so a kill at any point loses at most the calls in flight). Keys
hash everything that determines the answer: backend, model, kind of call, prompt and
sampling parameters. Safe to share between the threads of one process.

A cache travels as text: `export` writes its calls as sorted JSON lines (the keys'
hashes and the LLM's answers, no prompt), `merge` adds such a file's calls to a cache,
so a run made elsewhere is replayed without an LLM call:

  python -m gecko.fret.cache export RUN/llm_cache.sqlite calls.jsonl
  python -m gecko.fret.cache merge RUN/llm_cache.sqlite calls.jsonl
"""

from __future__ import annotations

import hashlib
import json
import argparse
import os
import sqlite3
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any


def call_key(*, backend: str, model: str, kind: str, prompt: Any, params: dict | None = None
             ) -> str:
  """A stable hex key for one LLM call."""
  blob = json.dumps([backend, model, kind, prompt, params or {}], sort_keys=True,
                    ensure_ascii=False)
  return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class CacheError(ValueError):
  """An LLM cache file that SQLite cannot read."""


class LLMCache:
  """`get`/`put` JSON values by key; `hits` and `misses` count lookups.

  Args:
    path: The SQLite file (created with its directory if absent).
  """

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    self._lock = threading.Lock()
    self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
    self._execute("PRAGMA journal_mode=WAL")
    self._execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, value TEXT)")
    self._execute("PRAGMA quick_check").fetchall()  # a damaged file fails now, not mid-run
    self.hits = self.misses = 0

  def _execute(self, sql: str, parameters: tuple = ()) -> sqlite3.Cursor:
    try:
      return self._db.execute(sql, parameters)
    except sqlite3.DatabaseError as e:  # not a database, truncated, malformed
      if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
        raise
      raise CacheError(
          f"the LLM cache {self.path} cannot be read ({e}). Move it aside to start a new "
          f"one (the calls it held are made again): mv {self.path} {self.path}.broken"
      ) from None

  def get(self, key: str) -> Any | None:
    with self._lock:
      row = self._execute("SELECT value FROM calls WHERE key = ?", (key,)).fetchone()
    if row is None:
      self.misses += 1
      return None
    self.hits += 1
    return json.loads(row[0])

  def put(self, key: str, value: Any) -> None:
    with self._lock:
      self._execute("INSERT OR REPLACE INTO calls VALUES (?, ?)", (key, json.dumps(value)))

  def export(self, path: str | os.PathLike) -> int:
    """Writes every call to `path` as JSON lines {"key", "value"}, sorted by key (a text
    file that can be committed or shared: hashes and the LLM's answers, no prompt);
    returns how many. The file is replaced whole, never left half-written."""
    from gecko.data import paths
    with self._lock:
      rows = self._execute("SELECT key, value FROM calls ORDER BY key").fetchall()
    paths.write_text(path, "".join(
        json.dumps({"key": key, "value": json.loads(value)}, ensure_ascii=False) + "\n"
        for key, value in rows))
    return len(rows)

  def merge(self, path: str | os.PathLike) -> int:
    """Adds the calls of an `export`ed file that this cache lacks (the cache's own answer
    wins); returns how many were added."""
    rows = []
    with open(path, encoding="utf-8") as f:
      for number, line in enumerate(f, 1):
        try:
          row = json.loads(line)
          rows.append((row["key"], json.dumps(row["value"])))
        except (ValueError, KeyError, TypeError):
          raise CacheError(f"{path}:{number} is not a line of LLMCache.export "
                           f'({{"key": ..., "value": ...}}): {line[:80]!r}') from None
    with self._lock:
      before = self._execute("SELECT COUNT(*) FROM calls").fetchone()[0]
      self._execute("BEGIN")
      self._db.executemany("INSERT OR IGNORE INTO calls VALUES (?, ?)", rows)
      self._execute("COMMIT")
      return self._execute("SELECT COUNT(*) FROM calls").fetchone()[0] - before

  def __len__(self) -> int:
    with self._lock:
      return self._execute("SELECT COUNT(*) FROM calls").fetchone()[0]

  def close(self) -> None:
    with self._lock:
      self._db.close()

  def __enter__(self) -> LLMCache:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def through(cache: LLMCache | None, keys: Sequence[str],
            compute: Callable[[list[int]], Sequence[Any]]) -> list[Any]:
  """Values for `keys`: cached ones read, the others computed together by
  `compute(missing_indices)` (one batched LLM call) and stored; no cache: all computed."""
  values = [cache.get(key) if cache is not None else None for key in keys]
  missing = [i for i, value in enumerate(values) if value is None]
  if missing:
    for i, value in zip(missing, compute(missing), strict=True):
      values[i] = value
      if cache is not None:
        cache.put(keys[i], value)
  return values


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m gecko.fret.cache",
                                   description="Write an LLM cache's calls as JSON lines, "
                                   "or add such a file's calls to a cache.")
  parser.add_argument("action", choices=("export", "merge"))
  parser.add_argument("cache", help="the SQLite cache (a FRet run's llm_cache.sqlite)")
  parser.add_argument("calls", help="the JSON lines file")
  args = parser.parse_args(argv)
  if args.action == "export" and not os.path.exists(args.cache):
    parser.error(f"{args.cache!r} does not exist: export reads a FRet run's llm_cache.sqlite")
  if args.action == "merge" and not os.path.exists(args.calls):
    parser.error(f"{args.calls!r} does not exist: merge reads a file written by export")
  with LLMCache(args.cache) as cache:
    try:
      count = cache.export(args.calls) if args.action == "export" else cache.merge(args.calls)
    except CacheError as e:
      parser.error(str(e))
    total = len(cache)
  print(f"{args.action}: {count} calls ({total} in {args.cache})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
