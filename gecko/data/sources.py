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
Fields are strings, except a JSONL field declared `ListOf(kind)`: a non-empty list, read
as one string with its items joined by `ITEM_SEPARATOR` (`preprocessors.candidate_lists`
turns the candidates' back into vectors).

Input shards (`seqio.ShardInfo`, one per row block of the global batch) read only
their share: uncompressed JSONL is cut into byte ranges of at most `CHUNK_BYTES`
(a line belongs to the range its first byte is in), dealt to the shards in turn and
read by seeking; gzipped JSONL and TFRecord are dealt by file (by record, with a
warning, when there are fewer files than shards). Every stage is a checkpointable
`tf.data` stage, so a pipeline's iterator state is its position
(`gecko.data.seqio_batches.SeqioBatches.position`). `RECORDS_READ` counts the records
this process decoded, by file.
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
RECORDS_READ: collections.Counter = collections.Counter()  # file -> records decoded here
CHUNK_BYTES = 1 << 20  # the largest byte range of a JSONL file read in one call
ITEM_SEPARATOR = "\x1e"  # joins a ListOf field's items (ASCII record separator)


@dataclasses.dataclass(frozen=True)
class ListOf:
  """A field spec: a non-empty JSON list of `kind` items (JSONL sources only), held as
  one string with its items joined by `ITEM_SEPARATOR`."""

  kind: type | tuple

  def problem(self, value) -> str | None:
    """What is wrong with `value` for this spec (None: nothing)."""
    kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
    if not isinstance(value, list) or not value:
      return f"should be a non-empty list, got {value!r:.60}"
    bad = next((x for x in value if not isinstance(x, kinds)
                or (isinstance(x, bool) and bool not in kinds)), None)
    if bad is not None:
      names = " or ".join(k.__name__ for k in kinds)
      return f"should hold only {names} items, got {bad!r:.60}"
    if any(isinstance(x, str) and ITEM_SEPARATOR in x for x in value):
      return "holds an item with the reserved character \\x1e (ITEM_SEPARATOR)"
    return None


FieldSpec = type | tuple | ListOf  # a field's Python type(s), or ListOf(kind)


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
                            "layout in docs/training.md (\"SeqIO tasks and mixtures\") or "
                            "set TASK_DATA_DIR (SeqioBatches.data_dir) / GECKO_DATA_DIR.")
  return files


def _check(record, fields: Mapping[str, FieldSpec], optional: Sequence[str]) -> str | None:
  if not isinstance(record, dict):
    return f"expected a JSON object, got {type(record).__name__}"
  for name, types in fields.items():
    if name not in record:
      if name in optional:
        continue
      return f"missing field {name!r} (the record has {sorted(record)})"
    if isinstance(types, ListOf):
      problem = types.problem(record[name])
      if problem:
        return f"field {name!r} {problem}"
    elif not isinstance(record[name], types):
      return f"field {name!r} has the wrong type ({record[name]!r:.60})"
  return None


def _string(value) -> str:
  """A decoded field's value as the string the dataset holds."""
  if value is None:
    return ""
  if isinstance(value, list):
    return ITEM_SEPARATOR.join(map(str, value))
  return str(value)


class _Decoder:
  """JSONL lines to records of string `fields`: a bad line raises naming `file:line`, or
  with `skip_bad` is counted in `SKIPPED` (and the first one of each file logged)."""

  def __init__(self, fields: Mapping[str, FieldSpec], optional: Sequence[str], skip_bad: bool):
    self.fields, self.optional, self.skip_bad = fields, optional, skip_bad

  def __call__(self, line: bytes | str, *, path: str,
               where: Callable[[], str]) -> dict[str, str] | None:
    try:
      record = jsonl.decode(line, where="@")
      problem = _check(record, self.fields, self.optional)
    except ValueError as e:
      problem = str(e).removeprefix("@: ").rstrip(".")
    if problem:
      if not self.skip_bad:
        raise ValueError(f"{where()}: {problem}. Fix the record, or pass "
                         "skip_bad_records=True to skip and count bad records.")
      if not SKIPPED[path]:
        logging.warning("skipping bad records in %s (first: %s: %s); counted in "
                        "gecko.data.sources.SKIPPED", path, where(), problem)
      SKIPPED[path] += 1
      return None
    RECORDS_READ[path] += 1
    return {name: _string(record.get(name)) for name in self.fields}


def _lines(path: str) -> Iterator[str]:
  if not path.endswith(".gz"):
    with tf.io.gfile.GFile(path, "r") as f:  # text mode decodes UTF-8
      yield from f
    return
  with tf.io.gfile.GFile(path, "rb") as raw:
    yield from io.TextIOWrapper(gzip.GzipFile(fileobj=raw), encoding="utf-8")


def read_jsonl(files: Sequence[str], *, fields: Mapping[str, FieldSpec],
               optional: Sequence[str] = (), skip_bad: bool = False) -> Iterator[dict[str, str]]:
  """Records with `fields` as strings (absent optional fields: ""), in file order."""
  decoder = _Decoder(fields, optional, skip_bad)
  for path in files:
    for n, line in enumerate(_lines(path), 1):
      if line.strip():
        record = decoder(line, path=path, where=lambda n=n: f"{path}:{n}")
        if record is not None:
          yield record


def _line_number(path: str, offset: int) -> int:
  """The line that starts at byte `offset` (read only to name a bad record)."""
  newlines, done = 0, 0
  with tf.io.gfile.GFile(path, "rb") as f:
    while done < offset:
      block = f.read(min(1 << 20, offset - done))
      if not block:
        break
      newlines, done = newlines + block.count(b"\n"), done + len(block)
  return newlines + 1


def _byte_chunks(files: Sequence[str], shard: seqio.ShardInfo) -> list[tuple[str, int, int]]:
  """Shard `shard`'s byte ranges (path, start, stop) of uncompressed `files`: each file
  is cut into at least `num_shards` ranges of at most `CHUNK_BYTES`, dealt in turn."""
  chunks = []
  for path in files:
    size = tf.io.gfile.stat(path).length
    step = max(1, min(CHUNK_BYTES, -(-size // shard.num_shards)))
    chunks += [(path, start, min(start + step, size)) for start in range(0, size, step)]
  return chunks[shard.index::shard.num_shards]


def _read_chunk(path: str, start: int, stop: int, decoder: _Decoder) -> list[dict[str, str]]:
  """The records of the lines that begin in bytes [start, stop) of `path`: a line
  belongs to the range its first byte is in, so ranges that tile a file read each line
  once."""
  records = []
  with tf.io.gfile.GFile(path, "rb") as f:
    if start:
      f.seek(start - 1)
      f.readline()  # the line under way at `start` belongs to the range before
    position = f.tell()
    while position < stop:
      line = f.readline()
      if not line:
        break
      here, position = position, position + len(line)
      if line.strip():
        record = decoder(line, path=path, where=lambda here=here: f"{path}:{_line_number(path, here)}")
        if record is not None:
          records.append(record)
  return records


def _columns(records: Sequence[dict[str, str]], fields) -> list[list[bytes]]:
  return [[r[name].encode("utf-8") for r in records] for name in fields]


def _from_columns(ds: tf.data.Dataset, fields) -> tf.data.Dataset:
  """A dataset of per-call column lists (from `tf.py_function`) as one of records."""
  names = list(fields)
  return ds.map(lambda *columns: {n: tf.ensure_shape(c, [None]) for n, c in zip(names, columns)}
                ).unbatch()


def _jsonl_dataset(files: Sequence[str], decoder: _Decoder, shard: seqio.ShardInfo,
                   shuffle_seed: int | None) -> tf.data.Dataset:
  """Uncompressed JSONL: this shard's byte ranges only, each read by seeking to it."""
  chunks = _byte_chunks(files, shard)
  if not chunks:
    raise ValueError(f"input shard {shard.index} of {shard.num_shards} has no bytes of "
                     f"{list(files)}: the data is smaller than the number of shards.")
  ds = tf.data.Dataset.from_tensor_slices(tuple(map(list, zip(*chunks))))
  if shuffle_seed is not None:
    ds = ds.shuffle(len(chunks), seed=shuffle_seed)

  def read(path, start, stop):
    records = _read_chunk(path.numpy().decode(), int(start), int(stop), decoder)
    return _columns(records, decoder.fields)
  return _from_columns(ds.map(lambda *chunk: tf.py_function(
      read, chunk, [tf.string] * len(decoder.fields))), decoder.fields)


def _own_files(files: list[str], shard: seqio.ShardInfo, kind: str) -> tuple[list[str], bool]:
  """(the files this shard reads, whether it must also keep only every n-th record)."""
  if shard.num_shards == 1:
    return files, False
  if len(files) >= shard.num_shards:
    return files[shard.index::shard.num_shards], False
  logging.warning("%d %s file(s) for %d input shards: each shard reads them whole and keeps "
                  "every %d-th record; write at least %d files (or uncompressed JSONL, which "
                  "is split by byte range) so that each shard reads only its own.",
                  len(files), kind, shard.num_shards, shard.num_shards, shard.num_shards)
  return files, True


def _gzip_dataset(files: list[str], decoder: _Decoder, shard: seqio.ShardInfo) -> tf.data.Dataset:
  """Gzipped JSONL (not seekable): whole files per shard, lines decoded in blocks."""
  files, by_record = _own_files(files, shard, "gzipped JSONL")
  lines = tf.data.Dataset.from_tensor_slices(files).flat_map(lambda path: tf.data.Dataset.zip((
      tf.data.TextLineDataset(path, compression_type="GZIP"),
      tf.data.Dataset.range(1, 1 << 62), tf.data.Dataset.from_tensors(path).repeat())))
  if by_record:
    lines = lines.shard(shard.num_shards, shard.index)

  def decode(texts, numbers, names):
    records = []
    for text, number, name in zip(texts.numpy(), numbers.numpy(), names.numpy()):
      if text.strip():
        path = name.decode()
        record = decoder(text, path=path, where=lambda: f"{path}:{number}")
        if record is not None:
          records.append(record)
    return _columns(records, decoder.fields)
  return _from_columns(lines.batch(256).map(lambda *block: tf.py_function(
      decode, block, [tf.string] * len(decoder.fields))), decoder.fields)


def _is_tfrecord(path: str) -> bool:
  return ".tfrecord" in os.path.basename(path)


def file_dataset(files: Sequence[str], *, fields: Mapping[str, FieldSpec],
                 optional: Sequence[str] = (), skip_bad: bool = False,
                 shard: seqio.ShardInfo | None = None,
                 shuffle_seed: int | None = None) -> tf.data.Dataset:
  """JSONL and TFRecord files as one dataset of string `fields`: input shard `shard`'s
  share of them (see the module docstring); `shuffle_seed` shuffles the order of the
  byte ranges each epoch. Every stage is checkpointable (`tf.data` iterator state)."""
  shard = shard or seqio.ShardInfo(index=0, num_shards=1)
  decoder = _Decoder(fields, optional, skip_bad)
  parts = []
  plain = [f for f in files if not _is_tfrecord(f) and not f.endswith(".gz")]
  if plain:
    parts.append(_jsonl_dataset(plain, decoder, shard, shuffle_seed))
  gzipped = [f for f in files if not _is_tfrecord(f) and f.endswith(".gz")]
  if gzipped:
    parts.append(_gzip_dataset(gzipped, decoder, shard))
  tfrecords = [f for f in files if _is_tfrecord(f)]
  lists = [name for name, spec in fields.items() if isinstance(spec, ListOf)]
  if tfrecords and lists:
    raise ValueError(f"list fields {lists} are read from JSONL only, and {tfrecords[0]} is "
                     "a TFRecord file: give the records as JSONL (.jsonl or .jsonl.gz).")
  if tfrecords:
    tfrecords, by_record = _own_files(tfrecords, shard, "TFRecord")
    spec = {name: tf.io.FixedLenFeature([], tf.string, default_value="" if name in optional
                                        else None) for name in fields}
    records = tf.data.TFRecordDataset(tfrecords)
    if by_record:
      records = records.shard(shard.num_shards, shard.index)
    parts.append(records.map(lambda x: tf.io.parse_single_example(x, spec),
                             num_parallel_calls=tf.data.AUTOTUNE))
  ds = parts[0]
  for part in parts[1:]:
    ds = ds.concatenate(part)
  return ds


class ShardedFileSource(seqio.FunctionDataSource):
  """A file source that reads only its input shard's share (`supports_arbitrary_sharding`:
  SeqIO hands the shard down instead of reading everything and dropping the rest)."""

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed: int | None = None,
                  shard_info: seqio.ShardInfo | None = None, *, sequence_length=None,
                  use_cached: bool = False, num_epochs: int | None = 1) -> tf.data.Dataset:
    del sequence_length, use_cached, num_epochs  # as FunctionDataSource
    return self._dataset_fn(split=split, shuffle_files=shuffle, seed=seed, shard=shard_info)


def file_source(patterns: str | Sequence[str], *, fields: Mapping[str, FieldSpec],
                optional: Sequence[str] = (), splits: Sequence[str] = ("train",),
                alternatives: bool = False) -> ShardedFileSource:
  """A streaming source over the files matching `DATA_DIR/pattern` (`{split}` filled in).

  `alternatives=True`: the patterns are encodings of the same records (e.g. TFRecord
  and JSONL copies of FRet shards); only the first pattern that matches is read.
  """
  patterns = (patterns,) if isinstance(patterns, str) else tuple(patterns)

  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None,
                 shard: seqio.ShardInfo | None = None) -> tf.data.Dataset:
    options = active()
    paths = [options.path(p.format(split=split)) for p in patterns]
    if alternatives:
      paths = next(([p] for p in paths if tf.io.gfile.glob(p)), paths)
    files = glob(paths)
    if shuffle_files:
      random.Random(seed).shuffle(files)
    return file_dataset(files, fields=fields, optional=optional, skip_bad=options.skip_bad_records,
                        shard=shard, shuffle_seed=(seed or 0) if shuffle_files else None)
  return ShardedFileSource(dataset_fn, splits=splits)


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


def jsonl_rows(pattern: str, *, fields: Mapping[str, FieldSpec], optional: Sequence[str] = ()
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
          "with --gin.seqio_batches.SeqioBatches.tfds_download=True.") from e
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
