"""The output features every Gecko task shares (mixtures need identical features)."""

import seqio
import tensorflow as tf

from gecko.data.packaged_models import DEFAULT_MODEL
from gecko.data.vocabularies import ModelVocabulary

# The trained model's own tokenizer (SeqioBatches passes it: WordPiece for MiniLM/BERT,
# SentencePiece for T5), so every task serves every backbone; outside a pipeline, the
# MiniLM / BERT-base uncased WordPiece (ids cut at 512; SeqioBatches truncates further).
VOCABULARY = ModelVocabulary(DEFAULT_MODEL, max_length=512)


def _feature(vocabulary) -> seqio.Feature:
  return seqio.Feature(vocabulary=vocabulary, add_eos=False, dtype=tf.int32)


def pair_features(vocabulary=VOCABULARY) -> dict[str, seqio.Feature]:
  """query + positive (pre-finetuning, Eq. 2)."""
  return {"query": _feature(vocabulary), "positive": _feature(vocabulary)}


def triple_features(vocabulary=VOCABULARY) -> dict[str, seqio.Feature]:
  """query + positive + hard negative (fine-tuning, Eq. 3)."""
  return {**pair_features(vocabulary), "negative": _feature(vocabulary)}


def scored_triple_features(vocabulary=VOCABULARY) -> dict[str, seqio.Feature]:
  """A triple and a teacher's scores of its positive and negative (float32 scalars)."""
  score = seqio.Feature(vocabulary=seqio.PassThroughVocabulary(1), add_eos=False,
                        dtype=tf.float32, rank=0)
  return {**triple_features(vocabulary), "teacher_positive": score, "teacher_negative": score}


def candidate_features(vocabulary=VOCABULARY) -> dict[str, seqio.Feature]:
  """A triple and each query's K candidate passages (`[K, None]` ids) with a teacher's
  score of each (float32 `[K]`), for the listwise loss over every candidate."""
  scores = seqio.Feature(vocabulary=seqio.PassThroughVocabulary(1), add_eos=False,
                         dtype=tf.float32, rank=1)
  return {**triple_features(vocabulary),
          "candidates": seqio.Feature(vocabulary=vocabulary, add_eos=False, dtype=tf.int32,
                                      rank=2),
          "teacher_candidates": scores}
