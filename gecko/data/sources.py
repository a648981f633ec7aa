"""Data options and file sources for Gecko's SeqIO tasks (`gecko_tasks`).

Tasks are registered when `gecko_tasks` is imported, before a run has said where its
data lives or which input format it trains with. `DataOptions` carries those run-time
choices; `gecko.data.seqio_batches.SeqioBatches` makes them active (`using`) while it builds
the pipeline, and sources and preprocessors read them (`active`) as they build theirs.

File sources read JSONL (`.jsonl`, `.jsonl.gz`) or TFRecord (`.tfrecord*`, string
features) from local paths or any `tf.io.gfile` filesystem (`gs://...`), given as
globs relative to `DataOptions.data_dir` (default: `$GECKO_DATA_DIR`). A malformed
line or a record without a required field stops the pipeline with `file:line` in the
error, or, with `skip_bad_records=True`, is skipped, counted in `SKIPPED` and logged.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gzip
import io
import logging
import os
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import seqio
import tensorflow as tf

from gecko.data import jsonl
from gecko.data.input_format import GECKO, InputFormat

if TYPE_CHECKING:
  from gecko.data.tokenization import Tokenizer

FRET_POSITIVES = ("llm", "seed")
SKIPPED: collections.Counter = collections.Counter()  # file -> bad records skipped


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataOptions:
  """Run-time choices the registered tasks read while a pipeline is built.

  Attributes:
    data_dir: Root of the file sources (local or `gs://`); None: `$GECKO_DATA_DIR`.
    tfds_data_dir: TFDS data directory for TFDS-backed tasks (None: TFDS's default).
    tfds_download: Let a TFDS task download and prepare its dataset when it is not in
      `tfds_data_dir` (off: a missing dataset is an error naming the `tfds build`
      command, and nothing is fetched at run time unless asked for).
    input_format: Templates for queries and documents (`gecko.data.input_format`).
    fret_positive: "llm" (the LLM's top-ranked passage, the paper) or "seed" (the
      passage the query was generated from: the seed-labelled ablation).
    skip_bad_records: Skip (and count) malformed records instead of failing.
    rates: Mixing-rate overrides by task name (0 removes a task from a mixture).
    tokenizer: The model's tokenizer: tasks registered with
      `gecko.data.vocabularies.ModelVocabulary` tokenize with it (None: MiniLM's WordPiece).
  """

  data_dir: str | None = None
  tfds_data_dir: str | None = None
  tfds_download: bool = False
  input_format: InputFormat = GECKO
  fret_positive: str = "llm"
  skip_bad_records: bool = False
  rates: Mapping[str, float] = dataclasses.field(default_factory=dict)
  tokenizer: Tokenizer | None = None

  def __post_init__(self):
    if self.fret_positive not in FRET_POSITIVES:
      raise ValueError(f"fret_positive={self.fret_positive!r}; use one of {FRET_POSITIVES}.")
    bad = {k: v for k, v in self.rates.items() if not (isinstance(v, (int, float)) and v >= 0)}
    if bad:
      raise ValueError(f"mixing rates must be numbers >= 0, got {bad}.")

  def path(self, relative: str) -> str:
    root = self.data_dir or os.environ.get("GECKO_DATA_DIR")
    if not root:
      raise ValueError(f"no data directory for {relative!r}: set TASK_DATA_DIR in gin "
                       "(SeqioBatches.data_dir) or the GECKO_DATA_DIR environment variable.")
    return os.path.join(os.path.expanduser(root), relative)


_STACK: list[DataOptions] = [DataOptions()]


def active() -> DataOptions:
  """The options of the pipeline being built (defaults outside `using`)."""
  return _STACK[-1]


@contextlib.contextmanager
def using(options: DataOptions) -> Iterator[DataOptions]:
  _STACK.append(options)
  try:
    yield options
  finally:
    _STACK.pop()


def rate(default: float) -> Callable[[seqio.Task], float]:
  """A seqio mixing rate: `default` unless the active options override the task's rate."""
  def task_rate(task: seqio.Task) -> float:
    return float(active().rates.get(task.name, default))
  return task_rate


def glob(patterns: str | Sequence[str]) -> list[str]:
  """The files matching any of `patterns`, sorted; FileNotFoundError when none do."""
  patterns = [patterns] if isinstance(patterns, str) else list(patterns)
  files = sorted({f for pattern in patterns for f in tf.io.gfile.glob(pattern)})
  if not files:
    raise FileNotFoundError(f"no files match {' or '.join(map(repr, patterns))}; see the data "
                            "layout in README.md (\"SeqIO tasks\") or set TASK_DATA_DIR "
                            "(SeqioBatches.data_dir) / GECKO_DATA_DIR.")
  return files


def _lines(path: str) -> Iterator[str]:
  if not path.endswith(".gz"):
    with tf.io.gfile.GFile(path, "r") as f:  # text mode decodes UTF-8
      yield from f
    return
  with tf.io.gfile.GFile(path, "rb") as raw:
    yield from io.TextIOWrapper(gzip.GzipFile(fileobj=raw), encoding="utf-8")


def _check(record, fields: Mapping[str, type | tuple], optional: Sequence[str]) -> str | None:
  if not isinstance(record, dict):
    return f"expected a JSON object, got {type(record).__name__}"
  for name, types in fields.items():
    if name not in record:
      if name in optional:
        continue
      return f"missing field {name!r} (the record has {sorted(record)})"
    if not isinstance(record[name], types):
      return f"field {name!r} has the wrong type ({record[name]!r:.60})"
  return None


def read_jsonl(files: Sequence[str], *, fields: Mapping[str, type | tuple],
               optional: Sequence[str] = (), skip_bad: bool = False) -> Iterator[dict[str, str]]:
  """Records with `fields` as strings (absent optional fields: ""), in file order."""
  for path in files:
    skipped, first = 0, None
    for n, line in enumerate(_lines(path), 1):
      if not line.strip():
        continue
      try:
        record = jsonl.decode(line, where=f"{path}:{n}")
        problem = _check(record, fields, optional)
      except ValueError as e:
        problem = str(e).removeprefix(f"{path}:{n}: ").rstrip(".")
      if problem:
        if not skip_bad:
          raise ValueError(f"{path}:{n}: {problem}. Fix the record, or pass "
                           "skip_bad_records=True to skip and count bad records.")
        skipped, first = skipped + 1, first or f"{path}:{n}: {problem}"
        continue
      yield {name: "" if record.get(name) is None else str(record[name]) for name in fields}
    if skipped:
      SKIPPED[path] += skipped
      logging.warning("skipped %d bad records in %s (first: %s)", skipped, path, first)


def _blocks(records: Iterator[dict[str, str]], fields, size: int = 512
            ) -> Iterator[dict[str, list[str]]]:
  """Records regrouped as columns of up to `size` rows."""
  block = {name: [] for name in fields}
  for record in records:
    for name in fields:
      block[name].append(record[name])
    if len(block[next(iter(fields))]) == size:
      yield block
      block = {name: [] for name in fields}
  if block[next(iter(fields))]:
    yield block


def _is_tfrecord(path: str) -> bool:
  return ".tfrecord" in os.path.basename(path)


def file_dataset(files: Sequence[str], *, fields: Mapping[str, type | tuple],
                 optional: Sequence[str] = (), skip_bad: bool = False) -> tf.data.Dataset:
  """JSONL and TFRecord files as one dataset of string `fields`."""
  signature = {name: tf.TensorSpec((None,), tf.string) for name in fields}
  parts = []
  jsonl_files = [f for f in files if not _is_tfrecord(f)]
  if jsonl_files:  # parsed in Python, handed over in blocks (one py_func call per block)
    parts.append(tf.data.Dataset.from_generator(
        lambda: _blocks(read_jsonl(jsonl_files, fields=fields, optional=optional, skip_bad=skip_bad),
                        fields), output_signature=signature).unbatch())
  tfrecords = [f for f in files if _is_tfrecord(f)]
  if tfrecords:
    spec = {name: tf.io.FixedLenFeature([], tf.string, default_value="" if name in optional
                                        else None) for name in fields}
    parts.append(tf.data.TFRecordDataset(tfrecords).map(
        lambda x: tf.io.parse_single_example(x, spec), num_parallel_calls=tf.data.AUTOTUNE))
  ds = parts[0]
  for part in parts[1:]:
    ds = ds.concatenate(part)
  return ds


def file_source(patterns: str | Sequence[str], *, fields: Mapping[str, type | tuple],
                optional: Sequence[str] = (), splits: Sequence[str] = ("train",),
                alternatives: bool = False) -> seqio.FunctionDataSource:
  """A streaming source over the files matching `DATA_DIR/pattern` (`{split}` filled in).

  `alternatives=True`: the patterns are encodings of the same records (e.g. TFRecord
  and JSONL copies of FRet shards); only the first pattern that matches is read.
  """
  patterns = (patterns,) if isinstance(patterns, str) else tuple(patterns)

  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
    options = active()
    paths = [options.path(p.format(split=split)) for p in patterns]
    if alternatives:
      paths = next(([p] for p in paths if tf.io.gfile.glob(p)), paths)
    files = glob(paths)
    if shuffle_files:
      random.Random(seed).shuffle(files)
    return file_dataset(files, fields=fields, optional=optional, skip_bad=options.skip_bad_records)
  return seqio.FunctionDataSource(dataset_fn, splits=splits)


def rows_source(load: Callable[[DataOptions, str], list[dict]],
                convert: Callable[[list[dict], int], list[dict[str, str]]],
                *, fields: Sequence[str], splits: Sequence[str] = ("train",)
                ) -> seqio.FunctionDataSource:
  """A source whose examples need the whole split at once (e.g. grouped by label).

  `load(options, split)` returns the raw rows, `convert(rows, seed)` the examples
  (dicts of strings with `fields`), held in memory.
  """
  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
    del shuffle_files  # examples are shuffled downstream
    examples = convert(load(active(), split), 0 if seed is None else seed)
    if not examples:
      raise ValueError(f"{load.__name__}: no examples for split {split!r}.")
    return tf.data.Dataset.from_tensor_slices({f: [e[f] for e in examples] for f in fields})
  return seqio.FunctionDataSource(dataset_fn, splits=splits)


def jsonl_rows(pattern: str, *, fields: Mapping[str, type | tuple], optional: Sequence[str] = ()
               ) -> Callable[[DataOptions, str], list[dict]]:
  """A `rows_source` loader for `DATA_DIR/pattern` JSONL files."""
  def load(options: DataOptions, split: str) -> list[dict]:
    files = glob(options.path(pattern.format(split=split)))
    return list(read_jsonl(files, fields=fields, optional=optional,
                           skip_bad=options.skip_bad_records))
  load.__name__ = f"jsonl_rows({pattern!r})"
  return load


def tfds_rows(name: str, *, fields: Mapping[str, str]) -> Callable[[DataOptions, str], list[dict]]:
  """A `rows_source` loader for a TFDS dataset; `fields` maps our names to TFDS keys."""
  def load(options: DataOptions, split: str) -> list[dict]:
    import tensorflow_datasets as tfds
    try:
      ds = tfds.load(name, split=split, data_dir=options.tfds_data_dir, shuffle_files=False,
                     download=options.tfds_download)
    except AssertionError as e:  # TFDS's "could not find data in ..." (download=False)
      where = options.tfds_data_dir or "~/tensorflow_datasets"
      raise FileNotFoundError(
          f"the TFDS dataset {name!r} is not prepared in {where}: prepare it once with "
          f"`tfds build {name.split(':')[0]} --data_dir={where}`, or let the run download it "
          "with --gin.seqio_data.SeqioBatches.tfds_download=True.") from e
    rows = []
    for example in tfds.as_numpy(ds):
      rows.append({ours: _python(example[theirs]) for ours, theirs in fields.items()})
    return rows
  load.__name__ = f"tfds_rows({name!r})"
  return load


def _python(value):
  if isinstance(value, bytes):
    return value.decode("utf-8")
  return value.item() if hasattr(value, "item") else value
