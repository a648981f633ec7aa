"""gecko.encode: the Python API and the command line."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from gecko import encode as encode_lib
from gecko.encode import encode
from gecko.models import embedder

TEXTS = ["the gecko", "", "embed text model", "a", "the the the the the the the the text",
         "gecko, embedding!", "model?"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  from conftest import write_hf_checkpoint
  directory = write_hf_checkpoint(tmp_path_factory.mktemp("m") / "tiny")
  return embedder.from_huggingface(directory, embed_dim=24, dims=(8, 24))


def test_packed_batches_return_rows_in_input_order(tiny):
  """Packed, budgeted batches give each text's one-text-per-row embedding, in input order."""
  one_by_one = []
  for ids in tiny.tokenizer.encode_batch(TEXTS):
    token_ids, mask = tiny.tokenizer.pad([ids], max(len(ids), 1))
    one_by_one.append(np.asarray(tiny.embed_tokens(token_ids, mask))[0])
  for batch_size in (1, 2, 32):
    np.testing.assert_allclose(encode(TEXTS, model=tiny, batch_size=batch_size),
                               np.stack(one_by_one), atol=1e-6)


def test_packed_batches_keep_the_token_budget():
  lengths = [3, 40, 5, 17, 16, 2] * 20
  batches = encode_lib.packed_batches(lengths, batch_size=2, max_length=64)
  assert sorted(i for b in batches for r in b for i in r.texts) == list(range(120))
  for batch in batches:
    assert len({r.length for r in batch}) == 1
    assert len(batch) * batch[0].length <= max(2 * encode_lib.TOKENS_PER_TEXT, batch[0].length)


def test_dims_and_prompt(tiny):
  full = encode(TEXTS, model=tiny)
  small = encode(TEXTS, model=tiny, dim=8)
  assert full.shape == (7, 24) and small.shape == (7, 8) and small.dtype == np.float32
  np.testing.assert_allclose(small, full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True),
                             atol=1e-6)
  ids, mask = tiny.tokenizer.pad(tiny.tokenizer.encode_batch(TEXTS), 16)  # unpacked, at once
  np.testing.assert_allclose(encode(TEXTS, model=tiny, dim=24),
                             np.asarray(tiny.embed_tokens(ids, mask)), atol=1e-6)
  prompted = encode(["text"], model=tiny, prompt="the gecko ")
  np.testing.assert_allclose(prompted, encode(["the gecko text"], model=tiny), atol=1e-6)
  templated = encode(["text"], model=tiny, prompt="the {text} model")
  np.testing.assert_allclose(templated, encode(["the text model"], model=tiny), atol=1e-6)


def test_empty_input_gives_an_empty_array(tiny):
  assert encode([], model=tiny).shape == (0, 24)
  assert encode((), model=tiny, dim=8).shape == (0, 8)


@pytest.mark.parametrize("texts, error, pattern", [
    (["ok", None], TypeError, r"texts\[1\] is NoneType \(None\)"),
    (["ok", 3], TypeError, r"texts\[1\] is int \(3\)"),
    ("a single string", TypeError, "wrap it in a list"),
    (7, TypeError, "sequence of strings"),
])
def test_bad_texts_are_named(tiny, texts, error, pattern):
  with pytest.raises(error, match=pattern):
    encode(texts, model=tiny)


def test_bad_options_are_named(tiny, tmp_path):
  with pytest.raises(ValueError, match=r"dim=100 is not one of the model's Matryoshka dims \(8, 24\)"):
    encode(["x"], model=tiny, dim=100)
  with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
    encode(["x"], model=tiny, batch_size=0)
  with pytest.raises(TypeError, match="prompt must be a str"):
    encode(["x"], model=tiny, prompt=3)
  with pytest.raises(TypeError, match="model must be a path"):
    encode(["x"], model=None)
  with pytest.raises(FileNotFoundError, match="neither a directory nor a packaged model"):
    encode(["x"], model=str(tmp_path / "nope"))


def _cli(*args, cwd=REPO):
  return subprocess.run([sys.executable, "-m", "gecko.encode", *args], capture_output=True,
                        text=True, cwd=cwd, timeout=300)


def test_cli_txt_and_jsonl(tiny, tmp_path):
  model_dir = embedder.save(tiny, tmp_path / "model")
  (tmp_path / "in.txt").write_text("\n".join(["the gecko", "embed text"]) + "\n")
  (tmp_path / "in.jsonl").write_text(
      json.dumps({"body": "the gecko"}) + "\n\n" + json.dumps({"body": "embed text"}) + "\n")
  result = _cli("--model", model_dir, "--input", str(tmp_path / "in.txt"),
                "--output", str(tmp_path / "a.npy"), "--dim", "8")
  assert result.returncode == 0, result.stderr
  assert "wrote 2 x 8 embeddings" in result.stderr
  result = _cli("--model", model_dir, "--input", str(tmp_path / "in.jsonl"), "--field", "body",
                "--output", str(tmp_path / "b.npy"), "--dim", "8", "--all_devices")  # 8 devices
  assert result.returncode == 0, result.stderr
  a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
  np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(a, encode(["the gecko", "embed text"], model=tiny, dim=8), atol=1e-6)


def test_cli_help_and_errors(tmp_path):
  result = _cli("--help")
  assert result.returncode == 0 and "--model" in result.stdout and "Matryoshka" in result.stdout
  result = _cli("--model", "all-MiniLM-L6-v2", "--input", str(tmp_path / "missing.txt"),
                "--output", str(tmp_path / "o.npy"))
  assert result.returncode == 2 and "Input file not found" in result.stderr
  assert "Traceback" not in result.stderr
  (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": 3}\n')
  result = _cli("--model", "all-MiniLM-L6-v2", "--input", str(tmp_path / "bad.jsonl"),
                "--output", str(tmp_path / "o.npy"))
  assert result.returncode == 2 and "bad.jsonl:2" in result.stderr
  assert not (tmp_path / "o.npy").exists()


def test_a_tokenizer_longer_than_the_model_is_cut_to_its_positions(tiny):
  """A training run pairs a tiny model (64 positions here) with MiniLM's tokenizer
  (256): the exported model truncates at 64 instead of refusing long texts."""
  long = embedder.Embedder(module=tiny.module, params=tiny.params,
                           tokenizer=tiny.tokenizer.with_max_length(256))
  assert long.tokenizer.max_length == 64 == tiny.module.backbone.max_length
  text = "the gecko " * 100
  (ids,) = long.tokenizer.encode_batch([text])
  assert len(ids) == 64 and ids[-1] == long.tokenizer.eos_id
  token_ids, mask = long.tokenizer.pad([ids], 64)
  np.testing.assert_allclose(encode([text], model=long), np.asarray(tiny.embed_tokens(token_ids, mask)),
                             atol=1e-6)
