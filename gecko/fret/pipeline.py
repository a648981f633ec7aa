r"""The FRet pipeline on one machine: `python -m gecko.fret --gin_file=gin/runs/fret.gin`.

  python -m gecko.fret --gin_file=gin/runs/fret.gin \
    --gin.CORPUS="'passages.jsonl'" --gin.OUTPUT_DIR="'/tmp/fret'" --gin.NUM_SEEDS=1000

The corpus is JSONL {"id", "text", "title"?}, a BEIR corpus.jsonl, or .txt with one
passage per line (`gecko.fret.corpus`: empty passages and repeated ids are skipped and
counted, invalid UTF-8 replaced). For each seed passage:
  1. the LLM writes a task and a query (`gecko.fret.generate`);
  2. an embedding model retrieves the top-N neighbours of "task: ... | query: ..."
     among all passages (`gecko.retrieval`; the seed is added if not retrieved);
  3. the same LLM scores every neighbour by query likelihood and relevance
     classification (`gecko.fret.score`);
  4. reciprocal rank fusion picks the positive and the hard negative (`gecko.fret.label`);
and the record (`gecko.fret.schema`) goes to atomic JSONL/TFRecord shards in
OUTPUT_DIR. LLM calls are cached in OUTPUT_DIR/llm_cache.sqlite and finished records
are skipped, so a killed run resumes where it stopped without repeating LLM calls.
OUTPUT_DIR/summary.json (counts, task-type mix, positive != seed, failures, LLM calls,
time, corpus counts) and summary.png (score distributions) describe the run;
failures.jsonl lists passages whose generation failed (malformed completions, or an
LLM call that failed after the backend's retries) or whose scoring failed; a rerun
tries them again. Each stage shows a progress bar.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from typing import BinaryIO

import numpy as np
import tqdm

from gecko import retrieval
from gecko.data import jsonl, paths
from gecko.data.input_format import GECKO
from gecko.fret import diversity, score
from gecko.fret import generate as generate_lib
from gecko.fret import relabel as relabel_lib
from gecko.fret.cache import LLMCache
from gecko.fret.corpus import read_corpus
from gecko.fret.llm import LLMError
from gecko.fret.shards import ShardWriter


def embed_corpus(corpus, *, encoder: str, output_dir: str, batch_size: int) -> np.ndarray:
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


# A run whose first this-many passages all fail in the LLM call itself stops: the
# server is down or refuses every request, and the rest would fail the same way.
EARLY_STOP_AFTER = 8


class NoRecordsError(RuntimeError):
  """A run that wrote no record (every passage failed)."""


def check_count(name: str, value, *, minimum: int = 1, allow_none: bool = False) -> None:
  """A count must be an int >= `minimum` (None only where it means "all")."""
  if value is None and allow_none:
    return
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    what = " or None (every passage)" if allow_none else ""
    raise ValueError(f"{name} must be an int >= {minimum}{what}, got {value!r}.")


def run(*, corpus_path: str, output_dir: str, llm, encoder: str = "all-MiniLM-L6-v2",
        num_seeds: int | None = None, num_neighbors: int = 20, negative: str = "lowest",
        ranking: str = "rrf", shard_size: int = 1000, tfrecord: bool = False,
        generator_options: dict | None = None, scorer_options: dict | None = None,
        batch_size: int = 64, seed: int = 0,
        consistency_top_k: int | None = None,
        dedup_cosine: float | None = None) -> dict[str, object]:
  """Builds FRet records for the first `num_seeds` passages; returns the run summary.

  Args:
    corpus_path: The seeds and the retrieval pool: JSONL {"id", "text", "title"?},
      BEIR corpus.jsonl or .txt (see `gecko.fret.corpus`).
    output_dir: Shards, cache, summary.
    llm: A backend from `gecko.fret.llm` (generation and both scores).
    encoder: Embedding model for retrieval (packaged name or directory).
    num_seeds: Seed passages to use (None: all).
    num_neighbors: N, neighbours retrieved and relabelled per query.
    negative: "lowest" fused neighbour or a "random" other one.
    ranking: "rrf" (QL and RC fused), or "ql" / "rc" alone (the paper's ablation).
    shard_size, tfrecord: Output shards (see `gecko.fret.shards`).
    generator_options, scorer_options: Extra `Generator` / `Scorer` attributes.
    batch_size: Encoder batch size.
    seed: Task-type draw, retries and random negatives.
    consistency_top_k: Round-trip consistency filter (Promptagator): keep a record only
      if its positive is among the encoder's top k passages for its own query (no LLM
      call; k <= num_neighbors). None: keep every record. The summary reports the share
      kept.
    dedup_cosine: Query diversity (`gecko.fret.diversity`): a new query whose
      embedding is above this cosine to an earlier kept query of the same task type
      (this run's or a written record's) is dropped. None: keep every query. The
      summary reports the share dropped and the median pairwise cosine of the kept
      queries either way.
  """
  from gecko import gin_flags
  start = time.perf_counter()
  _check_counts(num_seeds=num_seeds, num_neighbors=num_neighbors, shard_size=shard_size,
                batch_size=batch_size, consistency_top_k=consistency_top_k,
                dedup_cosine=dedup_cosine)
  corpus, corpus_stats = read_corpus(corpus_path)
  _say_corpus(corpus_stats, path=corpus_path, num_seeds=num_seeds)
  if num_neighbors > len(corpus):
    raise ValueError(f"num_neighbors={num_neighbors} must be in [2, {len(corpus)}] (the corpus).")
  if getattr(llm, "check", None):
    llm.check()  # a dead server or a missing key fails here, in seconds
  with paths.locked(output_dir, what="OUTPUT_DIR"):  # two runs would do the LLM work twice
    gin_flags.write_operative_config(output_dir)
    cache = LLMCache(os.path.join(output_dir, "llm_cache.sqlite"))
    writer = ShardWriter(output_dir, shard_size=shard_size, tfrecord=tfrecord)
    generator = generate_lib.Generator(llm=llm, cache=cache, seed=seed, **(generator_options or {}))
    scorer = score.Scorer(llm=llm, cache=cache, ranking=ranking, **(scorer_options or {}))
    seeds = corpus[:num_seeds] if num_seeds is not None else corpus
    done = writer.done_ids()
    todo = [p for p in seeds if p["id"] not in done]
    generated = _generate(generator, todo, chunk=max(1, int(getattr(llm, "concurrency", 1))))
    made = [g for g in generated if isinstance(g, generate_lib.Generated)]
    failures = [g for g in generated if isinstance(g, generate_lib.Failure)]
    made, queries_summary = _deduplicate(made, earlier=read_records(writer.shards()),
                                         threshold=dedup_cosine, encoder=encoder,
                                         batch_size=batch_size)
    vectors = embed_corpus(corpus, encoder=encoder, output_dir=output_dir, batch_size=batch_size)
    scoring_failures, inconsistent, scores = _relabel_and_write(
        made, corpus=corpus, vectors=vectors, writer=writer, scorer=scorer, encoder=encoder,
        batch_size=batch_size, num_neighbors=num_neighbors, negative=negative, ranking=ranking,
        seed=seed, llm_label=f"{llm.name}:{llm.model}", consistency_top_k=consistency_top_k)
    failures += scoring_failures
    writer.close()
    _append_failures(output_dir, failures)
    summary = summarize(read_records(writer.shards()), shards=len(writer.shards()),
                        failures=len(failures), skipped=len(seeds) - len(todo),
                        llm_calls=generator.llm_calls + scorer.llm_calls,
                        cache_hits=cache.hits, seconds=time.perf_counter() - start,
                        corpus=corpus_stats.as_dict())
    summary["queries"] = queries_summary
    if consistency_top_k is not None:
      summary["consistency"] = _consistency_summary(
          top_k=consistency_top_k, records=summary["records"], checked=len(made),
          dropped=inconsistent)
    write_summary(summary, scores, output_dir)
    cache.close()
    _report(summary, failures=len(failures), inconsistent=inconsistent, output_dir=output_dir)
    return summary


def _consistency_summary(*, top_k: int, records: int, checked: int, dropped: int
                         ) -> dict[str, float]:
  """The filter's figures. A dropped query has no record, so every run checks it again:
  the records and this run's drops are all the queries the filter has judged, on a
  first run or a rerun."""
  judged = records + dropped
  return {"top_k": top_k, "checked_this_run": checked, "dropped_this_run": dropped,
          "kept_fraction": records / judged if judged else 0.0}


def _relabel_and_write(made: Sequence[generate_lib.Generated], *, corpus: Sequence[dict],
                       vectors: np.ndarray, writer: ShardWriter, scorer: score.Scorer,
                       encoder: str, batch_size: int, num_neighbors: int, negative: str,
                       ranking: str, seed: int, llm_label: str,
                       consistency_top_k: int | None
                       ) -> tuple[list[generate_lib.Failure], int, dict[str, list[float]]]:
  """Retrieves, scores and labels each generated query and writes its record; returns
  (scoring failures, records the consistency filter dropped, the score lists)."""
  from gecko.encode import encode
  index_of = {p["id"]: i for i, p in enumerate(corpus)}
  neighbors = np.zeros((0, num_neighbors), np.int64)
  if made:
    queries = encode([GECKO.query(g.query, task=g.task) for g in made], model=encoder,
                     batch_size=batch_size)
    neighbors, _ = retrieval.top_n(queries, vectors, num_neighbors)
  failures, inconsistent, scores = [], 0, collections.defaultdict(list)
  for g, row in tqdm.tqdm(list(zip(made, neighbors)), desc="relabel", unit="query",
                          file=sys.stderr):
    try:
      record, ql, rc = relabel_lib.relabel(
          g, passages=[corpus[i] for i in relabel_lib.with_seed(row, index_of[g.id])],
          seed_passage=corpus[index_of[g.id]], scorer=scorer, negative=negative,
          ranking=ranking, seed=seed, llm_label=llm_label)
    except LLMError as e:  # a scoring call failed for good: reported; a rerun retries it
      failures.append(generate_lib.Failure(id=g.id, task_type=g.task_type,
                                           reason=f"scoring failed: {e}", outputs=()))
      continue
    if consistency_top_k is not None and not consistent(
        record, ranked_ids=[corpus[i]["id"] for i in row], top_k=consistency_top_k):
      inconsistent += 1  # not written: a rerun re-derives it from the cache, no LLM call
      continue
    writer.add(record)
    _collect_scores(scores, record, ql, rc)
  return failures, inconsistent, scores


def _check_counts(*, num_seeds, num_neighbors, shard_size, batch_size, consistency_top_k,
                  dedup_cosine) -> None:
  check_count("num_seeds", num_seeds, allow_none=True)
  check_count("num_neighbors", num_neighbors, minimum=2)
  check_count("shard_size", shard_size)
  check_count("batch_size", batch_size)
  check_count("consistency_top_k", consistency_top_k, allow_none=True)
  if dedup_cosine is not None and not -1.0 < dedup_cosine <= 1.0:
    raise ValueError(f"dedup_cosine must be a cosine in (-1, 1] or None, got {dedup_cosine!r}.")
  if consistency_top_k is not None and consistency_top_k > num_neighbors:
    raise ValueError(f"consistency_top_k={consistency_top_k} must be <= num_neighbors="
                     f"{num_neighbors} (the passages retrieved per query).")


def _deduplicate(made: Sequence[generate_lib.Generated], *, earlier: Sequence[dict],
                 threshold: float | None, encoder: str, batch_size: int
                 ) -> tuple[list[generate_lib.Generated], dict[str, object]]:
  """This run's queries without near-duplicates of earlier kept ones (all of them when
  `threshold` is None), and the summary's "queries" entry."""
  from gecko.encode import encode
  if not made and not earlier:
    return [], {"dedup_cosine": threshold, "dropped_this_run": 0, "dropped_fraction": 0.0,
                "median_pairwise_cosine": None}
  texts = [r["query"] for r in earlier] + [g.query for g in made]
  vectors = encode(texts, model=encoder, batch_size=batch_size)
  keep = np.ones(len(texts), bool)
  if threshold is not None:
    keep = diversity.keep_mask(vectors, [r["task_type"] for r in earlier] +
                               [g.task_type for g in made], threshold=threshold,
                               earlier=len(earlier))
  new_keep = keep[len(earlier):]
  dropped = int((~new_keep).sum())
  return [g for g, k in zip(made, new_keep) if k], {
      "dedup_cosine": threshold, "dropped_this_run": dropped,
      "dropped_fraction": dropped / len(made) if made else 0.0,
      "median_pairwise_cosine": diversity.median_pairwise_cosine(vectors[keep])}


def _generate(generator: generate_lib.Generator, todo: Sequence[dict], *, chunk: int) -> list:
  """A `Generated` or a `Failure` per passage, `chunk` passages per batched call."""
  generated = []
  with tqdm.tqdm(total=len(todo), desc="generate", unit="passage", file=sys.stderr) as bar:
    for i in range(0, len(todo), chunk):
      generated.extend(generator(todo[i:i + chunk]))
      bar.update(len(todo[i:i + chunk]))
      _stop_if_every_call_failed(generated)
  return generated


def _say_corpus(stats, *, path: str, num_seeds: int | None) -> None:
  """A line on stderr for each thing the corpus reader skipped, and for NUM_SEEDS
  beyond the corpus (legal, but rarely meant); the summary counts them too."""
  for count, what in ((stats.duplicate_ids_skipped, "passages repeat an earlier id"),
                      (stats.empty_skipped, "passages are empty"),
                      (stats.invalid_utf8_lines, "lines are not valid UTF-8")):
    if count:
      print(f"gecko.fret: {count} {what} in {path}; skipped.", file=sys.stderr)
  if num_seeds is not None and num_seeds > stats.passages:
    print(f"gecko.fret: NUM_SEEDS={num_seeds} but {path} has {stats.passages} passages; "
          "every passage is a seed.", file=sys.stderr)


def _report(summary: dict, *, failures: int, inconsistent: int, output_dir: str) -> None:
  """The run's last line on stderr; NoRecordsError when it wrote no record at all."""
  print(f"gecko.fret: {summary['records']} records in {output_dir}; {failures} passages "
        f"failed this run" + (f" (see {output_dir}/failures.jsonl; a rerun retries them)"
                              if failures else ""), file=sys.stderr)
  if not summary["records"]:
    dropped = f", {inconsistent} dropped by the consistency filter" if inconsistent else ""
    raise NoRecordsError(f"no FRet record was written: {failures} passages failed "
                         f"(reasons in {output_dir}/failures.jsonl){dropped}.")


def consistent(record: dict, *, ranked_ids: Sequence[str], top_k: int) -> bool:
  """Round-trip consistency: the record's positive is among the first `top_k` passages
  the encoder retrieved for the record's own query (`ranked_ids`, best first)."""
  return record["positive_id"] in list(ranked_ids)[:top_k]


def _stop_if_every_call_failed(generated: Sequence) -> None:
  """Raises LLMError once the first EARLY_STOP_AFTER passages all failed in the LLM call."""
  if len(generated) < EARLY_STOP_AFTER:
    return
  first = generated[:EARLY_STOP_AFTER]
  if all(isinstance(g, generate_lib.Failure) and g.reason.startswith("LLM call failed")
         for g in first):
    raise LLMError(f"the first {len(first)} passages' LLM calls all failed; stopping "
                   f"(last: {first[-1].reason.removeprefix('LLM call failed: ')})")


def _append_failures(output_dir: str, failures: Sequence[generate_lib.Failure]) -> None:
  with open(os.path.join(output_dir, "failures.jsonl"), "a", encoding="utf-8") as f:
    for failure in failures:
      f.write(json.dumps(failure_record(failure)) + "\n")


def failure_record(failure: generate_lib.Failure) -> dict[str, object]:
  return {"id": failure.id, "task_type": failure.task_type, "reason": failure.reason,
          "outputs": list(failure.outputs)}


def _collect_scores(scores: dict[str, list[float]], record: dict, ql: list[float] | None,
                    rc: list[float] | None) -> None:
  for name, values in (("ql", ql), ("rc", rc)):
    if values is None:  # not computed under this ranking
      continue
    scores[f"{name}_positive"].append(record[f"positive_{name}"])
    scores[f"{name}_negative"].append(record[f"negative_{name}"])
    scores[f"{name}_all"].extend(values)


def write_summary(summary: dict[str, object], scores: dict[str, list[float]], output_dir: str,
                  *, create: Callable[[str], BinaryIO] = lambda path: open(path, "wb")) -> None:
  """OUTPUT_DIR/summary.json and summary.png (score distributions); `create` opens a
  file for writing (Beam passes its FileSystems, for gs:// outputs)."""
  with create(os.path.join(output_dir, "summary.json")) as f:
    f.write(json.dumps(summary, indent=2).encode("utf-8"))
  with create(os.path.join(output_dir, "summary.png")) as f:
    _plot(scores, f)


def read_records(paths: Sequence[str], *, open_binary: Callable[[str], BinaryIO] = lambda path:
                 open(path, "rb")) -> list[dict[str, object]]:
  """The records of JSONL shards."""
  records = []
  for path in paths:
    with open_binary(path) as f:
      records.extend(value for _, value in jsonl.parse(f.read().splitlines(), path=path))
  return records


def summarize(records: Sequence[dict], *, shards: int, failures: int, skipped: int,
              llm_calls: int, cache_hits: int, seconds: float, corpus: dict[str, int]
              ) -> dict[str, object]:
  """Counts over every record written so far, and this run's work."""
  moved = sum(not r["positive_is_seed"] for r in records)
  return {
      "records": len(records), "failures_this_run": failures,
      "skipped_already_written": skipped,
      "task_types": dict(collections.Counter(r["task_type"] for r in records)),
      "positive_not_seed_fraction": moved / len(records) if records else 0.0,
      "llm_calls_this_run": llm_calls, "llm_cache_hits_this_run": cache_hits,
      "seconds_this_run": round(seconds, 2), "shards": shards, "corpus": corpus}


def _plot(scores: dict[str, list[float]], file: BinaryIO) -> None:
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
    if ax.has_data():
      ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(file, format="png", dpi=100)
  plt.close(fig)


def main(argv: Sequence[str]) -> int:
  from gecko import gin_flags
  return gin_flags.run(run, argv, prog="python -m gecko.fret", doc=__doc__,
                       expected=(LLMError, NoRecordsError, paths.FolderInUseError,
                                 FileNotFoundError, ValueError))


if __name__ == "__main__":
  from gecko.fret import pipeline as _pipeline_module  # gin binds the importable module
  sys.exit(_pipeline_module.main(sys.argv[1:]))
