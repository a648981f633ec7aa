"""Training batches from a SeqIO task or mixture (`gecko_tasks`), indexed by step.

  data = SeqioBatches(mixture_or_task_name="gecko_finetune", tokenizer=tokenizer,
                      batch_size=64, data_dir="/data/gecko")
  data.batch(0)   # this process's rows of global batch 0, a `gecko.data.features` dict

Each task's examples are tokenized by the task, converted by
`gecko.data.feature_converters.DualEncoderFeatureConverter`, and mixed by rate, either
example by example or, with `homogeneous=True`, batch by batch, so that every batch
holds a single task and its in-batch negatives come from the same domain.

On a mesh of several processes the input is split into shards by the batch sharding's
data axes (`gecko.training.partitioning.data_shard`): shard i holds rows
[i*n, (i+1)*n) of every global batch, and reads only its share of every file task
(`gecko.data.sources`: JSONL by byte range, gzip and TFRecord by file). The task choice
per batch is drawn from the shared seed, so it agrees across shards.

The pipeline is deterministic given the seed, and resumable without re-reading:
`position(step)` is the `tf.data` iterator's state before batch `step` (its shuffle
buffers and read offsets, a few MB), which the trainer stores in each checkpoint, and
`seek(step, position)` puts a new pipeline there. Without a position, `batch(step)`
skips to `step` (re-reading everything before it, and saying so).
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Mapping

import numpy as np

from gecko.data import features, tokenization
from gecko.data.input_format import GECKO, InputFormat


class SeqioBatches:
  """Deterministic per-process batches of a SeqIO task or mixture.

  Args:
    mixture_or_task_name: A registered name (e.g. "gecko_prefinetune").
    tokenizer: The model's tokenizer. The Gecko tasks tokenize with it
      (`gecko.data.vocabularies.ModelVocabulary`); other tasks' vocabulary must equal it.
    batch_size: Global batch size (all processes together).
    query_length, passage_length: Fixed padded lengths of the query and passage sides.
    data_dir: Root of the tasks' file sources (None: `$GECKO_DATA_DIR`).
    tfds_data_dir: TFDS data directory for TFDS-backed tasks.
    tfds_download: Let TFDS tasks download and prepare missing datasets (off: an error
      naming the `tfds build` command).
    input_format: Query/document templates (`gecko.data.input_format`; the format ablation
      binds `PLAIN`).
    fret_positive: "llm" or "seed" (the seed-labelled FRet ablation).
    rates: Mixing-rate overrides by task name; 0 drops a task.
    homogeneous: Draw each batch from a single task.
    skip_bad_records: Skip and count malformed file records instead of failing.
    split: The split to read.
    seed: Shuffling and mixing seed.
    shuffle_buffer: Examples held for shuffling, per task and process (filled before
      the first batch, from the repeated data).
    task_modules: Modules imported first to register the tasks.
    candidates: K, each query's candidate passages in a task that carries them
      (`gecko_fret_candidates`: the FRet run's N neighbours; 0 for tasks without).
    shard_index, shard_count: This process's input shard: rows
      [shard_index*n, (shard_index+1)*n) of each global batch, n = batch_size/shard_count.
  """

  def __init__(self, *, mixture_or_task_name: str, tokenizer: tokenization.Tokenizer,
               batch_size: int, query_length: int = 64, passage_length: int = 64,
               data_dir: str | None = None, tfds_data_dir: str | None = None,
               tfds_download: bool = False,
               input_format: InputFormat = GECKO, fret_positive: str = "llm",
               rates: Mapping[str, float] | None = None, homogeneous: bool = False,
               skip_bad_records: bool = False, split: str = "train", seed: int = 0,
               shuffle_buffer: int = 1000, task_modules: tuple[str, ...] = ("gecko_tasks",),
               shard_index: int = 0, shard_count: int = 1, candidates: int = 0):
    import seqio

    from gecko.data import sources as seqio_sources
    for module in task_modules:
      importlib.import_module(module)
    if not 0 <= shard_index < shard_count or batch_size % shard_count:
      raise ValueError(f"input shard {shard_index} of {shard_count} does not split "
                       f"batch_size={batch_size}: the batch must divide into the shards.")
    try:
      provider = seqio.get_mixture_or_task(mixture_or_task_name)
    except ValueError as e:
      names = sorted(n for n in seqio.TaskRegistry.names() | seqio.MixtureRegistry.names()
                     if n.startswith("gecko"))
      raise ValueError(f"unknown SeqIO task or mixture {mixture_or_task_name!r}; registered: "
                       f"{names}") from e
    self.options = seqio_sources.DataOptions(
        data_dir=data_dir, tfds_data_dir=tfds_data_dir, tfds_download=tfds_download,
        input_format=input_format,
        fret_positive=fret_positive, skip_bad_records=skip_bad_records, rates=dict(rates or {}),
        tokenizer=tokenizer)
    tasks = seqio.get_subtasks(provider)
    unknown = sorted(set(self.options.rates) - {t.name for t in tasks})
    if unknown:
      raise ValueError(f"rates name tasks not in {mixture_or_task_name!r}: {unknown} "
                       f"(its tasks: {sorted(t.name for t in tasks)}).")
    with seqio_sources.using(self.options):
      rated = [(t, provider.get_rate(t) if isinstance(provider, seqio.Mixture) else 1.0)
               for t in tasks]
    self.tasks = [(t, r) for t, r in rated if r > 0]
    if not self.tasks:
      raise ValueError(f"every task of {mixture_or_task_name!r} has rate 0.")
    for task, _ in self.tasks:
      _check_vocabulary(task, tokenizer)
    self.with_negative = "negative" in self.tasks[0][0].output_features
    self.with_teacher = features.TEACHER_POSITIVE in self.tasks[0][0].output_features
    carried = "candidates" in self.tasks[0][0].output_features
    if carried != bool(candidates):
      raise ValueError(
          f"{mixture_or_task_name!r} {'carries' if carried else 'has no'} candidates and "
          f"candidates={candidates}: " + ("give SeqioBatches.candidates the number each record "
                                          "has (the FRet run's --neighbors N)." if carried else
                                          "leave SeqioBatches.candidates at 0."))
    self.candidates = candidates
    self.name, self.batch_size, self.split, self.seed = mixture_or_task_name, batch_size, split, seed
    self.homogeneous, self.shuffle_buffer = homogeneous, shuffle_buffer
    self.shard_index, self.shard_count = shard_index, shard_count
    self.lengths = {"query": min(query_length, tokenizer.max_length),
                    "positive": min(passage_length, tokenizer.max_length),
                    "negative": min(passage_length, tokenizer.max_length)}
    self._iterator, self._next_step = None, None

  @property
  def feature_names(self) -> tuple[str, ...]:
    names = features.QUERY + features.POSITIVE
    if self.with_negative:
      names += features.NEGATIVE
    if self.with_teacher:
      names += features.TEACHER
    if self.candidates:
      names += features.CANDIDATE + (features.TEACHER_CANDIDATES,)
    return names + (features.POSITIVE_KEY, features.QUERY_KEY)

  @property
  def rates(self) -> dict[str, float]:
    """The non-zero mixing rates in use, normalised to sum to 1."""
    total = sum(r for _, r in self.tasks)
    return {t.name: r / total for t, r in self.tasks}

  def dataset(self):
    """The `tf.data.Dataset` of this process's batches, from step 0, repeating forever."""
    import seqio
    import tensorflow as tf

    from gecko.data import sources as seqio_sources
    from gecko.data.feature_converters import DualEncoderFeatureConverter
    converter = DualEncoderFeatureConverter(with_negative=self.with_negative,
                                            with_teacher=self.with_teacher,
                                            candidates=self.candidates)
    lengths = {**{t: self.lengths[t] for t in converter.towers},
               **{s: 1 for s in converter.scores}}  # scalars: no length to check
    if self.candidates:
      lengths.update(candidates=self.lengths["positive"],
                     **{features.TEACHER_CANDIDATES: self.candidates})
    rows = self.batch_size // self.shard_count
    shard = seqio.ShardInfo(index=self.shard_index, num_shards=self.shard_count)
    per_task = []
    with seqio_sources.using(self.options):
      for task, _ in self.tasks:
        ds = task.get_dataset(sequence_length=None, split=self.split, shuffle=True,
                              shuffle_buffer_size=self.shuffle_buffer, seed=self.seed,
                              shard_info=shard, num_epochs=None, try_in_mem_cache=False)
        ds = converter(ds, lengths)
        per_task.append(ds.batch(rows, drop_remainder=True) if self.homogeneous else ds)
    weights = [r for _, r in self.tasks]
    if len(per_task) == 1:
      mixed = per_task[0]
    else:
      mixed = tf.data.Dataset.sample_from_datasets(per_task, weights=weights, seed=self.seed)
    if not self.homogeneous:
      mixed = mixed.batch(rows, drop_remainder=True)
    options = tf.data.Options()
    options.deterministic = True
    return mixed.with_options(options).prefetch(2)

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """This shard's rows of the global batch at `step` (a `gecko.data.features` dict)."""
    if self._iterator is None or step != self._next_step:
      self._iterator = iter(self.dataset())
      if step:
        print(f"gecko.data: no input position for step {step}; skipping {step} batches to "
              "reach it (this re-reads them).", file=sys.stderr)
        for _ in range(step):
          next(self._iterator)
    try:
      batch = next(self._iterator)
    except StopIteration:
      raise ValueError(f"input shard {self.shard_index} of {self.shard_count} of "
                       f"{self.name!r} has no examples: the data is too small for "
                       f"{self.shard_count} shards.") from None
    self._next_step = step + 1
    return {name: value.numpy() for name, value in batch.items()}

  def position(self, step: int) -> bytes:
    """The pipeline's state before batch `step` (the batch after the last one read),
    behind a line naming the pipeline it belongs to."""
    import tensorflow as tf
    if self._iterator is None or step != self._next_step:
      raise ValueError(f"the input is before step {self._next_step}, not {step}: a position is "
                       "taken right after the batch before it.")
    state = tf.raw_ops.SerializeIterator(resource_handle=iterator_resource(self._iterator),
                                         external_state_policy=_IGNORE_EXTERNAL_STATE)
    return self._identity() + b"\n" + tf.io.serialize_tensor(state).numpy()

  def seek(self, step: int, position: bytes) -> bool:
    """Puts the pipeline where `position(step)` was taken, so that the next batch is
    `step`'s; False (said on stderr) when the position is another pipeline's: `batch`
    then skips to `step` instead."""
    import tensorflow as tf
    header, _, state = position.partition(b"\n")
    problem = None
    if header != self._identity():
      problem = f"it was saved by {header.decode('utf-8', 'replace')[:300]}"
    else:
      iterator = iter(self.dataset())
      try:
        tf.raw_ops.DeserializeIterator(resource_handle=iterator_resource(iterator),
                                       serialized=tf.io.parse_tensor(state, tf.variant))
      except tf.errors.OpError as e:
        problem = f"it does not fit this pipeline ({e.message.splitlines()[0][:200]})"
    if problem:
      print(f"gecko.data: the input position saved at step {step} is not used: {problem}, "
            f"and this run reads {self._identity().decode()}.", file=sys.stderr)
      self._iterator, self._next_step = None, None
      return False
    self._iterator, self._next_step = iterator, step
    return True

  def _identity(self) -> bytes:
    return json.dumps({"task": self.name, "split": self.split, "shard": [self.shard_index,
                       self.shard_count], "batch_size": self.batch_size, "seed": self.seed,
                       "homogeneous": self.homogeneous, "rates": self.rates},
                      sort_keys=True).encode()

  def close(self) -> None:
    """Releases the tf.data iterator now: left to interpreter shutdown (e.g. behind an
    exception's traceback), its threads can deadlock the exit."""
    self._iterator, self._next_step = None, None


# `tf.data`'s ExternalStatePolicy IGNORE: the pipeline's Python functions (JSON decoding,
# tokenizing) are pure, so its state is its offsets and buffers alone.
_IGNORE_EXTERNAL_STATE = 1


def iterator_resource(iterator):
  """The resource handle of a `tf.data` iterator, which SerializeIterator and
  DeserializeIterator take. It is private (`_iterator_resource`): TensorFlow's public
  route to an iterator's state, `tf.train.Checkpoint(iterator=...)`, writes checkpoint
  files, where an orbax checkpoint item needs the state as bytes. A test
  (`tests/test_seqio_input.py`) fails by name if the attribute goes away, and so does
  this, rather than saving no position."""
  if not hasattr(iterator, "_iterator_resource"):
    raise RuntimeError("this TensorFlow's tf.data iterator has no _iterator_resource, which "
                       "gecko.data.seqio_batches reads to save the input position; install "
                       "the version in constraints.txt.")
  return iterator._iterator_resource


def _check_vocabulary(task, tokenizer: tokenization.Tokenizer) -> None:
  from gecko.data.vocabularies import ModelVocabulary
  vocabulary = task.output_features["query"].vocabulary
  if isinstance(vocabulary, ModelVocabulary):
    return  # tokenizes with `tokenizer` itself (through DataOptions)
  theirs = getattr(vocabulary, "tokenizer", None)
  if theirs is None or theirs.vocab != tokenizer.vocab or theirs.lowercase != tokenizer.lowercase:
    raise ValueError(f"task {task.name!r} tokenizes with {vocabulary}, which is not the model's "
                     f"tokenizer ({len(tokenizer.vocab)} tokens); register the task with the "
                     "model's vocabulary (gecko.data.vocabularies.ModelVocabulary, as gecko_tasks does) or "
                     "train a matching model.")
