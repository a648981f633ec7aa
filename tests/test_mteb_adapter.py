"""The mteb adapter: Gecko's encoder under `mteb.evaluate`, offline, on local tasks.

mteb's own evaluators and ours score the same local files with the same model; the
numbers must agree to 1e-4 (STS and retrieval).
"""

import inspect
import json
import random

import mteb  # the [mteb] extra; `make test` installs it
import numpy as np
import pytest
from conftest import SHARED_DATA, write_hf_checkpoint  # noqa: E402
from mteb.cache import ResultCache  # noqa: E402
from mteb.models.model_meta import ModelMeta  # noqa: E402
from mteb.types import PromptType  # noqa: E402

from gecko import encode as encode_lib  # noqa: E402
from gecko.evaluation import mteb_adapter, tasks  # noqa: E402
from gecko.models import embedder, matryoshka  # noqa: E402

RETRIEVAL_METRICS = ("ndcg_at_10", "map_at_10", "recall_at_100", "mrr_at_10")


def stdlib_docs() -> list[dict[str, str]]:
  """Real text: the first paragraph of documented functions of a few stdlib modules,
  each text once (an alias shares its function's text; two pairs that differ only by
  such a twin tie exactly in one evaluator and by float rounding alone in the other,
  their batches padded apart, which moves Spearman by 2.4e-4)."""
  import collections, functools, itertools, json as json_mod, math, os.path, re, shutil, string, textwrap  # noqa: E401,I001
  docs, seen = [], set()
  for module in (collections, functools, itertools, json_mod, math, os.path, re, shutil,
                 string, textwrap):
    for name, obj in sorted(vars(module).items()):
      doc = inspect.getdoc(obj) if callable(obj) and not name.startswith("_") else None
      text = doc.split("\n\n")[0].replace("\n", " ") if doc else ""
      if len(doc or "") > 40 and text not in seen:
        seen.add(text)
        docs.append({"module": module.__name__, "title": f"{module.__name__}.{name}",
                     "text": text})
  return docs


def write_local_tasks(directory) -> tuple[tasks.STSTask, tasks.RetrievalTask]:
  docs = stdlib_docs()
  rng = random.Random(0)
  # STS: integer gold scores with many ties (same module: 3, same first word: 1, else 0).
  with open(directory / "test.jsonl", "w", encoding="utf-8") as f:
    for _ in range(120):
      a, b = rng.sample(docs, 2)
      gold = 3 if a["module"] == b["module"] else int(a["text"].split()[0] == b["text"].split()[0])
      f.write(json.dumps({"sentence1": a["text"], "sentence2": b["text"], "score": gold}) + "\n")
  # Retrieval (BEIR layout): a query per sampled function; its own doc relevance 2,
  # two more docs of its module relevance 1.
  beir = directory / "retrieval"
  (beir / "qrels").mkdir(parents=True)
  with open(beir / "corpus.jsonl", "w", encoding="utf-8") as f:
    for i, d in enumerate(docs):
      f.write(json.dumps({"_id": f"d{i}", "title": d["title"], "text": d["text"]}) + "\n")
  with open(beir / "queries.jsonl", "w", encoding="utf-8") as q, \
       open(beir / "qrels" / "test.tsv", "w", encoding="utf-8") as r:
    r.write("query-id\tcorpus-id\tscore\n")
    for n, i in enumerate(rng.sample(range(len(docs)), 40)):
      d = docs[i]
      q.write(json.dumps({"_id": f"q{n}", "text": f"what does {d['title'].split('.')[-1]} "
                          f"in {d['module']} do"}) + "\n")
      r.write(f"q{n}\td{i}\t2\n")
      same = [j for j, o in enumerate(docs) if o["module"] == d["module"] and j != i]
      for j in rng.sample(same, min(2, len(same))):
        r.write(f"q{n}\td{j}\t1\n")
  return (tasks.STSTask(name="StdlibSTS", path=str(directory)),
          tasks.RetrievalTask(name="StdlibRetrieval", path=str(beir)))


def mteb_scores(encoder, task, cache_dir) -> dict[str, float]:
  result = mteb.evaluate(encoder, tasks=[mteb_adapter.mteb_task(task)],
                         cache=ResultCache(cache_path=cache_dir), show_progress_bar=False,
                         overwrite_strategy="always")
  (task_result,) = result.task_results
  return task_result.scores[task.split][0]


def ours(encoder, task) -> dict[str, float]:
  embed = lambda texts: encode_lib.encode(texts, model=encoder.model)  # noqa: E731
  (scores,) = task.evaluate(embed, dims=[encoder.model.output_dim], fmt=encoder.format).values()
  return scores


@pytest.mark.parametrize("gecko_format", [False, True])
def test_metrics_match_mteb_on_local_tasks(minilm, tmp_path, gecko_format):
  sts, retrieval = write_local_tasks(tmp_path)
  encoder = mteb_adapter.GeckoEncoder(model=minilm, gecko_format=gecko_format)
  got = mteb_scores(encoder, sts, tmp_path / "cache")
  want = ours(encoder, sts)
  assert got["cosine_spearman"] == pytest.approx(want["cosine_spearman"], abs=1e-4)
  assert got["cosine_pearson"] == pytest.approx(want["cosine_pearson"], abs=1e-4)
  got = mteb_scores(encoder, retrieval, tmp_path / "cache")
  want = ours(encoder, retrieval)
  for metric in RETRIEVAL_METRICS:
    assert got[metric] == pytest.approx(want[metric], abs=1e-4), metric
  assert 0.2 < want["ndcg_at_10"] < 1.0  # a real ranking, not a degenerate one
  # mteb filed the results under the model's meta name, in its own layout.
  files = list((tmp_path / "cache").rglob("LocalStdlibRetrieval.json"))
  assert files and encoder.mteb_model_meta.name.replace("/", "__") in str(files[0])


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.exists(), reason=f"shared data not available at {SHARED_DATA}")
def test_metrics_match_mteb_on_stsb_and_scifact_subset(minilm, tmp_path):
  encoder = mteb_adapter.GeckoEncoder(model=minilm, gecko_format=False)
  stsb = tasks.STSTask(name="STSB", path=str(SHARED_DATA / "stsb"))
  got, want = mteb_scores(encoder, stsb, tmp_path / "cache"), ours(encoder, stsb)
  assert got["cosine_spearman"] == pytest.approx(want["cosine_spearman"], abs=1e-4)
  assert want["cosine_spearman"] == pytest.approx(0.8203, abs=0.002)
  # SciFact: 60 judged queries, their documents and 250 others (the full corpus is slow on CPU).
  source, subset = SHARED_DATA / "scifact", tmp_path / "scifact"
  (subset / "qrels").mkdir(parents=True)
  with open(source / "qrels" / "test.tsv", encoding="utf-8") as f:
    rows = [line.rstrip("\n").split("\t") for line in f][1:]
  queries = sorted({r[0] for r in rows})[:60]
  rows = [r for r in rows if r[0] in queries]
  corpus = [json.loads(line) for line in open(source / "corpus.jsonl", encoding="utf-8")]
  judged = {r[1] for r in rows}
  others = [d for d in corpus if d["_id"] not in judged]
  keep = [d for d in corpus if d["_id"] in judged] + random.Random(0).sample(others, 250)
  (subset / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in keep))
  (subset / "queries.jsonl").write_text("".join(
      line for line in open(source / "queries.jsonl", encoding="utf-8")
      if json.loads(line)["_id"] in queries))
  (subset / "qrels" / "test.tsv").write_text(
      "query-id\tcorpus-id\tscore\n" + "".join("\t".join(r) + "\n" for r in rows))
  scifact = tasks.RetrievalTask(name="SciFactSubset", path=str(subset))
  got, want = mteb_scores(encoder, scifact, tmp_path / "cache"), ours(encoder, scifact)
  for metric in RETRIEVAL_METRICS:
    assert got[metric] == pytest.approx(want[metric], abs=1e-4), metric


def test_prompt_types_map_to_gecko_format(minilm):
  encoder = mteb_adapter.GeckoEncoder(model=minilm, task_strings={"SciFact": "fact checking"})
  retrieval = mteb.get_task("NFCorpus").metadata
  sts = mteb.get_task("STSBenchmark").metadata
  scifact = mteb.get_task("SciFact").metadata
  corpus = {"text": ["T1 b1", "b2"], "title": ["T1", ""], "body": ["b1", "b2"]}
  assert encoder.format_batch(corpus, task_metadata=retrieval, prompt_type=PromptType.document) \
      == ["title: T1 | text: b1", "title: none | text: b2"]
  assert encoder.format_batch({"text": ["q"]}, task_metadata=retrieval,
                              prompt_type=PromptType.query) == ["task: search result | query: q"]
  assert encoder.format_batch({"text": ["q"]}, task_metadata=scifact,
                              prompt_type=PromptType.query) == ["task: fact checking | query: q"]
  assert encoder.format_batch({"text": ["s"]}, task_metadata=sts, prompt_type=None) \
      == ["task: semantic similarity | query: s"]
  plain = mteb_adapter.GeckoEncoder(model=minilm, gecko_format=False)
  assert plain.format_batch(corpus, task_metadata=retrieval, prompt_type=PromptType.document) \
      == ["T1 b1", "b2"]
  assert plain.format_batch({"text": ["s"]}, task_metadata=sts, prompt_type=None) == ["s"]


def test_model_meta_and_matryoshka_dim(tmp_path):
  model = embedder.from_huggingface(write_hf_checkpoint(tmp_path / "tiny"), embed_dim=24,
                                    dims=(8, 24))
  encoder = mteb_adapter.GeckoEncoder(model=model, dim=8, revision="step-100")
  meta = encoder.mteb_model_meta
  assert isinstance(meta, ModelMeta)
  assert (meta.name, meta.revision, meta.embed_dim, meta.framework) == (
      "gecko/gecko-8", "step-100", 8, ["JAX"])
  n_params = sum(int(np.prod(x.shape)) for x in
                 __import__("jax").tree_util.tree_leaves(model.params))
  assert meta.n_parameters == n_params and meta.similarity_fn_name.value == "cosine"
  batches = [{"text": ["the gecko", "embeds text"]}, {"text": ["the model"]}]
  out = encoder.encode(batches, task_metadata=mteb.get_task("STSBenchmark").metadata,
                       hf_split="test", hf_subset="default")
  full = encode_lib.encode(["task: semantic similarity | query: " + t for t in
                            ("the gecko", "embeds text", "the model")], model=model)
  assert out.shape == (3, 8)
  np.testing.assert_allclose(out, matryoshka.prefix_numpy(full, 8), atol=1e-6)
  with pytest.raises(ValueError, match="dim=5 is not one of the model's Matryoshka dims"):
    mteb_adapter.GeckoEncoder(model=model, dim=5)


def test_mteb_task_rejects_other_families():
  with pytest.raises(TypeError, match="supports STSTask and RetrievalTask"):
    mteb_adapter.mteb_task(tasks.ClassificationTask(name="B77", path="/nonexistent"))
