"""The data each row of the domain-adaptation experiment trains on
(`gecko.experiments.adaptation_data`): in_domain's records, the human dev split and
the test claims about training documents, records capped to a count, the seed-ranked
FRet records, and the human mixture's data directory."""

import functools
import os
import shutil
import zlib

import pytest
from conftest import SHARED_DATA

from gecko.data import jsonl
from gecko.evaluation import datasets
from gecko.experiments import adaptation_data, human_dev, in_domain, recipes
from gecko.fret import schema

SCIFACT = SHARED_DATA / "scifact"

def test_in_domain_records_take_judged_positives_and_unjudged_negatives(beir_corpus, tmp_path):
  corpus_path = tmp_path / "corpus.jsonl"
  adaptation_data.write_corpus(str(beir_corpus), str(corpus_path))
  made = in_domain.records(corpus_dir=str(beir_corpus), corpus_path=str(corpus_path),
                           output_dir=str(tmp_path / "in_domain"), neighbors=4,
                           encoder="all-MiniLM-L6-v2")
  qrels = datasets.load_beir(str(beir_corpus), split="train").qrels
  assert len(made) == sum(len(docs) for docs in qrels.values()) == 7
  for r in made:
    query_id = r["id"].split("-")[0]
    assert not schema.problems(r), r
    assert r["positive_id"] in qrels[query_id] and r["negative_id"] not in qrels[query_id]
    assert r["positive_is_seed"] and r["llm"] == "human" and r["task"] == "fact checking"


def test_the_human_dev_split_keeps_queries_that_share_a_document_together():
  # a-b share d1, b-c share d2: one group {a, b, c}; e alone; f-g share d9.
  qrels = {"a": {"d1": 1}, "b": {"d1": 1, "d2": 1}, "c": {"d2": 1, "d3": 0},
           "e": {"d4": 1, "d3": 1}, "f": {"d9": 1}, "g": {"d9": 2, "d8": 1}}
  for fraction in (2, 3, 7):  # each puts some groups on either side (5 puts none in dev)
    dev, train = human_dev.split_qrels(qrels, fraction=fraction)
    assert sorted(dev + train) == sorted(qrels) and not set(dev) & set(train)
    for group in ({"a", "b", "c"}, {"e"}, {"f", "g"}):
      assert group <= set(dev) or group <= set(train), (fraction, group)
    by_hand = {q for group in ({"a", "b", "c"}, {"e"}, {"f", "g"})
               if zlib.crc32(min(group).encode()) % fraction == 0 for q in group}
    assert set(dev) == by_hand
    positives = lambda ids: {d for q in ids for d, r in qrels[q].items() if r > 0}  # noqa: E731
    assert not positives(dev) & positives(train)
  with pytest.raises(ValueError, match="fraction=1 must be >= 2"):
    human_dev.split_qrels(qrels, fraction=1)
  with pytest.raises(ValueError, match="leaves no dev query: too few queries"):
    human_dev.split_qrels(qrels, fraction=5)  # crc32 of a, e, f: 2, 4, 1 (mod 5)


def test_the_human_dev_split_of_beir_training_queries_is_a_task_and_trains_in_domain_apart(
    beir_corpus, tmp_path):
  split = human_dev.split(str(beir_corpus), fraction=2)
  assert split.dev and split.train
  task = human_dev.write_task(str(beir_corpus), split, str(tmp_path / "dev"))
  dev = datasets.load_beir(task, split="test")
  train = datasets.load_beir(str(beir_corpus), split="train")
  assert sorted(dev.qrels) == list(split.dev)
  assert dev.qrels == {q: train.qrels[q] for q in split.dev}
  assert dev.corpus == train.corpus and dev.queries == {q: train.queries[q] for q in split.dev}
  assert recipes.Recipe(human_dev=True).row_name("in_domain") == "in_domain+trainpart"
  assert recipes.Recipe(human_dev=True).row_name("main") == "main"
  with pytest.raises(ValueError, match=r"query_ids \['nope'\] are not judged"):
    in_domain.records(corpus_dir=str(beir_corpus), corpus_path=str(tmp_path / "c.jsonl"),
                      output_dir=str(tmp_path), neighbors=2, encoder="all-MiniLM-L6-v2",
                      query_ids=["nope"])


@pytest.mark.skipif(not SCIFACT.is_dir(), reason=f"needs SciFact in {SCIFACT} (../shared/data)")
def test_scifacts_human_dev_split_is_the_one_round_5_states():
  split = human_dev.split(str(SCIFACT))
  qrels = datasets.load_beir(str(SCIFACT), split="train").qrels
  pairs = lambda ids: sum(1 for q in ids for r in qrels[q].values() if r > 0)  # noqa: E731
  assert (len(split.dev), pairs(split.dev), len(split.train), pairs(split.train)) == (
      179, 213, 630, 706)
  positives = lambda ids: {d for q in ids for d, r in qrels[q].items() if r > 0}  # noqa: E731
  assert not positives(split.dev) & positives(split.train)
  # The test claims judged on a training claim's document, and the two that are
  # verbatim training claims among them.
  seen = human_dev.on_training_documents(str(SCIFACT))
  assert len(seen) == 196 and {"870", "1292"} <= set(seen)
  test = datasets.load_beir(str(SCIFACT)).qrels
  assert len({d for docs in test.values() for d, r in docs.items() if r > 0}
             & positives(qrels)) == 181


def test_test_queries_on_training_documents(tmp_path):
  jsonl.write(tmp_path / "corpus.jsonl", [{"_id": f"d{i}", "title": "", "text": f"doc {i}"}
                                          for i in range(4)])
  jsonl.write(tmp_path / "queries.jsonl", [{"_id": q, "text": f"query {q}"} for q in "abcxy"])
  (tmp_path / "qrels").mkdir()
  (tmp_path / "qrels" / "test.tsv").write_text(
      "query-id\tcorpus-id\tscore\na\td1\t1\nb\td2\t1\nc\td3\t1\nc\td0\t1\n")
  (tmp_path / "qrels" / "train.tsv").write_text(  # y judges d2 not relevant
      "query-id\tcorpus-id\tscore\nx\td1\t1\nx\td0\t2\ny\td2\t0\ny\td3\t0\n")
  assert human_dev.on_training_documents(str(tmp_path)) == ("a", "c")


@pytest.mark.slow  # the driver's side of it; tests/test_fret_pipeline.py keeps the ranking fast
def test_a_seed_ranked_variant_calls_the_llm_itself_and_replays_from_its_calls(
    beir_corpus, tmp_path, smollm2):
  """unranked_no_same_tower: generation alone, without running the base variant; its
  calls are kept as text, and a directory holding only them replays the records."""
  variant = recipes.VARIANTS["unranked_no_same_tower"]
  assert variant.ranking == "seed" and recipes.NO_SAME_TOWER_GIN in variant.gin_files
  assert recipes.VARIANTS["unranked"].ranking == "seed"  # the same records, Eq. 3 whole
  assert recipes.VARIANTS["unranked"].gin_files == ()
  fret = functools.partial(adaptation_data.run_fret, corpus_dir=str(beir_corpus),
                           variant=variant, recipe=recipes.Recipe(), passages=4, neighbors=3,
                           llm=smollm2)
  for out in (tmp_path / "run", tmp_path / "clone"):
    adaptation_data.write_corpus(str(beir_corpus), str(out / "corpus.jsonl"))
  made, summary = fret(output_dir=str(tmp_path / "run"),
                       corpus_path=str(tmp_path / "run" / "corpus.jsonl"))
  assert made and all(r["positive_id"] == r["seed_id"] and r["candidate_ql"] is None
                      for r in made)
  assert not (tmp_path / "run" / "fret_rrf_lowest").exists()  # the base never ran
  calls = tmp_path / "run" / adaptation_data.CALLS_DIR / "fret_seed_lowest.jsonl"
  assert len(calls.read_text().splitlines()) == summary["llm_calls_this_run"] > 0
  (tmp_path / "clone" / adaptation_data.CALLS_DIR).mkdir()
  shutil.copy(calls, tmp_path / "clone" / adaptation_data.CALLS_DIR)
  replayed, again = fret(output_dir=str(tmp_path / "clone"),
                         corpus_path=str(tmp_path / "clone" / "corpus.jsonl"))
  assert again["llm_calls_this_run"] == 0 and replayed == made


def test_capped_records_keep_the_held_out_ones_and_nest(beir_corpus, tmp_path):
  made = [{"id": f"q{i}-d{i}"} for i in range(40)]
  held = [r["id"] for r in made if zlib.crc32(r["id"].encode()) % adaptation_data.DEV_FRACTION == 0]
  assert 0 < len(held) < 40
  by_hash = sorted((r["id"] for r in made if r["id"] not in held),
                   key=lambda i: zlib.crc32(i.encode()))
  small = adaptation_data.capped(made, count=5, keep_held_out=True)
  assert [r["id"] for r in small] == [r["id"] for r in made
                                      if r["id"] in set(held) | set(by_hash[:5])]  # in order
  larger = {r["id"] for r in adaptation_data.capped(made, count=9, keep_held_out=True)}
  assert {r["id"] for r in small} < larger
  assert len(adaptation_data.capped(made, count=5, keep_held_out=False)) == 5
  with pytest.raises(ValueError, match="max_records=41 exceeds the 40 training records"):
    adaptation_data.capped(made, count=41, keep_held_out=False)

  # in_domain with the human dev split trains on all its records: the cap takes 4 of 6
  # pairs, in a data directory of its own.
  corpus_path = tmp_path / "corpus.jsonl"
  adaptation_data.write_corpus(str(beir_corpus), str(corpus_path))
  data = functools.partial(
      adaptation_data.row_data, variant=recipes.VARIANTS["in_domain"], corpus_dir=str(beir_corpus),
      output_dir=str(tmp_path), corpus_path=str(corpus_path), passages=15, neighbors=3,
      sts_dir=None, banking77_dir=None, llm_url=None, llm_model=None)
  every = data(recipe=recipes.Recipe(human_dev=True))
  four = data(recipe=recipes.Recipe(human_dev=True, max_records=4))
  assert every.counts["train"] == 6 and four.counts["train"] == 4 and four.dev_dir is None
  assert four.data_dir == str(tmp_path / "data" / "in_domain_trainpart_records4")
  shard = lambda d: jsonl.read_objects(os.path.join(d, "fret", "fret-00000.jsonl"))  # noqa: E731
  assert [r["id"] for r in shard(four.data_dir)] == [
      r["id"] for r in adaptation_data.capped(shard(every.data_dir), count=4,
                                              keep_held_out=False)]


def test_human_data_links_sts_and_writes_banking77(human_dirs, tmp_path):
  sts, banking = human_dirs
  (tmp_path / "data" / "fret").mkdir(parents=True)
  mixed = adaptation_data.human_data(output_dir=str(tmp_path), data_dir=str(tmp_path / "data"),
                                       sts_dir=str(sts), banking77_dir=str(banking))
  assert mixed.endswith("data+human")
  assert os.path.realpath(os.path.join(mixed, "stsb")) == str(sts)
  assert os.path.realpath(os.path.join(mixed, "fret")) == str(tmp_path / "data" / "fret")
  rows = jsonl.read_objects(os.path.join(mixed, "classification", "banking77.jsonl"),
                            what="classification")
  assert len(rows) == 12 and {r["label"] for r in rows} == {0, 1, 2}
  with pytest.raises(ValueError, match="--human needs --banking77_dir"):
    adaptation_data.human_data(output_dir=str(tmp_path), data_dir=str(tmp_path / "data"),
                                 sts_dir=str(sts), banking77_dir=None)
