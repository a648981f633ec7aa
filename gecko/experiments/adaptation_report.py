"""The domain-adaptation tables, from OUTPUT_DIR/results alone:

* the rows: each row's mean ± spread over seeds in both input formats, and its paired
  bootstrap difference to the start model over the test queries
  (`gecko.evaluation.bootstrap`; the start model in the same format: like for like);
* with `versus`, each row's paired difference to another row (between rows);
* with `exclude`, each row's test score and difference to the start model without
  those test queries (e.g. ones that are verbatim training queries), and to `versus`
  where it is given;
* with `unseen_of` (a BEIR directory), the same on the test queries none of whose
  judged documents a training query is judged on;
* model selection: each selection run's dev score at every kept checkpoint;
* on the human dev split, each run scored at one checkpoint with its per-query scores
  (a row, or a setting of `--dev_only --eval_step S`), seeds averaged per query, and its
  paired difference to the start model's and, with `dev_versus`, to that run's;
* where Eq. 3's denominator goes: the `gecko.experiments.loss_shares` results written
  to OUTPUT_DIR/results/shares/;
* the command that made each row.

Each table is printed under the command that produces it."""

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
    ("dev @384", "gecko", "dev@384"), ("human dev plain @384", "plain", "human_dev@384"),
    ("STS-B plain", "plain", "STSBenchmark@384"), ("STS-B Gecko", "gecko", "STSBenchmark@384"),
    ("Banking77 plain", "plain", "Banking77@384"), ("Banking77 Gecko", "gecko", "Banking77@384"),
)
CI_DIM = "384"
SELECTION = "selection"  # results/selection/: the model-selection runs' dev scores
SHARES = "shares"  # results/shares/: `gecko.experiments.loss_shares --output` files


def scores(result: dict, fmt: str) -> dict[str, float]:
  """One format's {task@dim: score} of a result (older results hold only the Gecko
  format, under "scores")."""
  return result.get(f"scores_{fmt}_format") or (result.get("scores", {}) if fmt == "gecko"
                                                 else {})


def load(output_dir: str, *, folder: str = "") -> dict[str, list[dict]]:
  """{row: its seeds' results} from OUTPUT_DIR/results[/FOLDER]/*.json."""
  rows: dict[str, list[dict]] = {}
  for path in sorted(glob.glob(os.path.join(output_dir, "results", folder, "*.json"))):
    with open(path, encoding="utf-8") as f:
      result = json.load(f)
    rows.setdefault(result.get("row", result["variant"]), []).append(result)
  return rows


def _order(name: str, results: Sequence[dict]) -> tuple:
  variants = list(VARIANTS)
  variant = results[0]["variant"]
  return (name != START, name.startswith("soup("),
          variants.index(variant) if variant in variants else len(variants), name)


def per_query(rows: dict[str, list[dict]], name: str, fmt: str,
              exclude: Sequence[str] = ()) -> dict[str, float] | None:
  """The row's per-query nDCG@10 at CI_DIM, seeds averaged per query, without the
  queries `exclude`; None without per-query scores."""
  try:
    runs = [r["per_query"][fmt][CI_DIM] for r in rows[name]]
  except KeyError:
    return None
  if not runs:
    return None
  return {q: v for q, v in bootstrap.mean_over_seeds(runs).items() if q not in exclude}


def difference(rows: dict[str, list[dict]], name: str, fmt: str, *, versus: str = START,
               exclude: Sequence[str] = ()) -> bootstrap.Difference | None:
  """The row's paired difference to `versus` (`per_query` of each side); None without
  per-query scores on both sides."""
  base, run = per_query(rows, versus, fmt, exclude), per_query(rows, name, fmt, exclude)
  return None if base is None or run is None else bootstrap.paired(base, run)


def _cell(values: list[float]) -> str:
  if not values:
    return "—"
  spread = f" ± {np.std(values):.4f}" if len(values) > 1 else ""
  return f"{np.mean(values):.4f}{spread}"


def _diff_cell(diff: bootstrap.Difference | None) -> str:
  """A difference with its interval, starred when the interval excludes zero."""
  return "—" if diff is None else f"{diff}{' *' if diff.significant else ''}"


def _command(output_dir: str, *flags: str) -> str:
  return ("```bash\npython -m gecko.experiments.domain_adaptation --output_dir="
          f"{output_dir} --report{''.join(' ' + f for f in flags)}\n```\n")


def report(output_dir: str, *, versus: str | None = None, exclude: Sequence[str] = (),
           unseen_of: str | None = None, dev_versus: str | None = None) -> str:
  """results.md (the tables of the module docstring, each under its command),
  results.png (the scores) and results_delta.png (the Δs to the start model with their
  intervals); returns results.md's text."""
  rows, selected = load(output_dir), load(output_dir, folder=SELECTION)
  if not rows and not selected:
    raise FileNotFoundError(f"No results under {output_dir}/results: run the variants first.")
  if versus is not None and versus not in rows:
    raise ValueError(f"--versus {versus!r} is not a row of {output_dir}/results; the rows "
                     f"are {sorted(rows)}.")
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
      cells.append(_diff_cell(diff))
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
  text = (_command(output_dir) + "\n" + table + "\n* the 95% interval excludes zero.\n"
          + between_rows(rows, output_dir, versus)
          + without(rows, output_dir, exclude, versus=versus)
          + unseen(rows, output_dir, unseen_of, versus=versus)
          + selection(selected, output_dir) + on_dev(rows, selected, output_dir, dev_versus)
          + denominator_shares(output_dir)
          + commands(rows, selected))
  with open(os.path.join(output_dir, "results.md"), "w", encoding="utf-8") as f:
    f.write(text)
  bars = {n: {c: v for c, v in m.items() if c.startswith(("SciFact", "Gecko @384", "STS-B plain"))}
          for n, m in means.items() if m}
  if bars:
    reports.plot_bars(os.path.join(output_dir, "results.png"), bars)
  if differences:
    reports.plot_intervals(os.path.join(output_dir, "results_delta.png"), differences,
                           xlabel="nDCG@10 − start, 95% interval")
  print(text)
  return text


def between_rows(rows: dict[str, list[dict]], output_dir: str, versus: str | None) -> str:
  """Each row's paired difference to `versus` in both formats (empty without it)."""
  if versus is None:
    return ""
  lines = ["", f"Between rows: each row − {versus}, nDCG@10 @{CI_DIM} on the test queries, "
           "seeds averaged per query, 95% paired bootstrap interval.", "",
           _command(output_dir, f"--versus={versus}"),
           "| row | Δ plain [95% CI] | Δ Gecko [95% CI] |", "|---|---|---|"]
  for name, results in sorted(rows.items(), key=lambda item: _order(*item)):
    if name == versus:
      continue
    cells = []
    for fmt in ("plain", "gecko"):
      diff = difference(rows, name, fmt, versus=versus)
      cells.append(_diff_cell(diff))
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def unseen(rows: dict[str, list[dict]], output_dir: str, corpus_dir: str | None, *,
           versus: str | None = None) -> str:
  """`without` the test queries of `corpus_dir` judged on a training query's document
  (`human_dev.on_training_documents`; empty without `corpus_dir`)."""
  if corpus_dir is None:
    return ""
  from gecko.experiments import human_dev
  seen = human_dev.on_training_documents(corpus_dir)
  return without(rows, output_dir, seen, title=(
      f"On the test queries none of whose judged documents a training query of {corpus_dir} "
      f"is judged on ({len(seen)} test queries left out)"),
      flags=(f"--corpus_dir={corpus_dir}", "--unseen_documents"), versus=versus)


def without(rows: dict[str, list[dict]], output_dir: str, exclude: Sequence[str], *,
            title: str | None = None, flags: Sequence[str] | None = None,
            versus: str | None = None) -> str:
  """Each row's test nDCG@10 @CI_DIM and its difference to the start model (and, with
  `versus`, its plain difference to that row), all without the test queries `exclude`
  (empty without them), under `title` and the report command with `flags` (default: the
  queries and --exclude_queries)."""
  if not exclude:
    return ""
  title = title or f"Without the test queries {', '.join(exclude)}"
  flags = [*(flags or (f"--exclude_queries={','.join(exclude)}",)),
           *([f"--versus={versus}"] if versus else [])]
  headers = ["row", "plain", "Gecko", "Δ plain vs start [95% CI]", "Δ Gecko vs start [95% CI]",
             *([f"Δ plain vs {versus} [95% CI]"] if versus else [])]
  lines = ["", f"{title}: nDCG@10 @{CI_DIM}, seeds averaged per query; Δ with its "
           "95% paired bootstrap interval.", "", _command(output_dir, *flags),
           "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
  for name, results in sorted(rows.items(), key=lambda item: _order(*item)):
    means, cells = [], []
    for fmt in ("plain", "gecko"):
      scores_ = per_query(rows, name, fmt, exclude)
      means.append("—" if not scores_ else f"{np.mean(list(scores_.values())):.4f}")
      diff = None if name == START else difference(rows, name, fmt, exclude=exclude)
      cells.append(_diff_cell(diff))
    if versus:
      cells.append(_diff_cell(None if name == versus else difference(
          rows, name, "plain", versus=versus, exclude=exclude)))
    lines.append(f"| {name} | " + " | ".join(means + cells) + " |")
  return "\n".join(lines) + "\n"


def _one_checkpoint(name: str) -> bool:
  """Whether a selection run scored one checkpoint: a setting `ROW@S`, or the start
  model's dev row."""
  return "@" in name or name == START


def selection(selected: dict[str, list[dict]], output_dir: str) -> str:
  """Model selection: each selection run's human-dev nDCG@10 (plain, @CI_DIM) at every
  kept checkpoint, the best step marked; then the settings scored at one checkpoint
  (`--dev_only --eval_step S`, named `ROW@S`, and the start model's
  `--variant=start --dev_only`, at step 0), the best of them marked. Empty without
  selection runs."""
  runs = [(name, r) for name, results in sorted(selected.items())
          for r in sorted(results, key=lambda r: r["seed"])]
  settings = [(name, r) for name, r in runs if _one_checkpoint(name)]
  curves = [(name, r) for name, r in runs if not _one_checkpoint(name)]
  key = f"human_dev@{CI_DIM}"
  lines = []
  if curves:
    steps = sorted({int(s) for _, r in curves for s in r["dev_by_step"]})
    lines += ["", f"Model selection on the human dev split (plain format, nDCG@10 @{CI_DIM}); "
              "** marks each run's best checkpoint.", "", _command(output_dir),
              "| run | seed | " + " | ".join(f"step {s}" for s in steps) + " | best |",
              "|" + "---|" * (len(steps) + 3)]
    for name, r in curves:
      by_step = {int(s): v[key] for s, v in r["dev_by_step"].items()}
      best = max(by_step, key=lambda s: (by_step[s], -s))  # ties: the earlier step
      cells = ["—" if s not in by_step else
               (f"**{by_step[s]:.4f}**" if s == best else f"{by_step[s]:.4f}") for s in steps]
      lines.append(f"| {name} | {r['seed']} | " + " | ".join(cells) + f" | {best} |")
  if settings:
    scored = [(name, r["seed"], int(step), v[key]) for name, r in settings
              for step, v in r["dev_by_step"].items()]
    best = max(scored, key=lambda row: row[3])
    lines += ["", f"Settings scored at one checkpoint on the human dev split (plain format, "
              f"nDCG@10 @{CI_DIM}); ** marks the best.", "", _command(output_dir),
              "| setting | seed | step | dev |", "|---|---|---|---|"]
    for row in scored:
      name, seed, step, dev = row
      lines.append(f"| {name} | {seed} | {step} | "
                   + (f"**{dev:.4f}** |" if row == best else f"{dev:.4f} |"))
  return "\n".join(lines) + "\n" if lines else ""


def dev_per_query(runs: dict[str, dict[int, dict]], name: str) -> dict[str, float]:
  """The run's human-dev nDCG@10 per query at CI_DIM (plain), seeds averaged per query."""
  return bootstrap.mean_over_seeds([r["human_dev_per_query"][CI_DIM]
                                    for r in runs[name].values()])


def on_dev(rows: dict[str, list[dict]], selected: dict[str, list[dict]], output_dir: str,
           versus: str | None = None) -> str:
  """Each run with per-query human-dev scores (a row, or a setting scored at one
  checkpoint; a row's seed wins over the same setting's) on the human dev split, seeds
  averaged per query, with its paired difference to the start model's and to `versus`'s.
  Empty without any such run."""
  runs: dict[str, dict[int, dict]] = {}
  for found in (selected, rows):
    for name, results in found.items():
      for r in results:
        if "human_dev_per_query" in r:
          runs.setdefault(name, {})[r["seed"]] = r
  if versus is not None and versus not in runs:
    raise ValueError(f"--dev_versus {versus!r} has no per-query human-dev scores under "
                     f"{output_dir}/results; the runs that have them are {sorted(runs)}.")
  if not runs:
    return ""
  flags = [f"--dev_versus={versus}"] if versus else []
  headers = ["run", "seeds", "human dev plain", "Δ vs start [95% CI]",
             *([f"Δ vs {versus} [95% CI]"] if versus else [])]
  lines = ["", f"On the human dev split, each run at its scored checkpoint: nDCG@10 @{CI_DIM} "
           "(plain), seeds averaged per query; Δ with its 95% paired bootstrap interval.", "",
           _command(output_dir, *flags), "| " + " | ".join(headers) + " |",
           "|" + "---|" * len(headers)]
  for name in sorted(runs, key=lambda n: (n != START, n)):
    scores_ = dev_per_query(runs, name)
    cells = [str(len(runs[name])), f"{np.mean(list(scores_.values())):.4f}"]
    for base in (START, *([versus] if versus else [])):
      cells.append(_diff_cell(None if name == base or base not in runs else bootstrap.paired(
          dev_per_query(runs, base), scores_)))
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def denominator_shares(output_dir: str) -> str:
  """Where Eq. 3's softmax denominator goes, one line per OUTPUT_DIR/results/shares/*.json
  (`gecko.experiments.loss_shares --output`): the records and the model, the positive
  measured, s(q, p+) and each part's share, and the same-tower share by tertile of
  s(q, p+), under the commands that wrote them. Empty without any."""
  found = []
  for path in sorted(glob.glob(os.path.join(output_dir, "results", SHARES, "*.json"))):
    with open(path, encoding="utf-8") as f:
      found.append(json.load(f))
  if not found:
    return ""
  made = [r["command"] for r in found if r.get("command")]
  lines = ["", "Where Eq. 3's denominator goes (`gecko.experiments.loss_shares`: batches of "
           "each row's training records alone, tau as trained); the share of each part, "
           "averaged over queries.", ""]
  if made:
    lines += ["```bash", *made, "```", ""]
  lines += ["| records | model | positive | queries | s(q, p⁺) p10 / p50 / p90 | positive "
            "| other positives | same tower | hard negative | same tower by s(q, p⁺) tertile, "
            "low / mid / high |", "|" + "---|" * 10]
  for r in found:
    folder = r["fret"].rstrip("/")
    records = (os.path.basename(os.path.dirname(folder)) if os.path.basename(folder) == "fret"
               else folder)
    s, share = r["s_positive"], r["share"]
    lines.append(
        f"| {records} | {r['model']} | {r.get('positive', 'record')} | {r['queries']} | "
        f"{s['p10']:.3f} / {s['p50']:.3f} / {s['p90']:.3f} | "
        + " | ".join(f"{share[part]:.3f}" for part in
                     ("positive", "in_batch_positives", "same_tower", "hard_negative"))
        + " | " + " / ".join(f"{v:.3f}" for v in r["same_tower_share_by_s_positive_tertile"])
        + " |")
  return "\n".join(lines) + "\n"


def commands(rows: dict[str, list[dict]], selected: dict[str, list[dict]]) -> str:
  """The driver command of each run, rows first, then the selection runs (results made
  before commands were kept have none)."""
  made = [(f"{name}{label}", r["seed"], r["driver_command"])
          for runs, label in ((rows, ""), (selected, " (selection)"))
          for name, results in sorted(runs.items()) for r in results if r.get("driver_command")]
  if not made:
    return ""
  return ("\nThe commands that made the rows:\n\n```bash\n"
          + "".join(f"# {name}, seed {seed}\n{command}\n" for name, seed, command in made)
          + "```\n")
