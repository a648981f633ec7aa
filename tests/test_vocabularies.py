"""The WordPiece vocabulary gives the reference tokenizer's ids in Python and in tf.data;
the Gecko tasks tokenize with the trained model's own vocabulary."""

import pytest

import tensorflow as tf  # a core dependency; imported here, never by `import gecko`
import json  # noqa: E402

import gecko_tasks  # noqa: E402,F401  (registers the tasks)
import seqio  # noqa: E402
import tokenizers  # noqa: E402
from gecko_tasks.vocabulary import VOCABULARY  # noqa: E402

from gecko.data import input_format  # noqa: E402
from gecko.data import sources as seqio_sources  # noqa: E402
from gecko.data.seqio_batches import SeqioBatches  # noqa: E402
from gecko.data.vocabularies import WordPieceVocabulary  # noqa: E402
from gecko.fret import schema as fret_schema  # noqa: E402

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


def test_gecko_tasks_tokenize_with_the_models_own_vocabulary(tiny_hf_dir, tmp_path):
  """One registration serves every backbone: with another WordPiece model's tokenizer,
  gecko_fret's ids are that tokenizer's; a task with a fixed vocabulary must match."""
  from gecko.data import tokenization
  from gecko.data.vocabularies import WordPieceVocabulary
  other = tokenization.WordPieceTokenizer.from_pretrained(tiny_hf_dir, max_length=32)
  (tmp_path / "fret").mkdir()
  record = {name: f"{name} text" for name in fret_schema.TRAINING_FIELDS}
  (tmp_path / "fret" / "fret-00000.jsonl").write_text(json.dumps(record) + "\n")
  options = seqio_sources.DataOptions(data_dir=str(tmp_path), tokenizer=other)
  with seqio_sources.using(options):
    example = next(seqio.get_mixture_or_task("gecko_fret").get_dataset(
        sequence_length=None, split="train", shuffle=False).as_numpy_iterator())
  want = input_format.GECKO.query("query text", task="task text")
  assert example["query"].tolist() == other.encode_batch([want])[0]
  assert example["query"].tolist() != VOCABULARY.encode(want)  # not MiniLM's ids

  seqio.TaskRegistry.remove("fixed_vocabulary_task")
  fixed = WordPieceVocabulary("all-MiniLM-L6-v2")
  seqio.TaskRegistry.add("fixed_vocabulary_task", source=seqio.TaskRegistry.get("gecko_fret").source,
                         preprocessors=[], output_features={
                             k: seqio.Feature(vocabulary=fixed, add_eos=False)
                             for k in ("query", "positive", "negative")})
  with pytest.raises(ValueError, match="not the model's tokenizer"):
    SeqioBatches(mixture_or_task_name="fixed_vocabulary_task", tokenizer=other, batch_size=4)
