"""Atomic, resumable FRet output shards (JSONL, optionally TFRecord as well).

Records are buffered and written `shard_size` at a time as `<prefix>-<n>.jsonl`: each
shard goes to a temporary name first (`gecko.data.jsonl.write`: a hidden `.partial`
file, which the FRet SeqIO task never reads) and is renamed into place only when
complete, so a shard on disk is always whole. On restart `done_ids()` lists the records already
written (resume skips them; with the LLM cache, the lost partial shard costs no LLM
calls), and numbering continues after the last shard, so nothing is lost or written
twice. The record schema is `gecko.fret.schema`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from gecko.data import jsonl
from gecko.fret import schema


class ShardWriter:
  """Args:
    output_dir: Where the shards go (created if absent).
    shard_size: Records per shard.
    prefix: Shard file-name prefix.
    tfrecord: Also write each shard as `<prefix>-<n>.tfrecord` (tf.train.Example).
  """

  def __init__(self, output_dir: str, *, shard_size: int = 1000, prefix: str = "fret",
               tfrecord: bool = False):
    if shard_size < 1:
      raise ValueError(f"shard_size must be >= 1, got {shard_size}.")
    self.output_dir, self.shard_size, self.prefix = output_dir, shard_size, prefix
    self.tfrecord = tfrecord
    os.makedirs(output_dir, exist_ok=True)
    self._pattern = re.compile(rf"{re.escape(prefix)}-(\d{{5}})\.jsonl$")
    self._buffer: list[dict] = []
    self._next = 1 + max((int(m.group(1)) for m in map(self._pattern.match, os.listdir(output_dir))
                          if m), default=-1)

  def shards(self) -> list[str]:
    """Complete JSONL shards, in order."""
    return sorted(os.path.join(self.output_dir, f) for f in os.listdir(self.output_dir)
                  if self._pattern.match(f))

  def done_ids(self) -> set[str]:
    """The ids of the records in complete shards."""
    ids = set()
    for path in self.shards():
      with open(path, "rb") as f:
        ids.update(record["id"] for _, record in jsonl.parse(f, path=path))
    return ids

  def add(self, record: Mapping) -> None:
    problems = schema.problems(record)
    if problems:
      raise ValueError(f"FRet record {record.get('id')!r}: {'; '.join(problems)}.")
    self._buffer.append(dict(record))
    if len(self._buffer) >= self.shard_size:
      self.flush()

  def flush(self) -> None:
    """Writes the buffered records as one shard (nothing when empty)."""
    if not self._buffer:
      return
    name = os.path.join(self.output_dir, f"{self.prefix}-{self._next:05d}")
    if self.tfrecord:  # first, so that a complete .jsonl implies a complete .tfrecord
      _atomic_tfrecord(name + ".tfrecord", self._buffer)
    jsonl.write(name + ".jsonl", self._buffer)
    self._buffer, self._next = [], self._next + 1

  def close(self) -> None:
    self.flush()


def _atomic_tfrecord(path: str, records: list[dict]) -> None:
  import tensorflow as tf
  tmp = path.removesuffix(".tfrecord") + ".partial-tfr"
  with tf.io.TFRecordWriter(tmp) as writer:
    for record in records:
      writer.write(schema.tf_example(record))
  os.replace(tmp, path)
