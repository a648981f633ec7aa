"""The WordPiece vocabulary gives the reference tokenizer's ids in Python and in tf.data."""

import pytest

tf = pytest.importorskip("tensorflow")  # a core dependency; imported here, never by `import gecko`
import tokenizers  # noqa: E402

from gecko.vocabularies import WordPieceVocabulary  # noqa: E402

TEXTS = [
    "", "hello", "Hello, World!", "Héllo Wörld, naïve café — crème brûlée",
    "東京は日本の首都です。", "한국어 텍스트", "Привет, мир", "Ελληνικά κείμενο με τόνους",
    "İstanbul ß straße", "ﬁ ligature Ⅻ ＡＢＣ full width", "emoji 🙂🚀 test",
    "a\x00b\x0bc\u200bd\ufffde", "tab\tnew\nline\u00a0nbsp\u2003em", "عربي نص",
    "def f(x):\n    return x ** 2  # square", "ABC-DEF_ghi's \"quoted\" (p) [b] {c} <t>",
    "\u0301 combining accent alone", "x" * 150, "unaffable antidisestablishmentarianism",
    "word " * 400,
]


@pytest.fixture(scope="module")
def vocab(minilm_dir):
  return WordPieceVocabulary(minilm_dir, max_length=256)


@pytest.fixture(scope="module")
def reference(minilm_dir):
  tok = tokenizers.Tokenizer.from_file(f"{minilm_dir}/tokenizer.json")
  tok.enable_truncation(max_length=256)
  tok.no_padding()
  return [e.ids for e in tok.encode_batch(TEXTS)]


def test_python_ids_match_the_reference_tokenizer(vocab, reference):
  assert vocab.encode_batch(TEXTS) == reference
  assert [vocab.encode(t) for t in TEXTS] == reference


def test_tf_graph_ids_match_python_ids(vocab, reference):
  ragged = vocab.encode_tf(tf.constant(TEXTS))
  assert ragged.to_list() == reference

  ds = tf.data.Dataset.from_tensor_slices({"text": TEXTS}).map(
      lambda ex: {"ids": vocab.encode_tf(ex["text"])})
  assert [list(ex["ids"]) for ex in ds.as_numpy_iterator()] == reference


def test_truncation_keeps_cls_and_sep_and_max_length(vocab):
  ids = vocab.encode("word " * 400)
  assert len(ids) == 256 and ids[0] == 101 and ids[-1] == vocab.eos_id == 102
  assert vocab.encode("") == [101, 102]
  short = WordPieceVocabulary(vocab._model_dir, max_length=8)
  assert short.encode("one two three four five six seven eight")[-1] == 102
  assert len(short.encode_tf(tf.constant("one two three four five six seven")).numpy()) == 8


def test_lowercasing_and_decoding(vocab):
  assert vocab.encode("HELLO World") == vocab.encode("hello world")
  assert vocab.decode(vocab.encode("Hello wonderful World")) == "hello wonderful world"
  decoded = vocab.decode_tf(tf.constant(vocab.encode("Hello wonderful World"))).numpy()
  assert decoded.decode() == "hello wonderful world"


def test_seqio_properties(vocab):
  assert vocab.vocab_size == 30522 and vocab.pad_id == 0 and vocab.unk_id == 100
  assert vocab == WordPieceVocabulary(vocab._model_dir, max_length=256)
  assert vocab != WordPieceVocabulary(vocab._model_dir, max_length=128)


def test_missing_tokenizer_files_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="tokenizer.json or vocab.txt"):
    WordPieceVocabulary(tmp_path)
