"""The Flax backbone and dual-encoder head: axis names, pooling, Matryoshka, gin sizes."""

import dataclasses

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gecko import gin_flags
from gecko.models import bert, dual_encoder, embedder, matryoshka, t5

TINY = bert.BertConfig(vocab_size=50, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64,
                       max_length=32, dropout_rate=0.0)
KNOWN_AXES = {"vocab", "embed", "heads", "kv", "mlp", "length", "type", "projection"}


def _init(module, length=8):
  ids = jnp.ones((2, length), jnp.int32)
  return module.init(jax.random.key(0), ids, jnp.ones_like(ids))


def test_every_parameter_has_logical_axis_names():
  variables = _init(dual_encoder.DualEncoder(backbone=TINY, embed_dim=16, dims=(8, 16)))
  leaves = jax.tree_util.tree_leaves(variables["params"],
                                     is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert len(leaves) == 2 * 16 + 5 + 1  # 16 tensors per layer, 5 embedding, 1 projection
  for leaf in leaves:
    assert isinstance(leaf, nn.Partitioned), f"unannotated parameter of shape {leaf.shape}"
    assert len(leaf.names) == leaf.value.ndim
    assert set(leaf.names) <= KNOWN_AXES, leaf.names


def test_padding_does_not_change_the_embedding():
  module = dual_encoder.DualEncoder(backbone=TINY)
  params = embedder.init_params(module)
  ids = jnp.array([[2, 7, 9, 11, 3]], jnp.int32)
  short = module.apply({"params": params}, ids, jnp.ones_like(ids))
  padded_ids = jnp.pad(ids, ((0, 0), (0, 11)))
  mask = (jnp.arange(16) < 5).astype(jnp.int32)[None]
  padded = module.apply({"params": params}, padded_ids, mask)
  np.testing.assert_allclose(short, padded, atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(short, axis=-1), 1.0, atol=1e-6)


def test_mean_pool_ignores_padding_and_handles_empty_rows():
  states = jnp.arange(12, dtype=jnp.float32).reshape(2, 3, 2)
  mask = jnp.array([[1, 1, 0], [0, 0, 0]])
  np.testing.assert_allclose(dual_encoder.mean_pool(states, mask), [[1.0, 2.0], [0.0, 0.0]])


def test_matryoshka_prefix_is_renormalised_first_dims():
  module = dual_encoder.DualEncoder(backbone=TINY, embed_dim=24, dims=(8, 24))
  params = embedder.init_params(module)
  ids = jnp.array([[2, 5, 6, 3], [2, 8, 3, 0]], jnp.int32)
  full = np.asarray(module.apply({"params": params}, ids, (ids > 0).astype(jnp.int32)))
  assert full.shape == (2, 24)
  small = np.asarray(matryoshka.prefix(full, 8))
  expected = full[:, :8] / np.linalg.norm(full[:, :8], axis=-1, keepdims=True)
  np.testing.assert_allclose(small, expected, atol=1e-6)
  assert not np.allclose(small, full[:, :8])  # re-normalisation actually happened
  with pytest.raises(ValueError, match="embedding size"):
    matryoshka.prefix(full, 32)


@pytest.mark.parametrize("dims", [(24, 8), (8, 16), (0, 24), (8, 8, 24)])
def test_bad_matryoshka_dims_are_rejected(dims):
  with pytest.raises(ValueError, match="dims"):
    _init(dual_encoder.DualEncoder(backbone=TINY, embed_dim=24, dims=dims))


def test_bad_sizes_are_rejected_with_the_value():
  with pytest.raises(ValueError, match="num_heads=5"):
    bert.BertConfig(hidden_size=32, num_heads=5)
  with pytest.raises(ValueError, match="num_layers"):
    bert.BertConfig(num_layers=0)
  with pytest.raises(ValueError, match="exceeds the model's 32 positions"):
    _init(dual_encoder.DualEncoder(backbone=TINY), length=40)


@pytest.mark.parametrize("backbone", [
    dataclasses.replace(TINY, dropout_rate=0.1),
    t5.T5Config(vocab_size=64, hidden_size=16, num_layers=2, num_heads=2, head_dim=8, mlp_dim=24,
                dropout_rate=0.1)], ids=["bert", "t5"])
def test_remat_gives_the_same_outputs_and_gradients_with_dropout(backbone):
  ids = jnp.array([[2, 5, 6, 3], [2, 8, 3, 0]], jnp.int32)
  mask = (ids > 0).astype(jnp.int32)
  plain = dual_encoder.DualEncoder(backbone=backbone, embed_dim=16)
  remat = dual_encoder.DualEncoder(backbone=backbone, embed_dim=16, remat=True)
  params = embedder.init_params(plain)

  def loss(model):
    return lambda p: jnp.sum(model.apply({"params": p}, ids, mask, deterministic=False,
                                         rngs={"dropout": jax.random.key(1)})[:, 0])

  np.testing.assert_allclose(loss(plain)(params), loss(remat)(params), atol=1e-6)
  want, got = jax.grad(loss(plain))(params), jax.grad(loss(remat))(params)
  flat_want, flat_got = jax.tree_util.tree_leaves_with_path(want), jax.tree.leaves(got)
  assert jax.tree.structure(want) == jax.tree.structure(got)
  for (path, a), b in zip(flat_want, flat_got):  # every leaf: the backward pass too
    np.testing.assert_allclose(a, b, atol=1e-6, err_msg=jax.tree_util.keystr(path))
  encoder = [a for path, a in flat_want if "encoder" in jax.tree_util.keystr(path)]
  assert all(np.abs(a).max() > 0 for a in encoder[:3])  # the gradient reaches the encoder


@gin.configurable("probe")
def _probe(model=gin.REQUIRED):
  return model


@pytest.fixture
def gin_model():
  gin.clear_config()
  gin.add_config_file_search_path(gin_flags.GIN_PARENT)  # holds gin/

  def build(files, bindings=()):
    gin.parse_config_files_and_bindings(files, list(bindings) + ["probe.model = %MODEL"])
    return _probe()

  yield build
  gin.clear_config()


def test_gin_minilm_config_matches_the_real_checkpoint(gin_model, minilm_dir):
  from gecko.models import checkpoint_import
  model = gin_model(["gin/models/minilm_l6.gin"])
  hf = checkpoint_import.config_from_hf(f"{minilm_dir}/config.json")
  assert model.backbone == hf
  assert model.embed_dim is None and model.matryoshka_dims == (384,)


def test_gin_tiny_config_with_override_builds_a_runnable_model(gin_model):
  model = gin_model(["gin/models/tiny.gin"], ["bert.BertConfig.num_layers = 1"])
  assert model.backbone.hidden_size == 32 and model.backbone.num_layers == 1
  assert model.matryoshka_dims == (16, 64)
  params = embedder.init_params(model)
  ids = jnp.array([[101, 7592, 102]], jnp.int32)
  assert model.apply({"params": params}, ids, jnp.ones_like(ids)).shape == (1, 64)


def test_dropout_draws_the_rate_and_scales_the_kept_elements():
  from gecko.models import dropout
  layer = dropout.Dropout(0.1)
  x = jnp.ones((101, 333))
  out = np.asarray(layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)}))
  kept = out != 0
  assert abs(1 - kept.mean() - 0.1) < 0.005  # 33,633 draws: 5 standard deviations is 0.008
  np.testing.assert_allclose(out[kept], 1 / (1 - 0.1), rtol=1e-6)
  again = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
  assert (np.asarray(again) != out).any()
  assert layer.apply({}, x, deterministic=True) is x
  with pytest.raises(ValueError, match=r"rate must be in \[0, 1\), got 1.0"):
    dropout.Dropout(1.0).apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})


def test_hashed_dropout_draws_are_independent_across_elements_and_keys():
  """The index hash behaves as independent draws: neighbours along every axis, and the
  same element under two keys, are kept together at the independent rate."""
  from gecko.models import dropout
  shape = (8, 12, 64, 64)  # 393,216 draws: one standard deviation of a rate is ~0.0008
  keep = np.asarray(dropout.hashed_bits(jax.random.key(3), shape)) >= round(0.1 * 2**32)
  assert abs(keep.mean() - 0.9) < 0.004
  for axis in range(4):
    both = np.logical_and(keep, np.roll(keep, 1, axis=axis)).mean()
    assert abs(both - 0.81) < 0.005, (axis, both)
  other = np.asarray(dropout.hashed_bits(jax.random.key(2), shape)) >= round(0.1 * 2**32)
  assert abs(np.logical_and(keep, other).mean() - 0.81) < 0.005
  bits = np.asarray(dropout.hashed_bits(jax.random.key(3), shape))
  ones = np.unpackbits(bits.view(np.uint8)).reshape(-1, 32).mean(axis=0)
  assert np.abs(ones - 0.5).max() < 0.005  # every bit position is a fair coin
  np.testing.assert_array_equal(bits, dropout.hashed_bits(jax.random.key(3), shape))
  # Past 2**32 elements the hash takes (row, position in the row); only a single row
  # past 2**32 elements is refused.
  big = jax.eval_shape(lambda: dropout.hashed_bits(jax.random.key(0), (1 << 17, 1 << 16)))
  assert big.shape == (1 << 17, 1 << 16)
  with pytest.raises(ValueError, match=r"32 bits each; shape \(2, 8589934592\) has more"):
    dropout.hashed_bits(jax.random.key(0), (2, 1 << 33))
