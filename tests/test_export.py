"""Export to a sentence-transformers / Hugging Face directory, loaded by the real
sentence-transformers and transformers with no custom code, and read back bit for bit."""

import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO, cli_env, require_module, write_tiny_t5, write_triples

from gecko import export
from gecko.encode import encode
from gecko.models import embedder, hf_directory

require_module("sentence_transformers", "the export round trip (the [dev] extra)")
import sentence_transformers as st  # noqa: E402
TEXTS = [str(t) for t in np.load(pathlib.Path(__file__).parent / "fixtures" /
                                 "minilm_reference.npz")["texts"]]


def _gap(a, b) -> float:
  """The largest element difference of the unit vectors: about 2e-7 between two
  float32 implementations of one model, about 2e-4 for a tanh GELU or a LayerNorm
  epsilon of 1e-5 (which a cosine >= 0.9999 lets pass)."""
  a = a / np.linalg.norm(a, axis=-1, keepdims=True)
  b = b / np.linalg.norm(b, axis=-1, keepdims=True)
  return float(np.abs(a - b).max())


TOLERANCE = 1e-5


def _same_params(a, b) -> bool:
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  return (jax.tree.structure(a) == jax.tree.structure(b)
          and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(leaves_a, leaves_b)))


def test_minilm_exports_to_sentence_transformers_with_gecko_prompts(minilm, tmp_path):
  out = hf_directory.save_hf(minilm, tmp_path / "minilm")
  model = st.SentenceTransformer(out, device="cpu")
  assert _gap(model.encode(TEXTS), encode(TEXTS, model=minilm)) <= TOLERANCE
  query = "task: search result | query: "
  assert _gap(model.encode(TEXTS, prompt_name="query"),
              encode(TEXTS, model=minilm, prompt=query)) <= TOLERANCE
  assert model.prompts["query"] == query and model.prompts["document"] == "title: none | text: "
  assert model.similarity_fn_name == "cosine"
  assert not list(pathlib.Path(out).rglob("*.bin"))  # safetensors only, never pickle
  import transformers
  assert type(transformers.AutoModel.from_pretrained(out)).__name__ == "BertModel"
  # ... and back: the same parameters bit for bit, the same dims and prompts.
  back = embedder.load(out)
  assert _same_params(back.params, minilm.params) and back.dims == minilm.dims
  assert back.prompts == hf_directory.prompts() and back.tokenizer.max_length == 256
  card = (pathlib.Path(out) / "README.md").read_text()
  assert 'SentenceTransformer("PATH")' in card and "| `query` | `task: search result" in card


def test_a_non_empty_output_needs_overwrite(minilm, tmp_path):
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "keep.txt").write_text("mine")
  with pytest.raises(FileExistsError, match="is not empty; pass overwrite=True"):
    hf_directory.save_hf(minilm, tmp_path / "out")
  assert (tmp_path / "out" / "keep.txt").exists()
  hf_directory.save_hf(minilm, tmp_path / "out", overwrite=True)
  assert not (tmp_path / "out" / "keep.txt").exists()
  with pytest.raises(ValueError, match="default_prompt_name='q' is not one of the prompts"):
    hf_directory.save_hf(minilm, tmp_path / "other", default_prompt_name="q")


def test_tiny_t5_with_a_projection_loads_as_a_t5_encoder(tmp_path):
  write_tiny_t5(tmp_path / "t5")
  source = embedder.from_huggingface(tmp_path / "t5", embed_dim=16, dims=(8, 16), seed=3)
  out = hf_directory.save_hf(source, tmp_path / "out")
  model = st.SentenceTransformer(out, device="cpu")
  assert type(model[0].auto_model).__name__ == "T5EncoderModel"
  assert [type(m).__name__ for m in model] == ["Transformer", "Pooling", "Dense", "Normalize"]
  texts = ["the query returns a list", "python module error", "fact answer file string"]
  assert _gap(model.encode(texts), encode(texts, model=source)) <= TOLERANCE
  back = embedder.load(out)
  assert _same_params(back.params, source.params) and back.dims == (8, 16)


def _train(run_dir, data, *extra):
  from gecko import train
  args = [f"--gin.MODEL_DIR='{run_dir}'", f"--gin.TRAIN_DATA='{data}'", "--gin.TRAIN_STEPS=2",
          "--gin.BATCH_SIZE=8", "--gin.QUERY_LENGTH=16", "--gin.PASSAGE_LENGTH=16",
          "--gin.WARMUP_STEPS=0", "--gin.CHECKPOINT_EVERY=2", *extra]
  assert train.main(args) == 0


@pytest.fixture(scope="module")
def triples(tmp_path_factory):
  return write_triples(tmp_path_factory.mktemp("data") / "triples.jsonl", count=16)


def _export_cli(*args):
  return subprocess.run([sys.executable, "-m", "gecko.export", *map(str, args)], cwd=REPO,
                        env=cli_env(1), capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_trained_projection_and_matryoshka_dims_survive_the_export(triples, tmp_path):
  """MiniLM + a new 768-d projection, MRL (256, 768), trained here; the run's MODEL_DIR is
  exported by the command line (restored from its checkpoint, on one device)."""
  run = tmp_path / "run"
  _train(run, triples, "--gin_file=gin/models/minilm_l6.gin", "--gin_file=gin/runs/finetune.gin",
         "--gin_file=gin/data/jsonl.gin", "--gin.EMBED_DIM=768",
         "--gin.MATRYOSHKA_DIMS=(256, 768)")
  eval_dir = tmp_path / "eval"
  eval_dir.mkdir()
  (eval_dir / "results.md").write_text("| model | task | metric | dim | score |\n")
  result = _export_cli("--model", run, "--output", tmp_path / "st", "--eval_dir", eval_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  trained = embedder.load(run / "export")
  model = st.SentenceTransformer(str(tmp_path / "st"), device="cpu", truncate_dim=256)
  assert _gap(model.encode(TEXTS, normalize_embeddings=True),
              encode(TEXTS, model=trained, dim=256)) <= TOLERANCE
  back = embedder.load(tmp_path / "st")
  assert _same_params(back.params, trained.params) and back.dims == (256, 768)
  card = (tmp_path / "st" / "README.md").read_text()
  assert "base_model: all-MiniLM-L6-v2" in card and "truncate_dim=256" in card
  assert "step 2 of run" in card and "EMBED_DIM = 768" in card and "| model | task |" in card
  again = _export_cli("--model", run, "--output", tmp_path / "st")
  assert again.returncode == 2 and "is not empty; pass --overwrite" in again.stderr


@pytest.mark.slow
def test_an_fsdp_run_on_eight_devices_exports_on_one(triples, tmp_path):
  assert jax.device_count() == 8
  run = tmp_path / "run"
  _train(run, triples, "--gin_file=gin/models/tiny.gin", "--gin_file=gin/runs/finetune.gin",
         "--gin_file=gin/data/jsonl.gin", "--gin_file=gin/overlays/local_tiny.gin",
         "--gin.MESH_AXES={'fsdp': 8}", "--gin.CHECKPOINT_EVERY=1")
  result = _export_cli("--model", run, "--step", 1, "--output", tmp_path / "st1")
  assert result.returncode == 0, result.stderr[-3000:]
  result = _export_cli("--model", run, "--output", tmp_path / "st2")
  assert result.returncode == 0, result.stderr[-3000:]
  final = embedder.load(run / "export")  # what the 8-device run wrote at its last step
  assert _same_params(embedder.load(tmp_path / "st2").params, final.params)
  assert not _same_params(embedder.load(tmp_path / "st1").params, final.params)
  config = json.loads((tmp_path / "st2" / "2_Dense" / "config.json").read_text())
  assert config == {"in_features": 32, "out_features": 64, "bias": False,
                    "activation_function": "torch.nn.modules.linear.Identity"}
  bad = _export_cli("--model", run, "--step", 7, "--output", tmp_path / "st3")
  assert bad.returncode == 2 and "no checkpoint at step 7" in bad.stderr


def test_step_needs_a_training_run(tmp_path):
  with pytest.raises(ValueError, match="--step applies to a training MODEL_DIR"):
    export.export(model="all-MiniLM-L6-v2", output=str(tmp_path / "o"), step=3)
