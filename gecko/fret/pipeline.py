r"""The FRet pipeline on one machine: `python -m gecko.fret.pipeline --gin_file=gin/runs/fret.gin`.

  python -m gecko.fret.pipeline --gin_file=gin/runs/fret.gin \
    --gin.CORPUS="'passages.jsonl'" --gin.OUTPUT_DIR="'/tmp/fret'" --gin.NUM_SEEDS=1000

For each seed passage of the corpus (JSONL {"id", "text", "title"?}):
  1. the LLM writes a task and a query (`gecko.fret.generate`);
  2. an embedding model retrieves the top-N neighbours of "task: ... | query: ..."
     among all passages (`gecko.fret.retrieve`; the seed is added if not retrieved);
  3. the same LLM scores every neighbour by query likelihood and relevance
     classification (`gecko.fret.score`);
  4. reciprocal rank fusion picks the positive and the hard negative (`gecko.fret.label`);
and the record (`gecko.fret.schema`) goes to atomic JSONL/TFRecord shards in
OUTPUT_DIR. LLM calls are cached in OUTPUT_DIR/llm_cache.sqlite and finished records
are skipped, so a killed run resumes where it stopped without repeating LLM calls.
OUTPUT_DIR/summary.json (counts, task-type mix, positive != seed, failures, LLM calls,
time) and summary.png (score distributions) describe the run; failures.jsonl lists
passages whose generation failed.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time
import zlib
from collections.abc import Sequence

import numpy as np
import tqdm

from gecko.fret import generate as generate_lib
from gecko.fret import label as label_lib
from gecko.fret import retrieve, score
from gecko.fret.cache import LLMCache
from gecko.fret.shards import ShardWriter
from gecko.input_format import GECKO
from gecko.pair_data import read_jsonl


def read_corpus(path: str) -> list[dict[str, str]]:
  """Passages {"id", "text", "title"}; file:line errors for bad records and duplicate ids."""
  corpus, seen = [], set()
  for n, record in enumerate(read_jsonl(path), 1):
    if not isinstance(record.get("text"), str) or not isinstance(record.get("id"), (str, int)):
      raise ValueError(f"{path}: record {n} needs a string 'text' and an 'id', got "
                       f"{sorted(record)}.")
    pid = str(record["id"])
    if pid in seen:
      raise ValueError(f"{path}: record {n} repeats the id {pid!r}.")
    seen.add(pid)
    corpus.append({"id": pid, "title": str(record.get("title") or ""), "text": record["text"]})
  if not corpus:
    raise ValueError(f"{path} holds no passages.")
  return corpus


def _embed_corpus(corpus, *, encoder: str, output_dir: str, batch_size: int) -> np.ndarray:
  """Passage embeddings, cached in OUTPUT_DIR (keyed by encoder and corpus ids)."""
  from gecko.encode import encode
  ids = "\n".join(p["id"] for p in corpus)
  key = zlib.crc32(f"{encoder}\n{ids}".encode("utf-8"))
  path = os.path.join(output_dir, f"corpus_embeddings_{key:08x}.npy")
  if os.path.exists(path):
    return np.load(path, mmap_mode="r")
  vectors = encode([GECKO.document(p["text"], title=p["title"]) for p in corpus], model=encoder,
                   batch_size=batch_size, show_progress=True)
  np.save(path + ".partial.npy", vectors)
  os.replace(path + ".partial.npy", path)
  return vectors


def run(*, corpus_path: str, output_dir: str, llm, encoder: str = "all-MiniLM-L6-v2",
        num_seeds: int | None = None, num_neighbors: int = 20, negative: str = "lowest",
        shard_size: int = 1000, tfrecord: bool = False, generator_options: dict | None = None,
        scorer_options: dict | None = None, batch_size: int = 64, seed: int = 0
        ) -> dict[str, object]:
  """Builds FRet records for the first `num_seeds` passages; returns the run summary.

  Args:
    corpus_path: JSONL passages {"id", "text", "title"?}: the seeds and the retrieval pool.
    output_dir: Shards, cache, summary.
    llm: A backend from `gecko.fret.llm` (generation and both scores).
    encoder: Embedding model for retrieval (packaged name or directory).
    num_seeds: Seed passages to use (None: all).
    num_neighbors: N, neighbours retrieved and relabelled per query.
    negative: "lowest" fused neighbour or a "random" other one.
    shard_size, tfrecord: Output shards (see `gecko.fret.shards`).
    generator_options, scorer_options: Extra `Generator` / `Scorer` attributes.
    batch_size: Encoder batch size.
    seed: Task-type draw, retries and random negatives.
  """
  from gecko import gin_flags
  start = time.perf_counter()
  corpus = read_corpus(corpus_path)
  if num_neighbors < 2 or num_neighbors > len(corpus):
    raise ValueError(f"num_neighbors={num_neighbors} must be in [2, {len(corpus)}] (the corpus).")
  os.makedirs(output_dir, exist_ok=True)
  gin_flags.write_operative_config(output_dir)
  cache = LLMCache(os.path.join(output_dir, "llm_cache.sqlite"))
  writer = ShardWriter(output_dir, shard_size=shard_size, tfrecord=tfrecord)
  generator = generate_lib.Generator(llm=llm, cache=cache, seed=seed, **(generator_options or {}))
  scorer = score.Scorer(llm=llm, cache=cache, **(scorer_options or {}))
  seeds = corpus[:num_seeds] if num_seeds else corpus
  done = writer.done_ids()
  todo = [p for p in seeds if p["id"] not in done]
  generated = generator(todo)
  made = [g for g in generated if isinstance(g, generate_lib.Generated)]
  failures = [g for g in generated if isinstance(g, generate_lib.Failure)]
  vectors = _embed_corpus(corpus, encoder=encoder, output_dir=output_dir, batch_size=batch_size)
  index_of = {p["id"]: i for i, p in enumerate(corpus)}
  neighbors = np.zeros((0, num_neighbors), np.int64)
  if made:
    from gecko.encode import encode
    queries = encode([GECKO.query(g.query, task=g.task) for g in made], model=encoder,
                     batch_size=batch_size)
    neighbors, _ = retrieve.top_n(queries, vectors, num_neighbors)
  rng = np.random.default_rng(seed)
  scores = collections.defaultdict(list)
  for g, row in tqdm.tqdm(list(zip(made, neighbors)), desc="relabel", unit="query",
                          file=sys.stderr):
    seed_index = index_of[g.id]
    row = [int(i) for i in row]
    if seed_index not in row:
      row[-1] = seed_index  # the seed always competes
    passages = [corpus[i] for i in row]
    ql, rc = scorer.ql(g.query, passages), scorer.rc(g.task, g.query, passages)
    chosen = label_lib.choose(ql, rc, negative=negative, rng=rng)
    pos, neg = passages[chosen.positive], passages[chosen.negative]
    seed_passage = corpus[seed_index]
    writer.add({
        "id": g.id, "task_type": g.task_type, "task": g.task, "query": g.query,
        "seed_id": seed_passage["id"], "seed_title": seed_passage["title"],
        "seed_text": seed_passage["text"], "positive_id": pos["id"], "positive_title": pos["title"],
        "positive_text": pos["text"], "negative_id": neg["id"], "negative_title": neg["title"],
        "negative_text": neg["text"], "positive_is_seed": pos["id"] == seed_passage["id"],
        "positive_ql": ql[chosen.positive], "positive_rc": rc[chosen.positive],
        "negative_ql": ql[chosen.negative], "negative_rc": rc[chosen.negative],
        "llm": f"{llm.name}:{llm.model}"})
    for name, values in (("ql", ql), ("rc", rc)):
      scores[f"{name}_positive"].append(values[chosen.positive])
      scores[f"{name}_negative"].append(values[chosen.negative])
      scores[f"{name}_all"].extend(values)
  writer.close()
  with open(os.path.join(output_dir, "failures.jsonl"), "a", encoding="utf-8") as f:
    for failure in failures:
      f.write(json.dumps({"id": failure.id, "task_type": failure.task_type,
                          "reason": failure.reason, "outputs": list(failure.outputs)}) + "\n")
  summary = _summary(writer, failures=len(failures), skipped=len(seeds) - len(todo),
                     llm_calls=generator.llm_calls + scorer.llm_calls, cache=cache,
                     seconds=time.perf_counter() - start)
  with open(os.path.join(output_dir, "summary.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2)
  _plot(scores, os.path.join(output_dir, "summary.png"))
  cache.close()
  return summary


def _summary(writer: ShardWriter, *, failures: int, skipped: int, llm_calls: int, cache,
             seconds: float) -> dict[str, object]:
  records = []
  for path in writer.shards():
    with open(path, encoding="utf-8") as f:
      records.extend(json.loads(line) for line in f if line.strip())
  moved = sum(not r["positive_is_seed"] for r in records)
  return {
      "records": len(records), "failures_this_run": failures,
      "skipped_already_written": skipped,
      "task_types": dict(collections.Counter(r["task_type"] for r in records)),
      "positive_not_seed_fraction": moved / len(records) if records else 0.0,
      "llm_calls_this_run": llm_calls, "llm_cache_hits_this_run": cache.hits,
      "seconds_this_run": round(seconds, 2), "shards": len(writer.shards())}


def _plot(scores: dict[str, list[float]], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
  for ax, name in zip(axes, ("ql", "rc")):
    for part in ("all", "positive", "negative"):
      values = scores.get(f"{name}_{part}", [])
      if values:
        ax.hist(values, bins=30, alpha=0.5, label=f"{part} ({len(values)})")
    ax.set_title({"ql": "QL: log P(query | passage)", "rc": "RC: log P(yes | query, passage)"}[name])
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv: Sequence[str]) -> int:
  from gecko import gin_flags
  return gin_flags.run(run, argv, prog="python -m gecko.fret.pipeline", doc=__doc__)


if __name__ == "__main__":
  from gecko.fret import pipeline as _pipeline_module  # gin binds the importable module
  sys.exit(_pipeline_module.main(sys.argv[1:]))
