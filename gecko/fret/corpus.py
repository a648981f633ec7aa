"""FRet seed corpora: JSONL, BEIR `corpus.jsonl` and plain text, read defensively.

Formats (chosen by content, not by name):
  * JSONL `{"id", "text", "title"?}` — the FRet default;
  * BEIR `corpus.jsonl` `{"_id", "title", "text"}` (e.g. `../scifact/corpus.jsonl`);
  * plain text (`.txt`): one passage per line, its id the line number.

Corpora in the wild are messy, so what cannot be a passage is skipped and counted
(`CorpusStats`, reported in the run summary) instead of stopping a long run: empty or
blank passages, later records repeating an id (the first is kept), and bytes that are
not UTF-8 (decoded with U+FFFD replacement characters, the passage kept). A line that is
not JSON, or a record without a text or an id, is a format error named by file and line.
Long passages are kept whole here; the LLM prompts cut them to a token budget.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zlib
from collections.abc import Iterator, Sequence

import numpy as np


@dataclasses.dataclass
class CorpusStats:
  passages: int = 0
  empty_skipped: int = 0
  duplicate_ids_skipped: int = 0
  invalid_utf8_lines: int = 0

  def as_dict(self) -> dict[str, int]:
    return dataclasses.asdict(self)


def _lines(path: str, stats: CorpusStats) -> Iterator[tuple[int, str]]:
  with open(path, "rb") as f:
    for n, raw in enumerate(f, 1):
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError:
        line = raw.decode("utf-8", errors="replace")
        stats.invalid_utf8_lines += 1
      yield n, line.rstrip("\r\n")


def is_plain_text(path: str) -> bool:
  return path.endswith(".txt")


def parse_line(line: str, *, path: str, number: int | None, plain_text: bool = False
               ) -> dict[str, str] | None:
  """One corpus line as {"id", "title", "text"} (None for a blank line); format errors
  name `path:number` (or the line itself when its number is unknown, as in Beam)."""
  if plain_text:
    return {"id": str(number), "title": "", "text": line}
  if not line.strip():
    return None
  where = f"{path}:{number}" if number is not None else f"{path} (line {line[:60]!r})"
  try:
    record = json.loads(line)
  except json.JSONDecodeError as e:
    raise ValueError(f"{where}: not valid JSON ({e.msg}); corpora are JSONL "
                     "{\"id\", \"text\", \"title\"?}, BEIR corpus.jsonl, or .txt (one passage "
                     "per line).") from e
  pid = record.get("id", record.get("_id")) if isinstance(record, dict) else None
  if not isinstance(pid, (str, int)) or not isinstance(record.get("text"), str):
    raise ValueError(f"{where}: a passage needs a string 'text' and an 'id' (or BEIR "
                     f"'_id'), got {sorted(record) if isinstance(record, dict) else record!r}.")
  return {"id": str(pid), "title": str(record.get("title") or ""), "text": record["text"]}


def read_corpus(path: str) -> tuple[list[dict[str, str]], CorpusStats]:
  """Passages {"id", "title", "text"} in file order, and what was skipped."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"FRet corpus not found: {path!r}.")
  stats, seen, corpus = CorpusStats(), set(), []
  plain = is_plain_text(path)
  for n, line in _lines(path, stats):
    passage = parse_line(line, path=path, number=n, plain_text=plain)
    if passage is None:
      continue
    if not passage["text"].strip():
      stats.empty_skipped += 1
    elif passage["id"] in seen:
      stats.duplicate_ids_skipped += 1
    else:
      seen.add(passage["id"])
      corpus.append(passage)
  stats.passages = len(corpus)
  if not corpus:
    raise ValueError(f"{path} holds no passages ({stats.as_dict()}).")
  return corpus, stats


def embed(corpus: Sequence[dict], *, encoder: str, output_dir: str, batch_size: int) -> np.ndarray:
  """The passages' embeddings in the Gecko document format, cached in `output_dir`
  (keyed by encoder and corpus ids)."""
  from gecko.data.input_format import GECKO
  from gecko.encode import encode
  ids = "\n".join(p["id"] for p in corpus)
  key = zlib.crc32(f"{encoder}\n{ids}".encode("utf-8"))
  path = os.path.join(output_dir, f"corpus_embeddings_{key:08x}.npy")
  if os.path.exists(path):
    return np.load(path, mmap_mode="r")
  vectors = encode([GECKO.document(p["text"], title=p["title"]) for p in corpus], model=encoder,
                   batch_size=batch_size, show_progress=True)
  np.save(path + ".partial.npy", vectors)
  os.replace(path + ".partial.npy", path)
  return vectors
