"""SeqIO vocabularies for the backbones' tokenizers.

- `WordPieceVocabulary` (BERT, MiniLM): `[CLS] wordpieces... [SEP]`, truncated to
  `max_length` (the `[SEP]` is kept).
- `SentencePieceVocabulary` (T5): `pieces... </s>`, truncated likewise.
- `ModelVocabulary`, what the Gecko tasks are registered with: it tokenizes with the
  tokenizer of the model being trained (`SeqioBatches` puts it in the active
  `seqio_sources.DataOptions`), so one registration serves every backbone; outside a
  pipeline it is all-MiniLM-L6-v2's WordPiece.

Each encodes both in Python (`encode`, through `gecko.data.tokenization`) and inside
`tf.data` graphs (`encode_tf`, through `tensorflow_text`), with identical ids. Because
the ids already end in `[SEP]` / `</s>` (`eos_id`), tasks must not add `append_eos`.

Importing this module imports TensorFlow; `import gecko` does not.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import seqio
import tensorflow as tf
import tensorflow_text as tf_text

from gecko.data import packaged_models, tokenization


class TokenizerVocabulary(seqio.Vocabulary):
  """The Python side of a `gecko.data.tokenization` tokenizer as a seqio vocabulary; the
  subclasses add the `tf.data` side. Ids are model-ready (they end in `eos_id`)."""

  tokenizer: tokenization.Tokenizer

  @property
  def max_length(self) -> int:
    return self.tokenizer.max_length

  @property
  def eos_id(self) -> int:
    return self.tokenizer.eos_id

  @property
  def pad_id(self) -> int:
    return self.tokenizer.pad_id

  @property
  def unk_id(self) -> int:
    return self.tokenizer.unk_id

  @property
  def _base_vocab_size(self) -> int:
    return len(self.tokenizer.vocab)

  def _encode(self, s: str) -> Sequence[int]:
    return self.tokenizer.encode_batch([s])[0]

  def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
    """Python ids for many texts at once."""
    return self.tokenizer.encode_batch(list(texts))


class WordPieceVocabulary(TokenizerVocabulary):
  """BERT WordPiece as a seqio vocabulary (ids include `[CLS]`/`[SEP]`).

  Args:
    model_dir: A directory with `vocab.txt` or `tokenizer.json` (a Hugging Face BERT
      checkpoint, or a saved gecko model), read now; or a packaged model's name
      (e.g. "all-MiniLM-L6-v2"), resolved on first use, so that tasks can be
      registered at import time on a machine that has not installed the model yet.
    max_length: Maximum ids per text including `[CLS]` and `[SEP]`.
    tokenizer: Instead of `model_dir`, a loaded tokenizer (its `max_length` is used).
  """

  def __init__(self, model_dir: str | os.PathLike | None = None, *, max_length: int = 256,
               tokenizer: tokenization.WordPieceTokenizer | None = None):
    if (model_dir is None) == (tokenizer is None):
      raise ValueError("WordPieceVocabulary needs exactly one of model_dir= or tokenizer=.")
    self._model_dir = os.fspath(model_dir) if model_dir is not None else None
    self._max_length = tokenizer.max_length if tokenizer is not None else max_length
    self._tokenizer = tokenizer
    self._tf_tokenizer = None
    super().__init__(extra_ids=0)
    if self._model_dir and os.path.isdir(self._model_dir):
      self.tokenizer  # noqa: B018  (fail early on a directory without a vocabulary)

  @property
  def tokenizer(self) -> tokenization.WordPieceTokenizer:
    if self._tokenizer is None:
      self._tokenizer = tokenization.WordPieceTokenizer.from_pretrained(
          packaged_models.resolve(self._model_dir), max_length=self._max_length)
    return self._tokenizer

  @property
  def max_length(self) -> int:
    return self._max_length  # known before the tokenizer is loaded

  def _decode(self, ids: Iterable[int]) -> str:
    specials = {self.tokenizer.cls_id, self.tokenizer.sep_id, self.tokenizer.pad_id}
    pieces = [self.tokenizer.vocab[i] for i in ids if i not in specials]
    return " ".join(pieces).replace(" ##", "")

  def _fast_bert(self) -> tf_text.FastBertTokenizer:
    if self._tf_tokenizer is None:
      with tf.init_scope():  # built eagerly: later tf.data traces capture no stale graph
        self._tf_tokenizer = self._make_fast_bert()
    return self._tf_tokenizer

  def _make_fast_bert(self) -> tf_text.FastBertTokenizer:
    return tf_text.FastBertTokenizer(
        vocab=self.tokenizer.vocab, suffix_indicator="##", max_bytes_per_word=100,
        token_out_type=tf.int32, unknown_token="[UNK]", no_pretokenization=False,
        lower_case_nfd_strip_accents=False)

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    """ids for a scalar string (or a ragged batch for a vector of strings)."""
    s = tf.convert_to_tensor(s, dtype=tf.string)
    scalar = s.shape.rank == 0
    texts = tf.reshape(s, [-1]) if scalar else s
    # BERT's text cleaning: \t \n \r and Unicode spaces become " ", other control and
    # format characters (and U+FFFD) are dropped.
    texts = tf.strings.regex_replace(texts, r"[\t\n\r\p{Zs}\x{2028}\x{2029}]", " ")
    texts = tf.strings.regex_replace(texts, r"[\p{C}\x{FFFD}]", "")
    if self.tokenizer.lowercase:  # lower-case, then NFD and drop combining marks
      texts = tf.strings.lower(texts, encoding="utf-8")
      texts = tf.strings.regex_replace(tf_text.normalize_utf8(texts, "NFD"), r"\p{Mn}", "")
    ids = self._fast_bert().tokenize(texts)
    ids = tf.cast(ids[:, : self.max_length - 2], tf.int32)
    column = lambda value: tf.RaggedTensor.from_tensor(  # noqa: E731
        tf.fill(tf.stack([ids.nrows(), 1]), tf.constant(value, tf.int32)))
    ids = tf.concat([column(self.tokenizer.cls_id), ids, column(self.tokenizer.sep_id)], axis=1)
    return ids[0] if scalar else ids

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    tokens = tf.gather(tf.constant(self.tokenizer.vocab), ids)
    specials = tf.constant(["[CLS]", "[SEP]", "[PAD]"])
    keep = tf.reduce_all(tf.not_equal(tokens[..., None], specials), axis=-1)
    tokens = tf.ragged.boolean_mask(tokens, keep)
    text = tf.strings.reduce_join(tokens, axis=-1, separator=" ")
    return tf.strings.regex_replace(text, " ##", "")

  def __eq__(self, other) -> bool:
    return (isinstance(other, WordPieceVocabulary)
            and self.tokenizer.vocab == other.tokenizer.vocab
            and self.tokenizer.lowercase == other.tokenizer.lowercase
            and self.max_length == other.max_length)

  def __hash__(self) -> int:
    return hash((len(self.tokenizer.vocab), self.tokenizer.lowercase, self.max_length))

  def __str__(self) -> str:
    return (f"WordPieceVocabulary(model_dir={self._model_dir!r}, "
            f"vocab_size={self.vocab_size}, max_length={self.max_length})")


class SentencePieceVocabulary(TokenizerVocabulary):
  """T5's SentencePiece as a seqio vocabulary (ids end in `</s>`, like the encoder saw in
  pre-training and `tokenization.SentencePieceTokenizer` gives).

  Args:
    tokenizer: The model's `SentencePieceTokenizer` (its `spiece.model` and `max_length`).
  """

  def __init__(self, tokenizer: tokenization.SentencePieceTokenizer):
    self.tokenizer = tokenizer
    self._tf_tokenizer = None
    super().__init__(extra_ids=0)

  def _decode(self, ids: Iterable[int]) -> str:
    ids = [int(i) for i in ids if int(i) not in (self.eos_id, self.pad_id)]
    return self.tokenizer.decode(ids)

  def _sentencepiece(self) -> tf_text.SentencepieceTokenizer:
    if self._tf_tokenizer is None:
      with tf.init_scope(), open(self.tokenizer.model_file, "rb") as f:
        self._tf_tokenizer = tf_text.SentencepieceTokenizer(model=f.read(), out_type=tf.int32)
    return self._tf_tokenizer

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    """ids for a scalar string (or a ragged batch for a vector of strings)."""
    s = tf.convert_to_tensor(s, dtype=tf.string)
    scalar = s.shape.rank == 0
    ids = self._sentencepiece().tokenize(tf.reshape(s, [-1]) if scalar else s)
    ids = ids[:, : self.max_length - 1]
    eos = tf.RaggedTensor.from_tensor(tf.fill(tf.stack([ids.nrows(), 1]), self.eos_id))
    ids = tf.concat([ids, eos], axis=1)
    return ids[0] if scalar else ids

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    raise NotImplementedError("decode in Python (`decode`): tf decoding is not needed here.")

  def __eq__(self, other) -> bool:
    return (isinstance(other, SentencePieceVocabulary)
            and self.tokenizer.vocab == other.tokenizer.vocab
            and self.max_length == other.max_length)

  def __hash__(self) -> int:
    return hash((len(self.tokenizer.vocab), self.max_length))

  def __str__(self) -> str:
    return (f"SentencePieceVocabulary(model_file={self.tokenizer.model_file!r}, "
            f"vocab_size={self.vocab_size}, max_length={self.max_length})")


def for_tokenizer(tokenizer: tokenization.Tokenizer) -> seqio.Vocabulary:
  """The seqio vocabulary that tokenizes exactly like `tokenizer`."""
  if isinstance(tokenizer, tokenization.SentencePieceTokenizer):
    return SentencePieceVocabulary(tokenizer)
  if isinstance(tokenizer, tokenization.WordPieceTokenizer):
    return WordPieceVocabulary(tokenizer=tokenizer)
  raise TypeError(f"no seqio vocabulary for {type(tokenizer).__name__}; add one to "
                  "gecko.data.vocabularies.")


class ModelVocabulary(TokenizerVocabulary):
  """The vocabulary of the model being trained (module docstring).

  Args:
    default: The model whose WordPiece is used outside a `SeqioBatches` pipeline.
    max_length: Maximum ids per text of the default vocabulary.
  """

  def __init__(self, default: str = packaged_models.DEFAULT_MODEL, *, max_length: int = 512):
    self._default = WordPieceVocabulary(default, max_length=max_length)
    self._for: dict[int, tuple[tokenization.Tokenizer, seqio.Vocabulary]] = {}
    super().__init__(extra_ids=0)

  def current(self) -> seqio.Vocabulary:
    """The active pipeline's model vocabulary, else the default."""
    from gecko.data import sources as seqio_sources
    tokenizer = seqio_sources.active().tokenizer
    if tokenizer is None:
      return self._default
    if id(tokenizer) not in self._for:  # the tokenizer is kept, so its id stays unique
      self._for[id(tokenizer)] = (tokenizer, for_tokenizer(tokenizer))
    return self._for[id(tokenizer)][1]

  @property
  def tokenizer(self) -> tokenization.Tokenizer:
    """The current vocabulary's tokenizer (the Python side of `TokenizerVocabulary`)."""
    return self.current().tokenizer

  def _decode(self, ids: Iterable[int]) -> str:
    return self.current().decode(ids)

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    return self.current().encode_tf(s)

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    return self.current().decode_tf(ids)

  def __eq__(self, other) -> bool:
    return isinstance(other, ModelVocabulary) and self._default == other._default

  def __hash__(self) -> int:
    return hash(("model", hash(self._default)))

  def __str__(self) -> str:
    return f"ModelVocabulary(now {self.current()})"
