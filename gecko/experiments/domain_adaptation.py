r"""FRet domain adaptation on a BEIR corpus, with the paper's relabelling ablations.

  python -m gecko.experiments.domain_adaptation --corpus_dir=../shared/data/scifact \
      --output_dir=/tmp/fret_scifact --variant=main --seed=0
  python -m gecko.experiments.domain_adaptation --corpus_dir=... --output_dir=... --variant=seed_positive
  ...
  python -m gecko.experiments.domain_adaptation --output_dir=/tmp/fret_scifact --report

One command per row of EXPERIMENTS.md. Each run does only what is missing:

1. Corpus: the BEIR `corpus.jsonl`, shuffled with a fixed seed; its first `--passages`
   passages are FRet's seeds, the whole corpus is the retrieval pool.
2. FRet (`gecko.fret.pipeline`, embedded SmolLM2 unless `--llm_url`): task + query per
   seed, MiniLM neighbours, QL and RC scores. The base run ranks by RRF with the
   lowest-ranked negative; the ranking / negative variants relabel the same queries
   from its LLM cache (no new LLM call).
3. Split by a hash of the record id: one record in five is a dev set (a BEIR task whose
   relevant passage is FRet's label) for choosing hyper-parameters; the rest trains.
   The corpus's own test queries and qrels are never used for either.
4. Fine-tuning (`python -m gecko.train`, `gin/experiments/fret_adaptation.gin` plus the
   variant's ablation file): all-MiniLM-L6-v2 with the Gecko loss and Matryoshka
   (256, 384), on the variant's FRet records alone.
5. Evaluation with the Gecko format: nDCG@10 on the corpus's test queries at 384 and
   256 dims, the dev set, and STS-B test (`--sts_dir`) as a check that general
   similarity survives. `--variant=start` evaluates the untrained model (plain and
   Gecko format). Results go to OUTPUT_DIR/results/<variant>_seed<seed>.json;
   `--report` tabulates them (results.md, results.png).
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import random
import shutil
import sys
from collections.abc import Sequence

from gecko.data import jsonl
from gecko.evaluation import reports
from gecko.experiments import arguments, fine_tuning
from gecko.fret import heldout
from gecko.gin_flags import gin_string

START_MODEL = "all-MiniLM-L6-v2"
EXPERIMENT_GIN = "gin/experiments/fret_adaptation.gin"
SEED_POSITIVE_GIN = "gin/ablations/fret_seed_positive.gin"
DIMS = (256, 384)
DEV_FRACTION = 5


@dataclasses.dataclass(frozen=True)
class Variant:
  """One row: how FRet labels the records and which ablation file training adds."""

  description: str
  ranking: str = "rrf"
  negative: str = "lowest"
  gin_files: tuple[str, ...] = ()

  @property
  def fret_name(self) -> str:
    return f"fret_{self.ranking}_{self.negative}"

  @property
  def trains_on_seed(self) -> bool:
    """Whether training takes the seed passage as the positive, whatever FRet ranked."""
    return SEED_POSITIVE_GIN in self.gin_files


VARIANTS = {
    "start": Variant("all-MiniLM-L6-v2, not fine-tuned"),
    "main": Variant("LLM positive (RRF of QL and RC), lowest-ranked negative"),
    "seed_positive": Variant("seed passage as the positive",
                             gin_files=(SEED_POSITIVE_GIN,)),
    "ql": Variant("ranking by query likelihood only", ranking="ql"),
    "rc": Variant("ranking by relevance classification only", ranking="rc"),
    "random_negative": Variant("random neighbour as the hard negative", negative="random"),
    "no_same_tower": Variant("without same-tower negatives",
                             gin_files=("gin/ablations/no_same_tower.gin",)),
    "margin_mask": Variant("negatives closer than the positive + 0.1 masked",
                           gin_files=("gin/ablations/false_negative_margin.gin",)),
}
BASE = VARIANTS["main"]
START_PLAIN = "start_plain"  # report row: the start model without the Gecko format


def write_corpus(corpus_dir: str, path: str, *, seed: int = 0) -> int:
  """The BEIR corpus as FRet JSONL in a fixed shuffled order; returns its size."""
  from gecko.fret import corpus as corpus_lib
  source = os.path.join(corpus_dir, "corpus.jsonl")
  if not os.path.exists(source):
    raise FileNotFoundError(f"{source!r} not found: --corpus_dir must be a BEIR directory "
                            "(corpus.jsonl, queries.jsonl, qrels/test.tsv).")
  passages, _ = corpus_lib.read_corpus(source)
  random.Random(seed).shuffle(passages)
  if not os.path.exists(path):
    jsonl.write(path, passages)
  return len(passages)


def run_fret(*, output_dir: str, corpus_path: str, variant: Variant, passages: int,
             neighbors: int, llm) -> dict:
  """FRet records for `variant`; other variants than the base relabel from its cache."""
  from gecko.fret import pipeline
  fret_dir = os.path.join(output_dir, variant.fret_name)
  base_dir = os.path.join(output_dir, BASE.fret_name)
  if variant.fret_name != BASE.fret_name:
    run_fret(output_dir=output_dir, corpus_path=corpus_path, variant=BASE, passages=passages,
             neighbors=neighbors, llm=llm)
    os.makedirs(fret_dir, exist_ok=True)
    for path in glob.glob(os.path.join(base_dir, "llm_cache.sqlite")) + glob.glob(
        os.path.join(base_dir, "corpus_embeddings_*.npy")):
      target = os.path.join(fret_dir, os.path.basename(path))
      if not os.path.exists(target):
        shutil.copyfile(path, target)
  return pipeline.run(corpus_path=corpus_path, output_dir=fret_dir, llm=llm,
                      num_seeds=passages, num_neighbors=neighbors, ranking=variant.ranking,
                      negative=variant.negative)


def split_records(records: Sequence[dict], *, data_dir: str, dev_dir: str,
                  corpus_path: str) -> tuple[int, int]:
  """Training shards in DATA_DIR/fret; the dev records as a BEIR task (FRet's label)."""
  corpus = jsonl.read_objects(corpus_path, what="FRet corpus")
  return heldout.split_records(records, fraction=DEV_FRACTION, data_dir=data_dir,
                               eval_dir=dev_dir, corpus=corpus, hint="--passages",
                               qrels={"test": "positive_id"})


def train_command(*, variant: Variant, model_dir: str, data_dir: str, steps: int,
                  batch_size: int, learning_rate: float, seed: int) -> list[str]:
  """The `gecko.train` arguments of one row (printed and run)."""
  files = [EXPERIMENT_GIN, *variant.gin_files]
  return [*(f"--gin_file={f}" for f in files),
          f"--gin.MODEL_DIR={gin_string(model_dir)}", f"--gin.TASK_DATA_DIR={gin_string(data_dir)}",
          f"--gin.TRAIN_STEPS={steps}", f"--gin.BATCH_SIZE={batch_size}",
          f"--gin.LEARNING_RATE={learning_rate}", f"--gin.WARMUP_STEPS={max(1, steps // 10)}",
          f"--gin.SEED={seed}", f"--gin.CHECKPOINT_EVERY={steps}"]


def evaluation_tasks(*, corpus_dir: str, dev_dir: str | None, sts_dir: str | None) -> list:
  from gecko.evaluation import tasks
  out = [tasks.RetrievalTask(name="test", path=corpus_dir, task="fact checking")]
  if dev_dir:
    out.append(tasks.RetrievalTask(name="dev", path=dev_dir, task="search result"))
  if sts_dir and os.path.isdir(sts_dir):
    out.append(tasks.STSTask(name="STSBenchmark", path=sts_dir))
  return out


def _scores(results: dict) -> dict[str, float]:
  """{task@dim: main score} from `gecko.eval.evaluate`'s results."""
  return {f"{task}@{dim}": scores["main_score"]
          for task, per_dim in results.items() for dim, scores in per_dim.items()}


def run(*, corpus_dir: str, output_dir: str, variant: str, seed: int, passages: int,
        neighbors: int, steps: int, batch_size: int, learning_rate: float,
        sts_dir: str | None, llm_url: str | None = None, llm_model: str | None = None
        ) -> dict:
  """One row (module docstring); returns and writes its results."""
  from gecko import eval as eval_lib
  from gecko.fret import pipeline
  from gecko.fret.llm import LlamaCpp, OpenAICompatible
  from gecko.fret.shards import ShardWriter
  if variant not in VARIANTS:
    raise ValueError(f"Unknown variant {variant!r}; use one of {sorted(VARIANTS)}.")
  os.makedirs(os.path.join(output_dir, "results"), exist_ok=True)
  corpus_path = os.path.join(output_dir, "corpus.jsonl")
  size = write_corpus(corpus_dir, corpus_path)
  if passages > size:
    raise ValueError(f"--passages={passages} exceeds the corpus ({size} passages).")
  eval_dir = os.path.join(output_dir, "eval")
  start_tasks = evaluation_tasks(corpus_dir=corpus_dir, dev_dir=None, sts_dir=sts_dir)
  result: dict = {"variant": variant, "description": VARIANTS[variant].description,
                  "seed": seed}
  if variant == "start":
    for fmt, name in ((False, "plain"), (True, "gecko")):
      scores = _scores(eval_lib.evaluate(
          checkpoint=START_MODEL, tasks=start_tasks, gecko_format=fmt, output_dir=eval_dir,
          model_name=f"start_{name}"))
      result[f"scores_{name}_format"] = scores
    result["scores"] = result["scores_gecko_format"]
  else:
    spec = VARIANTS[variant]
    llm = OpenAICompatible(base_url=llm_url, model=llm_model) if llm_url else LlamaCpp()
    summary = run_fret(output_dir=output_dir, corpus_path=corpus_path, variant=spec,
                       passages=passages, neighbors=neighbors, llm=llm)
    records = pipeline.read_records(ShardWriter(os.path.join(output_dir, spec.fret_name)).shards())
    data_dir = os.path.join(output_dir, "data", spec.fret_name)
    dev_dir = os.path.join(output_dir, "dev", spec.fret_name)
    n_train, n_dev = split_records(records, data_dir=data_dir, dev_dir=dev_dir,
                                   corpus_path=corpus_path)
    name = f"{variant}_seed{seed}"
    model_dir = os.path.join(output_dir, "runs", name)
    command = train_command(variant=spec, model_dir=model_dir, data_dir=data_dir, steps=steps,
                            batch_size=batch_size, learning_rate=learning_rate, seed=seed)
    export = fine_tuning.fine_tune(command, model_dir=model_dir)
    tasks = evaluation_tasks(corpus_dir=corpus_dir, dev_dir=dev_dir, sts_dir=sts_dir)
    result.update(
        records=len(records), train=n_train, dev=n_dev,
        command=fine_tuning.command_line(command),
        positive_not_seed_fraction=summary["positive_not_seed_fraction"],
        scores=_scores(eval_lib.evaluate(
            checkpoint=export, tasks=tasks, gecko_format=True,
            dims=DIMS, output_dir=eval_dir, model_name=name)))
  with open(os.path.join(output_dir, "results", f"{variant}_seed{seed}.json"), "w",
            encoding="utf-8") as f:
    json.dump(result, f, indent=2)
  print(json.dumps(result["scores"], indent=2))
  return result


def report(output_dir: str) -> str:
  """results.md (mean ± spread over seeds per variant) and results.png; returns the table."""
  import numpy as np
  rows: dict[str, list[dict]] = {}
  for path in sorted(glob.glob(os.path.join(output_dir, "results", "*.json"))):
    with open(path, encoding="utf-8") as f:
      result = json.load(f)
    rows.setdefault(result["variant"], []).append(result)
    if "scores_plain_format" in result:  # the start model as published (no Gecko format)
      rows.setdefault(START_PLAIN, []).append({**result, "scores": result["scores_plain_format"]})
  if not rows:
    raise FileNotFoundError(f"No results under {output_dir}/results: run the variants first.")
  columns = ["test@384", "test@256", "dev@384", "STSBenchmark@384"]
  lines = ["| variant | seeds | " + " | ".join(columns) + " | positive ≠ seed |",
           "|---|---|" + "---|" * (len(columns) + 1)]
  means: dict[str, dict[str, float]] = {}
  for name in [v for v in (START_PLAIN, *VARIANTS) if v in rows]:
    results = rows[name]
    cells, means[name] = [], {}
    for column in columns:
      values = [r["scores"][column] for r in results if column in r["scores"]]
      if not values:
        cells.append("—")
        continue
      means[name][column] = float(np.mean(values))
      spread = f" ± {np.std(values):.4f}" if len(values) > 1 else ""
      cells.append(f"{np.mean(values):.4f}{spread}")
    # The share of training positives that are not the seed: FRet's, unless the row
    # trains on the seed passage itself.
    share = results[0].get("positive_not_seed_fraction")
    if share is not None and VARIANTS[name].trains_on_seed:
      share = 0.0
    lines.append(f"| {name} | {len(results)} | " + " | ".join(cells) +
                 f" | {'—' if share is None else f'{share:.0%}'} |")
  table = "\n".join(lines) + "\n"
  with open(os.path.join(output_dir, "results.md"), "w", encoding="utf-8") as f:
    f.write(table)
  reports.plot_bars(os.path.join(output_dir, "results.png"),
                    {n: {c: s for c, s in m.items() if c.startswith(("test", "STS"))}
                     for n, m in means.items() if m})
  print(table)
  return table


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m gecko.experiments.domain_adaptation", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--corpus_dir", help="a BEIR directory (corpus.jsonl, queries.jsonl, "
                      "qrels/test.tsv), e.g. ../shared/data/scifact")
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--variant", default="main", choices=sorted(VARIANTS))
  parser.add_argument("--seed", type=arguments.at_least(0), default=0, help="training seed")
  parser.add_argument("--passages", type=arguments.at_least(1), default=150,
                      help="FRet seed passages (150 with N=8: ~45 min of SmolLM2 on 2 cores)")
  parser.add_argument("--neighbors", type=arguments.at_least(2), default=8,
                      help="N, neighbours relabelled")
  parser.add_argument("--steps", type=arguments.at_least(1), default=30)
  parser.add_argument("--batch_size", type=arguments.at_least(1), default=32)
  parser.add_argument("--learning_rate", type=arguments.positive_float, default=2e-5)
  parser.add_argument("--sts_dir", default=None, help="STS-B directory for the check")
  parser.add_argument("--llm_url", default=None,
                      help="an OpenAI-compatible server instead of the embedded SmolLM2")
  parser.add_argument("--llm_model", default=None, help="the server's model name")
  parser.add_argument("--report", action="store_true", help="tabulate the finished rows")
  args = parser.parse_args(argv)
  if args.report:
    report(args.output_dir)
    return 0
  if not args.corpus_dir:
    parser.error("--corpus_dir is required (except with --report)")
  if args.llm_url and not args.llm_model:
    parser.error("--llm_url needs --llm_model (the served model's name)")
  run(corpus_dir=args.corpus_dir, output_dir=args.output_dir, variant=args.variant,
      seed=args.seed, passages=args.passages, neighbors=args.neighbors, steps=args.steps,
      batch_size=args.batch_size, learning_rate=args.learning_rate, sts_dir=args.sts_dir,
      llm_url=args.llm_url, llm_model=args.llm_model)
  return 0


if __name__ == "__main__":
  sys.exit(main())
