"""TensorFlow's start-up noise kept out of the terminal.

Importing TensorFlow prints, from C++ and before any log level applies, a dozen lines
that say nothing to a user of gecko (oneDNN notes, CUDA stubs, "rebuild TensorFlow with
AVX512", absl's preamble), and its first op probes CUDA and logs `failed call to
cuInit`. gecko runs only tf.data on TensorFlow: JAX owns the accelerators. `install()`
(called by `import gecko`) hooks the first `import tensorflow`, from wherever it comes
(seqio, tasks/, gecko.data): file descriptor 2 is held while it runs and while TF is
told to use no GPU (as big_vision does, so that it takes no GPU memory either); then
the known noise is dropped and anything else is written back. A failed import writes
everything back. GECKO_TF_NOISE=1 leaves the import alone.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import sys
import tempfile

# What TensorFlow prints at start-up that is not news: absl's preamble, C++ INFO lines,
# CPU-feature notes, CUDA probes on a machine without CUDA, duplicate registrations.
NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)|I0000 |"
    r"E0000 .*(cuInit|Unable to register cu\w+ factory)|W0000 .*(TF-TRT|cuda)|"
    r"To enable the following instructions|.*rebuild TensorFlow with|"
    r"This TensorFlow binary is optimized|.*computation placer already registered)")


def install() -> None:
  """Hooks the first `import tensorflow` (nothing when it is imported already, or with
  GECKO_TF_NOISE=1)."""
  if "tensorflow" in sys.modules or os.environ.get("GECKO_TF_NOISE"):
    return
  if not any(isinstance(f, _QuietTensorFlow) for f in sys.meta_path):
    sys.meta_path.insert(0, _QuietTensorFlow())


class _QuietTensorFlow(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path, target=None):
    if name != "tensorflow":
      return None
    sys.meta_path.remove(self)  # once: the real finders find it
    spec = importlib.util.find_spec(name)
    if spec is not None and spec.loader is not None:
      spec.loader = _QuietLoader(spec.loader)
    return spec


class _QuietLoader(importlib.abc.Loader):
  def __init__(self, loader):
    self._loader = loader

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module) -> None:
    held = _HeldStderr()
    try:
      self._loader.exec_module(module)
      module.config.set_visible_devices([], "GPU")  # tf.data only; JAX owns GPUs
    except BaseException:
      held.release(keep=lambda line: True)
      raise
    held.release(keep=lambda line: not NOISE.match(line))


class _HeldStderr:
  """File descriptor 2 into a temporary file until `release`, which writes back the
  lines `keep` accepts."""

  def __init__(self):
    sys.stderr.flush()
    self._saved, self._file = os.dup(2), tempfile.TemporaryFile()
    os.dup2(self._file.fileno(), 2)

  def release(self, *, keep) -> None:
    sys.stderr.flush()
    os.dup2(self._saved, 2)
    os.close(self._saved)
    self._file.seek(0)
    text = self._file.read().decode("utf-8", "replace")
    self._file.close()
    kept = [line for line in text.splitlines() if line.strip() and keep(line)]
    if kept:
      sys.stderr.write("\n".join(kept) + "\n")
