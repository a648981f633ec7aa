"""Exact top-N retrieval (`gecko.retrieval`, used by FRet and by evaluation): blocks,
memmaps and iterables of blocks, the grouped top-k path, ties, bad shapes."""

import numpy as np
import pytest

from gecko import retrieval


@pytest.fixture(scope="module")
def embeddings():
  rng = np.random.default_rng(0)
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
  return unit(rng.normal(size=(7, 16))).astype(np.float32), unit(
      rng.normal(size=(1000, 16))).astype(np.float32)


def _exact(queries, corpus, n):
  scores = queries @ corpus.T
  index = np.argsort(-scores, axis=1, kind="stable")[:, :n]
  return index, np.take_along_axis(scores, index, axis=1)


def test_top_n_equals_exact_search_over_blocks(embeddings, tmp_path):
  queries, corpus = embeddings
  want_index, want_scores = _exact(queries, corpus, 20)
  memmap = np.lib.format.open_memmap(tmp_path / "corpus.npy", mode="w+", dtype=np.float32,
                                     shape=corpus.shape)
  memmap[:] = corpus
  uneven = [corpus[:100], corpus[100:137], corpus[137:637], corpus[637:]]
  aligned = retrieval._aligned_zeros(corpus.shape)  # blocks handed to XLA without a copy
  aligned[:] = corpus
  assert retrieval._aliasable(aligned[200:400]) and not retrieval._aliasable(
      aligned.ravel()[1:3201].reshape(200, 16))
  for source, block_size in ((corpus, 64), (memmap, 333), (iter(uneven), 128), (corpus, 10**6),
                             (aligned, 200)):
    index, scores = retrieval.top_n(queries, source, 20, block_size=block_size)
    np.testing.assert_array_equal(index, want_index)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)


def test_grouped_top_k_is_exact_on_large_blocks():
  """Blocks of 3,072 rows (24 groups of 128 > n): the n best lie in the n best groups."""
  rng = np.random.default_rng(1)
  queries = rng.normal(size=(9, 8)).astype(np.float32)
  corpus = rng.normal(size=(6000, 8)).astype(np.float32)
  corpus[4000] = corpus[17]  # an exact tie across blocks: the earlier passage first
  want_index, want_scores = _exact(queries, corpus, 20)
  index, scores = retrieval.top_n(queries, corpus, 20, block_size=4096)
  np.testing.assert_array_equal(index, want_index)
  np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)


def test_padding_rows_never_win_even_when_every_real_score_is_negative():
  """Padded rows score 0: with every real score below 0, any leak would show. The blocks
  leave a group cut in two and whole groups of padding (6,000 rows as 2 x 3,072; an
  iterable whose last block has 1,000 rows of 4,096)."""
  rng = np.random.default_rng(2)
  queries = np.abs(rng.normal(size=(5, 8))).astype(np.float32)
  corpus = -np.abs(rng.normal(size=(6000, 8))).astype(np.float32)
  want_index, want_scores = _exact(queries, corpus, 20)
  for source in (corpus, iter([corpus[:4096], corpus[4096:5096], corpus[5096:]])):
    index, scores = retrieval.top_n(queries, source, 20, block_size=4096)
    np.testing.assert_array_equal(index, want_index)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)


def test_top_n_ties_keep_the_earlier_passage_and_bad_shapes_are_named():
  corpus = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.5, 0.5]], np.float32)
  index, _ = retrieval.top_n(np.array([[1.0, 0.0]], np.float32), corpus, 3, block_size=2)
  assert index.tolist() == [[0, 2, 3]]
  with pytest.raises(ValueError, match="fewer than n=5"):
    retrieval.top_n(corpus[:1], corpus, 5)
  with pytest.raises(ValueError, match=r"does not match queries \[\*, 3\]"):
    retrieval.top_n(np.ones((1, 3), np.float32), corpus, 1)


