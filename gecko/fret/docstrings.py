r"""A real passage corpus present on any machine: the Python standard library's docstrings.

  python -m gecko.fret.docstrings --output=passages.jsonl --limit=500

Each passage is the documentation of one public function, class or method of a fixed
list of standard-library modules (`MODULES`), title = its qualified name, text = its
docstring with whitespace collapsed and cut at `max_chars` on a sentence end. The
order is deterministic for a given Python version, so a corpus is reproducible.
Used by the FRet tests, the FRet benchmark and the end-to-end demo.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
from collections.abc import Iterator, Sequence

from gecko.data import jsonl

MODULES = ("json", "os", "os.path", "collections", "itertools", "functools", "re", "string",
           "textwrap", "datetime", "calendar", "math", "statistics", "random", "heapq",
           "bisect", "pathlib", "shutil", "tempfile", "csv", "sqlite3", "zipfile", "tarfile",
           "gzip", "hashlib", "hmac", "secrets", "base64", "urllib.parse", "http.client",
           "email.message", "logging", "argparse", "subprocess", "threading", "queue",
           "asyncio", "socket", "ssl", "unittest", "doctest", "inspect", "dataclasses",
           "enum", "typing", "decimal", "fractions", "difflib", "pprint", "copy", "pickle",
           "struct", "io", "time", "uuid", "ipaddress", "xml.etree.ElementTree", "html",
           "contextlib", "abc", "operator", "glob", "fnmatch", "shlex", "zlib", "codecs")


def _clean(doc: str, max_chars: int) -> str:
  text = re.sub(r"\s+", " ", doc).strip()
  if len(text) <= max_chars:
    return text
  cut = text.rfind(". ", 0, max_chars)
  return text[:cut + 1] if cut > max_chars // 3 else text[:max_chars]


def _members(module) -> Iterator[tuple[str, object]]:
  for name, obj in sorted(vars(module).items()):
    if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
      continue
    if inspect.isclass(obj):
      yield name, obj
      for attr, member in sorted(vars(obj).items()):
        if not attr.startswith("_") and inspect.isfunction(member):
          yield f"{name}.{attr}", member
    elif inspect.isfunction(obj):
      yield name, obj


def passages(*, limit: int | None = None, min_chars: int = 200, max_chars: int = 800,
             modules: Sequence[str] = MODULES) -> list[dict[str, str]]:
  """Up to `limit` passages {"id", "title", "text"} of at least `min_chars` characters."""
  out, seen_texts = [], set()
  for module_name in modules:
    try:
      module = importlib.import_module(module_name)
    except ImportError:  # a Python built without e.g. ssl or sqlite3
      continue
    for name, obj in _members(module):
      doc = inspect.getdoc(obj)
      if not doc:
        continue
      text = _clean(doc, max_chars)
      if len(text) < min_chars or text in seen_texts:
        continue
      seen_texts.add(text)
      out.append({"id": f"{module_name}.{name}", "title": f"{module_name}.{name}", "text": text})
      if limit is not None and len(out) >= limit:
        return out
  return out


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m gecko.fret.docstrings", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--output", required=True, help="JSONL file to write")
  parser.add_argument("--limit", type=int, default=None, help="at most this many passages")
  parser.add_argument("--min_chars", type=int, default=200)
  parser.add_argument("--max_chars", type=int, default=800)
  args = parser.parse_args(argv)
  records = passages(limit=args.limit, min_chars=args.min_chars, max_chars=args.max_chars)
  jsonl.write(args.output, records)
  print(f"wrote {len(records)} passages to {args.output}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
