"""Dropout whose keep/drop draws are a keyed hash of each element's index: the same
distribution as `flax.linen.Dropout` (to 2⁻³² of the rate), at almost no cost on a CPU.

`nn.Dropout` draws one 32-bit word per element from JAX's generator (threefry: 20
rounds of add-rotate-xor per pair of words), materialised as an array before the mask is
applied. On a 2-core CPU that is about 1 ns per element: 0.46 s for one [64, 12, 256, 256]
attention mask, ~4 s of a MiniLM train step at 64/256 tokens (BENCHMARKS.md). Here the
dropout key gives two 32-bit words, and element i keeps its value when

    fmix(fmix(i ^ k0) + k1) >= rate · 2³²

with `fmix` the murmur3-style 32-bit finaliser (lowbias32's constants). The hash is a
few integer operations that XLA fuses into the loop applying the mask, so nothing is
materialised: the same mask costs 0.12 s, against 0.06 s for the scaling alone
(`benchmarks/dropout_mask.py`).
The draws are a pure function of the key and the element's position, so a sharded
array computes its own shard's draws and GradCache's recomputation reproduces them.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_LEVELS = 1 << 32


def _fmix(h: jax.Array) -> jax.Array:
  """A 32-bit integer finaliser: every output bit depends on every input bit."""
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x7FEB352D)
  h = h ^ (h >> 15)
  h = h * jnp.uint32(0x846CA68B)
  return h ^ (h >> 16)


def element_index(shape: tuple[int, ...]) -> jax.Array:
  """Each element's row-major position as uint32 (built from iotas, so it fuses)."""
  index = jnp.zeros(shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(len(shape))):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride)
    stride *= shape[axis]
  return index


def hashed_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """32 pseudo-random bits per element of `shape`, a function of `key` and position."""
  if int(np.prod(shape)) > _LEVELS:
    raise ValueError(f"hashed_bits numbers elements with 32 bits; shape {shape} has more "
                     f"than 2**32 elements: apply dropout to smaller pieces.")
  words = jax.random.bits(key, (2,), jnp.uint32)
  return _fmix(_fmix(element_index(shape) ^ words[0]) + words[1])


class Dropout(nn.Module):
  """Zeroes each element with probability `rate` (rounded to a multiple of 2⁻³²) and
  scales the rest by 1 / (1 - rate); the identity when `deterministic`. Draws from the
  `dropout` RNG collection, as `nn.Dropout` does."""

  rate: float

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    if not 0.0 <= self.rate < 1.0:
      raise ValueError(f"Dropout rate must be in [0, 1), got {self.rate}.")
    threshold = min(round(self.rate * _LEVELS), _LEVELS - 1)
    if deterministic or threshold == 0:
      return x
    keep = hashed_bits(self.make_rng("dropout"), x.shape) >= jnp.uint32(threshold)
    scale = jnp.asarray(_LEVELS / (_LEVELS - threshold), x.dtype)
    return jnp.where(keep, x * scale, jnp.zeros((), x.dtype))
