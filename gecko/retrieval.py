"""Exact top-N neighbours of each query by blocked matrix products in JAX.

Used by FRet (step 2: the neighbours the LLM relabels) and by retrieval evaluation.

The corpus is one array or any iterable of row blocks (e.g. slices of a `np.memmap`
larger than memory, or embeddings computed block by block). Each block is scored
against all queries under `jax.jit` and merged into a running top-N, so memory stays
O(queries x (N + block)) whatever the corpus size. Blocks are padded to one shape, so
the merge compiles twice at most (full blocks, and a padded one whose padding is masked
on the group maxima, not on every score); a block that is C-contiguous and 64-byte
aligned (a memmap's, say) reaches XLA without a copy, others through one aligned
buffer. Within a block, scores are grouped 128 to a row and only the
N groups with the best maxima go to the top-k (exact: no other group can hold one of
the N best), which spares a top-k over every score.

With a `mesh`, the corpus rows are split over its devices (and processes): each device
scores its share and keeps its N best, the candidates are all-gathered in corpus order
and merged, so the result equals the one-device one. `backend="faiss"` hands the same
call to faiss-cpu's exact inner-product index when it is installed.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from gecko.data import placement

GROUP = 128  # block scores are grouped this many to a row maximum before top-k
BACKENDS = ("jax", "faiss")
DEFAULT_BLOCK = 65536  # corpus rows scored per jitted call
ALIGN = 64  # bytes: a host block aligned to this reaches XLA:CPU without a copy
SHARD_SCORES = 1 << 25  # query-chunk x rows-per-device scores held at once on a mesh


@functools.partial(jax.jit, static_argnames=("n", "padded"))
def _merge(best_scores, best_index, queries, block, valid, offset, *, n: int, padded: bool):
  """The running top-n merged with one block's: rows from `valid` on are padding (only
  when `padded`), never chosen."""
  scores = queries @ block.T  # [Q, B]
  column = jnp.arange(block.shape[0], dtype=jnp.int32)
  groups = block.shape[0] // GROUP
  if block.shape[0] % GROUP == 0 and groups > n:
    # Exact top-n without a top-k over all B scores: the n best scores lie in the n
    # groups with the best maxima (n distinct elements bound the n-th best from below).
    # Chosen groups are kept in corpus order, so ties still favour the lower index.
    grouped = scores.reshape(scores.shape[0], groups, GROUP)
    maxima = grouped.max(axis=2)
    if padded:  # mask the maxima, not every score: one pass over [Q, B] fewer
      maxima = _valid_maxima(grouped, maxima, valid)
    _, chosen = jax.lax.top_k(maxima, n)
    chosen = jnp.sort(chosen, axis=1)
    scores = jnp.take_along_axis(grouped, chosen[:, :, None], axis=1).reshape(scores.shape[0], -1)
    # The chosen rows' positions, computed rather than gathered from a [Q, B] array.
    row = (chosen[:, :, None] * GROUP + column[None, None, :GROUP]).reshape(scores.shape[0], -1)
  else:
    row = jnp.broadcast_to(column, scores.shape)
  if padded:
    scores = jnp.where(row < valid, scores, -jnp.inf)
  scores = jnp.concatenate([best_scores, scores], axis=1)
  index = jnp.concatenate([best_index, offset + row], axis=1)
  top, where = jax.lax.top_k(scores, n)
  return top, jnp.take_along_axis(index, where, axis=1)


def _valid_maxima(grouped, maxima, valid):
  """Each group's maximum over its rows before `valid`: -inf for the groups past it,
  recomputed for the one it cuts."""
  cut = valid // GROUP
  part = jax.lax.dynamic_index_in_dim(grouped, jnp.minimum(cut, grouped.shape[1] - 1), axis=1,
                                      keepdims=False)  # [Q, GROUP]
  part = jnp.where(jnp.arange(GROUP) < valid - cut * GROUP, part, -jnp.inf).max(axis=1)
  group = jnp.arange(grouped.shape[1])
  return jnp.where(group < cut, maxima, jnp.where(group == cut, part[:, None], -jnp.inf))


def blocks_of(corpus: np.ndarray, block_size: int) -> Iterable[np.ndarray]:
  """Row blocks of an array (or memmap) without copying it whole."""
  for start in range(0, corpus.shape[0], block_size):
    yield corpus[start:start + block_size]


def equal_block_size(rows: int, block_size: int) -> int:
  """The size of the blocks that cover `rows` in as few blocks of about `block_size` as
  possible, all equal (a multiple of GROUP when large), so that the last block is not
  mostly padding."""
  count = -(-rows // max(1, block_size))
  size = max(1, -(-rows // count))
  return -(-size // GROUP) * GROUP if size > GROUP else size


def top_n(queries: np.ndarray, corpus: np.ndarray | Iterable[np.ndarray] | jax.Array, n: int,
          *, block_size: int = DEFAULT_BLOCK, mesh: Mesh | None = None,
          backend: str = "jax") -> tuple[np.ndarray, np.ndarray]:
  """The `n` highest inner products per query: (indices [Q, n], scores [Q, n]), best first.

  Args:
    queries: [Q, D] query embeddings.
    corpus: [N, D] passage embeddings, or an iterable of [n_i, D] blocks in corpus order
      (indices count rows across blocks).
    n: Neighbours per query (at most the corpus size).
    block_size: Rows scored per jitted call (blocks given as an iterable are split or
      padded to this).
    mesh: Split the corpus rows over every device of this mesh (in one process or
      several; every process passes the same queries and gets the whole result). The
      corpus is a host array every process holds, or a global `jax.Array` already split
      by rows (e.g. `placement.put(corpus, placement.rows_sharding(mesh))`).
    backend: "jax" (any device, inside Beam too), or "faiss" (`faiss-cpu`'s exact
      `IndexFlatIP`, when installed: the faster choice on a CPU).

  Ties keep the lower corpus index first (faiss: its own order).
  """
  queries = np.asarray(queries, np.float32)
  if queries.ndim != 2:
    raise ValueError(f"queries must be [Q, D], got shape {queries.shape}.")
  if n < 1:
    raise ValueError(f"n must be >= 1, got {n}.")
  if backend not in BACKENDS:
    raise ValueError(f"backend={backend!r} is not one of {BACKENDS}.")
  if backend == "faiss":
    if mesh is not None:
      raise ValueError("backend='faiss' runs on this host's CPU; pass mesh=None.")
    return _top_n_faiss(queries, corpus, n)
  if mesh is not None:
    return _top_n_sharded(queries, corpus, n, mesh=mesh)
  return _top_n_blocked(queries, corpus, n, block_size=block_size)


def _check_block(block: np.ndarray, queries: np.ndarray) -> None:
  if block.ndim != 2 or block.shape[1] != queries.shape[1]:
    raise ValueError(f"corpus block of shape {block.shape} does not match queries "
                     f"[*, {queries.shape[1]}].")


def _check_rows(rows: int, n: int) -> None:
  if rows < n:
    raise ValueError(f"the corpus has {rows} rows, fewer than n={n}.")


def _top_n_blocked(queries: np.ndarray, corpus, n: int, *, block_size: int
                   ) -> tuple[np.ndarray, np.ndarray]:
  """One device: blocks scored under jit and merged into a running top-n."""
  if isinstance(corpus, jax.Array):
    corpus = np.asarray(corpus)
  if isinstance(corpus, np.ndarray):
    block_size = equal_block_size(corpus.shape[0], block_size)
    blocks = blocks_of(corpus, block_size)
  else:
    blocks = corpus
  best_scores = jnp.full((queries.shape[0], n), -jnp.inf, jnp.float32)
  best_index = jnp.full((queries.shape[0], n), -1, jnp.int32)
  q = jnp.asarray(queries)
  scratch = None  # one aligned host buffer for the blocks that cannot be passed as they are
  seen = 0
  for block in blocks:
    block = np.asarray(block, np.float32)
    _check_block(block, queries)
    for start in range(0, block.shape[0], block_size):
      part = block[start:start + block_size]
      if part.shape[0] == block_size and _aliasable(part):
        device_block = jax.device_put(part, may_alias=True)  # no copy
      else:
        if scratch is None:
          scratch = _aligned_zeros((block_size, part.shape[1]))
        best_scores.block_until_ready()  # the last call may still read the scratch buffer
        scratch[:part.shape[0]] = part
        scratch[part.shape[0]:] = 0
        device_block = jax.device_put(scratch, may_alias=True)
      best_scores, best_index = _merge(best_scores, best_index, q, device_block,
                                       part.shape[0], seen, n=n,
                                       padded=part.shape[0] < block_size)
      seen += part.shape[0]
  _check_rows(seen, n)
  return np.asarray(best_index), np.asarray(best_scores)


def _aliasable(array: np.ndarray) -> bool:
  """Whether XLA:CPU can read `array` in place: C-contiguous and ALIGN-byte aligned
  (else `device_put` copies it, at about 1 GB/s on a 2-core machine)."""
  return array.flags.c_contiguous and array.ctypes.data % ALIGN == 0


def _aligned_zeros(shape: tuple[int, int]) -> np.ndarray:
  size = shape[0] * shape[1]
  raw = np.zeros(size + ALIGN // 4, np.float32)
  start = (-raw.ctypes.data % ALIGN) // 4
  return raw[start:start + size].reshape(shape)


def _top_n_faiss(queries: np.ndarray, corpus, n: int) -> tuple[np.ndarray, np.ndarray]:
  try:
    import faiss
  except ImportError:
    raise ValueError("backend='faiss' needs faiss-cpu: pip install faiss-cpu (or use "
                     "backend='jax').") from None
  index = faiss.IndexFlatIP(queries.shape[1])
  blocks = [corpus] if isinstance(corpus, (np.ndarray, jax.Array)) else corpus
  for block in blocks:
    block = np.ascontiguousarray(np.asarray(block, np.float32))
    _check_block(block, queries)
    index.add(block)
  _check_rows(index.ntotal, n)
  scores, indices = index.search(np.ascontiguousarray(queries), n)
  return indices.astype(np.int64), scores


@functools.lru_cache(maxsize=16)
def _sharded_program(mesh: Mesh, n: int, valid: int):
  axes = placement.row_axes(mesh)

  def local(q, shard):  # one device: its rows, then every device's candidates merged
    offset = jax.lax.axis_index(axes) * shard.shape[0]
    index = offset + jnp.arange(shard.shape[0], dtype=jnp.int32)
    scores = jnp.where(index[None, :] < valid, q @ shard.T, -jnp.inf)
    top, where = jax.lax.top_k(scores, min(n, shard.shape[0]))
    top = jax.lax.all_gather(top, axes, axis=1, tiled=True)  # device order = corpus order
    where = jax.lax.all_gather(index[where], axes, axis=1, tiled=True)
    best, chosen = jax.lax.top_k(top, n)
    return best, jnp.take_along_axis(where, chosen, axis=1)

  return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P(axes)), out_specs=(P(), P()),
                               check_vma=False))


def _top_n_sharded(queries: np.ndarray, corpus, n: int, *, mesh: Mesh
                   ) -> tuple[np.ndarray, np.ndarray]:
  shards = placement.row_shards(mesh)
  if isinstance(corpus, jax.Array):
    if corpus.shape[0] % shards:
      raise ValueError(f"a corpus already on the mesh must have a multiple of {shards} rows "
                       f"(one share per device), got {corpus.shape[0]}; pad it with zero rows.")
    valid, placed = corpus.shape[0], corpus
  else:
    corpus = np.asarray(corpus, np.float32)
    valid = corpus.shape[0]
    padded = np.zeros((-(-valid // shards) * shards, corpus.shape[1]), np.float32)
    padded[:valid] = corpus
    placed = placement.put(padded, placement.rows_sharding(mesh))
  _check_block(placed, queries)
  _check_rows(valid, n)
  program = _sharded_program(mesh, n, valid)
  chunk = max(1, SHARD_SCORES // max(1, placed.shape[0] // shards))
  indices, scores = [], []
  for start in range(0, queries.shape[0], chunk):
    part = queries[start:start + chunk]
    q = placement.put(part, placement.replicated(mesh))
    best, where = program(q, placed)
    scores.append(placement.fetch(best))
    indices.append(placement.fetch(where))
  return np.concatenate(indices), np.concatenate(scores)
