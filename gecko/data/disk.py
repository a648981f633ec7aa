"""A full, read-only or forbidden disk, said in one line that names the folder.

Python raises `OSError` with an errno; orbax and tensorstore wrap the same failure in
their own errors (`RESOURCE_EXHAUSTED: ... No space left on device [os_error_code='28']`),
often several layers down. `storage_error` finds either and says what to do.
`check_free` is asked before a large local write (a checkpoint, an export), so that a
full disk stops a run before it writes half of something.
"""

from __future__ import annotations

import errno
import os
import re
import shutil

from gecko.data import paths
from gecko.data.paths import PathLike


class DiskFullError(OSError):
  """Not enough free space for a write, found before it started."""


def free_bytes(path: PathLike) -> int | None:
  """Free bytes on the disk of `path` (its nearest existing folder); None for a bucket."""
  if paths.is_remote(path):
    return None
  folder = _existing_folder(os.fspath(path))
  return shutil.disk_usage(folder).free


def nbytes(tree) -> int:
  """The bytes of a tree's arrays (uncompressed): what saving it may take on disk."""
  import jax
  return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree)
             if hasattr(leaf, "dtype"))


def check_free(path: PathLike, *, needed: int, what: str) -> None:
  """DiskFullError when the disk of `path` has less than `needed` bytes free."""
  free = free_bytes(path)
  if free is not None and free < needed:
    raise DiskFullError((
        f"the disk of {os.fspath(path)} is full: {what} needs about {human(needed)} and "
        f"{human(free)} are free there. Free some space, or choose a folder on another disk"))


def storage_error(error: BaseException) -> str | None:
  """One line for a full, read-only or forbidden disk behind `error` (looked for in its
  causes and context too), naming the path; None for any other error."""
  for e in _chain(error):
    if isinstance(e, DiskFullError):
      return str(e).splitlines()[0]  # less what gin adds below
    code = e.errno if isinstance(e, OSError) and e.errno else _wrapped_code(str(e))
    if code not in _LINES:
      continue
    path = (e.filename if isinstance(e, OSError) and e.filename else _first_path(str(e)))
    where = (_STAGING.sub(r"/\1", _ORBAX_TMP.sub("", os.fspath(path))) if path
             else "the output folder")
    line = _LINES[code].format(where=where)
    if code in (errno.ENOSPC, errno.EDQUOT) and path:
      free = free_bytes(where)
      line += f" ({human(free)} free there)" if free is not None else ""
    return line
  return None


_LINES = {
    errno.ENOSPC: "no space left on the disk of {where}: free some space, or choose a folder "
                  "on another disk",
    errno.EDQUOT: "the disk quota is used up where {where} is written: free some space, or "
                  "choose a folder on another disk",
    errno.EROFS: "{where} is on a read-only file system: choose a writable folder",
    errno.EACCES: "no permission to write {where}: choose a folder you can write, or change "
                  "its permissions",
}


def human(count: int | None) -> str:
  """Bytes as `3.9 MiB`."""
  value = float(count or 0)
  for unit in ("bytes", "KiB", "MiB", "GiB"):
    if value < 1024 or unit == "GiB":
      return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
    value /= 1024
  raise AssertionError("unreachable")


def _chain(error: BaseException):
  seen: set[int] = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


_OS_CODE = re.compile(r"os_error_code='(\d+)'")
_TEXT_CODES = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
               "Read-only file system": errno.EROFS, "Permission denied": errno.EACCES}
_ORBAX_TMP = re.compile(r"/[^/]*\.orbax-checkpoint-tmp.*$")  # name the checkpoint's folder
_STAGING = re.compile(r"/\.([^/]+)\.partial-[^/]+")  # paths.replaced_dir's hidden sibling
_PATH = re.compile(r'"(/[^"]+)"|\'(/[^\']+)\'')


def _wrapped_code(text: str) -> int | None:
  """The errno a wrapped OS error reports in its text (tensorstore's, gcsfs's)."""
  match = _OS_CODE.search(text)
  if match:
    return int(match.group(1))
  return next((code for phrase, code in _TEXT_CODES.items() if phrase in text), None)


def _first_path(text: str) -> str | None:
  """The last local path quoted in `text`: the file a wrapped error failed on."""
  found = [a or b for a, b in _PATH.findall(text)]
  return found[-1] if found else None


def _existing_folder(path: str) -> str:
  path = os.path.abspath(path)
  while not os.path.isdir(path):
    parent = os.path.dirname(path)
    if parent == path:
      break
    path = parent
  return path
