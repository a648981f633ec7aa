r"""The FRet pipeline on Apache Beam (extra `[beam]`), for corpora beyond one machine.

  python -m gecko.fret.beam --gin_file=gin/runs/fret.gin --gin_file=gin/overlays/fret_beam.gin \
    --gin.CORPUS="'gs://BUCKET/corpus.jsonl'" --gin.OUTPUT_DIR="'gs://BUCKET/fret'" \
    --gin_file=gin/overlays/fret_server.gin --gin.LLM_BASE_URL="'http://VLLM_HOST:8000/v1'" \
    --gin.LLM_MODEL="'google/gemma-3-27b-it'" --gin.PROMPT_LOGPROBS=True \
    -- --runner=DataflowRunner --project=PROJECT --region=us-central1 \
       --temp_location=gs://BUCKET/tmp --setup_file=./setup.py --extra_packages=...

Everything after `--` goes to Beam's PipelineOptions (none: the local DirectRunner).
The stages are those of `gecko.fret.pipeline`, as transforms, and share its code
(generation, `relabel`, the record schema), so both produce the same records:

  ReadCorpus   JSONL / BEIR corpus.jsonl lines (invalid UTF-8 replaced, empty passages
               dropped, one passage per id kept; all counted as Beam metrics)
  Seeds        every passage, or NUM_SEEDS of them chosen by a hash of (seed, id)
  Generate     batched LLM calls per worker; failures to failures-*.jsonl
  Embed        corpus and queries with the encoder (loaded once per worker)
  Retrieve     exact top-N: each corpus block is scored against all queries (a side
               input) and the per-block top-N lists are merged per query, so the
               corpus never has to fit on one worker
  Relabel      QL and/or RC scores, ranking, positive and hard negative (`gecko.fret.relabel`)
  Write        fret-SSSSS-of-NNNNN.jsonl (and .tfrecord) shards in OUTPUT_DIR, which the
               `gecko_fret` SeqIO task reads; summary.json / summary.png at the end

Fault tolerance is the runner's (Dataflow retries failed bundles; output files appear
only when the pipeline commits them). `cache_path` (a local SQLite file) makes a
DirectRunner rerun repeat no LLM call; leave it None on Dataflow. Plain-text corpora
need line numbers for ids, which Beam's text source does not give: convert them to
JSONL first. A repeated id keeps its smallest (title, text), not the first in the file.
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
from gecko.data.input_format import GECKO
from gecko.fret import corpus as corpus_lib
from gecko.fret import generate as generate_lib
from gecko.fret import label, schema, score
from gecko.fret import pipeline as pipeline_lib
from gecko.fret import relabel as relabel_lib
from gecko.fret.cache import LLMCache
from gecko.fret.llm import LLMError

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
        yield beam.pvalue.TaggedOutput("failures", pipeline_lib.failure_record(result))
    _count("llm_calls", self.generator.llm_calls - before)


class _Relabel(_LLMDoFn):
  def __init__(self, *, options: dict, negative: str, ranking: str, seed: int, **kwargs):
    super().__init__(**kwargs)
    self.options, self.negative, self.ranking, self.seed = options, negative, ranking, seed

  def setup(self):
    super().setup()
    self.scorer = score.Scorer(llm=self.llm, cache=self.cache, ranking=self.ranking,
                               **self.options)

  def process(self, item):
    qid, joined = item
    (generated,), (passages,) = joined["generated"], joined["candidates"]
    seed_passage = next(p for p in passages if p["id"] == qid)
    before = self.scorer.llm_calls
    try:
      record, _, _ = relabel_lib.relabel(
          generated, passages=passages, seed_passage=seed_passage, scorer=self.scorer,
          negative=self.negative, ranking=self.ranking, seed=self.seed,
          llm_label=f"{self.llm.name}:{self.llm.model}")
    except LLMError as e:
      _count("failures")
      yield beam.pvalue.TaggedOutput("failures", pipeline_lib.failure_record(
          generate_lib.Failure(id=qid, task_type=generated.task_type,
                               reason=f"scoring failed: {e}", outputs=())))
      return
    finally:
      _count("llm_calls", self.scorer.llm_calls - before)
    _count("records")
    yield record


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
  """For a corpus block: each query's top-n (score, passage id) within the block."""

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
      for row, qid in enumerate(query_ids):
        yield qid, [(float(scores[row, j]), part_ids[index[row, j]]) for j in range(n)]


class _MergeTopN(beam.CombineFn):
  """Merges candidate lists into the global top n (score descending, then id)."""

  def __init__(self, n: int):
    self.n = n

  def _top(self, candidates):
    return sorted(candidates, key=lambda c: (-c[0], c[1]))[:self.n]

  def create_accumulator(self):
    return []

  def add_input(self, accumulator, candidates):
    return self._top(accumulator + list(candidates))

  def merge_accumulators(self, accumulators):
    return self._top([c for a in accumulators for c in a])

  def extract_output(self, accumulator):
    return [pid for _, pid in accumulator]


def _wanted(item):
  """(query id, neighbour ids) -> (passage id, (query id, rank)), the seed always in."""
  qid, ids = item
  if qid not in ids:
    ids = ids[:-1] + [qid]
  for rank, pid in enumerate(ids):
    yield pid, (qid, rank)


def _deliver(item):
  _, joined = item
  for passage in joined["passage"]:
    for qid, rank in joined["wanted"]:
      yield qid, (rank, passage)


def _candidates(item):
  qid, ranked = item
  return qid, [p for _, p in sorted(ranked, key=lambda rp: rp[0])]


def _seed_rank(seed: int):
  return lambda passage: zlib.crc32(f"{seed}:{passage['id']}".encode("utf-8"))


def build(root: beam.Pipeline, *, corpus_path: str, output_dir: str, llm, encoder: str,
          num_seeds: int | None, num_neighbors: int, negative: str, ranking: str,
          tfrecord: bool, num_shards: int, generator_options: dict, scorer_options: dict,
          batch_size: int, block_size: int, cache_path: str | None, seed: int) -> None:
  """Adds the FRet stages to `root` (see the module docstring)."""
  llm_args = {"llm": llm, "cache_path": cache_path}
  passages = (root
              | "ReadCorpus" >> beam.io.ReadFromText(corpus_path, coder=beam.coders.BytesCoder())
              | "Parse" >> beam.ParDo(_ParsePassage(corpus_path))
              | "GroupById" >> beam.GroupByKey()
              | "OnePerId" >> beam.Map(_one_per_id))
  corpus = passages | "Values" >> beam.Values()
  if num_seeds is not None:
    seeds = (corpus | "ChooseSeeds" >> beam.combiners.Top.Of(num_seeds, key=_seed_rank(seed))
             | "Unpack" >> beam.FlatMap(lambda chosen: chosen))
  else:
    seeds = corpus
  chunk = max(1, int(getattr(llm, "concurrency", 1)))
  generated = (seeds
               | "BatchSeeds" >> beam.BatchElements(min_batch_size=1, max_batch_size=chunk)
               | "Generate" >> beam.ParDo(_Generate(options=generator_options, seed=seed,
                                                    **llm_args)).with_outputs("failures",
                                                                              main="generated"))
  embed = _Embed(encoder=encoder, batch_size=batch_size)
  queries = (generated.generated
             | "QueryText" >> beam.MapTuple(lambda qid, g: (qid, GECKO.query(g.query,
                                                                              task=g.task)))
             | "BatchQueries" >> beam.BatchElements(min_batch_size=batch_size,
                                                    max_batch_size=batch_size * 8)
             | "EmbedQueries" >> beam.ParDo(embed)
             | "AllQueries" >> beam.combiners.ToList())
  neighbours = (corpus
                | "DocumentText" >> beam.Map(lambda p: (p["id"], GECKO.document(
                    p["text"], title=p["title"])))
                | "BatchDocuments" >> beam.BatchElements(min_batch_size=batch_size,
                                                         max_batch_size=batch_size * 8)
                | "EmbedCorpus" >> beam.ParDo(embed)
                | "Blocks" >> beam.BatchElements(min_batch_size=1,
                                                 max_batch_size=max(1, block_size // batch_size))
                | "BlockTopN" >> beam.ParDo(_BlockTopN(n=num_neighbors, block_size=block_size),
                                            queries=beam.pvalue.AsSingleton(queries))
                | "MergeTopN" >> beam.CombinePerKey(_MergeTopN(num_neighbors)))
  candidates = (
      {"wanted": neighbours | "Wanted" >> beam.FlatMap(_wanted), "passage": passages}
      | "JoinPassages" >> beam.CoGroupByKey()
      | "Deliver" >> beam.FlatMap(_deliver)
      | "GroupByQuery" >> beam.GroupByKey()
      | "Candidates" >> beam.Map(_candidates))
  relabelled = (
      {"generated": generated.generated, "candidates": candidates}
      | "JoinQueries" >> beam.CoGroupByKey()
      | "Relabel" >> beam.ParDo(_Relabel(options=scorer_options, negative=negative,
                                         ranking=ranking, seed=seed, **llm_args)
                                ).with_outputs("failures", main="records"))
  records = relabelled.records
  prefix = os.path.join(output_dir, "fret")
  _ = (records | "ToJson" >> beam.Map(lambda r: json.dumps(r, ensure_ascii=False))
       | "WriteJsonl" >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl",
                                             num_shards=num_shards))
  if tfrecord:
    _ = (records | "ToExample" >> beam.Map(schema.tf_example)
         | "WriteTFRecord" >> beam.io.WriteToTFRecord(prefix, file_name_suffix=".tfrecord",
                                                      num_shards=num_shards))
  _ = ((generated.failures, relabelled.failures) | "AllFailures" >> beam.Flatten()
       | "FailuresToJson" >> beam.Map(json.dumps)
       | "WriteFailures" >> beam.io.WriteToText(os.path.join(output_dir, "failures"),
                                                file_name_suffix=".jsonl"))


def run(*, corpus_path: str, output_dir: str, llm, encoder: str = "all-MiniLM-L6-v2",
        num_seeds: int | None = None, num_neighbors: int = 20, negative: str = "lowest",
        ranking: str = "rrf", tfrecord: bool = False, num_shards: int = 0,
        generator_options: dict | None = None, scorer_options: dict | None = None,
        batch_size: int = 64, block_size: int = 65536, cache_path: str | None = None,
        seed: int = 0, pipeline_args: Sequence[str] = ()) -> dict[str, object]:
  """Runs the FRet pipeline on Beam and waits for it; returns the run summary.

  Args:
    corpus_path, output_dir, llm, encoder, num_seeds, num_neighbors, negative, ranking,
      tfrecord, generator_options, scorer_options, batch_size, seed: as in
      `gecko.fret.pipeline.run` (local or gs:// paths), except that NUM_SEEDS seeds are
      a hash-chosen sample rather than the first passages of the file.
    num_shards: Output shards (0: the runner decides).
    block_size: Corpus rows scored per retrieval call (exact search shuffles about
      queries x num_neighbors x corpus / block_size candidates).
    cache_path: A local SQLite LLM cache shared by the workers of one machine (None:
      no cache, e.g. on Dataflow).
    pipeline_args: Beam pipeline options, e.g. ["--runner=DataflowRunner", ...].
  """
  from gecko import gin_flags
  if corpus_lib.is_plain_text(corpus_path):
    raise ValueError(f"{corpus_path}: the Beam pipeline reads JSONL or BEIR corpus.jsonl; "
                     "convert the plain-text corpus to JSONL ({\"id\", \"text\"} per line).")
  pipeline_lib.check_count("num_seeds", num_seeds, allow_none=True)
  pipeline_lib.check_count("num_neighbors", num_neighbors, minimum=2)
  pipeline_lib.check_count("num_shards", num_shards, minimum=0)
  pipeline_lib.check_count("block_size", block_size)
  if getattr(llm, "check", None):
    llm.check()  # a dead server or a missing key fails here, before any worker starts
  for name, value, choices in (("negative", negative, label.NEGATIVE_CHOICES),
                               ("ranking", ranking, label.RANKINGS)):
    if value not in choices:
      raise ValueError(f"{name}={value!r}; use one of {choices}.")
  start = time.perf_counter()
  if not FileSystems.exists(output_dir):
    FileSystems.mkdirs(output_dir)
  if not output_dir.startswith("gs://"):
    gin_flags.write_operative_config(output_dir)
  root = beam.Pipeline(options=PipelineOptions(list(pipeline_args)))
  build(root, corpus_path=corpus_path, output_dir=output_dir, llm=llm, encoder=encoder,
        num_seeds=num_seeds, num_neighbors=num_neighbors, negative=negative, ranking=ranking,
        tfrecord=tfrecord, num_shards=num_shards, generator_options=generator_options or {},
        scorer_options=scorer_options or {}, batch_size=batch_size, block_size=block_size,
        cache_path=cache_path, seed=seed)
  result = root.run()
  result.wait_until_finish()
  counters = {c.key.metric.name: c.committed for c in
              result.metrics().query()["counters"] if c.key.metric.namespace == NAMESPACE}
  shards = [m.path for m in FileSystems.match([os.path.join(output_dir, "fret-*.jsonl")])[0]
            .metadata_list]
  records = pipeline_lib.read_records(sorted(shards), open_binary=FileSystems.open)
  scores = {f"{name}_{part}": [r[f"{part}_{name}"] for r in records
                                if r[f"{part}_{name}"] is not None]
            for name in ("ql", "rc") for part in ("positive", "negative")}
  summary = pipeline_lib.summarize(
      records, shards=len(shards), failures=counters.get("failures", 0), skipped=0,
      llm_calls=counters.get("llm_calls", 0), cache_hits=0,
      seconds=time.perf_counter() - start,
      corpus={name: counters.get(name, 0) for name in CORPUS_COUNTERS})
  pipeline_lib.write_summary(summary, scores, output_dir, create=FileSystems.create)
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
                       pipeline_args=beam_argv)


if __name__ == "__main__":
  from gecko.fret import beam as _beam_module  # gin binds the importable module
  sys.exit(_beam_module.main(sys.argv[1:]))
