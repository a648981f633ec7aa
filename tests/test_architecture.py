"""The layering of `gecko/` (docs/layout.md): every import of ours, at module level or
inside a function, must follow the arrows below. Like import-linter's layers contract,
but read straight from the source with `ast`, so it needs nothing installed."""

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
ENTRY_POINTS = ("gecko.train", "gecko.eval", "gecko.compile_step", "gecko.export",
                "gecko.soup", "gecko.slice_plan")

# component -> the other components it may import (a component may always import itself).
ALLOWED: dict[str, set[str]] = {
    "gecko": set(),                                  # __init__: the version, nothing else
    "gecko.data": set(),                             # the input side
    "gecko.models": {"gecko.data"},
    "gecko.retrieval": {"gecko.data"},               # public API: exact top-N (on a mesh too)
    "gecko.gin_flags": {"gecko.data"},               # command-line plumbing (a full disk's line)
    "gecko.encode": {"gecko.data", "gecko.models"},  # public API: embed texts
    "gecko.training": {"gecko.data", "gecko.models"},
    "gecko.evaluation": {"gecko.data", "gecko.models", "gecko.encode", "gecko.retrieval"},
    "gecko.fret": {"gecko.data", "gecko.models", "gecko.encode", "gecko.retrieval",
                   "gecko.gin_flags"},
    **{entry: {"gecko.data", "gecko.models", "gecko.encode", "gecko.retrieval",
               "gecko.gin_flags", "gecko.training", "gecko.evaluation", "gecko.fret",
               *ENTRY_POINTS} for entry in ENTRY_POINTS},
    "gecko.experiments": {"gecko.data", "gecko.models", "gecko.encode", "gecko.retrieval",
                          "gecko.gin_flags", "gecko.training", "gecko.evaluation",
                          "gecko.fret", *ENTRY_POINTS},
    # The SeqIO registrations: the input side, the FRet record schema and the loaders
    # of the human-annotated files.
    "gecko_tasks": {"gecko.data", "gecko.fret.schema", "gecko.evaluation.datasets"},
}


def component(module: str) -> str:
  """The longest key of ALLOWED that `module` is, or lies under."""
  matches = [c for c in ALLOWED if module == c or module.startswith(c + ".")]
  if not matches:
    raise KeyError(module)
  return max(matches, key=len)


def modules():
  for path in sorted((REPO / "gecko").rglob("*.py")):
    parts = path.relative_to(REPO).with_suffix("").parts
    yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path
  for path in sorted((REPO / "tasks").glob("*.py")):
    name = "gecko_tasks" + ("" if path.stem == "__init__" else f".{path.stem}")
    yield name, path


def our_imports(path: pathlib.Path) -> list[tuple[int, str]]:
  """(line, module) of every import of `gecko` or `gecko_tasks` in the file."""
  out = []
  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
    if isinstance(node, ast.Import):
      out += [(node.lineno, a.name) for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      # `from gecko import train` imports the module gecko.train.
      out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
  return [(line, m) for line, m in out if m.split(".")[0] in ("gecko", "gecko_tasks")]


def allowed(importer: str, imported: str) -> bool:
  own = component(importer)
  if imported == "gecko" or imported.startswith("gecko.__"):  # gecko.__version__
    return True
  try:
    target = component(imported)
  except KeyError:  # `from gecko.data.input_format import GECKO`: a name, not a module
    target = component(imported.rpartition(".")[0])
  if target == own:
    return True
  return any(imported == a or imported.startswith(a + ".") or target == a
             for a in ALLOWED[own])


def test_every_module_belongs_to_a_component():
  unplaced = [name for name, _ in modules() if not any(
      name == c or name.startswith(c + ".") for c in ALLOWED)]
  assert not unplaced, f"add these modules to a component of ALLOWED: {unplaced}"


def test_imports_follow_the_layers():
  violations = [f"{path.relative_to(REPO)}:{line}: {name} ({component(name)}) imports "
                f"{imported}" for name, path in modules()
                for line, imported in our_imports(path) if not allowed(name, imported)]
  assert not violations, "imports against the layers:\n" + "\n".join(violations)


@pytest.mark.parametrize("importer, imported, ok", [
    ("gecko.data.pairs", "gecko.data.features", True),
    ("gecko.data.pairs", "gecko.encode", False),
    ("gecko.models.embedder", "gecko.data.tokenization", True),
    ("gecko.training.losses", "gecko.evaluation.metrics", False),
    ("gecko.evaluation.tasks", "gecko.train", False),
    ("gecko.fret.pipeline", "gecko.gin_flags", True),
    ("gecko.train", "gecko.experiments.demo", False),
    ("gecko.experiments.demo", "gecko.train", True),
    ("gecko_tasks.finetune", "gecko.fret.schema", True),
    ("gecko_tasks.finetune", "gecko.fret.pipeline", False),
])
def test_the_check_itself(importer, imported, ok):
  assert allowed(importer, imported) is ok


def test_the_walk_sees_imports_inside_functions(tmp_path):
  source = tmp_path / "m.py"
  source.write_text("import os\n\ndef f():\n  from gecko.training import losses\n"
                    "  import gecko.data.jsonl\n")
  assert our_imports(source) == [(4, "gecko.training.losses"), (5, "gecko.data.jsonl")]
