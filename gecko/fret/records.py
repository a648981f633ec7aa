"""The FRet records on disk: the shards, the failures and the run summary.

Both runners write here and every reader reads from here:

  writer = ShardWriter(output_dir, shard_size=1000)   # the local runner's shards
  records.read(output_dir)                            # every complete shard, either runner's
  records.append_failures(output_dir, failures)       # failures.jsonl
  records.write_summary(summary, output_dir)          # summary.json and summary.png

Shards are `fret-NNNNN.jsonl` (the local runner) or `fret-NNNNN-of-NNNNN.jsonl` (Beam),
with a `.tfrecord` twin when asked for, and the `gecko_fret` SeqIO task reads either.
The local writer buffers records and writes `shard_size` at a time: each shard goes to
a temporary name first (`gecko.data.jsonl.write`: a hidden `.partial` file, which the
SeqIO task never reads) and is renamed into place only when complete, so a shard on
disk is always whole. On restart `done_ids()` lists the records already written
(resume skips them; with the LLM cache, the lost partial shard costs no LLM calls), and
numbering continues after the last shard, so nothing is lost or written twice. The
record schema is `gecko.fret.schema`.
"""

from __future__ import annotations

import collections
import io
import json
import os
import re
from collections.abc import Mapping, Sequence

from gecko.data import jsonl, paths
from gecko.fret import schema
from gecko.fret.config import FretConfig, check_count

# A complete JSONL shard of either runner.
SHARD = re.compile(r"fret-\d{5}(-of-\d{5})?\.jsonl$")


def shard_paths(output_dir: str) -> list[str]:
  """The complete JSONL shards in `output_dir` (local or gs://), in order."""
  if not paths.exists(output_dir):
    return []
  return [paths.join(output_dir, name) for name in paths.listdir(output_dir) if SHARD.match(name)]


def read(output_dir: str) -> list[dict[str, object]]:
  """Every record of the complete shards in `output_dir`, in shard order."""
  records = []
  for path in shard_paths(output_dir):
    with paths.open_binary(path) as f:
      records.extend(value for _, value in jsonl.parse(f.read().splitlines(), path=path))
  return records




class ShardWriter:
  """The local runner's shards, `fret-NNNNN.jsonl` (and `.tfrecord`), numbered on after
  those already in `output_dir`.

  Args:
    output_dir: Where the shards go (created if absent).
    shard_size: Records per shard.
    tfrecord: Also write each shard as `fret-NNNNN.tfrecord` (tf.train.Example).
  """

  def __init__(self, output_dir: str, *, shard_size: int = 1000, tfrecord: bool = False):
    check_count("shard_size", shard_size)
    self.output_dir, self.shard_size, self.tfrecord = output_dir, shard_size, tfrecord
    os.makedirs(output_dir, exist_ok=True)
    numbers = (re.match(r"fret-(\d{5})\.jsonl$", name) for name in os.listdir(output_dir))
    self._buffer: list[dict] = []
    self._next = 1 + max((int(m.group(1)) for m in numbers if m), default=-1)

  def shards(self) -> list[str]:
    """Complete JSONL shards in the folder, in order."""
    return shard_paths(self.output_dir)

  def done_ids(self) -> set[str]:
    """The ids of the records in complete shards."""
    return {record["id"] for record in read(self.output_dir)}

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
    name = os.path.join(self.output_dir, f"fret-{self._next:05d}")
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


def failure_record(failure) -> dict[str, object]:
  """The failures.jsonl line of a `gecko.fret.generate.Failure`."""
  return {"id": failure.id, "task_type": failure.task_type, "reason": failure.reason,
          "outputs": list(failure.outputs)}


def append_failures(output_dir: str, failures: Sequence) -> None:
  """Adds this run's failures to OUTPUT_DIR/failures.jsonl (a rerun retries them)."""
  with open(os.path.join(output_dir, "failures.jsonl"), "a", encoding="utf-8") as f:
    for failure in failures:
      f.write(json.dumps(failure_record(failure)) + "\n")


def score_lists(records: Sequence[Mapping], *, all_scores: Mapping[str, Sequence[float]] = {}
                ) -> dict[str, list[float]]:
  """The chosen pairs' QL and RC scores ("ql_positive", "rc_negative", ...) read from
  the records, and "ql_all" / "rc_all" from `all_scores` (every candidate's score,
  which a record does not keep); a score the ranking did not compute is left out."""
  scores: dict[str, list[float]] = collections.defaultdict(list)
  for name in ("ql", "rc"):
    for part in ("positive", "negative"):
      scores[f"{name}_{part}"] = [r[f"{part}_{name}"] for r in records
                                  if r[f"{part}_{name}"] is not None]
    scores[f"{name}_all"] = list(all_scores.get(name, ()))
  return {key: values for key, values in scores.items() if values}


def summarize(records: Sequence[Mapping], *, shards: int, failures: int, skipped: int,
              llm_calls: int, cache_hits: int, seconds: float, corpus: Mapping[str, int],
              queries: Mapping[str, object], filters: Mapping[str, Mapping | None]
              ) -> dict[str, object]:
  """summary.json: counts over every record written so far, and this run's work."""
  moved = sum(not r["positive_is_seed"] for r in records)
  summary = {
      "records": len(records), "failures_this_run": failures,
      "skipped_already_written": skipped,
      "task_types": dict(collections.Counter(r["task_type"] for r in records)),
      "positive_not_seed_fraction": moved / len(records) if records else 0.0,
      "llm_calls_this_run": llm_calls, "llm_cache_hits_this_run": cache_hits,
      "seconds_this_run": round(seconds, 2), "shards": shards, "corpus": dict(corpus),
      "queries": dict(queries)}
  summary.update({name: dict(figures) for name, figures in filters.items()
                  if figures is not None})
  return summary


FILTERS = ("generic", "seed_not_retrieved", "no_window_negative", "inconsistent")


def filter_summaries(config: FretConfig, *, records: int, judged: int,
                     dropped: Mapping[str, int]) -> dict[str, dict | None]:
  """The query filters' summary entries, the same for both runners (None for a filter
  that is off). They judge in this order: the generic-query guard every query
  (`judged`), the seed filter what it kept, the window negative what was scored, the
  consistency filter what got a negative; `dropped` holds each one's drops this run
  (the keys of FILTERS)."""
  generic = None if config.min_spread is None else {
      "min_spread": config.min_spread, "checked_this_run": judged,
      "dropped_this_run": dropped["generic"]}
  judged -= dropped["generic"]
  seed = None if config.seed_top_k is None else consistency_summary(
      top_k=config.seed_top_k, records=records, checked=judged,
      dropped=dropped["seed_not_retrieved"])
  judged -= dropped["seed_not_retrieved"]
  window = None if config.negative != "window" else {
      "window": list(config.negative_window), "max_ratio": config.negative_max_ratio,
      "checked_this_run": judged, "dropped_this_run": dropped["no_window_negative"]}
  consistency = None if config.consistency_top_k is None else consistency_summary(
      top_k=config.consistency_top_k, records=records,
      checked=judged - dropped["no_window_negative"], dropped=dropped["inconsistent"])
  return {"generic_queries": generic, "seed_retrieval": seed, "window_negative": window,
          "consistency": consistency}


def consistency_summary(*, top_k: int, records: int, checked: int, dropped: int
                        ) -> dict[str, float]:
  """A round-trip filter's figures (the consistency filter's, or the seed filter's). A
  dropped query has no record, so every run checks it again: the records and this
  run's drops are all the queries the filter has judged, on a first run or a rerun."""
  judged = records + dropped
  return {"top_k": top_k, "checked_this_run": checked, "dropped_this_run": dropped,
          "kept_fraction": records / judged if judged else 0.0}


def write_summary(summary: Mapping[str, object], scores: Mapping[str, Sequence[float]],
                  output_dir: str) -> None:
  """OUTPUT_DIR/summary.json and summary.png (the score distributions), local or gs://."""
  paths.write_text(paths.join(output_dir, "summary.json"), json.dumps(summary, indent=2))
  png = io.BytesIO()
  _plot(scores, png)
  paths.write_bytes(paths.join(output_dir, "summary.png"), png.getvalue())


def _plot(scores: Mapping[str, Sequence[float]], file) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
  for ax, name in zip(axes, ("ql", "rc")):
    for part in ("all", "positive", "negative"):
      values = scores.get(f"{name}_{part}", [])
      if values:
        ax.hist(values, bins=30, alpha=0.5, label=f"{part} ({len(values)})")
    ax.set_title({"ql": "QL: log P(query | passage)", "rc": "RC: log P(yes | query, passage)"}[name])
    if ax.has_data():
      ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(file, format="png", dpi=100)
  plt.close(fig)
