"""The stages every experiment driver runs: corpus -> FRet -> split -> fine-tune -> evaluate.

  passages = stages.write_corpus(docstrings.passages(), "out/passages.jsonl")
  records, summary = stages.fret(FretConfig(corpus=..., output_dir=...), llm=LlamaCpp())
  heldout.split_records(records, ...)                     # the driver's own split
  export = stages.FineTuning(gin_files=[...], model_dir=..., ...).run()
  scores = stages.evaluate_formats(export, tasks=[...], output_dir=..., name="ft")

`gecko.experiments.demo` and `gecko.experiments.domain_adaptation` are two
configurations of these. A stage keeps its output, and a rerun reuses it (the corpus
file, the FRet cache and records, a finished training run), so a driver resumes. A
fine-tuning stopped by SIGTERM (preemption) saves its step and ends the driver
(`Preempted`) before anything reads its checkpoints.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shlex
import sys
from collections.abc import Mapping, Sequence

from gecko.data import jsonl, paths
from gecko.fret.config import FretConfig
from gecko.fret.llm import LLM
from gecko.gin_flags import gin_string

# The input formats every model is evaluated in: the start model's own plain format
# and the Gecko `task: ... | query: ...` format the fine-tuning teaches.
FORMATS = {"plain": False, "gecko": True}


def write_corpus(passages: Sequence[dict], path: str, *, seed: int = 0) -> list[dict]:
  """The passages in a fixed shuffled order (so that NUM_SEEDS samples all of them),
  written to `path` as FRet JSONL unless it is there; returns them in that order."""
  shuffled = list(passages)
  random.Random(seed).shuffle(shuffled)
  if not os.path.exists(path):
    jsonl.write(path, shuffled)
  return shuffled


def fret(config: FretConfig, *, llm: LLM) -> tuple[list[dict], dict[str, object]]:
  """The FRet records of `config` (made or completed by `gecko.fret.pipeline`), and the
  run's summary."""
  from gecko.fret import pipeline, records
  summary = pipeline.run(config, llm=llm)
  return records.read(config.output_dir), summary


def _gin_literal(value: object) -> str:
  return gin_string(value) if isinstance(value, str) else repr(value)


class Preempted(SystemExit):
  """Fine-tuning saved its step on SIGTERM and stopped: the driver ends here with this
  message and exit status 1, nothing scored (a SystemExit, so no `except Exception` on
  the way out treats the unfinished run as done); the same command resumes it."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class FineTuning:
  """One `gecko.train` run as objects: its gin files and macro values.

  `run()` configures gin with them and calls `gecko.train.train` in this process (an
  error is an exception, as from any function); `command_line()` is the command a user
  would type for the same run, printed before it starts so that a row can be re-run by
  hand.

  Attributes:
    gin_files: The run's gin files, in order.
    model_dir, data_dir: MODEL_DIR and TASK_DATA_DIR.
    steps, batch_size, learning_rate: TRAIN_STEPS, BATCH_SIZE, LEARNING_RATE (with
      WARMUP_STEPS a tenth of the steps and one checkpoint, at the end).
    macros: Any other macros, as Python values (strings are quoted for gin).
    stop_at: Train up to this step of the `steps` schedule and stop there, its
      checkpoint kept and nothing exported (a row scored at an earlier checkpoint:
      the same checkpoint as a run of all `steps`, which resumes from it); None: all.
  """

  gin_files: Sequence[str]
  model_dir: str
  data_dir: str
  steps: int
  batch_size: int
  learning_rate: float
  macros: Mapping[str, object] = dataclasses.field(default_factory=dict)
  stop_at: int | None = None

  def __post_init__(self):
    if self.stop_at is not None and not 1 <= self.stop_at <= self.steps:
      raise ValueError(f"stop_at={self.stop_at} is not a step of this {self.steps}-step run; "
                       f"use 1 to {self.steps}, or None to train them all.")

  def stops_early(self) -> bool:
    """Whether the run stops before the end of its schedule (`stop_at`)."""
    return self.stop_at is not None and self.stop_at < self.steps

  def bindings(self) -> dict[str, str]:
    """{MACRO or binding: gin literal} of the run."""
    values = {"MODEL_DIR": self.model_dir, "TASK_DATA_DIR": self.data_dir,
              "TRAIN_STEPS": self.steps, "BATCH_SIZE": self.batch_size,
              "LEARNING_RATE": self.learning_rate, "WARMUP_STEPS": max(1, self.steps // 10),
              "CHECKPOINT_EVERY": self.steps, **self.macros}
    if self.stops_early():  # the optimizer's schedule keeps TRAIN_STEPS
      values.update({"train.train.train_steps": self.stop_at, "train.train.export": False})
    return {name: _gin_literal(value) for name, value in values.items()}

  def args(self) -> list[str]:
    """The `gecko.train` command-line arguments."""
    return [*(f"--gin_file={f}" for f in self.gin_files),
            *(f"--gin.{name}={value}" for name, value in self.bindings().items())]

  def command_line(self) -> str:
    """The shell command for this run (quoted for a POSIX shell)."""
    return "python -m gecko.train " + shlex.join(self.args())

  def run(self) -> str:
    """Trains unless MODEL_DIR/export exists, or with `stop_at` its checkpoint does (a
    finished run is not repeated; an unfinished one resumes from its checkpoint);
    returns the export (none is written when the run stops early).

    Raises:
      Preempted: SIGTERM stopped the run (its step is saved)."""
    from gecko import gin_flags, train
    export = paths.join(self.model_dir, "export")
    stopped = self.stops_early() and paths.isdir(
        paths.join(paths.checkpoints_dir(self.model_dir), str(self.stop_at)))
    print(f"fine-tuning:\n  {self.command_line()}", file=sys.stderr)
    if not (paths.isdir(export) or stopped):
      gin_flags.configure(list(self.gin_files),
                          [f"{name} = {value}" for name, value in self.bindings().items()])
      last = gin_flags.call_configured(train.train)
      if "preempted_at_step" in last:
        raise Preempted(f"fine-tuning stopped at step {last['preempted_at_step']} on SIGTERM "
                        f"(preemption), its checkpoint saved in {self.model_dir}; nothing was "
                        "scored. The same command resumes it.")
    return export


def evaluate_formats(checkpoint: str, *, tasks: Sequence, output_dir: str, name: str,
                     dims: Sequence[int] | None) -> dict[str, dict]:
  """`gecko.eval.evaluate`'s results for `checkpoint` in each of FORMATS
  ({"plain": results, "gecko": results}), reports under OUTPUT_DIR/<format>/."""
  from gecko import eval as eval_lib
  return {fmt: eval_lib.evaluate(checkpoint=checkpoint, tasks=tasks, gecko_format=gecko_format,
                                 dims=dims, output_dir=os.path.join(output_dir, fmt),
                                 model_name=name)
          for fmt, gecko_format in FORMATS.items()}
