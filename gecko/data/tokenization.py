"""The backbones' tokenizers in plain Python (no TensorFlow).

`WordPieceTokenizer` (BERT, MiniLM) wraps the Rust `tokenizers` library with the exact BERT
normalisation of the checkpoint (lower-casing, accent stripping, CJK splitting) and
truncates to `max_length` *including* `[CLS]` and `[SEP]`, as sentence-transformers
does. `gecko.data.vocabularies.WordPieceVocabulary` gives the same ids inside `tf.data`.
`SentencePieceTokenizer` (T5) encodes with the checkpoint's `spiece.model` and appends
`</s>`, as Hugging Face's T5 tokenizer does. `from_pretrained` picks the one a model
directory holds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
import tokenizers
from tokenizers import normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

PathLike = str | os.PathLike


def read_vocab(path: PathLike) -> list[str]:
  """Reads a BERT `vocab.txt` (one token per line, id = line number)."""
  with open(path, encoding="utf-8") as f:
    tokens = [line.rstrip("\n") for line in f]
  if not tokens:
    raise ValueError(f"Vocabulary file {os.fspath(path)!r} is empty.")
  return tokens


class Tokenizer:
  """What the models need of a tokenizer: ids ending in `eos`, padding, saving."""

  max_length: int
  pad_id: int
  vocab: list[str]
  lowercase: bool

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    raise NotImplementedError

  def with_max_length(self, max_length: int) -> Tokenizer:
    """The same tokenizer, truncating at `max_length` ids."""
    raise NotImplementedError

  def save(self, directory: PathLike) -> None:
    raise NotImplementedError

  def pad(self, ids: Sequence[Sequence[int]], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pads id lists to `[len(ids), length]`; returns (ids, mask) as int32.

    Longer lists are cut to `length`, keeping their final token (`[SEP]`, `</s>`).
    """
    out = np.full((len(ids), length), self.pad_id, dtype=np.int32)
    mask = np.zeros((len(ids), length), dtype=np.int32)
    for row, seq in enumerate(ids):
      if len(seq) > length:
        seq = list(seq[:length - 1]) + [seq[-1]]
      out[row, :len(seq)] = seq
      mask[row, :len(seq)] = 1
    return out, mask


class WordPieceTokenizer(Tokenizer):
  """BERT WordPiece tokenization to model-ready ids `[CLS] ... [SEP]`.

  Args:
    vocab: The WordPiece vocabulary, token i having id i.
    lowercase: Lower-case and strip accents (NFD, drop combining marks) first, as
      BERT's uncased checkpoints expect.
    max_length: Maximum ids per text including `[CLS]` and `[SEP]`; longer texts
      are truncated.
  """

  def __init__(self, *, vocab: Sequence[str], lowercase: bool, max_length: int):
    if max_length < 2:
      raise ValueError(f"max_length must be at least 2 (for [CLS] and [SEP]), got {max_length}.")
    self.vocab = list(vocab)
    self.lowercase = bool(lowercase)
    self.max_length = int(max_length)
    index = {token: i for i, token in enumerate(self.vocab)}
    missing = [t for t in ("[CLS]", "[SEP]", "[PAD]", "[UNK]") if t not in index]
    if missing:
      raise ValueError(f"Vocabulary lacks the special tokens {missing}; is it a BERT vocab.txt?")
    self.cls_id, self.sep_id = index["[CLS]"], index["[SEP]"]
    self.pad_id, self.unk_id = index["[PAD]"], index["[UNK]"]
    self.eos_id = self.sep_id  # every text ends in it
    tok = tokenizers.Tokenizer(WordPiece(index, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=self.lowercase,
        lowercase=self.lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", self.cls_id), ("[SEP]", self.sep_id)])
    tok.enable_truncation(max_length=self.max_length)
    tok.no_padding()
    self._tokenizer = tok

  def with_max_length(self, max_length: int) -> WordPieceTokenizer:
    return WordPieceTokenizer(vocab=self.vocab, lowercase=self.lowercase, max_length=max_length)

  @classmethod
  def from_pretrained(cls, model_dir: PathLike, *, max_length: int) -> WordPieceTokenizer:
    """Builds the tokenizer of a Hugging Face BERT directory (`vocab.txt` or `tokenizer.json`)."""
    model_dir = os.fspath(model_dir)
    vocab_txt = os.path.join(model_dir, "vocab.txt")
    tokenizer_json = os.path.join(model_dir, "tokenizer.json")
    lowercase = True
    if os.path.exists(tokenizer_json):
      with open(tokenizer_json, encoding="utf-8") as f:
        spec = json.load(f)
      if spec.get("model", {}).get("type") != "WordPiece":
        raise ValueError(f"{tokenizer_json} is not a WordPiece tokenizer; only BERT-family "
                         "backbones are supported.")
      norm = spec.get("normalizer") or {}
      lowercase = bool(norm.get("lowercase", True))
      strip = norm.get("strip_accents")
      if strip is not None and bool(strip) != lowercase:
        raise ValueError(f"{tokenizer_json}: strip_accents={strip} with lowercase={lowercase} "
                         "is not supported (the TF tokenizer ties the two).")
      vocab_map = spec["model"]["vocab"]
      vocab = [""] * len(vocab_map)
      for token, i in vocab_map.items():
        vocab[i] = token
    elif os.path.exists(vocab_txt):
      vocab = read_vocab(vocab_txt)
      config = os.path.join(model_dir, "tokenizer_config.json")
      if os.path.exists(config):
        with open(config, encoding="utf-8") as f:
          lowercase = bool(json.load(f).get("do_lower_case", True))
    else:
      raise FileNotFoundError(
          f"No tokenizer in {model_dir!r}: expected tokenizer.json or vocab.txt.")
    return cls(vocab=vocab, lowercase=lowercase, max_length=max_length)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """Token ids per text, each `[CLS] wordpieces... [SEP]`, at most `max_length` long."""
    return [e.ids for e in self._tokenizer.encode_batch(list(texts), add_special_tokens=True)]

  def save(self, directory: PathLike) -> None:
    """Writes `vocab.txt` and `tokenizer_config.json` (enough to rebuild this tokenizer)."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as f:
      f.write("\n".join(self.vocab) + "\n")
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
      json.dump({"do_lower_case": self.lowercase, "model_max_length": self.max_length}, f)


class SentencePieceTokenizer(Tokenizer):
  """T5's SentencePiece tokenization to model-ready ids `pieces... </s>`.

  Args:
    model_file: The checkpoint's `spiece.model`.
    max_length: Maximum ids per text including `</s>`; longer texts are truncated.
  """

  MODEL_FILE = "spiece.model"

  def __init__(self, *, model_file: PathLike, max_length: int):
    import sentencepiece  # a seqio dependency

    if max_length < 2:
      raise ValueError(f"max_length must be at least 2 (a piece and </s>), got {max_length}.")
    self.model_file = os.fspath(model_file)
    if not os.path.exists(self.model_file):
      raise FileNotFoundError(f"SentencePiece model not found: {self.model_file!r}.")
    self._sp = sentencepiece.SentencePieceProcessor(model_file=self.model_file)
    self.max_length = int(max_length)
    self.lowercase = False
    self.vocab = [self._sp.id_to_piece(i) for i in range(self._sp.get_piece_size())]
    self.pad_id, self.eos_id, self.unk_id = self._sp.pad_id(), self._sp.eos_id(), self._sp.unk_id()
    if self.pad_id < 0 or self.eos_id < 0:
      raise ValueError(f"{self.model_file}: the SentencePiece model defines no pad or eos id "
                       f"(pad={self.pad_id}, eos={self.eos_id}); T5 models use pad=0, eos=1.")

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """Token ids per text, each `pieces... </s>`, at most `max_length` long."""
    return [ids[:self.max_length - 1] + [self.eos_id]
            for ids in self._sp.encode(list(texts), out_type=int)]

  def with_max_length(self, max_length: int) -> SentencePieceTokenizer:
    return SentencePieceTokenizer(model_file=self.model_file, max_length=max_length)

  def decode(self, ids: Sequence[int]) -> str:
    """The text of piece ids (without `</s>` or padding)."""
    return self._sp.decode([int(i) for i in ids])

  def save(self, directory: PathLike) -> None:
    """Copies `spiece.model` and writes `tokenizer_config.json`."""
    import shutil
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(directory, self.MODEL_FILE)
    if os.path.abspath(target) != os.path.abspath(self.model_file):
      shutil.copyfile(self.model_file, target)
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
      json.dump({"model_max_length": self.max_length}, f)


def from_pretrained(model_dir: PathLike, *, max_length: int) -> Tokenizer:
  """The tokenizer a model directory holds: `spiece.model` (T5), else WordPiece."""
  spiece = os.path.join(os.fspath(model_dir), SentencePieceTokenizer.MODEL_FILE)
  if os.path.exists(spiece):
    return SentencePieceTokenizer(model_file=spiece, max_length=max_length)
  return WordPieceTokenizer.from_pretrained(model_dir, max_length=max_length)
