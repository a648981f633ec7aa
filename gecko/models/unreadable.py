"""Why a saved orbax folder (a checkpoint, a saved model's params) does not restore, in
one line naming the file: orbax's own errors name neither the metadata file that is not
JSON nor, past a cut, the array file tensorstore failed to read. `CapturedStderr` holds
back what tensorstore's threads print about a failed read, so that the line stands alone.
"""

from __future__ import annotations

import gc
import json
import os
import re
import sys
import tempfile
import time

from gecko.data import paths


class UnreadableModelError(ValueError):
  """A model folder whose files are damaged (truncated, not JSON, not safetensors)."""


def read_json(path: str | os.PathLike):
  """The JSON value in the file at `path`; UnreadableModelError naming the file when it
  is not JSON (a damaged model folder)."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (ValueError, UnicodeDecodeError) as e:
    raise UnreadableModelError(f"{os.fspath(path)} is not valid JSON ({e}); the model folder "
                               "is damaged: save or export it again, or copy it again whole."
                               ) from None


class CapturedStderr:
  """File descriptor 2 (what C++ threads print too) into a temporary file; written back on
  exit unless `drop()` was called."""

  def __enter__(self):
    sys.stderr.flush()
    self._saved, self._file, self._keep = os.dup(2), tempfile.TemporaryFile(), True
    os.dup2(self._file.fileno(), 2)
    return self

  def drop(self) -> None:
    self._keep = False

  def __exit__(self, *exc_info):
    sys.stderr.flush()
    os.dup2(self._saved, 2)
    os.close(self._saved)
    if self._keep:
      self._file.seek(0)
      sys.stderr.write(self._file.read().decode("utf-8", "replace"))
    self._file.close()


def settle(captured: CapturedStderr) -> None:
  """After a failed read: lets the reads still in flight finish on orbax's closed event
  loop, and the coroutines it left behind be collected, while `captured` holds what
  tensorstore's threads, asyncio and the garbage collector print about them (dozens of
  tracebacks), then drops it all."""
  time.sleep(1.0)
  gc.collect()
  captured.drop()


def diagnose(step_dir: str, error: Exception) -> str:
  """Why a step does not restore, naming the file: the first metadata file that is not
  JSON (orbax's own error does not say which), else the error itself."""
  for path in _metadata_files(paths.as_path(step_dir)):
    try:
      json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
      return f"{path} is not valid JSON ({'empty' if not path.stat().length else e})"
  while error.__cause__ is not None:  # tensorstore's own error names the file it read
    error = error.__cause__
  text = str(error)
  array, data_file = _ARRAY_READ.search(text), _FILE_READ.findall(text)
  if array and data_file:  # "Error opening "cast" driver: …" buries them past any cut
    status = text.split(":", 1)[0] if _STATUS.match(text) else type(error).__name__
    return (f"{data_file[-1]} cannot be read ({status}: {text.rsplit(': ', 1)[-1][:120]}), "
            f"so the array {array.group(1)} cannot be restored")
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  return f"{type(error).__name__}: {lines[0][:400] if lines else ''} (in {step_dir})"


def _metadata_files(directory):
  """The JSON files under a step folder (a folder's files, then its subfolders, each in
  name order), skipping array data (`d/`, `.ocdbt` and `.txt` files)."""
  if not directory.is_dir():
    return
  children = sorted(directory.iterdir(), key=lambda p: p.name)
  folders = [c for c in children if c.is_dir()]
  yield from (c for c in children if c not in folders and not c.name.endswith((".ocdbt", ".txt")))
  for folder in folders:
    if folder.name != "d":
      yield from _metadata_files(folder)


# How tensorstore names what it failed to read: the array inside the OCDBT database, the
# data file on disk, and the absl status code that leads the message.
_ARRAY_READ = re.compile(r'Error reading "([^"]+?)(?:/\.z\w+)?" in OCDBT database')
_FILE_READ = re.compile(r'of local file "([^"]+)"')
_STATUS = re.compile(r"[A-Z_]+:")
