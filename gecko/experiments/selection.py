"""Model selection on the human dev split: a run's kept checkpoints, each exported as a
model directory and scored on the dev split (`gecko.experiments.human_dev`) in the
plain format, the scores cached so that a rerun scores only what is missing."""

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


def dev_by_step(*, output_dir: str, run_name: str, model_dir: str, budget: Budget,
                human_dev_dir: str, dims: Sequence[int]) -> dict[str, dict[str, float]]:
  """{step: {"human_dev@DIM": nDCG@10}} of each scored checkpoint (each kept one, or
  the budget's `eval_step` alone) on the human dev split,
  in the plain format (model selection; kept in OUTPUT_DIR/steps/RUN/dev_by_step.json,
  so a rerun scores only what is missing)."""
  from gecko import eval as eval_lib
  from gecko.evaluation import tasks
  path = os.path.join(output_dir, "steps", run_name, "dev_by_step.json")
  scores = json.loads(paths.read_text(path)) if os.path.exists(path) else {}
  task = tasks.RetrievalTask(name="human_dev", path=human_dev_dir, task="fact checking")
  for step in budget.scored_steps():
    if str(step) in scores:
      continue
    model = checkpoint_model(output_dir=output_dir, run_name=run_name, model_dir=model_dir,
                             step=step)
    results = eval_lib.evaluate(checkpoint=model, tasks=[task], dims=dims, gecko_format=False,
                                output_dir=os.path.join(output_dir, "steps", run_name,
                                                        "dev_eval", str(step)),
                                model_name=f"{run_name}@{step}")
    scores[str(step)] = {f"human_dev@{dim}": s["main_score"]
                         for dim, s in results["human_dev"].items()}
    paths.write_text(path, json.dumps(scores, indent=2))
  return {str(step): scores[str(step)] for step in budget.scored_steps()}
