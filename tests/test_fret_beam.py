"""The FRet pipeline on Apache Beam's DirectRunner, with the real SmolLM2 and MiniLM:
the same records as the one-machine pipeline, a cached rerun without LLM calls, and
shards the FRet SeqIO task reads."""

import json
import sys

import pytest
from conftest import fret_records, require_module, run_cli

from gecko.fret import schema

require_module("apache_beam", "the Beam pipeline (the [beam] extra, which make install installs)")


def _by_id(records):
  return {r["id"]: r for r in records}


@pytest.mark.slow
def test_beam_writes_the_records_of_the_local_pipeline(fret_corpus, tmp_path):
  import shutil

  from gecko.fret import pipeline
  from gecko.fret.llm import LlamaCpp
  out = tmp_path / "fret"
  cache = tmp_path / "beam_cache.sqlite"
  cmd = [sys.executable, "-m", "gecko.fret.beam", "--gin_file=gin/runs/fret.gin",
         "--gin_file=gin/overlays/fret_beam.gin", f"--gin.CORPUS='{fret_corpus}'",
         f"--gin.OUTPUT_DIR='{out}'", "--gin.NUM_NEIGHBORS=3", "--gin.NUM_SHARDS=2",
         "--gin.TFRECORD=True", "--gin.BLOCK_SIZE=5", f"--gin.BEAM_CACHE='{cache}'",
         "--gin.llm.LlamaCpp.n_ctx=1024", "--", "--direct_num_workers=1"]
  result = run_cli(cmd, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((out / "summary.json").read_text())
  got = _by_id(fret_records(out))
  assert sorted(p.name for p in out.glob("fret-*")) == [
      "fret-00000-of-00002.jsonl", "fret-00000-of-00002.tfrecord",
      "fret-00001-of-00002.jsonl", "fret-00001-of-00002.tfrecord"]
  assert summary["records"] == len(got) >= 9 and summary["llm_calls_this_run"] > 0
  assert summary["corpus"] == {"passages": 12, "empty_skipped": 0, "duplicate_ids_skipped": 0,
                               "invalid_utf8_lines": 0}
  assert (out / "summary.png").stat().st_size > 0

  # The one-machine pipeline, given Beam's LLM cache, makes no LLM call (it sends the
  # same prompts) and writes the same records: same generation, retrieval (Beam's
  # blocks of 5 merged per query) and labels.
  local_out = tmp_path / "local"
  local_out.mkdir()
  shutil.copy(cache, local_out / "llm_cache.sqlite")
  local = pipeline.run(corpus_path=str(fret_corpus), output_dir=str(local_out),
                       llm=LlamaCpp(n_ctx=1024), num_neighbors=3, shard_size=100)
  assert local["llm_calls_this_run"] == 0
  expected = _by_id(fret_records(local_out))
  assert got == expected
  assert summary["positive_not_seed_fraction"] == local["positive_not_seed_fraction"]
  for record in got.values():
    assert not schema.problems(record)

  # A rerun on the same cache repeats no LLM call and writes the same records.
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


def test_beam_refuses_what_it_cannot_read(tmp_path):
  from gecko.fret import beam
  text = tmp_path / "passages.txt"
  text.write_text("one passage\n")
  with pytest.raises(ValueError, match="convert the plain-text corpus to JSONL"):
    beam.run(corpus_path=str(text), output_dir=str(tmp_path / "out"), llm=None)
  with pytest.raises(ValueError, match="ranking='bm25'"):
    beam.run(corpus_path=str(tmp_path / "c.jsonl"), output_dir=str(tmp_path / "out"),
             llm=None, ranking="bm25")
  assert beam.split_args(["--gin_file=a.gin", "--", "--runner=DataflowRunner"]) == (
      ["--gin_file=a.gin"], ["--runner=DataflowRunner"])
