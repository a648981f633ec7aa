"""Matryoshka (MRL) embeddings: the `dim`-dim embedding is the first `dim` coordinates
of a full one, re-normalised. One function per array library, side by side, so the
training loss (JAX, traced) and evaluation (NumPy, on the host) cannot drift apart.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

EPS = 1e-12  # a zero row stays zero (as torch's F.normalize does)


def _check(dim: int, size: int) -> None:
  if not 0 < dim <= size:
    raise ValueError(f"Matryoshka dim {dim} must be in 1..{size}, the embedding size.")


def prefix(embeddings: jax.Array, dim: int) -> jax.Array:
  """The `dim`-dim Matryoshka embeddings (JAX): truncate, then re-normalise."""
  _check(dim, embeddings.shape[-1])
  x = embeddings[..., :dim]
  return x / jnp.maximum(jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True)), EPS)


def prefix_numpy(embeddings: np.ndarray, dim: int) -> np.ndarray:
  """`prefix` for NumPy arrays on the host."""
  _check(dim, embeddings.shape[-1])
  x = embeddings[..., :dim]
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), EPS)
