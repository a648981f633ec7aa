"""Reports of evaluation results: a Markdown table and a PNG bar chart.

`results` is {model: {task: {dim: {"main_score": ..., ...}}}}; `main_metrics` maps
each task to the name of its main metric.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

Results = Mapping[str, Mapping[str, Mapping[int, Mapping[str, float]]]]


def _rows(results: Results):
  for model, per_task in results.items():
    for task, per_dim in per_task.items():
      for dim, scores in sorted(per_dim.items()):
        yield model, task, dim, scores["main_score"]


def write_markdown(path: str, results: Results, main_metrics: Mapping[str, str], *,
                   notes: Sequence[str] = ()) -> None:
  """One row per (model, task, dim): the task's main metric and its score; then the
  `notes` (dropped data, failed tasks) as a list."""
  lines = ["| model | task | metric | dim | score |", "|---|---|---|---|---|"]
  lines += [f"| {model} | {task} | {main_metrics[task]} | {dim} | {score:.4f} |"
            for model, task, dim, score in _rows(results)]
  if notes:
    lines += ["", "Notes:", *(f"- {note}" for note in notes)]
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")


def plot_scores(path: str, results: Results, main_metrics: Mapping[str, str]) -> None:
  """Grouped bars: one group per task, one bar per (model, dim)."""
  table: dict[str, dict[str, float]] = {}
  for model, task, dim, score in _rows(results):
    table.setdefault(f"{model} ({dim}d)", {})[f"{task}\n{main_metrics[task]}"] = score
  plot_bars(path, table, ylabel="score")


def plot_bars(path: str, table: Mapping[str, Mapping[str, float]], *,
              ylabel: str = "main score (nDCG@10 / Spearman)") -> None:
  """Grouped bars from {series: {column: value}}: one group per column, one bar per
  series (a series may lack a column), the legend beside the bars."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  columns = list(dict.fromkeys(c for values in table.values() for c in values))
  width = 0.8 / max(len(table), 1)
  fig, ax = plt.subplots(figsize=(max(4.0, 1.5 + 0.45 * len(table) * len(columns)), 3.6))
  for i, (series, values) in enumerate(table.items()):
    present = [n for n, c in enumerate(columns) if c in values]
    bars = ax.bar([n + (i - (len(table) - 1) / 2) * width for n in present],
                  [values[columns[n]] for n in present], width, label=series)
    ax.bar_label(bars, fmt="%.3f", fontsize=6, rotation=90, padding=2)
  ax.set_xticks(range(len(columns)), columns, fontsize=8)
  lowest = min((v for values in table.values() for v in values.values()), default=0.0)
  ax.set_ylim(min(0.0, lowest), 1.1)
  ax.set_ylabel(ylabel)
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_intervals(path: str, table: Mapping[str, Mapping[str, object]], *,
                   xlabel: str = "difference to the start model") -> None:
  """Differences with their intervals from {series: {panel: d}}, where each `d` has
  `mean`, `low` and `high` (`gecko.evaluation.bootstrap.Difference`): one panel per
  column, one row per series, a line at zero; filled markers where the interval
  excludes zero."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  panels = list(dict.fromkeys(p for values in table.values() for p in values))
  series = list(table)
  labels = 0.07 * max((len(name) for name in series), default=0)  # inches for the names
  fig, axes = plt.subplots(1, max(len(panels), 1), sharey=True, squeeze=False,
                           figsize=(3.2 * max(len(panels), 1) + labels + 0.5,
                                    0.9 + 0.32 * len(series)))
  for ax, panel in zip(axes[0], panels):
    for y, name in enumerate(series):
      d = table[name].get(panel)
      if d is None:
        continue
      excludes_zero = d.low > 0 or d.high < 0
      ax.errorbar(d.mean, y, xerr=[[d.mean - d.low], [d.high - d.mean]], fmt="o",
                  color="C0", capsize=3, markerfacecolor="C0" if excludes_zero else "white")
    ax.axvline(0.0, color="grey", linewidth=0.8)
    ax.set_title(panel, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.tick_params(labelsize=7)
  axes[0][0].set_yticks(range(len(series)), series, fontsize=7)
  axes[0][0].invert_yaxis()
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120, bbox_inches="tight")  # the row names whatever their length
  plt.close(fig)
