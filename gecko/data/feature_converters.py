"""Task features -> model features for the dual encoder (the SeqIO side of the contract).

Task features (what a `gecko_tasks` task yields; int32 token ids, `[CLS] ... [SEP]`,
tokenized by `gecko.data.vocabularies.WordPieceVocabulary`):

  query     the formatted query ("task: {task} | query: {text}")
  positive  the formatted positive ("title: {title} | text: {text}", or the query
            format for symmetric tasks)
  negative  the formatted hard negative (fine-tuning tasks only)

Model features (`gecko.data.features`, the one contract every batch follows), for
task_feature_lengths {"query": 6, "positive": 6}:

  query_tokens [101, 4708, 1024, 2054, 102, 0]  query_mask [1, 1, 1, 1, 1, 0]
  positive_tokens, positive_mask (and negative_*)  likewise
  query_key, positive_key  int32 hashes of the (truncated) token ids, equal exactly when
                           two inputs are identical: the loss masks such in-batch
                           duplicates instead of treating them as negatives.
  teacher_positive, teacher_negative  float32 scalars, passed through (the scored FRet
                           tasks, `with_teacher=True`)
  candidate_tokens, candidate_mask  [K, Lp] each query's K candidate passages, and
  teacher_candidates       float32 [K] the teacher's score of each (`candidates=K`: the
                           `gecko_fret_candidates` task). An example without candidates
                           (a human task of its mixture, `preprocessors.no_candidates`)
                           gets its positive K times with NaN scores, which the listwise
                           term skips; one with another number than K is an error.

Ids longer than their length are cut to it with the final `[SEP]` kept (as BERT
tokenizers truncate), and shorter ones are padded with 0.
"""

from __future__ import annotations

from collections.abc import Mapping

import seqio
import tensorflow as tf

from gecko.data import features

TOWERS = ("query", "positive", "negative")
_TOKENS = seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)
_KEY = seqio.FeatureConverter.FeatureSpec(dtype=tf.int32, rank=0)
_SCORE = seqio.FeatureConverter.FeatureSpec(dtype=tf.float32, rank=0)
_ROWS = seqio.FeatureConverter.FeatureSpec(dtype=tf.int32, rank=2)
_SCORES = seqio.FeatureConverter.FeatureSpec(dtype=tf.float32)


def truncate_keep_last(ids: tf.Tensor, length: int) -> tf.Tensor:
  """`ids[:length]`, with the last id of `ids` kept at the end when it is cut."""
  cut = tf.shape(ids)[0] > length
  return tf.cond(cut, lambda: tf.concat([ids[:length - 1], ids[-1:]], 0), lambda: ids)


def truncate_rows_keep_last(ids: tf.RaggedTensor, length: int) -> tuple[tf.Tensor, tf.Tensor]:
  """Ragged `[K, None]` ids -> (`[K, length]` ids, `[K, length]` mask): each row cut as
  `truncate_keep_last` cuts it, and padded with 0."""
  lengths = tf.cast(ids.row_lengths(), tf.int32)
  full = ids.to_tensor()
  last = tf.gather(full, tf.maximum(lengths - 1, 0), batch_dims=1)
  dense = tf.pad(full, [[0, 0], [0, tf.maximum(length - tf.shape(full)[1], 0)]])[:, :length]
  positions = tf.range(length)[None]
  cut = (lengths > length)[:, None] & tf.equal(positions, length - 1)
  mask = tf.cast(positions < tf.minimum(lengths, length)[:, None], tf.int32)
  return tf.where(cut, last[:, None], dense), mask


def token_key(ids: tf.Tensor) -> tf.Tensor:
  """A stable non-negative int32 hash of a token sequence."""
  text = tf.strings.reduce_join(tf.strings.as_string(ids), separator=" ")
  return tf.cast(tf.strings.to_hash_bucket_fast(text, 2**31 - 1), tf.int32)


class DualEncoderFeatureConverter(seqio.FeatureConverter):
  """Pads/truncates each side to a fixed length and adds masks and dedup keys.

  Args:
    with_negative: Whether the task features include `negative` (Eq. 3 data) or
      only `query` and `positive` (Eq. 2 data).
    with_teacher: Whether they include a teacher's scores (`teacher_positive`,
      `teacher_negative`), passed through as model features.
    candidates: K, the candidate passages of each query with a teacher's score of each
      (task features `candidates` and `teacher_candidates`; 0: none).
  """

  TASK_FEATURES = {}
  MODEL_FEATURES = {}
  PACKING_FEATURE_DTYPES = {}

  def __init__(self, *, with_negative: bool, with_teacher: bool = False, candidates: int = 0):
    if with_teacher and not with_negative:
      raise ValueError("teacher scores score the positive against the hard negative: "
                       "with_teacher needs with_negative.")
    towers = TOWERS if with_negative else TOWERS[:2]
    self.towers, self.scores = towers, features.TEACHER if with_teacher else ()
    self.TASK_FEATURES = {**{t: _TOKENS for t in towers}, **{s: _SCORE for s in self.scores}}
    self.MODEL_FEATURES = {**{f"{t}_{part}": _TOKENS for t in towers for part in ("tokens", "mask")},
                           features.QUERY_KEY: _KEY, features.POSITIVE_KEY: _KEY,
                           **{s: _SCORE for s in self.scores}}
    if candidates < 0 or candidates == 1:
      raise ValueError(f"candidates={candidates}: a listwise term needs K >= 2 candidates per "
                       "query (0: none).")
    self.candidates = candidates
    if candidates:
      self.TASK_FEATURES = {**self.TASK_FEATURES, "candidates": _ROWS,
                            features.TEACHER_CANDIDATES: _SCORES}
      self.MODEL_FEATURES = {**self.MODEL_FEATURES, **{name: _ROWS for name in features.CANDIDATE},
                             features.TEACHER_CANDIDATES: _SCORES}
    super().__init__(pack=False, apply_length_check=False)

  def _convert_features(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]
                        ) -> tf.data.Dataset:
    def convert(example):
      out = {}
      for tower in self.towers:
        ids = truncate_keep_last(tf.cast(example[tower], tf.int32), task_feature_lengths[tower])
        pad = task_feature_lengths[tower] - tf.shape(ids)[0]
        out[f"{tower}_tokens"] = tf.pad(ids, [[0, pad]])
        out[f"{tower}_mask"] = tf.pad(tf.ones_like(ids), [[0, pad]])
        if tower != "negative":
          out[f"{tower}_key"] = token_key(ids)
      if self.candidates:
        out.update(self._candidates(example, out, task_feature_lengths["candidates"]))
      return {**out, **{s: example[s] for s in self.scores}}
    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

  def _candidates(self, example, out, length: int) -> dict[str, tf.Tensor]:
    """The example's K candidates, or its positive K times with NaN scores if it has none."""
    k, count = self.candidates, example["candidates"].nrows(out_type=tf.int32)
    none = tf.equal(count, 0)
    check = tf.debugging.Assert(none | tf.equal(count, k), [
        f"an example has a number of candidates other than candidates={k} (or none); "
        "give every record the same K, and SeqioBatches.candidates that K:", count])
    tokens, mask = truncate_rows_keep_last(tf.cast(example["candidates"], tf.int32), length)
    teacher = tf.cast(example[features.TEACHER_CANDIDATES], tf.float32)
    positive = out["positive_tokens"][:length], out["positive_mask"][:length]
    tokens, mask, teacher = tf.cond(none, lambda: (
        tf.tile(positive[0][None], [k, 1]), tf.tile(positive[1][None], [k, 1]),
        tf.fill([k], float("nan"))), lambda: (tokens, mask, teacher))
    with tf.control_dependencies([check]):  # the count is checked before the shapes
      return {"candidate_tokens": tf.ensure_shape(tokens, [k, length]),
              "candidate_mask": tf.ensure_shape(mask, [k, length]),
              features.TEACHER_CANDIDATES: tf.ensure_shape(teacher, [k])}

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]
                                ) -> Mapping[str, int]:
    lengths = {f"{t}_{part}": task_feature_lengths[t] for t in self.towers
               for part in ("tokens", "mask")}
    if self.candidates:
      lengths.update({name: task_feature_lengths["candidates"] for name in features.CANDIDATE},
                     **{features.TEACHER_CANDIDATES: self.candidates})
    return {**lengths, features.QUERY_KEY: 1, features.POSITIVE_KEY: 1,  # scalars: unchecked
            **{s: 1 for s in self.scores}}
