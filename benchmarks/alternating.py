"""Fair timing: ours and the peer alternate in one process, and the report says where.

Machines of one kind differ and drift (other tenants, clocks, caches), so a benchmark
never times one side and then the other. `alternate` runs A B A B ... after a warm-up of
each, and `Comparison` reports the median of the per-round ratios with their min-max.
`machine` prints what a reader needs to reproduce a figure: the CPU model and its vector
flags, the core and thread counts, and the library versions.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from collections.abc import Callable
from importlib import metadata

VECTOR_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16",
                "amx_tile")
PACKAGES = ("jax", "jaxlib", "flax", "torch", "sentence-transformers", "faiss-cpu", "numpy")


@dataclasses.dataclass
class Comparison:
  """Per-round seconds of ours and of the peer (same work each round)."""

  ours: list[float]
  peer: list[float]

  @property
  def ratios(self) -> list[float]:
    """Peer time / our time per round: > 1 means we are faster."""
    return [p / o for o, p in zip(self.ours, self.peer)]

  def summary(self, *, work: float = 1.0, unit: str = "items/s") -> str:
    ratios = self.ratios
    return (f"ours {work / statistics.median(self.ours):,.1f} {unit}, peer "
            f"{work / statistics.median(self.peer):,.1f} {unit} (medians of {len(ratios)} "
            f"rounds); ratio median {statistics.median(ratios):.2f} "
            f"(min {min(ratios):.2f}, max {max(ratios):.2f})")

  def row(self, name: str, *, work: float = 1.0) -> dict:
    ratios = self.ratios
    return {"case": name, "ours_per_s": work / statistics.median(self.ours),
            "peer_per_s": work / statistics.median(self.peer),
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
            "ratio_max": max(ratios), "rounds": len(ratios)}


def timed(fn: Callable[[], object]) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def alternate(ours: Callable[[], object], peer: Callable[[], object], *, rounds: int = 5,
              warmup: int = 1) -> Comparison:
  """Runs `warmup` untimed calls of each, then `rounds` timed rounds of ours, peer."""
  times = rotate({"ours": ours, "peer": peer}, rounds=rounds, warmup=warmup)
  return Comparison(times["ours"], times["peer"])


def rotate(cases: dict[str, Callable[[], object]], *, rounds: int = 5, warmup: int = 1
           ) -> dict[str, list[float]]:
  """Several cases in turn (A B C A B C ...) after `warmup` untimed calls of each: the
  per-round seconds of each case, for breakdowns with more than two sides."""
  if rounds < 1:
    raise ValueError(f"rounds must be >= 1, got {rounds}.")
  for _ in range(warmup):
    for fn in cases.values():
      fn()
  times: dict[str, list[float]] = {name: [] for name in cases}
  for _ in range(rounds):
    for name, fn in cases.items():
      times[name].append(timed(fn))
  return times


def spread(seconds: list[float]) -> str:
  """'median (min-max)' of per-round seconds."""
  return f"{statistics.median(seconds):.3f} s ({min(seconds):.3f}-{max(seconds):.3f})"


def cpu_model() -> tuple[str, list[str]]:
  model, flags = platform.processor() or platform.machine(), []
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name") and model in ("", platform.machine()):
          model = line.split(":", 1)[1].strip()
        elif line.startswith("flags"):
          present = set(line.split(":", 1)[1].split())
          flags = [f for f in VECTOR_FLAGS if f in present]
          break
  except OSError:
    pass
  return model, flags


def machine() -> str:
  """One paragraph: CPU, vector flags, cores, threads, versions."""
  model, flags = cpu_model()
  versions = []
  for name in PACKAGES:
    try:
      versions.append(f"{name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
      pass
  threads = ""
  try:
    import torch
    threads = f"; torch threads {torch.get_num_threads()}"
  except ImportError:
    pass
  return (f"CPU: {model} ({os.cpu_count()} cores; {' '.join(flags) or 'no vector flags read'})"
          f"{threads}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}\n"
          f"versions: {', '.join(versions)}")
