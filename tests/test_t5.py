"""The paper-scale backbone: T5 v1.1 encoder, its Hugging Face import, the 1.2B config,
and the sharded 1B train step compiled on the 8 fake CPU devices."""

import json
import os
import subprocess
import sys

import gin
import jax
import numpy as np
import pytest
from conftest import (PIECES, REPO, assert_trees_close, read_metrics, require_module,
                      write_tiny_t5)

from gecko import compile_step, gin_flags
from gecko.models import checkpoint_import, dual_encoder, embedder, t5



def _reference_libraries():
  """torch and transformers, whose T5 is the reference (the [mteb] extra)."""
  require_module("torch", "the reference T5 (the [mteb] extra)")
  require_module("transformers", "the reference T5 (the [mteb] extra)")
  import torch
  import transformers
  return torch, transformers

def _reference_states(model, ids, mask):
  torch, _ = _reference_libraries()
  with torch.no_grad():
    out = model(input_ids=torch.tensor(np.asarray(ids)),
                attention_mask=torch.tensor(np.asarray(mask))).last_hidden_state
  return out.numpy()


def test_token_states_match_transformers_t5_encoder(tmp_path):
  reference = write_tiny_t5(tmp_path)
  config = checkpoint_import.config_from_hf(tmp_path / "config.json")
  assert config == t5.T5Config(vocab_size=96, hidden_size=32, num_layers=2, num_heads=4,
                               head_dim=8, mlp_dim=48, relative_max_distance=20,
                               dropout_rate=0.0)
  module = dual_encoder.DualEncoder(backbone=config)
  params = checkpoint_import.encoder_params_from_tensors(
      checkpoint_import.read_checkpoint(tmp_path), config=config,
      expected=dual_encoder.abstract_params(module)["encoder"])
  # 30 positions with max_distance 20 exercise the exact and the log-spaced buckets.
  ids = np.array([list(range(5, 34)) + [1], [5, 6, 7, 1] + [0] * 26], np.int32)
  mask = (np.arange(30)[None] < np.array([[30], [4]])).astype(np.int32)
  ours = t5.T5Encoder(config).apply({"params": params}, ids, mask)
  want = _reference_states(reference, ids, mask)
  np.testing.assert_allclose(np.asarray(ours) * mask[..., None], want * mask[..., None],
                             atol=2e-5, rtol=1e-4)


def test_relative_position_buckets_match_transformers():
  torch, transformers = _reference_libraries()
  attention = transformers.models.t5.modeling_t5.T5Attention
  relative = torch.arange(64)[None, :] - torch.arange(64)[:, None]
  want = attention._relative_position_bucket(relative, bidirectional=True, num_buckets=32,
                                             max_distance=128)
  ours = t5.relative_position_buckets(64, num_buckets=32, max_distance=128)
  np.testing.assert_array_equal(np.asarray(ours), want.numpy())


def test_gtr_style_directory_imports_whole_and_round_trips(tmp_path):
  """A sentence-transformers T5 directory (mean pooling, bias-free 2_Dense, Normalize)
  gives the same embeddings as the reference computed with torch, and save/load keeps them."""
  torch, _ = _reference_libraries()
  from safetensors.torch import save_file

  reference = write_tiny_t5(tmp_path)
  torch.manual_seed(1)
  dense = torch.randn(16, 32)
  (tmp_path / "2_Dense").mkdir()
  save_file({"linear.weight": dense}, str(tmp_path / "2_Dense" / "model.safetensors"))
  (tmp_path / "2_Dense" / "config.json").write_text(json.dumps(
      {"in_features": 32, "out_features": 16, "bias": False,
       "activation_function": "torch.nn.modules.linear.Identity"}))
  (tmp_path / "1_Pooling").mkdir()
  (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(
      {"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}))
  (tmp_path / "modules.json").write_text(json.dumps([
      {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
      {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
      {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
      {"idx": 3, "name": "3", "path": "3_Normalize",
       "type": "sentence_transformers.models.Normalize"}]))
  model = embedder.load(str(tmp_path))
  assert model.output_dim == 16 and isinstance(model.module.backbone, t5.T5Config)
  texts = ["the query returns a list", "python module error"]
  ids, mask = model.tokenizer.pad(model.tokenizer.encode_batch(texts), 12)
  assert all(row[row > 0][-1] == 1 for row in ids)  # every text ends in </s>
  states = _reference_states(reference, ids, mask)
  pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
  want = pooled @ dense.numpy().T
  want /= np.linalg.norm(want, axis=-1, keepdims=True)
  got = np.asarray(model.embed_tokens(ids, mask))
  np.testing.assert_allclose(got, want, atol=1e-5)

  saved = embedder.save(model, tmp_path / "saved")
  again = embedder.load(saved)
  assert again.module.backbone == model.module.backbone and again.dims == model.dims == (16,)
  assert again.tokenizer.vocab == model.tokenizer.vocab
  np.testing.assert_allclose(np.asarray(again.embed_tokens(ids, mask)), got, atol=1e-6)


def test_import_errors_name_the_problem(tmp_path):
  write_tiny_t5(tmp_path, gated=False)
  with pytest.raises(ValueError, match="feed_forward_proj='relu'"):
    checkpoint_import.config_from_hf(tmp_path / "config.json")
  deeper = tmp_path / "deeper"
  write_tiny_t5(deeper)
  config = t5.T5Config(vocab_size=96, hidden_size=32, num_layers=3, num_heads=4, head_dim=8,
                       mlp_dim=48)
  expected = dual_encoder.abstract_params(dual_encoder.DualEncoder(backbone=config))["encoder"]
  with pytest.raises(ValueError, match="lacks 9 T5 tensors.*3-layer T5"):
    checkpoint_import.encoder_params_from_tensors(
        checkpoint_import.read_checkpoint(deeper), config=config, expected=expected)
  with pytest.raises(ValueError, match="relative_buckets=30 must be divisible by 4"):
    t5.T5Config(relative_buckets=30)


@gin.configurable("t5_probe")
def _probe(model=gin.REQUIRED):
  return model


def _gecko_1b():
  gin.clear_config()
  gin_flags.configure([f"{REPO}/gin/models/gecko_1b.gin"], ["t5_probe.model = %MODEL"])
  try:
    return _probe()
  finally:
    gin.clear_config()


def test_gecko_1b_has_1_2b_parameters_and_the_paper_heads():
  model = _gecko_1b()
  shapes = dual_encoder.abstract_params(model)  # jax.eval_shape: nothing allocated
  count = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes))
  assert abs(count - 1.2e9) / 1.2e9 < 0.05, count
  assert count == 1_225_100_288  # T5 v1.1 XL's encoder (1,223,527,424) + 2048x768
  assert model.matryoshka_dims == (256, 768) and model.remat
  assert shapes["projection"]["kernel"].shape == (2048, 768)
  assert shapes["encoder"]["layers"]["attention"]["query"]["kernel"].shape == (24, 2048, 32, 64)
  assert shapes["encoder"]["layers"]["mlp"]["wi_0"]["kernel"].shape == (24, 2048, 5120)


def test_sharded_1b_train_step_compiles_on_eight_fake_devices(tmp_path):
  """FSDP over the 8 CPU devices (gin/sharding/fsdp.gin): each device holds an eighth of
  the parameters and AdamW state, and gathers one block at a time (temporaries stay
  below one full copy of the float32 parameters)."""
  assert jax.device_count() == 8
  gin.clear_config()
  output = tmp_path / "memory.json"
  gin_flags.configure(
      ["gin/models/gecko_1b.gin", "gin/runs/finetune.gin", "gin/sharding/fsdp.gin",
       "gin/overlays/compile_step.gin"],
      ["BATCH_SIZE = 64", "MODEL_DIR = '/unused'",
       f"compile_step.memory_report.output = '{output}'"])
  try:
    report = gin_flags.call_configured(compile_step.memory_report)
  finally:
    gin.clear_config()
  assert json.loads(output.read_text()) == report
  assert report["mesh"] == {"data": 1, "fsdp": 8, "model": 1}
  assert report["towers"] == ["negative", "positive", "query"]
  gib = report["per_device_gib"]
  params_gib = report["parameters"] * 4 / 2**30
  # params + AdamW mu + nu, float32, split 8 ways
  assert gib["state"] == pytest.approx(3 * params_gib / 8, rel=0.01)
  assert gib["arguments"] >= gib["state"] and gib["aliased"] == pytest.approx(gib["state"], rel=0.01)
  assert 0 < gib["temporaries"] < params_gib
  dense = report["parameters"] - 32128 * 2048  # the embedding lookup does no matmul
  tokens = 64 * (64 + 64 + 64)
  assert report["flops_per_step"] == pytest.approx(
      6 * dense * tokens + 3 * 64 * 12 * 24 * 2048 * 64 ** 2)


def test_compile_step_command_line_with_fake_devices(tmp_path):
  output = tmp_path / "memory.json"
  result = subprocess.run(
      [sys.executable, "-m", "gecko.compile_step", "--fake_devices=4",
       "--gin_file=gin/models/tiny.gin", "--gin_file=gin/runs/finetune.gin",
       "--gin_file=gin/sharding/fsdp.gin", "--gin_file=gin/overlays/compile_step.gin",
       "--gin.BATCH_SIZE=8", "--gin.MESH_AXES={'fsdp': 4}", f"--json={output}"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env={k: v for k, v in os.environ.items() if k != "XLA_FLAGS"})
  assert result.returncode == 0, result.stderr[-2000:]
  report = json.loads(output.read_text())
  assert report["chips"] == 4 and report["mesh"]["fsdp"] == 4
  assert report["platform"] == "cpu" and report["hbm_capacity_bytes"] is None
  bad = subprocess.run([sys.executable, "-m", "gecko.compile_step", "--fake_devices=0"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
  assert bad.returncode != 0 and "--fake_devices needs a positive count" in bad.stderr
  odd = subprocess.run(
      [sys.executable, "-m", "gecko.compile_step", "--fake_devices=4",
       "--gin_file=gin/models/tiny.gin", "--gin_file=gin/runs/finetune.gin",
       "--gin_file=gin/sharding/fsdp.gin", "--gin_file=gin/overlays/compile_step.gin",
       "--gin.BATCH_SIZE=6", "--gin.MESH_AXES={'fsdp': 4}"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env={k: v for k, v in os.environ.items() if k != "XLA_FLAGS"})
  assert odd.returncode != 0 and "batch_size=6 must be divisible" in odd.stderr


SP_TEXTS = ["", "the query returns a list", "Python module ERROR, string!", "unseen zebra ß 東京",
            "task: search result | query: the python function returns", "file " * 100]


def test_sentencepiece_vocabulary_gives_the_tokenizers_ids_in_python_and_tf_data(tmp_path):
  import tensorflow as tf

  from gecko.data import tokenization, vocabularies
  write_tiny_t5(tmp_path, layers=1)
  tokenizer = tokenization.SentencePieceTokenizer(model_file=tmp_path / "spiece.model",
                                                  max_length=16)
  vocab = vocabularies.for_tokenizer(tokenizer)
  assert isinstance(vocab, vocabularies.SentencePieceVocabulary)
  want = tokenizer.encode_batch(SP_TEXTS)
  assert all(ids[-1] == vocab.eos_id == 1 and len(ids) <= 16 for ids in want)
  assert len(want[-1]) == 16 and want[0] == [1]  # truncated keeping </s>; "" is just </s>
  assert [vocab.encode(t) for t in SP_TEXTS] == want
  assert vocab.encode_tf(tf.constant(SP_TEXTS)).to_list() == want
  ds = tf.data.Dataset.from_tensor_slices(SP_TEXTS).map(vocab.encode_tf)
  assert [x.tolist() for x in ds.as_numpy_iterator()] == want
  assert vocab.decode(vocab.encode("the query returns a list")) == "the query returns a list"


def test_tiny_t5_trains_on_the_fret_seqio_task_with_its_sentencepiece_ids(tmp_path):
  """gecko_1b.gin's architecture at toy width, started from a Hugging Face T5 directory:
  the FRet task tokenizes with the checkpoint's spiece.model (no separate registration),
  gecko.train runs the Gecko loss with Matryoshka heads, and the export loads back."""
  from gecko import train
  from gecko.data import seqio_batches as seqio_data
  ckpt = tmp_path / "t5"
  ckpt.mkdir()
  write_tiny_t5(ckpt)
  (tmp_path / "data" / "fret").mkdir(parents=True)
  records = [{"task": "search result", "query": f"the query {PIECES[i % 16]} {i}",
              "seed_title": "", "seed_text": f"{PIECES[i % 16]} passage",
              "positive_title": "", "positive_text": f"{PIECES[i % 16]} passage {i}",
              "negative_title": "", "negative_text": f"{PIECES[(i + 5) % 16]} file"}
             for i in range(32)]
  (tmp_path / "data" / "fret" / "fret-00000.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in records))

  loaded = embedder.load(str(ckpt))
  batches = seqio_data.SeqioBatches(
      mixture_or_task_name="gecko_fret_only", tokenizer=loaded.tokenizer, batch_size=8,
      query_length=16, passage_length=16, data_dir=str(tmp_path / "data"))
  batch = batches.batch(0)
  batches.close()
  from gecko.data.input_format import GECKO
  expected = {tuple(ids if len(ids) <= 16 else ids[:15] + ids[-1:])
              for ids in loaded.tokenizer.encode_batch(
                  [GECKO.query(r["query"], task=r["task"]) for r in records])}
  for row, mask in zip(batch["query_tokens"], batch["query_mask"]):
    assert tuple(row[mask > 0].tolist()) in expected  # the checkpoint's pieces, then </s>

  overrides = ["vocab_size = 96", "hidden_size = 32", "num_layers = 2", "num_heads = 4",
               "head_dim = 8", "mlp_dim = 48", "relative_max_distance = 20"]
  bindings = [f"t5.T5Config.{o}" for o in overrides] + [
      f"MODEL_DIR = '{tmp_path / 'run'}'", f"TASK_DATA_DIR = '{tmp_path / 'data'}'",
      f"INIT_FROM = '{ckpt}'", "MIXTURE_OR_TASK_NAME = 'gecko_fret_only'", "TRAIN_STEPS = 4",
      "BATCH_SIZE = 8", "QUERY_LENGTH = 16", "PASSAGE_LENGTH = 16", "EMBED_DIM = 16",
      "MATRYOSHKA_DIMS = (8, 16)", "DTYPE = 'float32'", "WARMUP_STEPS = 1",
      "CHECKPOINT_EVERY = 4", "train.train.log_every = 2", "seqio_batches.SeqioBatches.shuffle_buffer = 32"]
  gin.clear_config()
  try:
    gin_flags.configure(["gin/models/gecko_1b.gin", "gin/runs/finetune.gin",
                         "gin/data/seqio.gin", "gin/sharding/fsdp.gin"], bindings)
    gin_flags.call_configured(train.train)
  finally:
    gin.clear_config()
  rows = read_metrics(tmp_path / "run")
  assert [r["step"] for r in rows] == [2, 4] and all(np.isfinite(r["loss"]) for r in rows)
  export = embedder.load(str(tmp_path / "run" / "export"))
  assert isinstance(export.module.backbone, t5.T5Config) and export.dims == (8, 16)
  assert export.tokenizer.vocab == loaded.tokenizer.vocab
  # The export is the last checkpoint's parameters, read back through the other path
  # (gecko.export restores the orbax checkpoint from config.gin), and training moved them.
  from gecko import export as export_lib
  restored, step, _ = export_lib.restore_run(str(tmp_path / "run"))
  assert step == 4
  assert_trees_close(export.params, restored.params, atol=0.0)
  moved = export.params["encoder"]["token_embedder"]
  assert not np.allclose(moved, loaded.params["encoder"]["token_embedder"])
