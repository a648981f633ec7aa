"""Exact top-N neighbours of each query by blocked matrix products in JAX.

Used by FRet (step 2: the neighbours the LLM relabels) and by retrieval evaluation.

The corpus is one array or any iterable of row blocks (e.g. slices of a `np.memmap`
larger than memory, or embeddings computed block by block). Each block is scored
against all queries under `jax.jit` and merged into a running top-N, so memory stays
O(queries x (N + block)) whatever the corpus size. Blocks are padded to one shape so
the merge compiles once. Within a block, scores are grouped 128 to a row and only the
N groups with the best maxima go to the top-k (exact: no other group can hold one of
the N best), which spares a top-k over every score.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np

GROUP = 128  # block scores are grouped this many to a row maximum before top-k


@functools.partial(jax.jit, static_argnames=("n",))
def _merge(best_scores, best_index, queries, block, valid, offset, *, n: int):
  scores = queries @ block.T  # [Q, B]
  scores = jnp.where(jnp.arange(block.shape[0])[None, :] < valid, scores, -jnp.inf)
  index = offset + jnp.arange(block.shape[0], dtype=jnp.int32)
  index = jnp.broadcast_to(index, scores.shape)
  groups = block.shape[0] // GROUP
  if block.shape[0] % GROUP == 0 and groups > n:
    # Exact top-n without a top-k over all B scores: the n best scores lie in the n
    # groups with the best maxima (n distinct elements bound the n-th best from below).
    # Chosen groups are kept in corpus order, so ties still favour the lower index.
    grouped = scores.reshape(scores.shape[0], groups, GROUP)
    _, chosen = jax.lax.top_k(grouped.max(axis=2), n)
    chosen = jnp.sort(chosen, axis=1)
    scores = jnp.take_along_axis(grouped, chosen[:, :, None], axis=1).reshape(scores.shape[0], -1)
    index = jnp.take_along_axis(index.reshape(grouped.shape), chosen[:, :, None],
                                axis=1).reshape(scores.shape[0], -1)
  scores = jnp.concatenate([best_scores, scores], axis=1)
  index = jnp.concatenate([best_index, index], axis=1)
  top, where = jax.lax.top_k(scores, n)
  return top, jnp.take_along_axis(index, where, axis=1)


def blocks_of(corpus: np.ndarray, block_size: int) -> Iterable[np.ndarray]:
  """Row blocks of an array (or memmap) without copying it whole."""
  for start in range(0, corpus.shape[0], block_size):
    yield corpus[start:start + block_size]


def top_n(queries: np.ndarray, corpus: np.ndarray | Iterable[np.ndarray], n: int, *,
          block_size: int = 65536) -> tuple[np.ndarray, np.ndarray]:
  """The `n` highest inner products per query: (indices [Q, n], scores [Q, n]), best first.

  Args:
    queries: [Q, D] query embeddings.
    corpus: [N, D] passage embeddings, or an iterable of [n_i, D] blocks in corpus order
      (indices count rows across blocks).
    n: Neighbours per query (at most the corpus size).
    block_size: Rows scored per jitted call (blocks given as an iterable are split or
      padded to this).

  Ties keep the lower corpus index first.
  """
  queries = np.asarray(queries, np.float32)
  if queries.ndim != 2:
    raise ValueError(f"queries must be [Q, D], got shape {queries.shape}.")
  if n < 1:
    raise ValueError(f"n must be >= 1, got {n}.")
  if isinstance(corpus, np.ndarray):
    # Equal blocks (a multiple of GROUP when large) rather than a padded last one.
    count = -(-corpus.shape[0] // max(1, block_size))
    block_size = max(1, -(-corpus.shape[0] // count))
    if block_size > GROUP:
      block_size = -(-block_size // GROUP) * GROUP
    blocks = blocks_of(corpus, block_size)
  else:
    blocks = corpus
  best_scores = jnp.full((queries.shape[0], n), -jnp.inf, jnp.float32)
  best_index = jnp.full((queries.shape[0], n), -1, jnp.int32)
  q = jnp.asarray(queries)
  seen = 0
  for block in blocks:
    block = np.asarray(block, np.float32)
    if block.ndim != 2 or block.shape[1] != queries.shape[1]:
      raise ValueError(f"corpus block of shape {block.shape} does not match queries "
                       f"[*, {queries.shape[1]}].")
    for start in range(0, block.shape[0], block_size):
      part = block[start:start + block_size]
      padded = np.zeros((block_size, part.shape[1]), np.float32)
      padded[:part.shape[0]] = part
      best_scores, best_index = _merge(best_scores, best_index, q, padded, part.shape[0],
                                       seen, n=n)
      seen += part.shape[0]
  if seen < n:
    raise ValueError(f"the corpus has {seen} rows, fewer than n={n}.")
  return np.asarray(best_index), np.asarray(best_scores)
