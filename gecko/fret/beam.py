r"""The FRet pipeline on Apache Beam (extra `[beam]`), for corpora beyond one machine.

  python -m gecko.fret.beam --gin_file=gin/runs/fret.gin --gin_file=gin/overlays/fret_beam.gin \
    --gin.CORPUS="'gs://BUCKET/corpus.jsonl'" --gin.OUTPUT_DIR="'gs://BUCKET/fret'" \
    --gin_file=gin/overlays/fret_server.gin --gin.LLM_BASE_URL="'http://VLLM_HOST:8000/v1'" \
    --gin.LLM_MODEL="'google/gemma-3-27b-it'" --gin.PROMPT_LOGPROBS=True \
    -- --runner=DataflowRunner --project=PROJECT --region=us-central1 \
       --temp_location=gs://BUCKET/tmp --setup_file=./setup.py --extra_packages=...

Everything after `--` goes to Beam's PipelineOptions (none: the local DirectRunner).
The stages are those of `gecko.fret.pipeline`, as transforms, and share its code
(the `FretConfig`, generation, de-duplication, the `Relabeler`, the record schema), so
both produce the same records from the same LLM answers:

  ReadCorpus   JSONL / BEIR corpus.jsonl lines (invalid UTF-8 replaced, empty passages
               dropped, one passage per id kept; all counted as Beam metrics)
  Seeds        every passage, or NUM_SEEDS of them chosen by a hash of (seed, id)
  Generate     batched LLM calls per worker; failures to failures-*.jsonl
  Deduplicate  with DEDUP_COSINE only: every query on one worker, judged in seed-hash
               order (a run-wide ordered pass, as on one machine)
  Embed        corpus and queries with the encoder (loaded once per worker)
  Retrieve     exact top-N (deeper for the window negative), with each query's cosine
               to its seed: each corpus block is scored against all queries (a side
               input) and the per-block top lists are merged per query, so the corpus
               never has to fit on one worker
  Relabel      the generic-query guard (MIN_SPREAD) and the seed filter (SEED_TOP_K)
               first, then QL and/or RC scores, ranking, positive and hard negative
               (`gecko.fret.relabel`), then the consistency filter (CONSISTENCY_TOP_K)
  Write        fret-SSSSS-of-NNNNN.jsonl (and .tfrecord) shards in OUTPUT_DIR, which the
               `gecko_fret` SeqIO task reads; summary.json / summary.png at the end

Fault tolerance is the runner's (Dataflow retries failed bundles; output files appear
only when the pipeline commits them). `cache_path` (a local SQLite file) makes a
DirectRunner rerun repeat no LLM call; leave it None on Dataflow. Plain-text corpora
need line numbers for ids, which Beam's text source does not give: convert them to
JSONL first. A repeated id keeps its smallest (title, text), not the first in the file.
With NUM_SEEDS, and for DEDUP_COSINE's order, passages are taken by a hash of (seed, id),
highest first, where the local runner takes them in file order; on a corpus written in
that order both runners make the same records. Without DEDUP_COSINE the summary's
median pairwise query cosine is not computed (it would gather every query on one worker).
"""

from __future__ import annotations

import json
import os
import sys
import time
import zlib
from collections.abc import Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from gecko import retrieval
from gecko.data import paths
from gecko.data.input_format import GECKO
from gecko.fret import corpus as corpus_lib
from gecko.fret import diversity, records, schema
from gecko.fret import generate as generate_lib
from gecko.fret.cache import LLMCache
from gecko.fret.config import FretConfig, check_count
from gecko.fret.llm import LLM, LLMError
from gecko.fret.relabel import NoNegative, Relabeler, consistent, dropped_before_scoring

NAMESPACE = "gecko.fret"
CORPUS_COUNTERS = ("passages", "empty_skipped", "duplicate_ids_skipped", "invalid_utf8_lines")


def _count(name: str, n: int = 1) -> None:
  Metrics.counter(NAMESPACE, name).inc(n)


class _ParsePassage(beam.DoFn):
  def __init__(self, path: str):
    self.path = path

  def process(self, raw: bytes):
    try:
      line = raw.decode("utf-8")
    except UnicodeDecodeError:
      line = raw.decode("utf-8", errors="replace")
      _count("invalid_utf8_lines")
    passage = corpus_lib.parse_line(line.rstrip("\r\n"), path=self.path, number=None)
    if passage is None:
      return
    if not passage["text"].strip():
      _count("empty_skipped")
      return
    yield passage["id"], passage


def _one_per_id(item):
  pid, passages = item
  passages = sorted(passages, key=lambda p: (p["title"], p["text"]))
  _count("duplicate_ids_skipped", len(passages) - 1)
  _count("passages")
  return pid, passages[0]


class _LLMDoFn(beam.DoFn):
  """A DoFn holding the LLM backend (loaded on first use in each worker) and a cache."""

  def __init__(self, *, llm, cache_path: str | None):
    self.llm, self.cache_path = llm, cache_path

  def setup(self):
    self.cache = LLMCache(self.cache_path) if self.cache_path else None

  def teardown(self):
    if self.cache is not None:
      self.cache.close()


class _Generate(_LLMDoFn):
  def __init__(self, *, options: dict, seed: int, **kwargs):
    super().__init__(**kwargs)
    self.options, self.seed = options, seed

  def setup(self):
    super().setup()
    self.generator = generate_lib.Generator(llm=self.llm, cache=self.cache, seed=self.seed,
                                            **self.options)

  def process(self, batch: Sequence[dict]):
    before = self.generator.llm_calls
    for result in self.generator(list(batch)):
      if isinstance(result, generate_lib.Generated):
        yield result.id, result
      else:
        _count("failures")
        yield beam.pvalue.TaggedOutput("failures", records.failure_record(result))
    _count("llm_calls", self.generator.llm_calls - before)


class _Relabel(_LLMDoFn):
  def __init__(self, *, config: FretConfig, **kwargs):
    super().__init__(**kwargs)
    self.config = config

  def setup(self):
    super().setup()
    self.relabeler = Relabeler.for_run(self.config, llm=self.llm, cache=self.cache)

  def process(self, item):
    qid, joined = item
    (generated,), (delivered,), ((ranked, seed_score),) = (
        joined["generated"], joined["candidates"], joined["ranked"])
    config, n = self.config, self.config.num_neighbors
    passages = delivered[:n]
    ranked_ids = [pid for pid, _ in ranked]
    seed_passage = next(p for p in passages if p["id"] == qid)
    _count("judged")
    early = dropped_before_scoring(config, query_id=qid, ranked_ids=ranked_ids,
                                   scores=[score for _, score in ranked])
    if early:
      _count(early)  # no scoring call
      return
    window = {} if config.negative != "window" else {
        "retrieved": list(zip(delivered[n:], (score for _, score in ranked))),
        "seed_score": seed_score}
    before = self.relabeler.llm_calls
    try:
      record = self.relabeler(generated, passages=passages, seed_passage=seed_passage,
                              **window).record
    except LLMError as e:
      _count("failures")
      yield beam.pvalue.TaggedOutput("failures", records.failure_record(
          generate_lib.Failure(id=qid, task_type=generated.task_type,
                               reason=f"scoring failed: {e}", outputs=())))
      return
    except NoNegative:
      _count("no_window_negative")
      return
    finally:
      _count("llm_calls", self.relabeler.llm_calls - before)
    top_k = config.consistency_top_k
    if top_k is not None and not consistent(record, ranked_ids=ranked_ids, top_k=top_k):
      _count("inconsistent")
      return
    _count("records")
    yield record


class _Deduplicate(beam.DoFn):
  """Every generated query at once -> the kept ones (`gecko.fret.diversity`), judged in
  seed-hash order, and the summary's "queries" entry as a tagged output."""

  def __init__(self, *, config: FretConfig):
    self.config = config

  def setup(self):
    from gecko.models import embedder
    self.model = embedder.load(self.config.encoder)

  def process(self, generated):
    rank = _seed_rank(self.config.seed)
    ordered = [g for _, g in sorted(generated, key=lambda item: rank(item[0]), reverse=True)]
    kept, summary = diversity.deduplicate(ordered, earlier=[], threshold=self.config.dedup_cosine,
                                          encoder=self.model, batch_size=self.config.batch_size)
    yield beam.pvalue.TaggedOutput("queries", json.dumps(summary))
    for g in kept:
      yield g.id, g


class _Embed(beam.DoFn):
  """(key, text) batches -> (keys, unit vectors [n, d]) with the encoder."""

  def __init__(self, *, encoder: str, batch_size: int):
    self.encoder, self.batch_size = encoder, batch_size

  def setup(self):
    from gecko.models import embedder
    self.model = embedder.load(self.encoder)

  def process(self, batch):
    from gecko.encode import encode
    keys = [k for k, _ in batch]
    yield keys, encode([t for _, t in batch], model=self.model, batch_size=self.batch_size)


class _BlockTopN(beam.DoFn):
  """For a corpus block: each query's top-n (score, passage id) within the block, and
  its cosine to its own seed passage where the block holds it (else None)."""

  def __init__(self, *, n: int, block_size: int):
    self.n, self.block_size = n, block_size

  def process(self, block, queries):
    if not queries:  # no query was generated
      return
    ids = [pid for keys, _ in block for pid in keys]
    vectors = np.concatenate([v for _, v in block])
    query_ids = [qid for keys, _ in queries for qid in keys]
    query_vectors = np.concatenate([v for _, v in queries])
    for start in range(0, len(ids), self.block_size):
      part_ids = ids[start:start + self.block_size]
      n = min(self.n, len(part_ids))
      index, scores = retrieval.top_n(query_vectors, [vectors[start:start + self.block_size]], n,
                                     block_size=self.block_size)
      rows = {pid: start + j for j, pid in enumerate(part_ids)}
      for row, qid in enumerate(query_ids):
        seed = rows.get(qid)
        yield qid, ([(float(scores[row, j]), part_ids[index[row, j]]) for j in range(n)],
                    None if seed is None else float(np.dot(query_vectors[row], vectors[seed])))


class _MergeTopN(beam.CombineFn):
  """Merges candidate lists into the global top n (score descending, then id), keeping
  the seed's score; outputs ([(passage id, score)] best first, the seed's score)."""

  def __init__(self, n: int):
    self.n = n

  def _top(self, candidates, seed_scores):
    seed = next((s for s in seed_scores if s is not None), None)
    return sorted(candidates, key=lambda c: (-c[0], c[1]))[:self.n], seed

  def create_accumulator(self):
    return [], None

  def add_input(self, accumulator, item):
    return self._top(accumulator[0] + list(item[0]), (accumulator[1], item[1]))

  def merge_accumulators(self, accumulators):
    accumulators = list(accumulators)
    return self._top([c for a, _ in accumulators for c in a], [s for _, s in accumulators])

  def extract_output(self, accumulator):
    top, seed = accumulator
    return [(pid, score) for score, pid in top], seed


def _wanted(item, *, n: int, window: bool):
  """(query id, its retrieval) -> (passage id, (query id, slot)): slots 0..n-1 are the
  candidates (the seed always in), then, for the window negative, the whole retrieval."""
  qid, (ranked, _) = item
  ids = [pid for pid, _ in ranked]
  candidates = ids[:n] if qid in ids[:n] else ids[:n - 1] + [qid]
  for slot, pid in enumerate(candidates + (ids if window else [])):
    yield pid, (qid, slot)


def _deliver(item):
  _, joined = item
  for passage in joined["passage"]:
    for qid, rank in joined["wanted"]:
      yield qid, (rank, passage)


def _candidates(item):
  qid, ranked = item
  return qid, [p for _, p in sorted(ranked, key=lambda rp: rp[0])]


def _seed_rank(seed: int):
  """The order of passage ids for NUM_SEEDS and de-duplication: highest first."""
  return lambda pid: (zlib.crc32(f"{seed}:{pid}".encode("utf-8")), pid)


def build(root: beam.Pipeline, config: FretConfig, *, llm: LLM, num_shards: int,
          block_size: int, cache_path: str | None) -> None:
  """Adds the FRet stages to `root` (see the module docstring)."""
  llm_args = {"llm": llm, "cache_path": cache_path}
  passages = (root
              | "ReadCorpus" >> beam.io.ReadFromText(config.corpus,
                                                     coder=beam.coders.BytesCoder())
              | "Parse" >> beam.ParDo(_ParsePassage(config.corpus))
              | "GroupById" >> beam.GroupByKey()
              | "OnePerId" >> beam.Map(_one_per_id))
  corpus = passages | "Values" >> beam.Values()
  if config.num_seeds is not None:
    rank = _seed_rank(config.seed)
    seeds = (corpus | "ChooseSeeds" >> beam.combiners.Top.Of(config.num_seeds,
                                                             key=lambda p: rank(p["id"]))
             | "Unpack" >> beam.FlatMap(lambda chosen: chosen))
  else:
    seeds = corpus
  generated = (seeds
               | "BatchSeeds" >> beam.BatchElements(min_batch_size=1,
                                                    max_batch_size=max(1, int(llm.concurrency)))
               | "Generate" >> beam.ParDo(_Generate(options=dict(config.generator_options),
                                                    seed=config.seed, **llm_args)
                                          ).with_outputs("failures", main="generated"))
  kept = generated.generated
  if config.dedup_cosine is not None:
    deduplicated = (kept | "AllGenerated" >> beam.combiners.ToList()
                    | "Deduplicate" >> beam.ParDo(_Deduplicate(config=config)).with_outputs(
                        "queries", main="kept"))
    kept = deduplicated.kept
    _ = deduplicated.queries | "WriteQueries" >> beam.io.WriteToText(
        os.path.join(config.output_dir, QUERIES), shard_name_template="")
  neighbours = _neighbours(corpus, kept, config=config, block_size=block_size)
  candidates = (
      {"wanted": neighbours | "Wanted" >> beam.FlatMap(
          _wanted, n=config.num_neighbors, window=config.negative == "window"),
       "passage": passages}
      | "JoinPassages" >> beam.CoGroupByKey()
      | "Deliver" >> beam.FlatMap(_deliver)
      | "GroupByQuery" >> beam.GroupByKey()
      | "Candidates" >> beam.Map(_candidates))
  relabelled = (
      {"generated": kept, "candidates": candidates, "ranked": neighbours}
      | "JoinQueries" >> beam.CoGroupByKey()
      | "Relabel" >> beam.ParDo(_Relabel(config=config, **llm_args)
                                ).with_outputs("failures", main="records"))
  _write(relabelled.records, (generated.failures, relabelled.failures), config=config,
         num_shards=num_shards)


def _neighbours(corpus, kept, *, config: FretConfig, block_size: int):
  """(query id, ([(passage id, cosine)] the encoder's top passages best first, the
  query's cosine to its seed)) for each kept query: the corpus embedded in blocks, each
  block's top list against every query, merged."""
  batch_size = config.batch_size
  embed = _Embed(encoder=config.encoder, batch_size=batch_size)
  queries = (kept
             | "QueryText" >> beam.MapTuple(lambda qid, g: (qid, GECKO.query(g.query,
                                                                              task=g.task)))
             | "BatchQueries" >> beam.BatchElements(min_batch_size=batch_size,
                                                    max_batch_size=batch_size * 8)
             | "EmbedQueries" >> beam.ParDo(embed)
             | "AllQueries" >> beam.combiners.ToList())
  return (corpus
          | "DocumentText" >> beam.Map(lambda p: (p["id"], GECKO.document(
              p["text"], title=p["title"])))
          | "BatchDocuments" >> beam.BatchElements(min_batch_size=batch_size,
                                                   max_batch_size=batch_size * 8)
          | "EmbedCorpus" >> beam.ParDo(embed)
          | "Blocks" >> beam.BatchElements(min_batch_size=1,
                                           max_batch_size=max(1, block_size // batch_size))
          | "BlockTopN" >> beam.ParDo(_BlockTopN(n=config.retrieval_depth, block_size=block_size),
                                      queries=beam.pvalue.AsSingleton(queries))
          | "MergeTopN" >> beam.CombinePerKey(_MergeTopN(config.retrieval_depth)))


def _write(records, failures, *, config: FretConfig, num_shards: int) -> None:
  """The record shards (JSONL, and TFRecord if asked) and failures-*.jsonl."""
  prefix = os.path.join(config.output_dir, "fret")
  _ = (records | "ToJson" >> beam.Map(lambda r: json.dumps(r, ensure_ascii=False))
       | "WriteJsonl" >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl",
                                             num_shards=num_shards))
  if config.tfrecord:
    _ = (records | "ToExample" >> beam.Map(schema.tf_example)
         | "WriteTFRecord" >> beam.io.WriteToTFRecord(prefix, file_name_suffix=".tfrecord",
                                                      num_shards=num_shards))
  _ = (failures | "AllFailures" >> beam.Flatten()
       | "FailuresToJson" >> beam.Map(json.dumps)
       | "WriteFailures" >> beam.io.WriteToText(os.path.join(config.output_dir, "failures"),
                                                file_name_suffix=".jsonl"))


# The Deduplicate stage's summary entry, read into summary.json and then removed.
QUERIES = "queries-summary.json"


def run(config: FretConfig, *, llm: LLM, num_shards: int = 0, block_size: int = 65536,
        cache_path: str | None = None, pipeline_args: Sequence[str] = ()) -> dict[str, object]:
  """Runs the FRet pipeline on Beam and waits for it; returns the run summary.

  Args:
    config: Every setting of the run, as for `gecko.fret.pipeline.run` (local or gs://
      paths; see the module docstring for how NUM_SEEDS chooses).
    llm: The backend (`gecko.fret.llm`), pickled to the workers.
    num_shards: Output shards (0: the runner decides).
    block_size: Corpus rows scored per retrieval call (exact search shuffles about
      queries x num_neighbors x corpus / block_size candidates).
    cache_path: A local SQLite LLM cache shared by the workers of one machine (None:
      no cache, e.g. on Dataflow).
    pipeline_args: Beam pipeline options, e.g. ["--runner=DataflowRunner", ...].
  """
  from gecko import gin_flags
  if corpus_lib.is_plain_text(config.corpus):
    raise ValueError(f"{config.corpus}: the Beam pipeline reads JSONL or BEIR corpus.jsonl; "
                     "convert the plain-text corpus to JSONL ({\"id\", \"text\"} per line).")
  check_count("num_shards", num_shards, minimum=0)
  check_count("block_size", block_size)
  config.check_output_dir()
  llm.check()  # a dead server or a missing key fails here, before any worker starts
  start, output_dir = time.perf_counter(), config.output_dir
  if not FileSystems.exists(output_dir):
    FileSystems.mkdirs(output_dir)
  if not output_dir.startswith("gs://"):
    gin_flags.write_operative_config(output_dir)
  root = beam.Pipeline(options=PipelineOptions(list(pipeline_args)))
  build(root, config, llm=llm, num_shards=num_shards, block_size=block_size,
        cache_path=cache_path)
  result = root.run()
  result.wait_until_finish()
  counters = {c.key.metric.name: c.committed for c in
              result.metrics().query()["counters"] if c.key.metric.namespace == NAMESPACE}
  written = records.read(output_dir)
  summary = records.summarize(
      written, shards=len(records.shard_paths(output_dir)),
      failures=counters.get("failures", 0), skipped=0, llm_calls=counters.get("llm_calls", 0),
      cache_hits=0, seconds=time.perf_counter() - start,
      corpus={name: counters.get(name, 0) for name in CORPUS_COUNTERS},
      queries=_queries_summary(config, output_dir),
      filters=records.filter_summaries(
          config, records=len(written), judged=counters.get("judged", 0),
          dropped={name: counters.get(name, 0) for name in records.FILTERS}))
  records.write_summary(summary, records.score_lists(written), output_dir)
  return summary


def _queries_summary(config: FretConfig, output_dir: str) -> dict[str, object]:
  """The Deduplicate stage's figures (taken out of OUTPUT_DIR), or none without it."""
  if config.dedup_cosine is None:
    return diversity.nothing_judged(None)
  path = paths.join(output_dir, QUERIES)
  summary = json.loads(paths.read_text(path))
  FileSystems.delete([path])
  return summary


def split_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """(gin flags, Beam pipeline options): everything after `--` is Beam's."""
  argv = list(argv)
  if "--" in argv:
    i = argv.index("--")
    return argv[:i], argv[i + 1:]
  return argv, []


def main(argv: Sequence[str]) -> int:
  from gecko import gin_flags
  gin_argv, beam_argv = split_args(argv)
  return gin_flags.run(run, gin_argv, prog="python -m gecko.fret.beam", doc=__doc__,
                       expected=(LLMError, FileNotFoundError, ValueError),
                       pipeline_args=beam_argv)


if __name__ == "__main__":
  from gecko.fret import beam as _beam_module  # gin binds the importable module
  sys.exit(_beam_module.main(sys.argv[1:]))
