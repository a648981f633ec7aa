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
Positions are global: a trace that sees one slice of a larger array (GradCache's
per-shard passes, `rows_of`) draws what that slice of the whole would draw, so the
masks do not depend on the mesh. Beyond 2**32 elements (a batch of 4096 x 256 tokens
through the 1.2B model's attention) the hash takes the row and the position within the
row as two words.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_LEVELS = 1 << 32
_ROW_SALT = 0x9E3779B9  # rows enter the >2**32 hash apart from positions


def _fmix(h: jax.Array) -> jax.Array:
  """A 32-bit integer finaliser: every output bit depends on every input bit."""
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x7FEB352D)
  h = h ^ (h >> 15)
  h = h * jnp.uint32(0x846CA68B)
  return h ^ (h >> 16)


def element_index(shape: tuple[int, ...], *, first_row: jax.Array | int = 0) -> jax.Array:
  """Each element's row-major position as uint32 (built from iotas, so it fuses), in
  an array whose row 0 is row `first_row` of a larger one (positions wrap modulo 2**32)."""
  index = jnp.zeros(shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(len(shape))):
    rows = jax.lax.broadcasted_iota(jnp.uint32, shape, axis)
    if axis == 0:
      rows = rows + jnp.asarray(first_row, jnp.uint32)
    index = index + rows * jnp.uint32(stride % _LEVELS)
    stride *= shape[axis]
  return index


# (this trace's piece, number of pieces) of every array dropout sees, split along the
# leading (example) axis: GradCache's per-shard passes (`rows_of`).
_PIECE: contextvars.ContextVar[tuple[jax.Array | int, int]] = contextvars.ContextVar(
    "gecko_dropout_piece", default=(0, 1))


@contextlib.contextmanager
def rows_of(piece: jax.Array | int, pieces: int):
  """While tracing inside: every array dropout sees is piece `piece` (0-based, may be
  traced, e.g. a `vmap`ped index) of `pieces` equal slices of a larger array along the
  leading axis, and draws exactly what that slice of the larger array would draw."""
  token = _PIECE.set((piece, pieces))
  try:
    yield
  finally:
    _PIECE.reset(token)


def hashed_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """32 pseudo-random bits per element of `shape`, a function of `key` and position.

  Positions are those in the whole array when this one is a slice of it (`rows_of`).
  Up to 2**32 elements the hash is of the flat position; beyond, of (row, position
  within the row), so a batch of 4096 x 256 tokens (or more) works too.
  """
  shape = tuple(shape)
  piece, pieces = _PIECE.get() if shape else (0, 1)
  first_row = piece * shape[0] if shape else 0
  words = jax.random.bits(key, (2,), jnp.uint32)
  if int(np.prod(shape)) * pieces <= _LEVELS:
    return _fmix(_fmix(element_index(shape, first_row=first_row) ^ words[0]) + words[1])
  row_size = int(np.prod(shape[1:]))
  if row_size > _LEVELS or shape[0] * pieces > _LEVELS:
    raise ValueError(f"hashed_bits numbers rows and positions within a row with 32 bits "
                     f"each; shape {shape} has more: apply dropout to smaller pieces.")
  within = element_index((1,) + shape[1:])
  rows = jax.lax.broadcasted_iota(jnp.uint32, shape, 0) + jnp.asarray(first_row, jnp.uint32)
  return _fmix(_fmix(within ^ words[0]) + words[1] + _fmix(rows ^ jnp.uint32(_ROW_SALT)))


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


def attention_dropout(rate: float, deterministic: bool) -> Callable[[jax.Array], jax.Array] | None:
  """Dropout for the attention weights, or None when it does nothing (evaluation, rate
  0), which lets `gecko.models.attention` take a fused kernel."""
  if deterministic or rate == 0.0:
    return None
  dropout = Dropout(rate)
  return lambda weights: dropout(weights, deterministic=False)
