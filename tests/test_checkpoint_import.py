"""safetensors import: exact mapping, clear mismatch errors, save/load round trip."""

import json

import jax
import numpy as np
import pytest
from conftest import TINY_HF_CONFIG, TINY_VOCAB, hf_bert_tensors, write_hf_checkpoint

from gecko.encode import encode
from gecko.models import checkpoint_import, embedder


def _reference_forward(t, ids, cfg):
  """A NumPy BERT forward (HF layout) + mean pooling + L2 norm, written independently."""
  from scipy.special import erf
  h, heads = cfg["hidden_size"], cfg["num_attention_heads"]
  d = h // heads

  def ln(x, p):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-12) * t[p + ".weight"] + t[p + ".bias"]

  def lin(x, p):
    return x @ t[p + ".weight"].T + t[p + ".bias"]

  x = (t["embeddings.word_embeddings.weight"][ids]
       + t["embeddings.position_embeddings.weight"][: len(ids)]
       + t["embeddings.token_type_embeddings.weight"][0])
  x = ln(x, "embeddings.LayerNorm")
  for i in range(cfg["num_hidden_layers"]):
    p = f"encoder.layer.{i}."
    q, k, v = (lin(x, p + f"attention.self.{n}").reshape(-1, heads, d).transpose(1, 0, 2)
               for n in ("query", "key", "value"))
    a = q @ k.transpose(0, 2, 1) / np.sqrt(d)
    a = np.exp(a - a.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    ctx = (a @ v).transpose(1, 0, 2).reshape(-1, h)
    x = ln(x + lin(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
    m = lin(x, p + "intermediate.dense")
    m = 0.5 * m * (1 + erf(m / np.sqrt(2)))
    x = ln(x + lin(m, p + "output.dense"), p + "output.LayerNorm")
  pooled = x.mean(0)
  return pooled / np.linalg.norm(pooled)


def test_imported_weights_reproduce_an_independent_numpy_bert(tiny_hf_dir):
  model = embedder.load(tiny_hf_dir)
  tensors = checkpoint_import.read_safetensors(tiny_hf_dir / "model.safetensors")
  text = "the gecko embeds text, the model!"
  ids = model.tokenizer.encode_batch([text])[0]
  assert ids[0] == TINY_VOCAB.index("[CLS]") and ids[-1] == TINY_VOCAB.index("[SEP]")
  expected = _reference_forward(tensors, np.array(ids), TINY_HF_CONFIG)
  got = encode([text], model=model)[0]
  # float32 against float64 agrees to about 4e-8 here; a tanh GELU is off by 1.6e-6.
  np.testing.assert_allclose(got, expected, atol=3e-7)


def test_bert_prefix_is_accepted(tmp_path):
  config = dict(TINY_HF_CONFIG, vocab_size=len(TINY_VOCAB))
  tensors = {"bert." + k: v for k, v in hf_bert_tensors(config, len(TINY_VOCAB)).items()}
  plain = embedder.load(write_hf_checkpoint(tmp_path / "plain"))
  prefixed = embedder.load(write_hf_checkpoint(tmp_path / "prefixed", tensors=tensors))
  jax.tree.map(np.testing.assert_array_equal, plain.params, prefixed.params)


def test_shape_mismatch_names_key_expected_and_found(tmp_path):
  config = dict(TINY_HF_CONFIG, vocab_size=len(TINY_VOCAB))
  tensors = hf_bert_tensors(config, len(TINY_VOCAB))
  tensors["encoder.layer.1.intermediate.dense.weight"] = np.zeros((48, 32), np.float32)
  directory = write_hf_checkpoint(tmp_path / "bad", tensors=tensors)
  with pytest.raises(ValueError) as info:
    embedder.load(directory)
  message = str(info.value)
  assert "encoder.layer.1.intermediate.dense.weight" in message
  assert "(32, 64)" in message and "(48, 32)" in message


def test_missing_and_unknown_tensors_are_named(tmp_path):
  config = dict(TINY_HF_CONFIG, vocab_size=len(TINY_VOCAB))
  tensors = hf_bert_tensors(config, len(TINY_VOCAB))
  del tensors["encoder.layer.0.attention.self.key.bias"]
  with pytest.raises(ValueError, match="encoder.layer.0.attention.self.key.bias"):
    embedder.load(write_hf_checkpoint(tmp_path / "missing", tensors=tensors))
  tensors = hf_bert_tensors(config, len(TINY_VOCAB))
  tensors["encoder.layer.2.output.dense.weight"] = np.zeros((32, 64), np.float32)
  with pytest.raises(ValueError, match="encoder.layer.2.output.dense.weight"):
    embedder.load(write_hf_checkpoint(tmp_path / "unknown", tensors=tensors))


def test_missing_weights_file_and_pickle_only_checkpoints_are_refused(tiny_hf_dir, tmp_path):
  (tiny_hf_dir / "model.safetensors").rename(tiny_hf_dir / "pytorch_model.bin")
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    embedder.load(tiny_hf_dir)
  with pytest.raises(FileNotFoundError, match="neither a directory"):
    embedder.load(tmp_path / "does-not-exist")
  with pytest.raises(FileNotFoundError, match="not found"):
    checkpoint_import.read_safetensors(tmp_path / "none.safetensors")


def test_unsupported_configs_are_refused(tmp_path):
  with pytest.raises(ValueError, match="hidden_act='relu'"):
    embedder.load(write_hf_checkpoint(tmp_path / "relu", config=dict(TINY_HF_CONFIG, hidden_act="relu")))
  directory = write_hf_checkpoint(tmp_path / "cls")
  (directory / "1_Pooling").mkdir()
  (directory / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
  with pytest.raises(ValueError, match="not mean pooling"):
    embedder.load(directory)


def test_import_save_load_round_trip_is_exact(tiny_hf_dir, tmp_path):
  imported = embedder.from_huggingface(tiny_hf_dir, embed_dim=24, dims=(8, 24), seed=3)
  saved = embedder.save(imported, tmp_path / "saved")
  with pytest.raises(FileExistsError, match="overwrite=True"):
    embedder.save(imported, saved)
  loaded = embedder.load(saved)
  assert loaded.module == imported.module
  assert loaded.tokenizer.max_length == imported.tokenizer.max_length == 32
  assert loaded.tokenizer.vocab == imported.tokenizer.vocab
  flat_a = jax.tree_util.tree_leaves_with_path(imported.params)
  flat_b = jax.tree_util.tree_leaves_with_path(loaded.params)
  assert [p for p, _ in flat_a] == [p for p, _ in flat_b] and len(flat_a) == 2 * 16 + 5 + 1
  for (path, a), (_, b) in zip(flat_a, flat_b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(path))
  texts = ["the gecko", "embed text"]
  np.testing.assert_array_equal(encode(texts, model=imported, dim=8), encode(texts, model=loaded, dim=8))
