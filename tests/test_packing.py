"""Packing texts into rows: the packer against hand-worked cases, and packed rows giving
the embeddings of one text per row (BERT and T5 backbones, dropout off)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gecko.data import packing
from gecko.models import attention, bert, dual_encoder, embedder, t5


def test_row_lengths_are_powers_of_two_up_to_the_model_maximum():
  assert packing.row_lengths(256) == [32, 64, 128, 256]
  assert packing.row_lengths(512) == [32, 64, 128, 256, 512]
  assert packing.row_lengths(100) == [32, 64, 100]
  assert packing.row_lengths(16) == [16]


def test_pack_by_hand():
  # max_length 64 -> classes [32, 64]; a text goes to the shortest class >= 4 x its length.
  # class 32: lengths 5, 3, 2 (indices 3, 1, 6) share one row.
  # class 64: 40 opens row A (room 24); 17 fits A (room 7); 16 opens row B (room 48);
  # 10 goes to the fullest row that fits it: B.
  rows = packing.pack([10, 3, 40, 5, 17, 16, 2], max_length=64, max_segments=8)
  assert rows == [packing.Row((3, 1, 6), 32), packing.Row((2, 4), 64),
                  packing.Row((5, 0), 64)]


def test_pack_respects_max_segments_and_row_room():
  rows = packing.pack([1] * 10, max_length=32, max_segments=3)
  assert [len(r.texts) for r in rows] == [3, 3, 3, 1]
  rng = np.random.default_rng(0)
  lengths = rng.integers(0, 257, 500)
  rows = packing.pack(lengths, max_length=256, max_segments=5)
  assert sorted(i for r in rows for i in r.texts) == list(range(500))
  assert all(sum(lengths[i] for i in r.texts) <= r.length and len(r.texts) <= 5 for r in rows)


def test_pack_refuses_texts_longer_than_the_model():
  with pytest.raises(ValueError, match=r"lengths must lie in \[0, 16\].*truncate"):
    packing.pack([3, 17], max_length=16, max_segments=4)


def test_batches_follow_the_token_budget():
  rows = [packing.Row((i,), 64) for i in range(5)] + [packing.Row((9,), 256)]
  got = packing.batches(rows, token_budget=128)
  assert [[r.texts[0] for r in b] for b in got] == [[9], [0, 1], [2, 3], [4]]
  assert packing.padded_rows(3, limit=8) == 4 and packing.padded_rows(5, limit=4) == 4


def test_arrays_lay_texts_out_as_segments():
  ids, segments = packing.arrays([packing.Row((1, 0), 8)], [[7, 8, 9], [5, 6]], rows=2,
                                 pad_id=0)
  np.testing.assert_array_equal(ids, [[5, 6, 7, 8, 9, 0, 0, 0], [0] * 8])
  np.testing.assert_array_equal(segments, [[1, 1, 2, 2, 2, 0, 0, 0], [0] * 8])


def test_segment_positions_and_bias():
  segment_ids = jnp.array([[1, 1, 2, 2, 2, 0], [1, 2, 3, 3, 0, 0]])
  np.testing.assert_array_equal(bert.segment_positions(segment_ids),
                                [[0, 1, 0, 1, 2, 0], [0, 0, 0, 1, 0, 1]])
  bias = attention.segment_bias(segment_ids)
  assert bias.shape == (2, 1, 6, 6)
  allowed = np.asarray(bias[0, 0]) == 0
  np.testing.assert_array_equal(allowed[2], [0, 0, 1, 1, 1, 0])
  assert not allowed[5].any()  # padding attends nowhere (its output is never pooled)


TINY_BACKBONES = [
    bert.BertConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=48,
                    max_length=32, dropout_rate=0.0),
    t5.T5Config(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, head_dim=8,
                mlp_dim=48, relative_max_distance=20, max_length=32, dropout_rate=0.0),
]


@pytest.mark.parametrize("backbone", TINY_BACKBONES, ids=["bert", "t5"])
def test_packed_rows_give_the_one_text_per_row_embeddings(backbone):
  module = dual_encoder.DualEncoder(backbone=backbone, embed_dim=16, dims=(8, 16))
  params = embedder.init_params(module, seed=3)
  rng = np.random.default_rng(0)
  texts = [list(rng.integers(2, 64, n)) for n in (5, 1, 12, 7, 3, 30, 2)]
  want = []
  for seq in texts:
    ids = np.zeros((1, 32), np.int32)
    ids[0, :len(seq)] = seq
    mask = (np.arange(32) < len(seq)).astype(np.int32)[None]
    want.append(np.asarray(module.apply({"params": params}, ids, mask))[0])
  rows = packing.pack([len(t) for t in texts], max_length=32, max_segments=4)
  assert any(len(r.texts) > 1 for r in rows)
  got = np.zeros((len(texts), 16), np.float32)
  for length in {r.length for r in rows}:
    batch = [r for r in rows if r.length == length]
    ids, segment_ids = packing.arrays(batch, texts, rows=len(batch) + 1, pad_id=0)
    out = np.asarray(jax.jit(lambda p, i, s: module.apply({"params": p}, i, s, segments=4))(
        params, ids, segment_ids))
    assert out.shape == (len(batch) + 1, 4, 16)
    assert not out[-1].any()  # an all-padding row and unused segments embed to zeros
    for r, row in enumerate(batch):
      got[list(row.texts)] = out[r, :len(row.texts)]
  np.testing.assert_allclose(got, np.stack(want), atol=2e-6)
