"""What this host's JAX may use, decided before JAX starts its backends.

libtpu (the `[tpu-aot]` extra) lets a CPU host compile for a real TPU topology
(`python -m gecko.compile_step --topology=...`). Installed on a host without TPU chips,
it would also be probed at JAX's first use: a second of start-up and half a screen of
warnings about TPU_ACCELERATOR_TYPE and TPU_WORKER_HOSTNAMES. `import gecko` calls
`keep_libtpu_quiet()`, which then sets `JAX_PLATFORMS=cpu` (when the user has not set
it and no CUDA plugin is installed), the variables that keep libtpu's metadata
probes quiet, and lets several processes load libtpu at once (tests, parallel compiles). On a TPU VM (chips under /dev) it changes nothing.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys

# Set only where unset: a TPU VM's own values (or the user's) always win. Without chips
# to guard, libtpu's one-process lock file would only stop two compiles at once.
_QUIET_LIBTPU = {"TPU_SKIP_MDS_QUERY": "1", "TPU_WORKER_HOSTNAMES": "localhost",
                 "ALLOW_MULTIPLE_LIBTPU_LOAD": "1"}


def has_tpu_chips() -> bool:
  """TPU chips on this host: /dev/accel* (v2-v5e) or /dev/vfio/<n> (v5p, v6e)."""
  return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def _installed(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except (ImportError, ValueError):
    return False


def keep_libtpu_quiet() -> None:
  """On a host with libtpu but no TPU chips: CPU as JAX's platform unless chosen
  otherwise (or a CUDA plugin is installed), and libtpu's probes quiet."""
  if not _installed("libtpu") or has_tpu_chips():
    return
  for name, value in _QUIET_LIBTPU.items():
    os.environ.setdefault(name, value)
  if "JAX_PLATFORMS" not in os.environ and not (
      _installed("jax_cuda12_plugin") or _installed("jax_cuda13_plugin")):
    os.environ["JAX_PLATFORMS"] = "cpu"
    if "jax" in sys.modules:  # imported before gecko: it read the variable already
      sys.modules["jax"].config.update("jax_platforms", "cpu")
