"""t5x-style command lines for gin-configured entry points (`gecko.train`, `gecko.eval`).

  --gin_file=FILE        repeatable, applied in order (later files override)
  --gin.NAME=VALUE       one binding, e.g. --gin.TRAIN_STEPS=100 --gin.MODEL_DIR="'/tmp/x'"
  --gin_bindings=B       raw binding string (repeatable)
  --gin_search_path=DIR  extra directories for gin files and `include`s

Gin files are found relative to the working directory, then among the files the
package ships (the top-level `gin/`, installed as `gecko/gin/`: as `gin/runs/finetune.gin`
or `runs/finetune.gin`, so an installed package needs no checkout), then `--gin_search_path`. Configuration mistakes
(an unknown binding, a missing file, a `%gin.REQUIRED` macro left unset, a macro no file
declares or uses, an unquoted string, a value a bound class refuses) end the program
with one line naming the problem and exit status 2.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import logging
import os
import re
import sys
import tokenize
from collections.abc import Callable, Sequence

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _gin_dir() -> str:
  """The gin files: `gecko/gin/` in an installed package (setup.py maps the top-level
  gin/ there), the checkout's top-level `gin/` in an editable install."""
  installed = os.path.join(PACKAGE_DIR, "gin")
  return installed if os.path.isdir(installed) else os.path.join(
      os.path.dirname(PACKAGE_DIR), "gin")


GIN_DIR = _gin_dir()                      # "runs/x.gin" resolves here
GIN_PARENT = os.path.dirname(GIN_DIR)     # "gin/runs/x.gin" resolves here

_SEARCH_PATHS: set[str] = set()

# What to add when a required argument of an entry point is unbound.
_HINTS = {"data_fn": "add a data file after the run file: --gin_file=gin/data/seqio.gin (the "
                     "SeqIO tasks) or --gin_file=gin/data/jsonl.gin (one JSONL file)"}


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
  gin.clear_config()  # a second configuration in one process starts from nothing
  for path in (os.getcwd(), GIN_PARENT, GIN_DIR, *search_paths):
    if path not in _SEARCH_PATHS:  # gin keeps its search paths across clear_config
      _SEARCH_PATHS.add(path)
      gin.add_config_file_search_path(path)
  if not gin_files:
    raise ConfigError("no --gin_file given; e.g. --gin_file=gin/models/tiny.gin "
                      "--gin_file=gin/runs/finetune.gin --gin_file=gin/data/seqio.gin "
                      "(training) or "
                      "--gin_file=gin/runs/eval.gin (evaluation)")
  root = logging.getLogger()
  root.addFilter(_quiet_misses)
  try:
    for path in gin_files:  # one at a time, so that an error names its file
      try:
        gin.parse_config_file(path)
      except tokenize.TokenError as e:  # Python's tokenizer, which names no file
        raise ConfigError(f"{path} (or a file it includes) ends inside an unclosed (, [ or {{ "
                          f"({e.args[0]}): close it") from e
  except ConfigError:
    raise
  except Exception as e:  # gin raises many types (IOError, ValueError, ParserError, ...)
    raise ConfigError(_one_line(e)) from e
  finally:
    root.removeFilter(_quiet_misses)
  declared = _macros()
  bindings = [_renamed(binding) for binding in bindings]
  for binding in bindings:
    _parse_binding(binding)
  _check_macros(bindings, declared)
  try:
    gin.finalize()  # a `%gin.REQUIRED` macro left unset fails here
  except Exception as e:
    raise ConfigError(_one_line(e)) from e


# Gin names that now match their module's name; the old ones still work, with a
# warning, for one release (0.2 removes them).
DEPRECATED_NAMES = {"seqio_data": "seqio_batches", "pair_data": "pairs"}


def _renamed(binding: str, *, warn: bool = True) -> str:
  """`binding` with a deprecated gin name replaced by the module's (and a warning)."""
  renamed = binding
  for old, new in DEPRECATED_NAMES.items():
    renamed = re.sub(rf"(?<![\w.]){old}\.", f"{new}.", renamed)
  if warn and renamed != binding:
    print(f"gecko: the gin name in '{binding.strip()}' is deprecated; write "
          f"'{renamed.strip()}' (the module's name). The old names go in release 0.2.",
          file=sys.stderr)
  return renamed


def _macros() -> set[str]:
  """The macros the parsed configuration defines: gin's public `config_str()` lists each
  as a `NAME = value` line (a binding's name always has a dot)."""
  import gin
  return set(re.findall(r"^(\w+) = ", gin.config_str(), flags=re.MULTILINE))


def _referenced_macros() -> set[str]:
  """The macros some binding of the parsed configuration uses (`%NAME`)."""
  import gin
  return set(re.findall(r"%(\w+)", gin.config_str()))


def _parse_binding(binding: str) -> None:
  """One binding, or a ConfigError naming it (and the quoting a string value needs)."""
  import gin
  try:
    gin.parse_config(binding)
  except Exception as e:
    name, _, value = (part.strip() for part in binding.partition("="))
    hint = ""
    if re.match(r"^\w+\(", value):  # a call, e.g. float('nan')
      hint = ("; gin values are literals (numbers, 'strings', lists, tuples, dicts, True, "
              "False, None, @configurables, %MACROS), not Python calls")
    elif value and not re.match(r"""^(['"\[({@%\d.+-]|True$|False$|None$)""", value):
      hint = (f"; a string needs inner quotes: --gin.{name}=\"'{value}'\"")
    raise ConfigError(f"cannot parse the binding --gin.{name}={value} "
                      f"({_one_line(e)}){hint}") from e


def _check_macros(bindings: Sequence[str], declared: set[str]) -> None:
  """A macro bound on the command line must be one a gin file declares or uses: a
  misspelled name would otherwise be ignored and the run use the default."""
  known = declared | _referenced_macros()
  for binding in bindings:
    name = binding.partition("=")[0].strip()
    if re.fullmatch(r"\w+", name) and name not in known:
      close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
      raise ConfigError(
          f"--gin.{name}: no loaded gin file declares or uses the macro {name}"
          + (f"; did you mean {' or '.join(close)}?" if close else
             "; check the name against the files' header comments."))


def _quiet_misses(record: logging.LogRecord) -> bool:
  """Drops gin's "Path not found" log lines: it logs one for every search path that does
  not hold a file it then finds in the next one (a file found nowhere is an error)."""
  return not record.getMessage().startswith("Path not found")


def _one_line(error: Exception) -> str:
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  first = lines[0] if lines else repr(error)
  return f"{type(error).__name__}: {first}" + (
      f" ({lines[-1]})" if len(lines) > 1 and lines[-1] != lines[0] else "")


def call_configured(fn: Callable, **kwargs):
  """Calls gin's configured `fn` (with `kwargs`) after checking every required argument
  is bound."""
  import gin
  try:
    bound = gin.get_bindings(fn)  # evaluates the bound objects (@optimizers.AdamW(), ...)
  except Exception as e:
    if "in the Gin registry" in str(e):
      raise ConfigError(f"nothing configures {fn.__module__}.{fn.__name__}; add the run file "
                        "that binds it (gin/runs/finetune.gin for training, gin/runs/eval.gin "
                        "for evaluation)") from e
    raise ConfigError(_one_line(e)) from e  # a bound object's own validation
  missing = [name for name, p in inspect.signature(fn).parameters.items()
             if p.default is inspect.Parameter.empty and name not in bound and name not in kwargs]
  if missing:
    hint = _HINTS.get(missing[0], f"set them in a gin file or with "
                                  f"--gin.{fn.__name__}.{missing[0]}=...")
    raise ConfigError(f"{fn.__name__}() needs bindings for {missing}: {hint}")
  return gin.get_configurable(fn)(**kwargs)


def write_operative_config(directory: str) -> None:
  """Writes gin's operative config to `directory/config.gin` (process 0; nothing without gin)."""
  import gin
  config = gin.operative_config_str()
  if not config:
    return
  import jax
  if jax.process_index() == 0:  # one writer; a bucket path (gs://) too
    from etils import epath
    epath.Path(directory, "config.gin").write_text(config, encoding="utf-8")


def config_changes(directory: str) -> dict[str, tuple[str | None, str | None]]:
  """{binding: (value in `directory/config.gin`, value now)} for every binding of gin's
  operative config that differs from the saved one, with macro references (`%NAME`)
  resolved, so that a changed macro shows on each binding that reads it. Empty when
  nothing was saved."""
  import gin
  from etils import epath
  path = epath.Path(directory, "config.gin")
  if not path.exists():
    return {}
  saved = _bindings(path.read_text(encoding="utf-8"))
  now = _bindings(gin.operative_config_str())
  return {name: (saved.get(name), now.get(name)) for name in sorted(set(saved) | set(now))
          if saved.get(name) != now.get(name)}


def _bindings(config: str) -> dict[str, str]:
  """`name = value` statements of an operative config, continuation lines joined and
  `%MACRO` values replaced by the macro's value."""
  statements: list[str] = []
  for line in config.splitlines():
    if not line.strip() or line.lstrip().startswith("#") or line.startswith(("from ", "import ")):
      continue
    if line[0].isspace() and statements:
      statements[-1] += " " + line.strip()
    else:
      statements.append(line.strip())
  bindings = {}
  for statement in statements:  # a config.gin saved under a deprecated name reads as now
    name, _, value = _renamed(statement, warn=False).partition(" = ")
    bindings[name.strip()] = value.replace("\\ ", "").strip()
  for name, value in bindings.items():
    if value.startswith("%") and value[1:] in bindings:
      bindings[name] = bindings[value[1:]]
  return bindings


def run(fn: Callable, argv: Sequence[str], *, prog: str, doc: str,
        expected: tuple[type[Exception], ...] = (), **kwargs) -> int:
  """Parses flags, configures gin, and calls `fn` with its bindings (and `kwargs`);
  returns an exit status: 2 for a configuration error, 1 for one of the `expected`
  failures (each reported in one line; the environment variable GECKO_TRACEBACK=1
  raises it instead, traceback and all)."""
  args = parse_args(argv, prog=prog, doc=doc)
  try:
    initialize_distributed(args)
    configure(args.gin_file, args.gin_bindings, args.gin_search_path)
    call_configured(fn, **kwargs)
  except ConfigError as e:
    print(f"{prog}: configuration error: {e}", file=sys.stderr)
    return 2
  except Exception as e:
    if os.environ.get("GECKO_TRACEBACK") or not (isinstance(e, expected) or _storage_error(e)):
      raise
    message = _storage_error(e) or (str(e).splitlines()[0] if str(e) else type(e).__name__)
    print(f"{prog}: error: {message} (GECKO_TRACEBACK=1 shows the traceback)", file=sys.stderr)
    return 1
  return 0


def _storage_error(error: Exception) -> str | None:
  """One line for a full, read-only or forbidden disk (`gecko.data.disk`), else None."""
  from gecko.data import disk
  return disk.storage_error(error)


def run_plain(fn: Callable, *, prog: str, success: str, **kwargs) -> int:
  """Calls `fn(**kwargs)` for an argparse entry point: exit status 2 and one line for a
  user's mistake (a bad value, a missing file, an output that exists), else prints
  `success.format(result)` and returns 0."""
  try:
    result = fn(**kwargs)
  except Exception as e:
    storage = _storage_error(e)
    if storage:
      print(f"{prog}: error: {storage}", file=sys.stderr)
      return 1
    if not isinstance(e, (FileExistsError, FileNotFoundError, ValueError)):
      raise
    print(f"{prog}: error: {e}", file=sys.stderr)
    return 2
  print(success.format(result), file=sys.stderr)
  return 0


def gin_string(value: str) -> str:
  """`value` as a gin string literal (quotes and backslashes escaped), for a
  `--gin.NAME=...` flag built from a path or any other text."""
  if not isinstance(value, str):
    raise TypeError(f"gin_string takes a str, got {type(value).__name__}: {value!r}.")
  return repr(value)
