"""The fine-tuning stage of the experiment drivers: `gecko.train` run in this process.

The driver builds the command line a user would type (printed, so a row can be re-run
by hand), and the same arguments go to `gecko.train.main`, so the driver works from an
installed package in any directory (the gin files ship with it).
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence

from gecko import train


def command_line(args: Sequence[str]) -> str:
  """The shell command that runs `gecko.train` with `args` (quoted for a POSIX shell)."""
  return "python -m gecko.train " + shlex.join(args)


def fine_tune(args: Sequence[str], *, model_dir: str) -> str:
  """Runs `python -m gecko.train ARGS` unless MODEL_DIR/export exists (a finished run is
  not repeated; an unfinished one resumes from its checkpoint); returns the export."""
  export = os.path.join(model_dir, "export")
  print(f"fine-tuning:\n  {command_line(args)}", file=sys.stderr)
  if not os.path.isdir(export):
    status = train.main(list(args))
    if status:
      raise RuntimeError(f"gecko.train exited with status {status} (the command is above).")
  return export
