"""Dropout's mask on one MiniLM attention-probability tensor: gecko's hashed draws
against threefry draws as `flax.linen.Dropout` makes them, and the scaling alone.

  .venv/bin/python benchmarks/dropout_mask.py [--rounds 5]

The tensor is [64, 12, 256, 256] float32, what one layer of the 64/256 train step
(32 triples: 64 passages of 256 tokens) drops out. Jitted, alternating, median
(min-max) seconds per call after a warm-up.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alternating  # noqa: E402

RATE = 0.1


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--rounds", type=int, default=5)
  args = parser.parse_args()
  import jax
  import jax.numpy as jnp

  from gecko.models import dropout

  x = jax.random.normal(jax.random.key(0), (64, 12, 256, 256))
  layer = dropout.Dropout(RATE)

  def threefry(key, x):  # nn.Dropout: a 32-bit draw per element, materialised
    return jnp.where(jax.random.bernoulli(key, 1 - RATE, x.shape), x / (1 - RATE), 0.0)

  cases = {
      "threefry (flax.linen.Dropout's draws)": jax.jit(threefry),
      "hashed (gecko.models.dropout)": jax.jit(
          lambda key, x: layer.apply({}, x, deterministic=False, rngs={"dropout": key})),
      "scaling only (no mask)": jax.jit(lambda key, x: x / (1 - RATE)),
  }
  keys = iter(range(1 << 30))
  times = alternating.rotate(
      {name: (lambda f=f: f(jax.random.key(next(keys)), x).block_until_ready())
       for name, f in cases.items()}, rounds=args.rounds)
  print(alternating.machine())
  for name, t in times.items():
    print(f"{name}: {alternating.spread(t)}")


if __name__ == "__main__":
  main()
