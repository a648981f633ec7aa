"""t5x-style command lines for gin-configured entry points (`gecko.train`, `gecko.eval`).

  --gin_file=FILE        repeatable, applied in order (later files override)
  --gin.NAME=VALUE       one binding, e.g. --gin.TRAIN_STEPS=100 --gin.MODEL_DIR="'/tmp/x'"
  --gin_bindings=B       raw binding string (repeatable)
  --gin_search_path=DIR  extra directories for gin files and `include`s

Gin files are found relative to the working directory, the repository root (for
`include 'gin/models/...'`) and `--gin_search_path`. Configuration mistakes (an
unknown binding, a missing file, a `%gin.REQUIRED` macro left unset) end the
program with one line naming the problem and exit status 2.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from collections.abc import Callable, Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ConfigError(Exception):
  """A configuration mistake, reported in one line."""


def parse_args(argv: Sequence[str], *, prog: str, doc: str) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog=prog, description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--gin_file", action="append", default=[], help="gin file (repeatable)")
  parser.add_argument("--gin_bindings", action="append", default=[], help="raw gin binding")
  parser.add_argument("--gin_search_path", action="append", default=[],
                      help="extra directory to search for gin files")
  parser.add_argument("--multihost", action="store_true",
                      help="call jax.distributed.initialize() (TPU pods: auto-detected)")
  parser.add_argument("--coordinator_address", default=None, help="host:port of process 0")
  parser.add_argument("--num_processes", type=int, default=None)
  parser.add_argument("--process_id", type=int, default=None)
  gin_overrides = [a for a in argv if a.startswith("--gin.")]
  args = parser.parse_args([a for a in argv if not a.startswith("--gin.")])
  for arg in gin_overrides:
    name, sep, value = arg[len("--gin."):].partition("=")
    if not sep or not name:
      parser.error(f"{arg!r} must look like --gin.NAME=VALUE")
    args.gin_bindings.append(f"{name} = {value}")
  return args


def initialize_distributed(args: argparse.Namespace) -> None:
  """Starts multi-process JAX when asked to (before any other JAX call)."""
  if not (args.multihost or args.coordinator_address):
    return
  import jax
  if args.coordinator_address and jax.config.jax_platforms in (None, "", "cpu"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = {}
  if args.coordinator_address:
    kwargs = dict(coordinator_address=args.coordinator_address,
                  num_processes=args.num_processes, process_id=args.process_id)
  jax.distributed.initialize(**kwargs)


def configure(gin_files: Sequence[str], bindings: Sequence[str], search_paths=()) -> None:
  """Parses gin files and bindings; raises ConfigError with a one-line message."""
  import gin
  for path in (os.getcwd(), REPO_ROOT, *search_paths):
    gin.add_config_file_search_path(path)
  if not gin_files:
    raise ConfigError("no --gin_file given; e.g. --gin_file=gin/models/tiny.gin "
                      "--gin_file=gin/runs/finetune.gin (training) or "
                      "--gin_file=gin/runs/eval.gin (evaluation)")
  try:
    gin.parse_config_files_and_bindings(list(gin_files), list(bindings))
  except Exception as e:  # gin raises many types (IOError, ValueError, ParserError, ...)
    raise ConfigError(_one_line(e)) from e


def _one_line(error: Exception) -> str:
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return f"{type(error).__name__}: {lines[0] if lines else error!r}" + (
      f" ({lines[-1]})" if len(lines) > 1 and lines[-1] != lines[0] else "")


def call_configured(fn: Callable, **kwargs):
  """Calls gin's configured `fn` (with `kwargs`) after checking every required argument
  is bound."""
  import gin
  try:
    bound = gin.get_bindings(fn)
  except ValueError as e:
    raise ConfigError(f"nothing configures {fn.__module__}.{fn.__name__}; add the run file that "
                      "binds it (gin/runs/finetune.gin for training, gin/runs/eval.gin for "
                      "evaluation)") from e
  missing = [name for name, p in inspect.signature(fn).parameters.items()
             if p.default is inspect.Parameter.empty and name not in bound and name not in kwargs]
  if missing:
    raise ConfigError(f"{fn.__name__}() needs bindings for {missing}: set them in a gin file "
                      f"or with --gin.{fn.__name__}.{missing[0]}=...")
  return gin.get_configurable(fn)(**kwargs)


def write_operative_config(directory: str) -> None:
  """Writes gin's operative config to `directory/config.gin` (process 0; nothing without gin)."""
  import gin
  config = gin.operative_config_str()
  if not config:
    return
  import jax
  if jax.process_index() == 0:
    with open(os.path.join(directory, "config.gin"), "w", encoding="utf-8") as f:
      f.write(config)


def run(fn: Callable, argv: Sequence[str], *, prog: str, doc: str, **kwargs) -> int:
  """Parses flags, configures gin, and calls `fn` with its bindings (and `kwargs`);
  returns an exit status."""
  args = parse_args(argv, prog=prog, doc=doc)
  try:
    initialize_distributed(args)
    configure(args.gin_file, args.gin_bindings, args.gin_search_path)
    call_configured(fn, **kwargs)
  except ConfigError as e:
    print(f"{prog}: configuration error: {e}", file=sys.stderr)
    return 2
  return 0
