"""Encoding and exact top-k over a mesh of 8 fake CPU devices, and over two processes:
the one-device embeddings and rankings, exactly. Also the optional faiss backend."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO, cli_env, free_port, require_module

from gecko import encode as encode_lib
from gecko import retrieval
from gecko.data import placement
from gecko.encode import encode
from gecko.models import dual_encoder
from gecko.training import partitioning

TEXTS = [f"passage {i}: " + "a gecko climbs the wall " * (i * 7 % 23) for i in range(40)] + [""]


def _corpus(rows=1003, dim=16):
  rng = np.random.default_rng(0)
  corpus = rng.standard_normal((rows, dim)).astype(np.float32)
  corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
  corpus[500] = corpus[20]  # a tie: the lower index must come first
  corpus[777] = corpus[20]
  queries = rng.standard_normal((37, dim)).astype(np.float32)
  queries[0] = corpus[20]
  return corpus, queries


def test_encode_on_eight_devices_equals_one_device(minilm):
  assert jax.device_count() == 8
  want = encode(TEXTS, model=minilm, batch_size=4)
  mesh = partitioning.make_mesh({"data": -1})
  got = encode(TEXTS, model=minilm, batch_size=4, mesh=mesh)
  np.testing.assert_allclose(got, want, atol=1e-6)
  placed = encode_lib._REPLICATED[minilm][mesh]  # placed once, reused by the next call
  np.testing.assert_allclose(encode(TEXTS[:5], model=minilm, mesh=mesh), want[:5], atol=1e-6)
  assert encode_lib._REPLICATED[minilm][mesh] is placed and len(encode_lib._REPLICATED[minilm]) == 1
  # FSDP-sharded parameters (the 1.2B model's layout) give the same embeddings.
  mesh = partitioning.make_mesh({"data": 2, "fsdp": 4})
  shardings = partitioning.logical_shardings(
      dual_encoder.abstract_params(minilm.module, boxed=True), mesh,
      partitioning.standard_logical_axis_rules())
  embedding = shardings["encoder"]["embeddings"]["word_embeddings"]
  assert embedding.spec[1] == "fsdp"
  got = encode(TEXTS, model=minilm, batch_size=4, mesh=mesh, param_shardings=shardings)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_top_n_on_eight_devices_equals_one_device(monkeypatch):
  corpus, queries = _corpus()
  mesh = partitioning.make_mesh({"data": -1})
  want_index, want_scores = retrieval.top_n(queries, corpus, 10)
  got_index, got_scores = retrieval.top_n(queries, corpus, 10, mesh=mesh)
  np.testing.assert_array_equal(got_index, want_index)
  np.testing.assert_array_equal(got_scores, want_scores)
  assert list(want_index[0, :3]) == [20, 500, 777]  # equal scores on three devices
  # Queries in chunks, and a corpus already split over the devices (1,000 rows: 125 each).
  monkeypatch.setattr(retrieval, "SHARD_SCORES", 1000)
  on_mesh = placement.put(corpus[:1000], placement.rows_sharding(mesh))
  got_index, _ = retrieval.top_n(queries, on_mesh, 10, mesh=mesh)
  np.testing.assert_array_equal(got_index, retrieval.top_n(queries, corpus[:1000], 10)[0])
  with pytest.raises(ValueError, match="multiple of 8 rows"):
    retrieval.top_n(queries, placement.put(corpus[:996], placement.replicated(mesh)), 10,
                    mesh=mesh)
  with pytest.raises(ValueError, match="fewer than n=20"):
    retrieval.top_n(queries, corpus[:12], 20, mesh=mesh)


def test_faiss_backend_gives_the_same_neighbours():
  require_module("faiss", "the optional faiss backend (faiss-cpu, in the [dev] extra)")
  rng = np.random.default_rng(1)
  corpus = rng.standard_normal((5000, 32)).astype(np.float32)
  queries = rng.standard_normal((50, 32)).astype(np.float32)
  want_index, want_scores = retrieval.top_n(queries, corpus, 20)
  got_index, got_scores = retrieval.top_n(queries, retrieval.blocks_of(corpus, 999), 20,
                                          backend="faiss")
  np.testing.assert_array_equal(got_index, want_index)
  np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-5)


def test_unknown_backend_is_named():
  with pytest.raises(ValueError, match=r"backend='annoy' is not one of \('jax', 'faiss'\)"):
    retrieval.top_n(np.zeros((1, 4), np.float32), np.zeros((4, 4), np.float32), 1,
                    backend="annoy")


_TWO_PROCESS_SCRIPT = """
import json, sys
import jax
jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2,
                           process_id=int(sys.argv[2]))
import numpy as np
from gecko import retrieval
from gecko import encode as encode_lib
from gecko.encode import encode
from gecko.training import partitioning
texts, corpus, queries = json.load(open(sys.argv[3]))
mesh = partitioning.make_mesh({"data": -1})
embeddings = encode(texts, model="all-MiniLM-L6-v2", batch_size=4, mesh=mesh)
index, scores = retrieval.top_n(np.asarray(queries, np.float32),
                                np.asarray(corpus, np.float32), 10, mesh=mesh)
np.savez(sys.argv[4], devices=jax.device_count(), local=jax.local_device_count(),
         embeddings=embeddings, index=index, scores=scores)
"""


@pytest.mark.slow
def test_two_processes_encode_and_rank_like_one_device(tmp_path, minilm):
  corpus, queries = _corpus()
  inputs = tmp_path / "inputs.json"
  inputs.write_text(json.dumps([TEXTS, corpus.tolist(), queries.tolist()]))
  port = free_port()
  procs = [subprocess.Popen(
      [sys.executable, "-c", _TWO_PROCESS_SCRIPT, f"127.0.0.1:{port}", str(i), str(inputs),
       str(tmp_path / f"out{i}.npz")], cwd=REPO, env=cli_env(devices=4),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
  want = encode(TEXTS, model=minilm, batch_size=4)
  want_index, want_scores = retrieval.top_n(queries, corpus, 10)
  for i in range(2):
    out = np.load(tmp_path / f"out{i}.npz")
    assert int(out["devices"]) == 8 and int(out["local"]) == 4
    np.testing.assert_allclose(out["embeddings"], want, atol=1e-6)
    np.testing.assert_array_equal(out["index"], want_index)
    np.testing.assert_allclose(out["scores"], want_scores, atol=1e-6)
