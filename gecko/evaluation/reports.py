"""Reports of evaluation results: a Markdown table and a PNG bar chart.

`results` is {model: {task: {dim: {"main_score": ..., ...}}}}; `main_metrics` maps
each task to the name of its main metric.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

Results = Mapping[str, Mapping[str, Mapping[int, Mapping[str, float]]]]


def _rows(results: Results):
  for model, per_task in results.items():
    for task, per_dim in per_task.items():
      for dim, scores in sorted(per_dim.items()):
        yield model, task, dim, scores["main_score"]


def write_markdown(path: str, results: Results, main_metrics: Mapping[str, str]) -> None:
  """One row per (model, task, dim): the task's main metric and its score."""
  lines = ["| model | task | metric | dim | score |", "|---|---|---|---|---|"]
  lines += [f"| {model} | {task} | {main_metrics[task]} | {dim} | {score:.4f} |"
            for model, task, dim, score in _rows(results)]
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")


def plot_scores(path: str, results: Results, main_metrics: Mapping[str, str]) -> None:
  """Grouped bars: one group per task, one bar per (model, dim)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  rows = list(_rows(results))
  tasks = list(dict.fromkeys(task for _, task, _, _ in rows))
  series = list(dict.fromkeys((model, dim) for model, _, dim, _ in rows))
  value = {(model, task, dim): score for model, task, dim, score in rows}
  width = 0.8 / max(len(series), 1)
  fig, ax = plt.subplots(figsize=(max(4.0, 1.8 * len(tasks) + 1), 3.6))
  for i, (model, dim) in enumerate(series):
    xs = [t + (i - (len(series) - 1) / 2) * width for t in range(len(tasks))]
    ys = [value.get((model, task, dim), float("nan")) for task in tasks]
    bars = ax.bar(xs, ys, width, label=f"{model} ({dim}d)")
    ax.bar_label(bars, fmt="%.3f", fontsize=7)
  ax.set_xticks(range(len(tasks)))
  ax.set_xticklabels([f"{t}\n{main_metrics[t]}" for t in tasks], fontsize=8)
  ax.set_ylim(min(0.0, min(score for *_, score in rows)), 1.05)
  ax.set_ylabel("score")
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
