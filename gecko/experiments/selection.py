"""Model selection on the human dev split: a run's kept checkpoints, each exported as a
model directory and scored on the dev split (`gecko.experiments.human_dev`) in the
plain format, the scores cached so that a rerun scores only what is missing; and any
model scored on that split alone (`score_dev`: the start model's dev row)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from gecko.data import paths
from gecko.experiments.recipes import Budget


def checkpoint_model(*, output_dir: str, run_name: str, model_dir: str, step: int) -> str:
  """OUTPUT_DIR/steps/RUN/STEP: the run's checkpoint at `step` as a model directory
  (`gecko.export`, written the first time)."""
  from gecko import export
  path = os.path.join(output_dir, "steps", run_name, str(step))
  if not os.path.isdir(path):
    export.export(model=model_dir, output=path, step=step)
  return path


def score_dev(*, model: str, human_dev_dir: str, dims: Sequence[int] | None, output_dir: str,
              model_name: str) -> dict[str, dict]:
  """`model` on the human dev split in the plain format, at `dims` (None: the model's
  own): {"human_dev@DIM": nDCG@10, ..., "per_query": {DIM: {query: nDCG@10}}} (the
  reports under `output_dir`)."""
  from gecko import eval as eval_lib
  from gecko.evaluation import tasks
  task = tasks.RetrievalTask(name="human_dev", path=human_dev_dir, task="fact checking",
                             per_query=True)
  results = eval_lib.evaluate(checkpoint=model, tasks=[task], dims=dims, gecko_format=False,
                              output_dir=output_dir, model_name=model_name)["human_dev"]
  return {**{f"human_dev@{dim}": s["main_score"] for dim, s in results.items()},
          "per_query": {str(dim): s["ndcg_at_10_per_query"] for dim, s in results.items()}}


def dev_by_step(*, output_dir: str, run_name: str, model_dir: str, budget: Budget,
                human_dev_dir: str, dims: Sequence[int]) -> dict[str, dict]:
  """{"dev_by_step": {step: {"human_dev@DIM": nDCG@10}}} of each scored checkpoint (each
  kept one, or the budget's `eval_step` alone) on the human dev split, in the plain
  format (model selection), and with one scored checkpoint its per-query scores,
  {"human_dev_per_query": {DIM: {query: nDCG@10}}} (paired intervals between settings).
  Kept in OUTPUT_DIR/steps/RUN/dev_by_step.json, so a rerun scores only what is missing
  (a lone scored step whose per-query scores were not kept is scored again)."""
  path = os.path.join(output_dir, "steps", run_name, "dev_by_step.json")
  scores = json.loads(paths.read_text(path)) if os.path.exists(path) else {}
  steps = [str(step) for step in budget.scored_steps()]
  for step in steps:
    if step in scores and ("per_query" in scores[step] or len(steps) > 1):
      continue
    model = checkpoint_model(output_dir=output_dir, run_name=run_name, model_dir=model_dir,
                             step=int(step))
    scores[step] = score_dev(
        model=model, human_dev_dir=human_dev_dir, dims=dims, model_name=f"{run_name}@{step}",
        output_dir=os.path.join(output_dir, "steps", run_name, "dev_eval", str(step)))
    paths.write_text(path, json.dumps(scores, indent=2))
  return dev_row({step: scores[step] for step in steps})


def dev_row(scores: dict[str, dict]) -> dict[str, dict]:
  """A result's dev fields from `score_dev`'s scores by step: {"dev_by_step": {step:
  {"human_dev@DIM": nDCG@10}}}, and with one scored step its per-query scores,
  {"human_dev_per_query": {DIM: {query: nDCG@10}}}."""
  out: dict[str, dict] = {"dev_by_step": {
      step: {k: v for k, v in score.items() if k != "per_query"}
      for step, score in scores.items()}}
  if len(scores) == 1:
    out["human_dev_per_query"] = next(iter(scores.values()))["per_query"]
  return out
