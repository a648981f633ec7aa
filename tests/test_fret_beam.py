"""The FRet pipeline on Apache Beam's DirectRunner, with the real SmolLM2 and MiniLM:
the same records as the one-machine pipeline, a cached rerun without LLM calls, and
shards the FRet SeqIO task reads."""

import json
import pathlib
import shutil
import sys

import pytest
from conftest import fret_records, require_module, run_cli

from gecko.fret import schema

require_module("apache_beam", "the Beam pipeline (the [beam] extra, which make install installs)")


def _by_id(records):
  return {r["id"]: r for r in records}


@pytest.mark.slow
def test_beam_writes_the_records_of_the_local_pipeline_from_one_config(fret_corpus, tmp_path,
                                                                       smollm2):
  from gecko.fret import beam, pipeline
  from gecko.fret.config import FretConfig
  # Beam takes NUM_SEEDS passages and judges near-duplicates by a hash of (seed, id),
  # the local runner in file order: a corpus written in hash order gives both the same.
  seed = 3
  passages = [json.loads(line) for line in fret_corpus.read_text().splitlines()]
  corpus = tmp_path / "corpus.jsonl"
  corpus.write_text("".join(json.dumps(p) + "\n" for p in sorted(
      passages, key=lambda p: beam._seed_rank(seed)(p["id"]), reverse=True)))
  # Every field away from its default where a runner that dropped it would differ.
  fields = dict(corpus=str(corpus), num_seeds=9, num_neighbors=3, negative="random",
                ranking="rc", tfrecord=True, seed=seed, consistency_top_k=2, dedup_cosine=0.5,
                generator_options={"task_types": ["question answering", "fact checking"]},
                scorer_options={"rc_score": "margin"}, batch_size=4)
  out, cache = tmp_path / "beam", tmp_path / "beam_cache.sqlite"
  summary = beam.run(FretConfig(output_dir=str(out), **fields), llm=smollm2,
                     num_shards=2, block_size=5, cache_path=str(cache),
                     pipeline_args=["--direct_num_workers=1"])
  got = _by_id(fret_records(out))
  assert sorted(p.name for p in out.glob("fret-*")) == [
      "fret-00000-of-00002.jsonl", "fret-00000-of-00002.tfrecord",
      "fret-00001-of-00002.jsonl", "fret-00001-of-00002.tfrecord"]
  assert summary["records"] == len(got) >= 3 and summary["llm_calls_this_run"] > 0
  assert summary["corpus"] == {"passages": 12, "empty_skipped": 0, "duplicate_ids_skipped": 0,
                               "invalid_utf8_lines": 0}
  # Both filters are exercised: each dropped something.
  assert summary["queries"]["dropped_this_run"] > 0
  assert summary["consistency"]["dropped_this_run"] > 0
  assert (out / "summary.png").stat().st_size > 0 and not (out / beam.QUERIES).exists()

  # The one-machine pipeline, given Beam's LLM cache, makes no LLM call (it sends the
  # same prompts) and writes the same records: same seeds, generation, de-duplication,
  # retrieval (Beam's blocks of 5 merged per query), labels and filter.
  local_out = tmp_path / "local"
  local_out.mkdir()
  shutil.copy(cache, local_out / "llm_cache.sqlite")
  local = pipeline.run(FretConfig(output_dir=str(local_out), **fields),
                       llm=smollm2, shard_size=100)
  assert local["llm_calls_this_run"] == 0
  assert _by_id(fret_records(local_out)) == got
  for key in ("positive_not_seed_fraction", "task_types", "queries", "consistency"):
    assert summary[key] == local[key], key
  for record in got.values():
    assert not schema.problems(record)
    assert record["positive_ql"] is None and record["positive_rc"] is not None  # ranking rc
    assert record["candidate_ql"] is None and len(record["candidate_rc"]) == 3
    at = record["candidate_ids"].index(record["positive_id"])
    assert record["candidate_rc"][at] == record["positive_rc"] == max(record["candidate_rc"])

  # The command line binds the same FretConfig (gin/runs/fret.gin) for Beam: a rerun
  # on the same cache repeats no LLM call and writes the same records.
  cmd = [sys.executable, "-m", "gecko.fret.beam", "--gin_file=gin/runs/fret.gin",
         "--gin_file=gin/overlays/fret_beam.gin", f"--gin.CORPUS='{corpus}'",
         f"--gin.OUTPUT_DIR='{out}'", "--gin.NUM_SEEDS=9", "--gin.NUM_NEIGHBORS=3",
         "--gin.NEGATIVE='random'", "--gin.RANKING='rc'", "--gin.TFRECORD=True",
         f"--gin.SEED={seed}", "--gin.CONSISTENCY_TOP_K=2", "--gin.DEDUP_COSINE=0.5",
         "--gin.config.FretConfig.generator_options="
         "{'task_types': ['question answering', 'fact checking']}",
         "--gin.config.FretConfig.scorer_options={'rc_score': 'margin'}",
         "--gin.config.FretConfig.batch_size=4", "--gin.NUM_SHARDS=2", "--gin.BLOCK_SIZE=5",
         f"--gin.BEAM_CACHE='{cache}'", "--gin.llm.LlamaCpp.n_ctx=1024", "--",
         "--direct_num_workers=1"]
  result = run_cli(cmd, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads((out / "summary.json").read_text())["llm_calls_this_run"] == 0
  assert _by_id(fret_records(out)) == got

  # The FRet SeqIO task reads the Beam shards (the TFRecord copies), each record once.
  import gecko_tasks  # noqa: F401
  import seqio

  from gecko.data import sources as seqio_sources
  (tmp_path / "data").mkdir()
  (tmp_path / "data" / "fret").symlink_to(out, target_is_directory=True)
  with seqio_sources.using(seqio_sources.DataOptions(data_dir=str(tmp_path / "data"))):
    examples = list(seqio.get_mixture_or_task("gecko_fret").get_dataset(
        sequence_length=None, split="train", shuffle=False).as_numpy_iterator())
  assert len(examples) == len(got)

  # The seed filter on the same queries (the cache: no LLM call): both runners drop the
  # same queries before scoring, and write the same records.
  on_beam, local = _both_runners(dict(fields, seed_top_k=3), cache=cache, llm=smollm2,
                                 out=tmp_path / "seeded")
  assert on_beam["seed_retrieval"] == local["seed_retrieval"]
  assert local["seed_retrieval"]["dropped_this_run"] > 0
  # (the one dropped was inconsistent)
  assert set(_by_id(fret_records(tmp_path / "seeded_local"))) <= set(got)

  # The generic-query guard and the window negative (ranks 2-8, each runner's retrieval
  # that deep, the seed's own cosine from its block on Beam): the same drops and records.
  on_beam, local = _both_runners(
      dict(fields, negative="window", negative_window=(2, 8), negative_max_ratio=0.97,
           min_spread=0.2, consistency_top_k=None), cache=cache, llm=smollm2,
      out=tmp_path / "window")
  for key in ("generic_queries", "window_negative"):
    assert on_beam[key] == local[key], key
  assert local["generic_queries"]["dropped_this_run"] > 0 and local["records"] > 0


def _both_runners(fields, *, cache, llm, out):
  """Beam (into OUT_beam) and the local runner (OUT_local), both on the LLM `cache`:
  neither makes an LLM call and both write the same records; their summaries."""
  from gecko.fret import beam, pipeline
  from gecko.fret.config import FretConfig
  on_beam = beam.run(FretConfig(output_dir=f"{out}_beam", **fields), llm=llm, num_shards=1,
                     block_size=5, cache_path=str(cache),
                     pipeline_args=["--direct_num_workers=1"])
  local_dir = pathlib.Path(f"{out}_local")
  local_dir.mkdir()
  shutil.copy(cache, local_dir / "llm_cache.sqlite")
  local = pipeline.run(FretConfig(output_dir=str(local_dir), **fields), llm=llm, shard_size=100)
  assert on_beam["llm_calls_this_run"] == local["llm_calls_this_run"] == 0
  assert _by_id(fret_records(pathlib.Path(f"{out}_beam"))) == _by_id(fret_records(local_dir))
  return on_beam, local


def test_both_runners_take_the_one_gin_binding_of_the_config():
  """`--gin.DEDUP_COSINE=0.9` (or any FRet macro) reaches Beam as it reaches the local
  runner: both take fret.gin's one `config.FretConfig` binding."""
  import gin

  from gecko import gin_flags
  from gecko.fret import beam, pipeline
  from gecko.fret.config import FretConfig
  gin_flags.configure(["gin/runs/fret.gin", "gin/overlays/fret_beam.gin"],
                  ["CORPUS='c.jsonl'", "OUTPUT_DIR='out'", "DEDUP_COSINE=0.9",
                   "CONSISTENCY_TOP_K=2", "SEED_TOP_K=2", "NUM_SEEDS=7",
                   "NEGATIVE='window'", "NEGATIVE_WINDOW=[5, 30]", "NEGATIVE_MAX_RATIO=0.9",
                   "MIN_SPREAD=0.05", "llm.LlamaCpp.n_ctx=64"])
  try:
    local, on_beam = (gin.get_bindings(fn)["config"] for fn in (pipeline.run, beam.run))
  finally:
    gin.clear_config()
  assert isinstance(local, FretConfig) and local == on_beam
  assert (on_beam.dedup_cosine, on_beam.consistency_top_k, on_beam.seed_top_k,
          on_beam.num_seeds) == (0.9, 2, 2, 7)
  assert (on_beam.negative, on_beam.negative_window, on_beam.negative_max_ratio,
          on_beam.min_spread, on_beam.retrieval_depth) == ("window", (5, 30), 0.9, 0.05, 30)


def test_beam_refuses_what_it_cannot_read(tmp_path):
  from gecko.fret import beam
  text = tmp_path / "passages.txt"
  text.write_text("one passage\n")
  from gecko.fret.config import FretConfig
  with pytest.raises(ValueError, match="convert the plain-text corpus to JSONL"):
    beam.run(FretConfig(corpus=str(text), output_dir=str(tmp_path / "out")), llm=None)
  with pytest.raises(ValueError, match="ranking='bm25'"):
    FretConfig(corpus=str(tmp_path / "c.jsonl"), output_dir=str(tmp_path / "out"),
               ranking="bm25")
  assert beam.split_args(["--gin_file=a.gin", "--", "--runner=DataflowRunner"]) == (
      ["--gin_file=a.gin"], ["--runner=DataflowRunner"])
