r"""Average several models into one (a model soup): `python -m gecko.soup`.

  python -m gecko.soup --model /runs/seed0/export --model /runs/seed1/export --output /tmp/soup
  python -m gecko.soup --model /runs/ft@2000 --model /runs/ft@3000 --model /runs/ft \
      --weights 1,1,2 --output /tmp/soup_steps

Each MODEL is anything `gecko.models.embedder.load` accepts, or a training MODEL_DIR
(its latest checkpoint, or `MODEL_DIR@STEP`, restored on one device). All must share
one architecture and vocabulary. `--weights` (normalised to sum to 1; default uniform)
weight the parameter average. The soup is saved like any model (`embedder.save`): give
it to `gecko.eval` as CHECKPOINT, to `gecko.encode`, or to `gecko.export`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gecko import export, gin_flags
from gecko.data import paths
from gecko.models import averaging, hf_directory
from gecko.models import embedder as embedder_lib


def _split(spec: str) -> tuple[str, str]:
  """(path, step) of `MODEL_DIR@STEP`; (spec, "") when `spec` names no step. A training
  MODEL_DIR followed by `@` and no step number is refused, naming its steps."""
  path, sep, step = spec.rpartition("@")
  if sep and not step.isdigit() and paths.is_run_dir(path):
    steps = sorted(int(n) for n in paths.listdir(paths.checkpoints_dir(path)) if n.isdigit())
    raise ValueError(f"{spec!r}: what follows @ must be a checkpoint step of {path}, one of "
                     f"{steps} (e.g. {path}@{steps[-1] if steps else 1000}).")
  return (path, step) if sep and step.isdigit() else (spec, "")


def load(spec: str) -> embedder_lib.Embedder:
  """A model by name or path, or a training MODEL_DIR[@STEP]'s checkpoint."""
  path, step = _split(spec)
  if paths.is_run_dir(path):
    model, _, _ = export.restore_run(path, step=int(step) if step else None)
    return model
  if step:
    raise ValueError(f"{spec!r}: @STEP applies to a training MODEL_DIR (checkpoints/ and "
                     "config.gin); this is not one.")
  return embedder_lib.load(spec)


def soup(*, models: Sequence[str], output: str, weights: Sequence[float] | None = None,
         overwrite: bool = False) -> str:
  """Loads `models`, averages them (`gecko.models.averaging.average`) and saves the soup."""
  if len(models) < 2:
    raise ValueError(f"a soup averages at least two models, got {len(models)}.")
  weights = averaging.check_weights(weights, len(models))  # before any model is loaded
  paths.check_apart(output, *(_split(spec)[0] for spec in models))
  hf_directory.check_output(output, overwrite=overwrite)  # before any model is loaded
  return embedder_lib.save(averaging.average([load(m) for m in models], weights=weights),
                           output, overwrite=overwrite)


def _weights(text: str) -> list[float]:
  try:
    return [float(w) for w in text.split(",")]
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m gecko.soup", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", action="append", required=True,
                      help="a model (name, directory, MODEL_DIR or MODEL_DIR@STEP); repeat")
  parser.add_argument("--weights", type=_weights, default=None,
                      help="one weight per --model, comma-separated (default: uniform)")
  parser.add_argument("--output", required=True, help="where to save the soup")
  parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
  args = parser.parse_args(argv)
  return gin_flags.run_plain(soup, prog="gecko.soup",
                             success=f"gecko.soup: averaged {len(args.model)} models into {{}}",
                             models=args.model, output=args.output, weights=args.weights,
                             overwrite=args.overwrite)


if __name__ == "__main__":
  sys.exit(main())
