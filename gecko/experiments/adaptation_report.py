"""The domain-adaptation table: each row's mean ± spread over seeds in both input
formats, and its paired bootstrap difference to the start model over the test queries
(`gecko.evaluation.bootstrap`; the start model in the same format: like for like)."""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Sequence

import numpy as np

from gecko.evaluation import bootstrap, reports
from gecko.experiments.recipes import VARIANTS

START = "start"
# (header, score format, key) of the table's score columns.
COLUMNS = (
    ("SciFact plain @384", "plain", "test@384"), ("plain @256", "plain", "test@256"),
    ("Gecko @384", "gecko", "test@384"), ("Gecko @256", "gecko", "test@256"),
    ("dev @384", "gecko", "dev@384"),
    ("STS-B plain", "plain", "STSBenchmark@384"), ("STS-B Gecko", "gecko", "STSBenchmark@384"),
    ("Banking77 plain", "plain", "Banking77@384"), ("Banking77 Gecko", "gecko", "Banking77@384"),
)
CI_DIM = "384"


def scores(result: dict, fmt: str) -> dict[str, float]:
  """One format's {task@dim: score} of a result (older results hold only the Gecko
  format, under "scores")."""
  return result.get(f"scores_{fmt}_format") or (result.get("scores", {}) if fmt == "gecko"
                                                 else {})


def load(output_dir: str) -> dict[str, list[dict]]:
  """{row: its seeds' results} from OUTPUT_DIR/results/*.json."""
  rows: dict[str, list[dict]] = {}
  for path in sorted(glob.glob(os.path.join(output_dir, "results", "*.json"))):
    with open(path, encoding="utf-8") as f:
      result = json.load(f)
    rows.setdefault(result.get("row", result["variant"]), []).append(result)
  if not rows:
    raise FileNotFoundError(f"No results under {output_dir}/results: run the variants first.")
  return rows


def _order(name: str, results: Sequence[dict]) -> tuple:
  variants = list(VARIANTS)
  variant = results[0]["variant"]
  return (name != START, name.startswith("soup("),
          variants.index(variant) if variant in variants else len(variants), name)


def difference(rows: dict[str, list[dict]], name: str, fmt: str) -> bootstrap.Difference | None:
  """The row's paired difference to the start model (per-query nDCG@10 at CI_DIM, the
  seeds averaged per query); None without per-query scores on both sides."""
  try:
    start = rows[START][0]["per_query"][fmt][CI_DIM]
    runs = [r["per_query"][fmt][CI_DIM] for r in rows[name]]
  except (KeyError, IndexError):
    return None
  return bootstrap.paired(start, bootstrap.mean_over_seeds(runs))


def _cell(values: list[float]) -> str:
  if not values:
    return "—"
  spread = f" ± {np.std(values):.4f}" if len(values) > 1 else ""
  return f"{np.mean(values):.4f}{spread}"


def report(output_dir: str) -> str:
  """results.md (mean ± std over seeds; Δ vs start with its 95% interval), results.png
  (the scores) and results_delta.png (the Δs with their intervals); returns the table."""
  rows = load(output_dir)
  headers = ["row", "seeds", *(c[0] for c in COLUMNS), "Δ plain @384 vs start [95% CI]",
             "Δ Gecko @384 vs start [95% CI]", "positive ≠ seed"]
  lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
  means: dict[str, dict[str, float]] = {}
  differences: dict[str, dict[str, bootstrap.Difference]] = {}
  for name, results in sorted(rows.items(), key=lambda item: _order(*item)):
    cells, means[name] = [], {}
    for header, fmt, key in COLUMNS:
      values = [scores(r, fmt)[key] for r in results if key in scores(r, fmt)]
      cells.append(_cell(values))
      if values:
        means[name][header] = float(np.mean(values))
    for fmt in ("plain", "gecko"):
      diff = None if name == START else difference(rows, name, fmt)
      cells.append("—" if diff is None else f"{diff}{' *' if diff.significant else ''}")
      if diff is not None:
        label = "plain" if fmt == "plain" else "Gecko"
        differences.setdefault(name, {})[f"SciFact {label} @{CI_DIM}"] = diff
    share = results[0].get("positive_not_seed_fraction")
    variant = VARIANTS.get(results[0]["variant"])
    if share is not None and variant is not None and variant.trains_on_seed:
      share = 0.0  # FRet moved some positives, but this row trains on the seed passages
    cells.append("—" if share is None else f"{share:.0%}")
    lines.append(f"| {name} | {len(results)} | " + " | ".join(cells) + " |")
  table = "\n".join(lines) + "\n"
  with open(os.path.join(output_dir, "results.md"), "w", encoding="utf-8") as f:
    f.write(table + "\n* the 95% interval excludes zero.\n")
  reports.plot_bars(os.path.join(output_dir, "results.png"),
                    {n: {c: v for c, v in m.items() if c.startswith(("SciFact", "Gecko @384",
                                                                     "STS-B plain"))}
                     for n, m in means.items() if m})
  if differences:
    reports.plot_intervals(os.path.join(output_dir, "results_delta.png"), differences,
                           xlabel="nDCG@10 − start, 95% interval")
  print(table)
  return table
