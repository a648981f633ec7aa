"""The data each row of the domain-adaptation experiment trains on
(`gecko.experiments.domain_adaptation`): the BEIR corpus as FRet's pool, the FRet
records of a variant under a recipe (made once, relabelled from the base run's LLM
cache for the other rankings and negatives), the in-domain records of the corpus's
own training queries, the record split, and the human mixture's TASK_DATA_DIR."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
import zlib
from collections.abc import Sequence
from typing import NamedTuple

from gecko.data import jsonl
from gecko.data.packaged_models import DEFAULT_MODEL
from gecko.experiments import human_dev, in_domain, stages
from gecko.experiments.recipes import VARIANTS, Recipe, Variant, seeds_part
from gecko.fret import heldout

START_MODEL = DEFAULT_MODEL  # the encoder FRet retrieves with, and the rows start from
DEV_FRACTION = 5
FEW_SHOT = 8  # --few_shot_type: the corpus's training queries shown to the LLM
BASE = VARIANTS["main"]
# A candidates variant's triples in its data dir, where gecko_fret_candidates reads them.
CANDIDATES_FILE = os.path.join("fret_candidates", "candidates.jsonl")
CALLS_DIR = "llm_calls"  # each FRet run's LLM calls as text (LLMCache.export)


def write_corpus(corpus_dir: str, path: str) -> int:
  """The BEIR corpus as FRet JSONL in a fixed shuffled order (`stages.write_corpus`);
  returns its size."""
  from gecko.fret import corpus as corpus_lib
  source = os.path.join(corpus_dir, "corpus.jsonl")
  if not os.path.exists(source):
    raise FileNotFoundError(f"{source!r} not found: --corpus_dir must be a BEIR directory "
                            "(corpus.jsonl, queries.jsonl, qrels/test.tsv).")
  return len(stages.write_corpus(corpus_lib.read_corpus(source)[0], path))


def run_fret(*, corpus_dir: str, output_dir: str, corpus_path: str, variant: Variant,
             recipe: Recipe, passages: int, neighbors: int, llm) -> tuple[list[dict], dict]:
  """(records, summary) for `variant` under `recipe`. The base variant calls the LLM, and
  the others relabel its queries from its cache; a variant ranked by the seed (no LLM
  score) calls the LLM itself for what the base's cache lacks (its own generations), on
  as many seeds as `passages`, without running the base."""
  from gecko.fret.cache import LLMCache
  from gecko.fret.config import FretConfig
  fret_dir = os.path.join(output_dir, recipe.fret_name(variant))
  base = dataclasses.replace(recipe, consistency_top_k=None)  # the filter relabels its cache
  base_dir = os.path.join(output_dir, base.fret_name(BASE))
  calls_llm = fret_dir == base_dir or variant.ranking == "seed"
  if fret_dir != base_dir:
    if not calls_llm:
      run_fret(corpus_dir=corpus_dir, output_dir=output_dir, corpus_path=corpus_path,
               variant=BASE, recipe=base, passages=passages, neighbors=neighbors, llm=llm)
    copy_missing(glob.glob(os.path.join(base_dir, "llm_cache.sqlite")) +
                 glob.glob(os.path.join(base_dir, "corpus_embeddings_*.npy")), fret_dir)
  # A run that calls the LLM (the others relabel the base's cache) keeps its calls as
  # text under OUTPUT_DIR/llm_calls, and replays them when its cache is absent (a fresh
  # clone).
  calls = os.path.join(output_dir, CALLS_DIR, f"{recipe.fret_name(variant)}.jsonl")
  cache_path = os.path.join(fret_dir, "llm_cache.sqlite")
  if calls_llm and os.path.exists(calls):
    with LLMCache(cache_path) as cache:
      cache.merge(calls)
  options = recipe.llm_options()
  if recipe.few_shot_type is not None:
    options.update(task_types=[recipe.few_shot_type], few_shot=few_shot_examples(
        corpus_dir=corpus_dir, output_dir=output_dir, task_type=recipe.few_shot_type))
  made = stages.fret(FretConfig(
      corpus=corpus_path, output_dir=fret_dir, num_seeds=passages, num_neighbors=neighbors,
      ranking=variant.ranking, negative=variant.negative, generator_options=options,
      dedup_cosine=recipe.dedup_cosine, consistency_top_k=recipe.consistency_top_k), llm=llm)
  if calls_llm:
    with LLMCache(cache_path) as cache:
      cache.export(calls)
  # The FRet directory may hold more seeds' records (a run of more --passages): these
  # are the records of the first `passages` seeds alone.
  seeds = {p["id"] for p in jsonl.read_objects(corpus_path, what="FRet corpus")[:passages]}
  records, summary = made
  return [r for r in records if r["id"] in seeds], summary


def few_shot_examples(*, corpus_dir: str, output_dir: str, task_type: str) -> str:
  """OUTPUT_DIR/few_shot_<type>.jsonl: FEW_SHOT of the corpus's training queries (from
  the train side of the human dev split: no dev query is shown to the LLM) as the
  generation prompt's examples of `task_type` (written the first time)."""
  from gecko.experiments import few_shot
  from gecko.fret import generate
  path = os.path.join(output_dir, f"few_shot_{task_type.replace(' ', '_')}.jsonl")
  if not os.path.exists(path):
    jsonl.write(path, few_shot.from_beir(
        corpus_dir, count=FEW_SHOT, task=generate.example_task(task_type), task_type=task_type,
        query_ids=human_dev.split(corpus_dir).train))
  return path


def copy_missing(paths: Sequence[str], directory: str) -> None:
  """Copies each of `paths` into `directory` unless a file of that name is there (the
  caches' names hold their keys, so a copy is valid wherever it lands)."""
  os.makedirs(directory, exist_ok=True)
  for path in paths:
    target = os.path.join(directory, os.path.basename(path))
    if not os.path.exists(target):
      shutil.copyfile(path, target)


def candidate_count(data_dir: str) -> int:
  """K, the candidates per query in `data_dir`'s triples (`CANDIDATES_FILE`: the same K
  in every line, which the SeqIO task checks)."""
  with open(os.path.join(data_dir, CANDIDATES_FILE), encoding="utf-8") as f:
    return len(json.loads(f.readline())["candidates"])


def split_records(records: Sequence[dict], *, data_dir: str, dev_dir: str,
                  corpus_path: str) -> tuple[int, int]:
  """Training shards in DATA_DIR/fret; the dev records as a BEIR task (their label)."""
  corpus = jsonl.read_objects(corpus_path, what="FRet corpus")
  return heldout.split_records(records, fraction=DEV_FRACTION, data_dir=data_dir,
                               eval_dir=dev_dir, corpus=corpus, hint="--passages",
                               qrels={"test": "positive_id"})


def capped(records: Sequence[dict], *, count: int, keep_held_out: bool) -> list[dict]:
  """`records` with `count` of those that train: the ones whose id has the lowest crc32
  (stable; a smaller count keeps a subset of a larger one). With `keep_held_out`, the
  records `split_records` holds out for dev are all kept and not counted."""
  held = {r["id"] for r in records
          if keep_held_out and heldout.is_held_out(r["id"], fraction=DEV_FRACTION)}
  training = [r["id"] for r in records if r["id"] not in held]
  if count > len(training):
    raise ValueError(f"max_records={count} exceeds the {len(training)} training records of "
                     f"this row; lower it.")
  kept = held | set(sorted(training, key=lambda i: (zlib.crc32(i.encode("utf-8")), i))[:count])
  return [r for r in records if r["id"] in kept]


def human_data(*, output_dir: str, data_dir: str, sts_dir: str | None,
               banking77_dir: str | None) -> str:
  """A TASK_DATA_DIR for the human mixture: `data_dir`'s fret/ (and fret_candidates/),
  the STS-B files as stsb/ and Banking77 train as classification/banking77.jsonl (links,
  not copies)."""
  from gecko.evaluation import datasets
  for flag, path in (("--sts_dir", sts_dir), ("--banking77_dir", banking77_dir)):
    if not path or not os.path.isdir(path):
      raise ValueError(f"--human needs {flag} (a directory), got {path!r}.")
  mixed = data_dir.rstrip("/") + "+human"
  os.makedirs(os.path.join(mixed, "classification"), exist_ok=True)
  links = [(name, os.path.join(data_dir, name)) for name in ("fret", "fret_candidates")
           if os.path.isdir(os.path.join(data_dir, name))]
  for name, target in links + [("stsb", sts_dir)]:
    link = os.path.join(mixed, name)
    if not os.path.islink(link):
      os.symlink(os.path.abspath(target), link)
  train, _ = datasets.load_classification(banking77_dir)
  jsonl.write(os.path.join(mixed, "classification", "banking77.jsonl"),
              ({"text": t, "label": label} for t, label in zip(train.texts, train.labels)))
  return mixed


def training_records(*, variant: Variant, recipe: Recipe, corpus_dir: str, output_dir: str,
                     corpus_path: str, passages: int, neighbors: int, llm_url: str | None,
                     llm_model: str | None) -> tuple[str, list[dict], dict]:
  """(the records' name, the records, what made them) for a training row."""
  from gecko.fret.llm import LlamaCpp, OpenAICompatible
  if variant.source == "in_domain":
    name = "in_domain_trainpart" if recipe.human_dev else "in_domain"
    copy_missing(glob.glob(os.path.join(output_dir, "fret_*", "corpus_embeddings_*.npy")),
                 os.path.join(output_dir, name))  # any FRet run's embeddings of the pool
    records = in_domain.records(
        corpus_dir=corpus_dir, corpus_path=corpus_path, output_dir=os.path.join(output_dir, name),
        neighbors=neighbors, encoder=START_MODEL,
        query_ids=human_dev.split(corpus_dir).train if recipe.human_dev else None)
    return name, records, {"positive_not_seed_fraction": 0.0}
  llm = (OpenAICompatible(base_url=llm_url, model=llm_model) if llm_url
         else LlamaCpp(model_path=recipe.teacher))
  records, summary = run_fret(corpus_dir=corpus_dir, output_dir=output_dir,
                              corpus_path=corpus_path, variant=variant, recipe=recipe,
                              passages=passages, neighbors=neighbors, llm=llm)
  name = "_".join(filter(None, (recipe.fret_name(variant), seeds_part(passages))))
  keys = ("positive_not_seed_fraction", "queries", "consistency")
  return name, records, {k: summary[k] for k in keys if k in summary}


class RowData(NamedTuple):
  """Where a training row's data is, and how much of it there is."""

  data_dir: str  # its TASK_DATA_DIR (fret/, and with --human stsb/ and classification/)
  dev_dir: str | None  # its records' dev split as a BEIR task (None: the human split is)
  counts: dict  # {"records", "train", "dev"} and what made the records


def row_data(*, variant: Variant, recipe: Recipe, corpus_dir: str, output_dir: str,
             corpus_path: str, passages: int, neighbors: int, sts_dir: str | None,
             banking77_dir: str | None, llm_url: str | None, llm_model: str | None) -> RowData:
  """A training row's records, split into training shards and a dev task (in_domain
  with --human_dev: all train, its dev being the human split), with the human tasks'
  data beside them under --human."""
  name, records, provenance = training_records(
      variant=variant, recipe=recipe, corpus_dir=corpus_dir, output_dir=output_dir,
      corpus_path=corpus_path, passages=passages, neighbors=neighbors, llm_url=llm_url,
      llm_model=llm_model)
  all_train = recipe.human_dev and variant.source == "in_domain"  # the human split is dev
  if recipe.max_records is not None:
    records = capped(records, count=recipe.max_records, keep_held_out=not all_train)
    name += f"_records{recipe.max_records}"
  data_dir = os.path.join(output_dir, "data", name)
  dev_dir = os.path.join(output_dir, "dev", name)
  if all_train:
    dev_dir, n_dev = None, 0
    n_train = jsonl.write(os.path.join(data_dir, "fret", "fret-00000.jsonl"), records)
  else:
    n_train, n_dev = split_records(records, data_dir=data_dir, dev_dir=dev_dir,
                                   corpus_path=corpus_path)
  if variant.candidates:
    from gecko.fret import triples
    triples.convert(fret=os.path.join(data_dir, "fret"), teacher=variant.teacher_score,
                    output=os.path.join(data_dir, CANDIDATES_FILE), candidates=corpus_path,
                    overwrite=True)
  if recipe.human:
    data_dir = human_data(output_dir=output_dir, data_dir=data_dir, sts_dir=sts_dir,
                          banking77_dir=banking77_dir)
  return RowData(data_dir=data_dir, dev_dir=dev_dir,
                 counts={"records": len(records), "train": n_train, "dev": n_dev, **provenance})
