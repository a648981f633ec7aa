"""One path layer: every file the project reads or writes, on local disk or in a bucket.

A path is a string: a local path, or a URL such as `gs://BUCKET/run` that `etils.epath`
reaches (through gcsfs; `import gecko` sets `EPATH_USE_TF=false`, so TensorFlow's own
GCS client, which no emulator can redirect, is not used). Orbax and tensorstore take
such URLs themselves; everything else goes through the helpers here:

  paths.is_remote("gs://b/run")                 # True
  paths.makedirs(model_dir)                      # a no-op for a bucket (no directories)
  paths.write_text(paths.join(model_dir, "config.gin"), text)
  with paths.staged_dir("gs://b/export") as local:   # write locally, upload on success
    save_files_into(local)
  local = paths.local_copy("gs://b/run/export")  # read: a local copy of a file or tree

Libraries that read and write only local files (tokenizers, safetensors, matplotlib,
TensorBoard's writer) work on a local copy or a staging folder, never under the
working directory (staging lives in the system's temporary directory).

Pointing the project at a GCS emulator needs only the libraries' own variables:
`STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT` (gcsfs), and for orbax's arrays
`TENSORSTORE_GCS_HTTP_URL=http://127.0.0.1:PORT` with `GOOGLE_AUTH_TOKEN_FOR_TESTING=x`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator

PathLike = str | os.PathLike


def is_remote(path: PathLike) -> bool:
  """A URL (`gs://...`, any `scheme://`), not a local path."""
  return "://" in os.fspath(path)


def as_path(path: PathLike):
  """The `etils.epath.Path` of `path` (gcsfs under it for gs://, quiet)."""
  from etils import epath
  if is_remote(path):
    logging.getLogger("gcsfs").setLevel(logging.ERROR)  # "could not determine bucket type"
  return epath.Path(os.fspath(path))


def join(base: PathLike, *parts: str) -> str:
  """`base/part/...`; a URL stays a URL."""
  out = os.fspath(base)
  for part in parts:
    out = out.rstrip("/") + "/" + part if is_remote(out) else os.path.join(out, part)
  return out


def absolute(path: PathLike) -> str:
  """A local path made absolute; a URL as it is."""
  return os.fspath(path) if is_remote(path) else os.path.abspath(os.fspath(path))


def exists(path: PathLike) -> bool:
  return as_path(path).exists() if is_remote(path) else os.path.exists(path)


def isdir(path: PathLike) -> bool:
  return as_path(path).is_dir() if is_remote(path) else os.path.isdir(path)


def makedirs(path: PathLike) -> None:
  """Creates a local folder and its parents (a bucket has no folders to create)."""
  if not is_remote(path):
    os.makedirs(path, exist_ok=True)


def listdir(path: PathLike) -> list[str]:
  """The names in a folder (a bucket prefix), sorted."""
  if is_remote(path):
    return sorted(p.name for p in as_path(path).iterdir())
  return sorted(os.listdir(path))


def read_text(path: PathLike) -> str:
  if is_remote(path):
    return as_path(path).read_text(encoding="utf-8")
  with open(path, encoding="utf-8") as f:
    return f.read()


def write_text(path: PathLike, text: str) -> None:
  """Writes `text` whole (see `write_bytes`)."""
  write_bytes(path, text.encode("utf-8"))


def write_bytes(path: PathLike, data: bytes) -> None:
  """Writes `data` whole: a bucket object appears complete; a local file is written
  to a temporary sibling and renamed, so a reader never sees half of it."""
  if is_remote(path):
    as_path(path).write_bytes(data)
    return
  directory, name = os.path.split(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = os.path.join(directory, f".{name}.partial")
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def open_binary(path: PathLike):
  """A binary file object for reading (local or remote)."""
  return as_path(path).open("rb") if is_remote(path) else open(path, "rb")


def upload(local: PathLike, remote: PathLike) -> None:
  """Copies a local file, or a folder's files recursively, to `remote`."""
  local = os.fspath(local)
  if os.path.isdir(local):
    for root, _, files in os.walk(local):
      for name in files:
        relative = os.path.relpath(os.path.join(root, name), local)
        upload(os.path.join(root, name), join(remote, *relative.split(os.sep)))
    return
  target = as_path(remote)
  with open(local, "rb") as source, target.open("wb") as sink:
    shutil.copyfileobj(source, sink, length=1 << 24)


def download(remote: PathLike, local: PathLike) -> str:
  """Copies a remote file, or everything under a remote folder, to `local`."""
  source, local = as_path(remote), os.fspath(local)
  if source.is_dir():
    os.makedirs(local, exist_ok=True)
    for child in source.iterdir():
      download(child, os.path.join(local, child.name))
    return local
  os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
  with source.open("rb") as src, open(local, "wb") as sink:
    shutil.copyfileobj(src, sink, length=1 << 24)
  return local


def scratch_dir(prefix: str = "gecko-") -> str:
  """A new folder in the system's temporary directory (never the working directory)."""
  return tempfile.mkdtemp(prefix=prefix)


_COPIES: dict[str, str] = {}


def local_copy(path: PathLike) -> str:
  """`path` itself if local; else a local copy of the remote file or folder, made once
  per process."""
  path = os.fspath(path)
  if not is_remote(path):
    return path
  if path not in _COPIES:
    name = path.rstrip("/").rsplit("/", 1)[-1] or "copy"
    _COPIES[path] = download(path, os.path.join(scratch_dir(), name))
  return _COPIES[path]


@contextlib.contextmanager
def staged_dir(path: PathLike) -> Iterator[str]:
  """A local folder to write `path`'s files into: `path` itself when local; for a URL,
  a scratch folder uploaded to it when the block succeeds (nothing is uploaded when it
  fails)."""
  path = os.fspath(path)
  if not is_remote(path):
    os.makedirs(path, exist_ok=True)
    yield path
    return
  local = scratch_dir()
  try:
    yield local
    upload(local, path)
  finally:
    shutil.rmtree(local, ignore_errors=True)


class Mirror:
  """Files written locally and copied to a remote folder after each change (TensorBoard
  events, metrics.jsonl): for a local folder, the folder itself.

    mirror = Mirror(model_dir)
    append_to(mirror.local("metrics.jsonl")); mirror.push("metrics.jsonl")
  """

  def __init__(self, directory: PathLike):
    self.directory = os.fspath(directory)
    self.remote = is_remote(self.directory)
    self.root = scratch_dir("gecko-mirror-") if self.remote else self.directory

  def local(self, name: str, *, fetch: bool = False) -> str:
    """The local path of `name`; with `fetch`, a remote copy that exists is fetched first
    (to append to it)."""
    local = os.path.join(self.root, name)
    if self.remote and fetch and not os.path.exists(local):
      remote = join(self.directory, name)
      if exists(remote):
        download(remote, local)
    return local

  def push(self, name: str = "") -> None:
    """Copies `name` (a file or folder; default everything) to the remote folder."""
    if self.remote:
      local = os.path.join(self.root, name) if name else self.root
      upload(local, join(self.directory, name) if name else self.directory)


class FolderInUseError(RuntimeError):
  """Another live process holds the folder's lock."""


@contextlib.contextmanager
def locked(directory: PathLike, *, what: str) -> Iterator[None]:
  """Holds `directory/.lock` for the block, so that two runs never share a folder: a
  second one fails at once, naming the holder (pid, host, start). The lock is the
  operating system's (`flock`), so a killed run's lock is free; the next run takes it
  over and says whose it was. A bucket folder has no such lock and is not locked
  (several hosts of one run share it).

  Raises:
    FolderInUseError: Another process holds it.
  """
  if is_remote(directory):
    yield
    return
  import fcntl
  import socket
  import time
  makedirs(directory)
  path = os.path.join(os.fspath(directory), ".lock")
  handle = open(path, "a+", encoding="utf-8")
  try:
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      handle.seek(0)
      holder = handle.read().strip() or "another process"
      raise FolderInUseError(
          f"{what} {os.fspath(directory)!r} is in use by {holder}; wait for that run to end, "
          "or give this one another folder.") from None
    handle.seek(0)
    previous = handle.read().strip()
    if previous:  # a clean end clears the file: its holder was killed or crashed
      print(f"gecko: took over the lock of {what} {os.fspath(directory)!r} from {previous}, "
            "which ended without releasing it.", file=sys.stderr)
    _rewrite(handle, f"pid {os.getpid()} on {socket.gethostname()} since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    try:
      yield
    finally:  # an error is an end too: only a kill leaves the holder's line behind
      _rewrite(handle, "")
  finally:
    handle.close()  # releases the lock


def _rewrite(handle, text: str) -> None:
  handle.seek(0)
  handle.truncate()
  handle.write(text)
  handle.flush()


def check_apart(output: PathLike, *inputs: PathLike, flag: str = "--output") -> None:
  """ValueError when `output` is one of `inputs`, contains one, or lies inside one:
  writing it would destroy what is being read."""
  out = _normalised(output)
  for source in inputs:
    if not isinstance(source, (str, os.PathLike)) or not exists(source):  # a packaged name
      continue
    src = _normalised(source)
    if out == src or out.startswith(src + "/") or src.startswith(out + "/"):
      relation = ("is" if out == src else "lies inside" if out.startswith(src + "/")
                  else "contains")
      raise ValueError(f"{flag} {os.fspath(output)!r} {relation} the input {os.fspath(source)!r}; "
                       "writing there could overwrite what is being read: choose another path.")


def checkpoints_dir(model_dir: PathLike) -> str:
  """MODEL_DIR/checkpoints: a training run's orbax steps, one folder per step number."""
  return join(model_dir, "checkpoints")


def is_run_dir(path: PathLike) -> bool:
  """A training MODEL_DIR (local or gs://): checkpoints/ and the operative config.gin."""
  return isdir(checkpoints_dir(path)) and exists(join(path, "config.gin"))


def check_output_dir(output: PathLike, *inputs: PathLike, flag: str) -> None:
  """ValueError when the folder `output` is a file, or is, contains or lies inside one of
  `inputs` (`check_apart`)."""
  if exists(output) and not isdir(output):
    raise ValueError(f"{flag} {os.fspath(output)!r} is a file; it must be a folder: choose "
                     "another path, or move the file away.")
  check_apart(output, *inputs, flag=flag)


def _normalised(path: PathLike) -> str:
  path = os.fspath(path)
  if is_remote(path):
    return path.rstrip("/")
  return os.path.realpath(path)


@contextlib.contextmanager
def replaced_dir(path: PathLike) -> Iterator[str]:
  """A folder to write a new `path` into, put in place whole when the block succeeds.

  Locally the new folder is a hidden sibling (`.NAME.partial-*`) renamed over `path`,
  the old one first set aside (`.NAME.old-*`) and deleted last: an interruption at any
  moment leaves either the old folder or the new one, never half of either; what it
  leaves beside them is named and tidied by the next call (`recover_interrupted`). In a
  bucket, which has no atomic rename, the files are written locally, then the old
  objects deleted and the new ones uploaded.
  """
  path = absolute(path)
  if is_remote(path):
    local = scratch_dir()
    try:
      yield local
      if exists(path):
        as_path(path).rmtree()
      upload(local, path)
    finally:
      shutil.rmtree(local, ignore_errors=True)
    return
  recover_interrupted(path)
  parent, name = os.path.split(path)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f".{name}.partial-", dir=parent)
  try:
    yield staging
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  old = None
  if os.path.lexists(path):
    old = os.path.join(parent, f".{name}.old-{os.getpid()}")
    os.replace(path, old)
  os.replace(staging, path)
  if old is not None:
    shutil.rmtree(old) if os.path.isdir(old) else os.remove(old)


def recover_interrupted(path: PathLike) -> list[str]:
  """Tidies what an interrupted `replaced_dir` left beside `path`, saying so on stderr:
  a half-written new folder is deleted; a set-aside old folder is moved back when
  `path` is missing (the swap was cut between its two renames), else deleted. Returns
  the lines said."""
  import sys
  path = absolute(path)
  if is_remote(path):
    return []
  parent, name = os.path.split(path)
  said = []
  if not os.path.isdir(parent):
    return said
  for entry in sorted(os.listdir(parent)):
    leftover = os.path.join(parent, entry)
    if entry.startswith(f".{name}.partial-"):
      shutil.rmtree(leftover, ignore_errors=True)
      said.append(f"gecko: removed {leftover}, a half-written copy of {path} left by an "
                  "interrupted run.")
    elif entry.startswith(f".{name}.old-"):
      if not os.path.lexists(path):
        os.replace(leftover, path)
        said.append(f"gecko: restored {path} from {leftover}, where an interrupted run had "
                    "set it aside.")
      else:
        shutil.rmtree(leftover, ignore_errors=True)
        said.append(f"gecko: removed {leftover}, the previous {path} an interrupted run had "
                    "already replaced.")
  for line in said:
    print(line, file=sys.stderr)
  return said
