r"""FRet domain adaptation on a BEIR corpus: the paper's relabelling ablations and the
levers that make the recipe work with a small teacher.

  D="--corpus_dir=../shared/data/scifact --output_dir=/tmp/fret_scifact \
     --sts_dir=../shared/data/stsb --banking77_dir=../shared/data/banking77"
  python -m gecko.experiments.domain_adaptation $D --variant=start
  python -m gecko.experiments.domain_adaptation $D --variant=main --seed=0
  python -m gecko.experiments.domain_adaptation $D --variant=main --teacher=gemma3-270m \
      --dedup_cosine=0.9 --human --seed=1
  python -m gecko.experiments.domain_adaptation $D --variant=in_domain
  python -m gecko.experiments.domain_adaptation $D --soup main+gemma3-270m+dedup0.9+human
  python -m gecko.experiments.domain_adaptation --output_dir=/tmp/fret_scifact --report

  # model selection: a 300-step budget, each 50-step checkpoint scored on the human dev
  # split alone; then the chosen checkpoint scored as a row ("...+300steps@150"), whose
  # run trains the 300-step schedule up to step 150 only (with --dev_only: the dev
  # score of that checkpoint alone, e.g. a setting's row at the chosen budget)
  python -m gecko.experiments.domain_adaptation $D --human_dev --steps=300 \
      --learning_rate=5e-5 --checkpoint_every=50 --dev_only
  python -m gecko.experiments.domain_adaptation $D --human_dev --steps=300 \
      --learning_rate=5e-5 --checkpoint_every=50 --eval_step=150

One command per row of EXPERIMENTS.md; a row is the variant plus each lever pulled
and the budget where it is not the default (`main+gemma3-270m+dedup0.9+human`,
`main+300steps+lr5e-05@150`). Each run does only what is missing:

1. Corpus: the BEIR `corpus.jsonl`, shuffled with a fixed seed; its first `--passages`
   passages are FRet's seeds, the whole corpus is the retrieval pool.
2. FRet (`gecko.fret.pipeline`, embedded `--teacher` unless `--llm_url`): task + query
   per seed (greedy, or `--sampling` with a seed per passage; `--dedup_cosine` drops
   near-duplicate queries; `--few_shot_type` writes queries of one task type, shown 8
   of the corpus's own training queries as examples), MiniLM neighbours, QL and RC
   scores. The base run ranks by RRF with the lowest-ranked negative; the ranking /
   negative variants and `--consistency_top_k` relabel the same queries from its LLM
   cache (no new LLM call). `--variant=in_domain` trains on the corpus's own
   `qrels/train.tsv` queries instead (`gecko.experiments.in_domain`), the in-domain
   reference.
3. Split by a hash of the record id: one record in five is a dev set (a BEIR task whose
   relevant passage is the record's label) for choosing hyper-parameters; the rest
   trains. The corpus's test queries and qrels are never used for either. With
   `--human_dev`, every row is also scored on a dev split of the corpus's own human
   training queries, apart from the rest by query and by document
   (`gecko.experiments.human_dev`), and in_domain trains on the rest alone.
4. Fine-tuning (`python -m gecko.train`, `gin/experiments/fret_adaptation.gin` plus the
   variant's ablation file): all-MiniLM-L6-v2 with the Gecko loss (Eq. 3) and
   Matryoshka (256, 384), on the records alone, or with `--human` on the records plus
   STS-B train and Banking77 train (`gin/experiments/human_mixture.gin`).
5. Evaluation in both input formats (plain and Gecko): nDCG@10 on the corpus's test
   queries at 384 and 256 dims (per query too, for the paired bootstrap), the dev set,
   STS-B test (`--sts_dir`) and Banking77 (`--banking77_dir`). `--variant=start`
   evaluates the untrained model; `--soup ROW` averages the parameters of ROW's seeds
   (`--soup A,B`: of several rows; `gecko.soup`). Results go to
   OUTPUT_DIR/results/<row>_seed<seed>.json; `--report` tabulates them with paired
   bootstrap intervals against the start model (results.md, results.png, and
   results_delta.png: each row's difference with its interval), `--versus ROW` against
   ROW as well, the model-selection tables (every checkpoint of each selection run;
   each setting scored at one step), every run's human-dev score per query against the
   start model's (`--variant=start --human_dev --dev_only` scores its dev row) and,
   with `--dev_versus RUN`, against RUN's, and each row's command.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import glob
import json
import os
import shlex
import sys
from collections.abc import Sequence

from gecko.data import paths
from gecko.experiments import adaptation_data, arguments, human_dev, selection, stages
from gecko.experiments.adaptation_report import SELECTION, report
from gecko.experiments.recipes import (
  DEFAULT_PASSAGES,
  HUMAN_MIXTURE_GIN,
  LOSS_SETTINGS,
  TASK_TYPES,
  TEACHERS,
  VARIANTS,
  Budget,
  Recipe,
  Variant,
)

__all__ = ["report", "run", "main"]

EXPERIMENT_GIN = "gin/experiments/fret_adaptation.gin"
DIMS = (256, 384)


def fine_tuning(*, variant: Variant, recipe: Recipe, model_dir: str, data_dir: str,
                budget: Budget, seed: int) -> stages.FineTuning:
  """The fine-tuning stage of one row: the experiment's gin file, the variant's and the
  recipe's, at `budget` (keeping each of its checkpoints, stopping at its `eval_step`);
  a scored variant trains on its SeqIO task (with the human tasks under --human; over
  every candidate, the triples with their candidates, `gecko_fret_candidates`); the
  recipe's loss settings bound."""
  files = [EXPERIMENT_GIN, *variant.gin_files, *([HUMAN_MIXTURE_GIN] if recipe.human else [])]
  macros = {"SEED": seed, "CHECKPOINT_EVERY": budget.checkpoint_every or budget.steps,
            "train.train.keep_checkpoints": len(budget.checkpoint_steps()),
            **{f"losses.GeckoLoss.{name}": value for name, value in recipe.loss}}
  if budget.grad_cache_chunk:
    macros["GRAD_CACHE_CHUNK"] = budget.grad_cache_chunk
  if variant.candidates:
    macros["MIXTURE_OR_TASK_NAME"] = "gecko_fret_candidates" + "_human" * recipe.human
    macros["seqio_batches.SeqioBatches.candidates"] = adaptation_data.candidate_count(data_dir)
  elif variant.teacher_score:
    macros["MIXTURE_OR_TASK_NAME"] = (f"gecko_fret_{variant.teacher_score}"
                                      + "_human" * recipe.human)
  return stages.FineTuning(
      gin_files=tuple(files), model_dir=model_dir, data_dir=data_dir, steps=budget.steps,
      batch_size=budget.batch_size, learning_rate=budget.learning_rate, macros=macros,
      stop_at=budget.eval_step)


def evaluation_tasks(*, corpus_dir: str, dev_dir: str | None, sts_dir: str | None,
                     banking77_dir: str | None, human_dev_dir: str | None = None) -> list:
  from gecko.evaluation import tasks
  out = [tasks.RetrievalTask(name="test", path=corpus_dir, task="fact checking",
                             per_query=True)]
  if dev_dir:
    out.append(tasks.RetrievalTask(name="dev", path=dev_dir, task="search result"))
  if human_dev_dir:
    out.append(tasks.RetrievalTask(name="human_dev", path=human_dev_dir, task="fact checking",
                                   per_query=True))
  if sts_dir and os.path.isdir(sts_dir):
    out.append(tasks.STSTask(name="STSBenchmark", path=sts_dir))
  if banking77_dir and os.path.isdir(banking77_dir):
    out.append(tasks.ClassificationTask(name="Banking77", path=banking77_dir))
  return out


def evaluate_both_formats(*, checkpoint: str, tasks: Sequence, output_dir: str, name: str,
                          dims: Sequence[int] | None) -> dict:
  """Scores in the plain and the Gecko input format (`stages.evaluate_formats`):
  {"scores_<format>_format": {task@dim: main score}, "per_query": {format: {dim:
  {query: nDCG@10}}}} on the test queries, and where the human dev split is scored, its
  plain format's "human_dev_per_query": {dim: {query: nDCG@10}}."""
  out: dict = {"per_query": {}}
  for fmt, results in stages.evaluate_formats(checkpoint, tasks=tasks, dims=dims,
                                              output_dir=output_dir, name=name).items():
    out[f"scores_{fmt}_format"] = {f"{task}@{dim}": scores["main_score"]
                                   for task, per_dim in results.items()
                                   for dim, scores in per_dim.items()}
    out["per_query"][fmt] = {str(dim): scores["ndcg_at_10_per_query"]
                             for dim, scores in results.get("test", {}).items()}
    if fmt == "plain" and "human_dev" in results:
      out["human_dev_per_query"] = {str(dim): scores["ndcg_at_10_per_query"]
                                    for dim, scores in results["human_dev"].items()}
  return out


def train_row(*, variant_name: str, recipe: Recipe, corpus_dir: str, output_dir: str,
              corpus_path: str, seed: int, passages: int, neighbors: int, budget: Budget,
              sts_dir: str | None, banking77_dir: str | None, llm_url: str | None,
              llm_model: str | None, dev_only: bool = False) -> dict:
  """Records, split, fine-tuning and both formats' scores of one training row; with
  `dev_only`, each kept checkpoint's dev score instead (model selection)."""
  variant = VARIANTS[variant_name]
  data = adaptation_data.row_data(
      variant=variant, recipe=recipe, corpus_dir=corpus_dir, output_dir=output_dir,
      corpus_path=corpus_path, passages=passages, neighbors=neighbors, sts_dir=sts_dir,
      banking77_dir=banking77_dir, llm_url=llm_url, llm_model=llm_model)
  # The training run: the row without its scored step, and its checkpoint cadence (a
  # finished run without those checkpoints cannot serve a selection run).
  every = f"+ckpt{budget.checkpoint_every}" if budget.checkpoint_every else ""
  row_name = functools.partial(recipe.row_name, variant_name, passages=passages)
  run_name = f"{row_name(dataclasses.replace(budget, eval_step=None))}{every}_seed{seed}"
  model_dir = os.path.join(output_dir, "runs", run_name)
  training = fine_tuning(variant=variant, recipe=recipe, model_dir=model_dir,
                         data_dir=data.data_dir, budget=budget, seed=seed)
  export = training.run()
  dev_task = human_dev_task(corpus_dir, output_dir, recipe)
  result = {**data.counts, "command": training.command_line()}
  if dev_only:
    return {**result, **selection.dev_by_step(
        output_dir=output_dir, run_name=run_name, model_dir=model_dir, budget=budget,
        human_dev_dir=dev_task, dims=DIMS)}
  if budget.step_suffix():
    export = selection.checkpoint_model(output_dir=output_dir, run_name=run_name,
                                        model_dir=model_dir, step=budget.eval_step)
  tasks = evaluation_tasks(corpus_dir=corpus_dir, dev_dir=data.dev_dir, sts_dir=sts_dir,
                           banking77_dir=banking77_dir, human_dev_dir=dev_task)
  return {**result, **evaluate_both_formats(
      checkpoint=export, tasks=tasks, name=f"{row_name(budget)}_seed{seed}",
      dims=DIMS, output_dir=os.path.join(output_dir, "eval"))}


def run(*, corpus_dir: str, output_dir: str, variant: str, seed: int, passages: int,
        neighbors: int, steps: int, batch_size: int, learning_rate: float,
        sts_dir: str | None, banking77_dir: str | None = None, recipe: Recipe | None = None,
        llm_url: str | None = None, llm_model: str | None = None,
        checkpoint_every: int | None = None, eval_step: int | None = None,
        grad_cache_chunk: int | None = None, dev_only: bool = False,
        command: str | None = None) -> dict:
  """One row (module docstring); returns and writes its results. `command` (the driver
  command that made the row) is kept in them for the report."""
  if variant not in VARIANTS:
    raise ValueError(f"Unknown variant {variant!r}; use one of {sorted(VARIANTS)}.")
  recipe = recipe or Recipe()
  budget = Budget(steps=steps, batch_size=batch_size, learning_rate=learning_rate,
                  checkpoint_every=checkpoint_every, eval_step=eval_step,
                  grad_cache_chunk=grad_cache_chunk)
  if (checkpoint_every or dev_only) and not recipe.human_dev:
    raise ValueError("--checkpoint_every and --dev_only score the human dev split: add "
                     "--human_dev.")
  start = VARIANTS[variant].source == "none"
  if dev_only and not (checkpoint_every or start):
    raise ValueError("--dev_only scores each kept checkpoint on dev: set --checkpoint_every.")
  os.makedirs(os.path.join(output_dir, "results"), exist_ok=True)
  corpus_path = os.path.join(output_dir, "corpus.jsonl")
  size = adaptation_data.write_corpus(corpus_dir, corpus_path)
  if passages > size:
    raise ValueError(f"--passages={passages} exceeds the corpus ({size} passages).")
  row = recipe.row_name(variant, budget, passages=passages)
  result: dict = {"row": row, "variant": variant, "seed": seed, "driver_command": command,
                  "description": VARIANTS[variant].description,
                  "recipe": dataclasses.asdict(recipe)}
  if start and dev_only:  # the start model's dev row: the settings' paired baseline
    dev = selection.score_dev(
        model=adaptation_data.START_MODEL, dims=None, model_name="start",
        human_dev_dir=human_dev_task(corpus_dir, output_dir, recipe),
        output_dir=os.path.join(output_dir, "steps", "start", "dev_eval"))
    result.update(selection.dev_row({"0": dev}))
  elif start:
    tasks = evaluation_tasks(corpus_dir=corpus_dir, dev_dir=None, sts_dir=sts_dir,
                             banking77_dir=banking77_dir,
                             human_dev_dir=human_dev_task(corpus_dir, output_dir, recipe))
    result.update(evaluate_both_formats(checkpoint=adaptation_data.START_MODEL, tasks=tasks,
                                        name="start",
                                        dims=None, output_dir=os.path.join(output_dir, "eval")))
  else:
    result.update(train_row(
        variant_name=variant, recipe=recipe, corpus_dir=corpus_dir, output_dir=output_dir,
        corpus_path=corpus_path, seed=seed, passages=passages, neighbors=neighbors,
        budget=budget, sts_dir=sts_dir, banking77_dir=banking77_dir, llm_url=llm_url,
        llm_model=llm_model, dev_only=dev_only))
  return _write_result(output_dir, f"{SELECTION}/{row}_seed{seed}" if dev_only
                       else f"{row}_seed{seed}", result)


def human_dev_task(corpus_dir: str, output_dir: str, recipe: Recipe) -> str | None:
  """OUTPUT_DIR/human_dev, the BEIR task of the corpus's human dev queries (written the
  first time), when the recipe scores it."""
  if not recipe.human_dev:
    return None
  path = os.path.join(output_dir, "human_dev")
  if not os.path.exists(os.path.join(path, "qrels", "test.tsv")):
    human_dev.write_task(corpus_dir, human_dev.split(corpus_dir), path)
  return path


def soup_row(*, row: str, corpus_dir: str, output_dir: str, sts_dir: str | None,
             banking77_dir: str | None) -> dict:
  """The uniform soup of every finished seed of `row` (or of several rows, "A,B"),
  evaluated as a row of its own (on the human dev split too when its first row's
  recipe scored it)."""
  from gecko import soup
  rows = [r.strip() for r in row.split(",") if r.strip()]
  exports, seeds = [], []
  for name in rows:
    found = sorted(glob.glob(os.path.join(output_dir, "results", f"{glob.escape(name)}_seed*.json")))
    if not found:
      raise ValueError(f"--soup {row!r}: no results/{name}_seed*.json; evaluate its seeds "
                       f"first.")
    seeds += found
    exports += sorted(glob.glob(os.path.join(output_dir, "runs", f"{glob.escape(name)}_seed*",
                                             "export")))
  if len(exports) < 2:
    raise ValueError(f"--soup {row!r} needs at least two finished seeds under "
                     f"{output_dir}/runs, found {len(exports)}.")
  name = f"soup({','.join(rows)})"
  path = os.path.join(output_dir, "runs", name)
  if not os.path.isdir(path):
    soup.soup(models=exports, output=path)
  with open(seeds[0], encoding="utf-8") as f:
    first = json.load(f)
  scored_dev = Recipe(human_dev=bool((first.get("recipe") or {}).get("human_dev")))
  tasks = evaluation_tasks(corpus_dir=corpus_dir, dev_dir=None, sts_dir=sts_dir,
                           banking77_dir=banking77_dir,
                           human_dev_dir=human_dev_task(corpus_dir, output_dir, scored_dev))
  result = {"row": name, "variant": first["variant"], "seed": 0, "soup_of": exports,
            "description": f"uniform soup of {len(exports)} runs of {', '.join(rows)}",
            "recipe": first.get("recipe"),
            **evaluate_both_formats(checkpoint=path, tasks=tasks, name=name, dims=DIMS,
                                    output_dir=os.path.join(output_dir, "eval"))}
  return _write_result(output_dir, f"{name}_seed0", result)


def _write_result(output_dir: str, name: str, result: dict) -> dict:
  path = os.path.join(output_dir, "results", f"{name}.json")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  paths.write_text(path, json.dumps(result, indent=2))
  print(json.dumps({k: v for k, v in result.items() if k.startswith(("scores", "dev_by"))},
                   indent=2))
  return result


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m gecko.experiments.domain_adaptation",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--corpus_dir", help="a BEIR directory (corpus.jsonl, queries.jsonl, "
                      "qrels/test.tsv; qrels/train.tsv for in_domain), e.g. "
                      "../shared/data/scifact")
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--variant", default="main", choices=sorted(VARIANTS))
  parser.add_argument("--seed", type=arguments.at_least(0), default=0, help="training seed")
  parser.add_argument("--passages", type=arguments.at_least(1), default=DEFAULT_PASSAGES,
                      help=f"FRet seed passages ({DEFAULT_PASSAGES} with N=8: ~45 min of "
                           "SmolLM2 on 2 cores); names the row where not the default "
                           "('+600seeds')")
  parser.add_argument("--neighbors", type=arguments.at_least(2), default=8,
                      help="N, neighbours relabelled")
  _add_budget(parser)
  parser.add_argument("--sts_dir", default=None, help="STS-B directory (check; --human)")
  parser.add_argument("--banking77_dir", default=None,
                      help="Banking77 directory (check; --human)")
  _add_levers(parser.add_argument_group("levers (each pulled lever names the row)"))
  parser.add_argument("--soup", metavar="ROW", default=None,
                      help="evaluate the uniform soup of ROW's finished seeds (several "
                           "rows: A,B)")
  parser.add_argument("--llm_url", default=None,
                      help="an OpenAI-compatible server instead of the embedded teacher")
  parser.add_argument("--llm_model", default=None, help="the server's model name")
  parser.add_argument("--report", action="store_true", help="tabulate the finished rows")
  parser.add_argument("--versus", metavar="ROW", default=None,
                      help="with --report: each row's paired difference to ROW as well (on the "
                           "whole test split, and with --exclude_queries or "
                           "--unseen_documents on those queries too)")
  parser.add_argument("--exclude_queries", metavar="IDS", default="",
                      help="with --report: each row's test score and difference to start "
                           "without these test query ids as well (comma-separated, e.g. "
                           "ones that are verbatim training queries)")
  parser.add_argument("--unseen_documents", action="store_true",
                      help="with --report and --corpus_dir: each row's test score and "
                           "difference to start on the test queries none of whose judged "
                           "documents a query of qrels/train.tsv is judged on (SciFact: 104 "
                           "of 300) as well")
  parser.add_argument("--dev_versus", metavar="RUN", default=None,
                      help="with --report: each run's paired difference to RUN (a row or a "
                           "--dev_only setting) on the human dev split as well")
  return parser


def _add_budget(parser: argparse.ArgumentParser) -> None:
  """The training budget (`Budget`), its checkpoints and how they are scored."""
  parser.add_argument("--steps", type=arguments.at_least(1), default=30)
  parser.add_argument("--batch_size", type=arguments.at_least(1), default=32)
  parser.add_argument("--learning_rate", type=arguments.positive_float, default=2e-5)
  parser.add_argument("--checkpoint_every", type=arguments.at_least(1), default=None,
                      help="keep a checkpoint every this many steps and score each on the "
                           "human dev split (needs --human_dev; model selection)")
  parser.add_argument("--eval_step", type=arguments.at_least(1), default=None,
                      help="score the checkpoint of this step, not the last (a multiple of "
                           "--checkpoint_every; '@STEP' ends the row's name); the run trains "
                           "the --steps schedule up to this step only")
  parser.add_argument("--grad_cache_chunk", type=arguments.at_least(1), default=None,
                      metavar="N",
                      help="embed and back-propagate in chunks of N examples (GradCache: "
                           "the same model in one chunk's activation memory; not in the "
                           "row's name). --variant=candidates_kl at batch 8 needs about "
                           "23 GB without it")
  parser.add_argument("--dev_only", action="store_true",
                      help="score the checkpoints on dev and nothing else (no test, STS-B "
                           "or Banking77): the selection runs; with --eval_step, that "
                           "checkpoint alone, per query too; with --variant=start, the "
                           "start model (the dev rows' paired baseline)")


def _add_levers(levers: argparse._ArgumentGroup) -> None:
  """The flags that make a row's recipe (`recipes.Recipe`)."""
  levers.add_argument("--teacher", default=Recipe.teacher, choices=TEACHERS,
                      help="the GGUF LLM that writes and ranks")
  levers.add_argument("--sampling", action="store_true",
                      help="sample each query with its own seed (default: greedy)")
  levers.add_argument("--temperature", type=arguments.positive_float, default=Recipe.temperature)
  levers.add_argument("--top_p", type=arguments.positive_float, default=Recipe.top_p)
  levers.add_argument("--dedup_cosine", type=float, default=None,
                      help="drop a query within this cosine of an earlier one of its task type")
  levers.add_argument("--few_shot_type", default=None, choices=TASK_TYPES,
                      help=f"generate queries of this task type alone, with "
                           f"{adaptation_data.FEW_SHOT} of the "
                           "corpus's training queries as the prompt's examples (e.g. 'fact "
                           "checking')")
  levers.add_argument("--consistency_top_k", type=arguments.at_least(1), default=None,
                      help="keep a record only if its positive is in MiniLM's top k")
  levers.add_argument("--human", action="store_true",
                      help="train on FRet plus STS-B train and Banking77 train")
  levers.add_argument("--loss", metavar="NAME=VALUE", action="append", default=[],
                      type=arguments.named_number(LOSS_SETTINGS),
                      help=f"a GeckoLoss setting of the row (repeat for several; one of "
                           f"{', '.join(LOSS_SETTINGS)}), e.g. teacher_scale=0.05 with "
                           "--variant=margin_mse")
  levers.add_argument("--human_dev", action="store_true",
                      help="score the human dev split of qrels/train.tsv (apart by query "
                           "and document) in every row; in_domain trains on the rest")
  levers.add_argument("--max_records", metavar="N", type=arguments.at_least(1),
                      default=None,
                      help="train on N of the records (held-out dev records aside; the "
                           "lowest crc32 of their id): rows at equal data, e.g. in_domain "
                           "at a FRet row's size")


def main(argv: Sequence[str] | None = None) -> int:
  parser = _parser()
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parser.parse_args(argv)
  if args.report:
    try:
      if args.unseen_documents and not args.corpus_dir:
        raise ValueError("--unseen_documents needs --corpus_dir (its qrels/train.tsv and "
                         "qrels/test.tsv).")
      report(args.output_dir, versus=args.versus,
             exclude=[q for q in args.exclude_queries.split(",") if q],
             unseen_of=args.corpus_dir if args.unseen_documents else None,
             dev_versus=args.dev_versus)
    except (FileNotFoundError, ValueError) as e:
      parser.error(str(e))
    return 0
  if not args.corpus_dir:
    parser.error("--corpus_dir is required (except with --report)")
  if args.llm_url and not args.llm_model:
    parser.error("--llm_url needs --llm_model (the served model's name)")
  try:
    Budget(steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
           checkpoint_every=args.checkpoint_every, eval_step=args.eval_step,
           grad_cache_chunk=args.grad_cache_chunk)
  except ValueError as e:
    parser.error(str(e))
  if args.soup:
    soup_row(row=args.soup, corpus_dir=args.corpus_dir, output_dir=args.output_dir,
             sts_dir=args.sts_dir, banking77_dir=args.banking77_dir)
    return 0
  recipe = Recipe(teacher=args.teacher, sampling=args.sampling, temperature=args.temperature,
                  top_p=args.top_p, dedup_cosine=args.dedup_cosine,
                  few_shot_type=args.few_shot_type,
                  consistency_top_k=args.consistency_top_k, human=args.human,
                  human_dev=args.human_dev, max_records=args.max_records,
                  loss=tuple(args.loss))
  run(corpus_dir=args.corpus_dir, output_dir=args.output_dir, variant=args.variant,
      seed=args.seed, passages=args.passages, neighbors=args.neighbors, steps=args.steps,
      batch_size=args.batch_size, learning_rate=args.learning_rate, sts_dir=args.sts_dir,
      banking77_dir=args.banking77_dir, recipe=recipe, llm_url=args.llm_url,
      llm_model=args.llm_model, checkpoint_every=args.checkpoint_every,
      eval_step=args.eval_step, grad_cache_chunk=args.grad_cache_chunk, dev_only=args.dev_only,
      command=f"python -m gecko.experiments.domain_adaptation {shlex.join(argv)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
