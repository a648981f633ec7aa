r"""Evaluate an embedding model on MTEB task families: `python -m gecko.eval --gin_file=...`.

  python -m gecko.eval --gin_file=gin/runs/eval.gin \
    --gin.CHECKPOINT="'all-MiniLM-L6-v2'" --gin.DATA_DIR="'../shared/data'" \
    --gin.EVAL_TASKS="['stsb', 'scifact', 'banking77']" --gin.OUTPUT_DIR="'/tmp/eval'"

CHECKPOINT is anything `gecko.models.embedder.load` accepts: a packaged model name, a
Hugging Face directory, or a saved model such as a training run's `MODEL_DIR/export`.
Writes per-task JSON in mteb's result layout under OUTPUT_DIR/results/<model>/ and a
Markdown table OUTPUT_DIR/results.md (task, metric, score, dim, model) and a
bar chart OUTPUT_DIR/results.png.
`evaluate()` itself is a plain keyword-only function, callable without gin.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence

import jax
import numpy as np

from gecko.data import input_format, paths
from gecko.encode import encode
from gecko.evaluation import reports
from gecko.evaluation import tasks as tasks_lib
from gecko.models import embedder as embedder_lib
from gecko.training import partitioning


class EvaluationError(RuntimeError):
  """Some tasks failed (the others' results are written)."""


def evaluate(*, checkpoint: str, tasks: Sequence[str | object], output_dir: str,
             data_dir: str | None = None, dims: Sequence[int] | None = None,
             gecko_format: bool = False, batch_size: int = 64,
             model_name: str | None = None, mesh_axes: Mapping[str, int] | None = None
             ) -> dict[str, dict[int, dict[str, float]]]:
  """Evaluates a model and writes the reports; returns {task: {dim: scores}}.

  Args:
    checkpoint: Model to evaluate (name, Hugging Face directory or saved model).
    tasks: Task objects (`gecko.evaluation.tasks`), or short names of
      `standard_tasks(data_dir)` ("stsb", "scifact", "banking77").
    output_dir: Where results/, results.md and results.png go.
    data_dir: Directory holding the standard tasks' folders.
    dims: Matryoshka dims to score (default: all of the model's).
    gecko_format: Format inputs as `task: ... | query: ...` / `title: ... | text: ...`
      (for Gecko-trained models); False for imported models.
    batch_size: Encoding batch size.
    model_name: Name in the reports (default: from the checkpoint path).
    mesh_axes: Encode over the devices of this mesh (`{"data": -1}`: every device of
      the host, e.g. a TPU VM's 4-8 chips); None encodes on the default device.

  A task that fails (bad data, say) is reported on stderr and the remaining tasks still
  run; the reports hold every task that finished, then EvaluationError names the
  failed ones. Data the loaders dropped (qrels naming unknown documents or queries,
  judged queries without a relevant document) is said on stderr and in results.md.
  """
  paths.check_output_dir(output_dir, checkpoint, data_dir, flag="OUTPUT_DIR")
  model = embedder_lib.load(checkpoint)
  dims = tuple(dims or model.dims)
  bad = [d for d in dims if d not in model.dims]
  if bad:
    raise ValueError(f"dims {bad} are not Matryoshka dims of {checkpoint!r} {model.dims}.")
  resolved = [_resolve(task, data_dir) for task in tasks]
  fmt = input_format.GECKO if gecko_format else input_format.UNFORMATTED
  name = model_name or embedder_lib.model_name(checkpoint)
  mesh = partitioning.make_mesh(mesh_axes) if mesh_axes else None
  embed = _RecentEncoder(model, batch_size=batch_size, mesh=mesh)
  mirror = paths.Mirror(output_dir)  # a bucket OUTPUT_DIR: written here, then copied up
  result_dir = os.path.join(mirror.root, "results", name)
  os.makedirs(result_dir, exist_ok=True)
  try:
    results, failed, notes = _run_tasks(resolved, embed=embed, dims=dims, fmt=fmt,
                                        result_dir=result_dir, model_name=name)
    main_metrics = {t.name: t.main_score for t in resolved if t.name in results}
    notes += [f"{task} failed: {reason}" for task, reason in failed.items()]
    if results:
      reports.write_markdown(os.path.join(mirror.root, "results.md"), {name: results},
                             main_metrics, notes=notes)
      reports.plot_scores(os.path.join(mirror.root, "results.png"), {name: results},
                          main_metrics)
  finally:
    if jax.process_index() == 0:
      mirror.push()
  if failed:
    raise EvaluationError(f"{len(failed)} of {len(resolved)} tasks failed "
                          f"({'; '.join(f'{t}: {r}' for t, r in failed.items())}); the results "
                          f"of the others are in {output_dir}.")
  return results


def _run_tasks(tasks: Sequence, *, embed: _RecentEncoder, dims: Sequence[int], fmt,
               result_dir: str, model_name: str) -> tuple[dict, dict[str, str], list[str]]:
  """(results, failed tasks' reasons, notes); each finished task's JSON is written."""
  results, failed, notes = {}, {}, []
  for task in tasks:
    start, embed.seconds = time.perf_counter(), 0.0
    print(f"gecko.eval: {task.name} ({task.type})", file=sys.stderr)
    try:
      scores = task.evaluate(embed, dims=dims, fmt=fmt)
    except Exception as e:  # reported; the other tasks still run and are written
      failed[task.name] = f"{type(e).__name__}: {e}"
      print(f"gecko.eval: {task.name} failed: {failed[task.name]}", file=sys.stderr)
      continue
    results[task.name] = scores
    for note in _dropped(task.name, scores):
      print(f"gecko.eval: warning: {note}", file=sys.stderr)
      notes.append(note)
    _write_task_json(result_dir, task=task, model_name=model_name, scores=scores,
                     seconds=time.perf_counter() - start, encode_seconds=embed.seconds)
  return results, failed, notes


def _resolve(task, data_dir: str | None):
  """A task object, or the standard task of that short name under `data_dir`."""
  if not isinstance(task, str):
    return task
  known = tasks_lib.standard_tasks(data_dir) if data_dir else {}
  if task not in known:
    raise ValueError(f"Unknown task {task!r}: use one of "
                     f"{sorted(known) or ['stsb', 'scifact', 'banking77']} with data_dir set, "
                     "or pass task objects.")
  return known[task]


class _RecentEncoder:
  """`encode` that remembers the last few text lists: a task whose texts are all in one
  of them (the same corpus scored against another qrels split, in another order, or a
  subset) takes its rows instead of encoding again. `seconds` sums the encoding time."""

  def __init__(self, model, *, batch_size: int, mesh=None):
    self.model, self.batch_size, self.mesh, self.seconds = model, batch_size, mesh, 0.0
    self._recent: collections.deque[tuple[dict[str, int], np.ndarray]] = collections.deque(
        maxlen=4)

  def __call__(self, texts: list[str]) -> np.ndarray:
    for rows, vectors in self._recent:
      if all(t in rows for t in texts):
        return vectors[[rows[t] for t in texts]]
    start = time.perf_counter()
    out = encode(texts, model=self.model, batch_size=self.batch_size, show_progress=True,
                 mesh=self.mesh)
    self.seconds += time.perf_counter() - start
    self._recent.append(({t: i for i, t in enumerate(texts)}, out))
    return out


def _write_task_json(result_dir: str, *, task, model_name: str, scores, seconds: float,
                     encode_seconds: float) -> None:
  """`results/<model>/<task>.json` in mteb's result layout, with the time split."""
  print(f"gecko.eval: {task.name}: {seconds:.1f} s, of which encoding {encode_seconds:.1f} s, "
        f"loading and scoring {seconds - encode_seconds:.1f} s", file=sys.stderr)
  report = {
      "task_name": task.name, "model_name": model_name, "evaluation_time": seconds,
      "encode_time": encode_seconds, "scoring_time": seconds - encode_seconds,
      "scores": {getattr(task, "split", "test"): [
          dict(s, hf_subset="default", languages=["eng-Latn"], dim=dim)
          for dim, s in scores.items()]},
  }
  with open(os.path.join(result_dir, f"{task.name}.json"), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2)


def _dropped(task: str, scores: dict[int, dict[str, float]]) -> list[str]:
  """What the task's loader dropped (`dropped_*` scores), as sentences."""
  first = next(iter(scores.values()), {})
  return [f"{task}: {int(v)} {k.removeprefix('dropped_').replace('_', ' ')} dropped "
          "(not scored)" for k, v in first.items() if k.startswith("dropped_") and v]


def main(argv: Sequence[str]) -> int:
  from gecko import gin_flags
  return gin_flags.run(evaluate, argv, prog="python -m gecko.eval", doc=__doc__,
                       expected=(EvaluationError, FileNotFoundError, ValueError))


if __name__ == "__main__":
  from gecko import (
    eval as _eval_module,  # gin binds the importable module, not __main__
  )
  sys.exit(_eval_module.main(sys.argv[1:]))
