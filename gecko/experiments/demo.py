r"""The Gecko recipe end to end on one CPU: `make demo` (or `python -m gecko.experiments.demo`).

  python -m gecko.experiments.demo [--output_dir /tmp/gecko_demo] [--seeds 100] [--neighbors 5]
      [--ranking ql] [--steps 12] [--batch_size 16] [--learning_rate 2e-5]
      [--data_dir ../shared/data]

1. Corpus: the Python standard library's docstrings (`gecko.fret.docstrings`), present
   on any machine, in a fixed shuffled order so the seeds sample every module.
2. FRet (`gecko.fret.pipeline`) with the embedded SmolLM2-135M-Instruct: a task and a
   query per seed passage, MiniLM neighbours, LLM relabelling. The demo ranks by
   query likelihood alone (`--ranking ql`): at 135M parameters SmolLM2's relevance
   classification is close to chance (BENCHMARKS.md), so fusing it in (`--ranking rrf`,
   the paper's choice with its far larger LLM) mostly adds noise and doubles the calls.
3. The records are split by a hash of their id: a third is held out as evaluation
   queries, the rest is the `gecko_fret` SeqIO task's training data. A held-out
   query's relevant passage is FRet's label, the LLM's top-ranked passage
   (`DocstringQueries`: does the embedder learn the LLM's judgement of relevance on
   queries it never saw?), and, as a second view, the seed passage the query was
   written from (`DocstringQueries-seed`). SmolLM2-135M often writes a query that
   does not fit its seed, so the seed view is the noisier one.
4. Fine-tuning (`gecko.train` in this process; the command is printed): the real
   all-MiniLM-L6-v2 with the Gecko loss (in-batch + same-tower + hard negatives) and
   Matryoshka heads (128, 384) on the `gecko_fret_only` mixture, for about two
   epochs (a few dozen records are easy to over-fit).
5. Evaluation (`gecko.eval`) of the start and the fine-tuned model, each in the start
   model's plain input format and in the Gecko `task: ... | query: ...` format, on the
   held-out queries (nDCG@10 over the whole corpus) and on STS-B (a check that general
   similarity survives) when `--data_dir` holds it; a table on stdout and
   OUTPUT_DIR/demo.png.

Every stage keeps its output in OUTPUT_DIR and a rerun reuses it (the FRet LLM calls
are cached, a finished training run is not repeated), so an interrupted demo resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

from gecko.data.packaged_models import DEFAULT_MODEL
from gecko.evaluation import reports
from gecko.experiments import arguments, stages
from gecko.fret import heldout

START_MODEL = DEFAULT_MODEL
HELD_OUT_TASK = "DocstringQueries"
HELD_OUT_FRACTION = 3
DIM = 384


def held_out(record_id: str) -> bool:
  """One record in HELD_OUT_FRACTION is held out, chosen by a hash of its id."""
  return heldout.is_held_out(record_id, fraction=HELD_OUT_FRACTION)


def split_records(records: Sequence[dict], *, data_dir: str, eval_dir: str,
                  corpus: Sequence[dict]) -> tuple[int, int]:
  """Training shards in DATA_DIR/fret; held-out queries as a BEIR task in EVAL_DIR.

  The BEIR task has two qrels splits: `test` (the FRet positive) and `seed`.
  """
  return heldout.split_records(records, fraction=HELD_OUT_FRACTION, data_dir=data_dir,
                               eval_dir=eval_dir, corpus=corpus, hint="--seeds",
                               qrels={"test": "positive_id", "seed": "seed_id"})


def fine_tuning(*, model_dir: str, data_dir: str, steps: int, batch_size: int,
                learning_rate: float) -> stages.FineTuning:
  """The fine-tuning stage: MiniLM, the Gecko loss and Matryoshka heads on gecko_fret_only."""
  return stages.FineTuning(
      gin_files=("gin/models/minilm_l6.gin", "gin/runs/finetune.gin", "gin/data/seqio.gin"),
      model_dir=model_dir, data_dir=data_dir, steps=steps, batch_size=batch_size,
      learning_rate=learning_rate,
      macros={"MIXTURE_OR_TASK_NAME": "gecko_fret_only", "INIT_FROM": START_MODEL,
              "MATRYOSHKA_DIMS": (128, DIM), "QUERY_LENGTH": 32, "PASSAGE_LENGTH": 128})


def held_out_tasks(*, eval_dir: str, data_dir: str | None) -> list:
  """The held-out queries in both views, and STS-B when `data_dir` holds it."""
  from gecko.evaluation import tasks
  out = [tasks.RetrievalTask(name=HELD_OUT_TASK, path=eval_dir),
         tasks.RetrievalTask(name=f"{HELD_OUT_TASK}-seed", path=eval_dir, split="seed")]
  if data_dir:
    standard = tasks.standard_tasks(data_dir)
    out += [standard[name] for name in ("stsb",)
            if os.path.isdir(standard[name].path)]
  return out


def main_scores(results: dict, dim: int) -> dict[str, float]:
  """{task: main score at `dim`} from `gecko.eval.evaluate`'s results."""
  return {task: scores[dim]["main_score"] for task, scores in results.items()}


def run(*, output_dir: str, seeds: int, neighbors: int, ranking: str, steps: int,
        batch_size: int, learning_rate: float,
        data_dir: str | None) -> dict[str, dict[str, float]]:
  """The demo's stages (module docstring); returns {model: {task: main score}}."""
  from gecko.fret import docstrings
  from gecko.fret.config import FretConfig
  from gecko.fret.llm import LlamaCpp
  start = time.perf_counter()
  os.makedirs(output_dir, exist_ok=True)
  corpus_path = os.path.join(output_dir, "passages.jsonl")
  corpus = stages.write_corpus(docstrings.passages(), corpus_path)
  print(f"[1/5] corpus: {len(corpus)} standard-library docstrings -> {corpus_path}",
        file=sys.stderr)

  fret_dir = os.path.join(output_dir, "fret_run")
  print(f"[2/5] FRet over {seeds} seed passages (N={neighbors}, ranking {ranking}) -> "
        f"{fret_dir}", file=sys.stderr)
  records, summary = stages.fret(FretConfig(corpus=corpus_path, output_dir=fret_dir,
                                            num_seeds=seeds, num_neighbors=neighbors,
                                            ranking=ranking), llm=LlamaCpp())

  data_root, eval_dir = os.path.join(output_dir, "data"), os.path.join(output_dir, "heldout")
  n_train, n_test = split_records(records, data_dir=data_root, eval_dir=eval_dir, corpus=corpus)
  print(f"[3/5] {len(records)} records: {n_train} to train on, {n_test} held-out queries "
        f"({summary['positive_not_seed_fraction']:.0%} of positives are not the seed)",
        file=sys.stderr)

  print("[4/5] fine-tuning", file=sys.stderr)
  export = fine_tuning(model_dir=os.path.join(output_dir, "model"), data_dir=data_root,
                       steps=steps, batch_size=batch_size, learning_rate=learning_rate).run()

  print("[5/5] evaluating the start and the fine-tuned model", file=sys.stderr)
  tasks = held_out_tasks(eval_dir=eval_dir, data_dir=data_dir)
  scores = {model: stages.evaluate_formats(checkpoint, tasks=tasks, dims=(DIM,),
                                           output_dir=os.path.join(output_dir, "eval"),
                                           name=model)
            for model, checkpoint in (("start", START_MODEL), ("fine-tuned", export))}
  # Both models in the start model's own plain format and in the Gecko format the
  # fine-tuning teaches: each format compares like for like.
  table = {f"{model}, {label}": main_scores(scores[model][fmt], DIM)
           for label, fmt in (("plain", "plain"), ("Gecko format", "gecko"))
           for model in ("start", "fine-tuned")}
  reports.plot_bars(os.path.join(output_dir, "demo.png"), table)
  with open(os.path.join(output_dir, "demo.json"), "w", encoding="utf-8") as f:
    json.dump({"scores": table, "records": len(records), "train": n_train, "held_out": n_test,
               "fret": summary, "seconds": round(time.perf_counter() - start, 1)}, f, indent=2)
  names = list(table)
  print(f"\n| task | {' | '.join(names)} |\n|---|{'---|' * len(names)}")
  for task in table[names[0]]:
    print(f"| {task} | " + " | ".join(f"{table[n][task]:.4f}" for n in names) + " |")
  print(f"\n{time.perf_counter() - start:.0f} s; plot: {os.path.join(output_dir, 'demo.png')}")
  return table


def main(argv: Sequence[str] | None = None) -> int:
  from gecko.fret import label
  parser = argparse.ArgumentParser(prog="python -m gecko.experiments.demo", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--output_dir", default="/tmp/gecko_demo")
  parser.add_argument("--seeds", type=arguments.at_least(1), default=100,
                      help="FRet seed passages")
  parser.add_argument("--neighbors", type=arguments.at_least(2), default=5,
                      help="N, neighbours relabelled")
  parser.add_argument("--ranking", default="ql", choices=label.RANKINGS,
                      help="FRet relabelling: query likelihood, relevance classification, "
                           "or their reciprocal rank fusion")
  parser.add_argument("--steps", type=arguments.at_least(1), default=12, help="fine-tuning steps")
  parser.add_argument("--batch_size", type=arguments.at_least(1), default=16)
  parser.add_argument("--learning_rate", type=arguments.positive_float, default=2e-5)
  parser.add_argument("--data_dir", default=None,
                      help="a ../shared/data-style directory: also evaluate STS-B")
  args = parser.parse_args(argv)
  run(output_dir=args.output_dir, seeds=args.seeds, neighbors=args.neighbors,
      ranking=args.ranking, steps=args.steps, batch_size=args.batch_size,
      learning_rate=args.learning_rate, data_dir=args.data_dir)
  return 0


if __name__ == "__main__":
  sys.exit(main())
