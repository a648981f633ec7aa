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
     steps 3 and 4 are one `gecko.fret.relabel.Relabeler`;
and the record (`gecko.fret.schema`) goes to atomic JSONL/TFRecord shards in
OUTPUT_DIR (`gecko.fret.records`). Every setting is a field of the run's
`gecko.fret.config.FretConfig`, which the Beam runner takes too. LLM calls are
cached in OUTPUT_DIR/llm_cache.sqlite and finished records are skipped, so a killed
run resumes where it stopped without repeating LLM calls.
OUTPUT_DIR/summary.json (counts, task-type mix, positive != seed, failures, LLM calls,
time, corpus counts) and summary.png (score distributions) describe the run;
failures.jsonl lists passages whose generation failed (malformed completions, or an
LLM call that failed after the backend's retries) or whose scoring failed; a rerun
tries them again. Each stage shows a progress bar.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence

import numpy as np
import tqdm

from gecko import retrieval
from gecko.data import paths
from gecko.data.input_format import GECKO
from gecko.fret import diversity, records
from gecko.fret import generate as generate_lib
from gecko.fret.cache import LLMCache
from gecko.fret.config import FretConfig, check_count
from gecko.fret import corpus as corpus_lib
from gecko.fret.corpus import read_corpus
from gecko.fret.llm import LLM, LLMError
from gecko.fret.relabel import (
  NoNegative,
  Relabeler,
  consistent,
  dropped_before_scoring,
  with_seed,
)


# A run whose first this-many passages all fail in the LLM call itself stops: the
# server is down or refuses every request, and the rest would fail the same way.
EARLY_STOP_AFTER = 8


class NoRecordsError(RuntimeError):
  """A run that wrote no record (every passage failed)."""


def run(config: FretConfig, *, llm: LLM, shard_size: int = 1000) -> dict[str, object]:
  """Builds FRet records for `config`'s seed passages; returns the run summary.

  Args:
    config: Every setting of the run (`gecko.fret.config.FretConfig`).
    llm: The backend (`gecko.fret.llm`) for generation and both scores.
    shard_size: Records per output shard (see `gecko.fret.records.ShardWriter`).
  """
  from gecko import gin_flags
  start = time.perf_counter()
  check_count("shard_size", shard_size)
  config.check_output_dir()
  corpus, corpus_stats = read_corpus(config.corpus)
  _say_corpus(corpus_stats, path=config.corpus, num_seeds=config.num_seeds)
  if config.retrieval_depth > len(corpus):
    raise ValueError(f"num_neighbors={config.num_neighbors} (and the window negative's "
                     f"last rank, {config.negative_window[1]}, with negative='window') must "
                     f"be at most the corpus's {len(corpus)} passages.")
  llm.check()  # a dead server or a missing key fails here, in seconds
  output_dir = config.output_dir
  with paths.locked(output_dir, what="OUTPUT_DIR"):  # two runs would do the LLM work twice
    gin_flags.write_operative_config(output_dir)
    cache = LLMCache(os.path.join(output_dir, "llm_cache.sqlite"))
    writer = records.ShardWriter(output_dir, shard_size=shard_size, tfrecord=config.tfrecord)
    generator = generate_lib.Generator(llm=llm, cache=cache, seed=config.seed,
                                       **config.generator_options)
    relabeler = Relabeler.for_run(config, llm=llm, cache=cache)
    seeds = corpus[:config.num_seeds] if config.num_seeds is not None else corpus
    earlier = records.read(output_dir)
    done = {r["id"] for r in earlier}
    todo = [p for p in seeds if p["id"] not in done]
    generated = _generate(generator, todo, chunk=max(1, int(llm.concurrency)))
    failures = [g for g in generated if isinstance(g, generate_lib.Failure)]
    queries, queries_summary = diversity.deduplicate(
        [g for g in generated if isinstance(g, generate_lib.Generated)], earlier=earlier,
        threshold=config.dedup_cosine, encoder=config.encoder, batch_size=config.batch_size)
    vectors = corpus_lib.embed(corpus, encoder=config.encoder, output_dir=output_dir,
                           batch_size=config.batch_size)
    scoring_failures, dropped, all_scores = _relabel_and_write(
        queries, corpus=corpus, vectors=vectors, writer=writer, relabeler=relabeler,
        config=config)
    failures += scoring_failures
    writer.close()
    records.append_failures(output_dir, failures)
    written = records.read(output_dir)
    summary = records.summarize(
        written, shards=len(writer.shards()), failures=len(failures),
        skipped=len(seeds) - len(todo), llm_calls=generator.llm_calls + relabeler.llm_calls,
        cache_hits=cache.hits, seconds=time.perf_counter() - start,
        corpus=corpus_stats.as_dict(), queries=queries_summary,
        filters=records.filter_summaries(config, records=len(written), judged=len(queries),
                                         dropped=dropped))
    records.write_summary(summary, records.score_lists(written, all_scores=all_scores),
                          output_dir)
    cache.close()
    _report(summary, failures=len(failures), dropped=dropped, output_dir=output_dir)
    return summary


def _relabel_and_write(queries: Sequence[generate_lib.Generated], *, corpus: Sequence[dict],
                       vectors: np.ndarray, writer: records.ShardWriter, relabeler: Relabeler,
                       config: FretConfig
                       ) -> tuple[list[generate_lib.Failure], dict[str, int],
                                  dict[str, list[float]]]:
  """Retrieves, scores and labels each generated query and writes its record; returns
  (scoring failures, the queries each filter dropped: {name: count} for
  `records.FILTERS`, every candidate's QL and RC scores)."""
  from gecko.encode import encode
  index_of = {p["id"]: i for i, p in enumerate(corpus)}
  depth = config.retrieval_depth
  neighbors, scores = np.zeros((0, depth), np.int64), np.zeros((0, depth), np.float32)
  if queries:
    embedded = encode([GECKO.query(g.query, task=g.task) for g in queries],
                      model=config.encoder, batch_size=config.batch_size)
    neighbors, scores = retrieval.top_n(embedded, vectors, depth)
  failures, all_scores = [], {"ql": [], "rc": []}
  dropped = dict.fromkeys(records.FILTERS, 0)
  for q, (g, row) in enumerate(tqdm.tqdm(list(zip(queries, neighbors)), desc="relabel",
                                         unit="query", file=sys.stderr)):
    ranked_ids = [corpus[i]["id"] for i in row]
    early = dropped_before_scoring(config, query_id=g.id, ranked_ids=ranked_ids,
                                   scores=scores[q])
    if early:
      dropped[early] += 1  # no scoring call; a rerun judges it again
      continue
    seed = index_of[g.id]
    window = {} if config.negative != "window" else {
        "retrieved": [(corpus[i], float(s)) for i, s in zip(row, scores[q])],
        "seed_score": float(np.dot(embedded[q], vectors[seed]))}
    try:
      relabelled = relabeler(
          g, passages=[corpus[i] for i in with_seed(row[:config.num_neighbors], seed)],
          seed_passage=corpus[seed], **window)
    except LLMError as e:  # a scoring call failed for good: reported; a rerun retries it
      failures.append(generate_lib.Failure(id=g.id, task_type=g.task_type,
                                           reason=f"scoring failed: {e}", outputs=()))
      continue
    except NoNegative:  # not written: a rerun re-derives it from the cache
      dropped["no_window_negative"] += 1
      continue
    if config.consistency_top_k is not None and not consistent(
        relabelled.record, ranked_ids=ranked_ids, top_k=config.consistency_top_k):
      dropped["inconsistent"] += 1  # not written: a rerun re-derives it from the cache
      continue
    writer.add(relabelled.record)
    all_scores["ql"].extend(relabelled.ql or ())
    all_scores["rc"].extend(relabelled.rc or ())
  return failures, dropped, all_scores


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


def _report(summary: dict, *, failures: int, dropped: dict[str, int], output_dir: str) -> None:
  """The run's last line on stderr; NoRecordsError when it wrote no record at all."""
  print(f"gecko.fret: {summary['records']} records in {output_dir}; {failures} passages "
        f"failed this run" + (f" (see {output_dir}/failures.jsonl; a rerun retries them)"
                              if failures else ""), file=sys.stderr)
  if not summary["records"]:
    filters = "".join(f", {n} dropped by the {what} filter" for what, n in (
        ("generic-query", dropped["generic"]),
        ("seed retrieval", dropped["seed_not_retrieved"]),
        ("window negative", dropped["no_window_negative"]),
        ("consistency", dropped["inconsistent"])) if n)
    raise NoRecordsError(f"no FRet record was written: {failures} passages failed "
                         f"(reasons in {output_dir}/failures.jsonl){filters}.")


def _stop_if_every_call_failed(generated: Sequence) -> None:
  """Raises LLMError once the first EARLY_STOP_AFTER passages all failed in the LLM call."""
  if len(generated) < EARLY_STOP_AFTER:
    return
  first = generated[:EARLY_STOP_AFTER]
  if all(isinstance(g, generate_lib.Failure) and g.reason.startswith("LLM call failed")
         for g in first):
    raise LLMError(f"the first {len(first)} passages' LLM calls all failed; stopping "
                   f"(last: {first[-1].reason.removeprefix('LLM call failed: ')})")


def main(argv: Sequence[str]) -> int:
  from gecko import gin_flags
  return gin_flags.run(run, argv, prog="python -m gecko.fret", doc=__doc__,
                       expected=(LLMError, NoRecordsError, paths.FolderInUseError,
                                 FileNotFoundError, ValueError))


if __name__ == "__main__":
  from gecko.fret import pipeline as _pipeline_module  # gin binds the importable module
  sys.exit(_pipeline_module.main(sys.argv[1:]))
