"""The sharded train step: mesh-independence, GradCache = plain, the non-finite guard."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_trees_close

from gecko.models import bert, embedder
from gecko.models.dual_encoder import DualEncoder
from gecko.training import partitioning, train_step
from gecko.training.losses import GeckoLoss
from gecko.training.optimizers import AdamW, decay_mask

MODEL = DualEncoder(backbone=bert.BertConfig(vocab_size=64, hidden_size=32, num_layers=2,
                                             num_heads=4, mlp_dim=64, max_length=16,
                                             dropout_rate=0.1),
                    embed_dim=16, dims=(8, 16))
LOSS = GeckoLoss(temperature=0.1, dims=(8, 16), mask_false_negatives=True)
RULES = partitioning.standard_logical_axis_rules()


# Listwise KL over 3 candidates per query beside the contrastive loss (a [B, K, L] tower).
CANDIDATES_LOSS = GeckoLoss(temperature=0.1, dims=(8, 16), distillation="listwise_kl",
                            distill_over="candidates", teacher_standardize=True)


def _batch(batch_size=16, length=12, seed=0, candidates=3):
  rng = np.random.default_rng(seed)
  out = {}
  for tower, rows in (("query", ()), ("positive", ()), ("negative", ()),
                      ("candidate", (candidates,))):
    shape = (batch_size, *rows, length)
    lengths = rng.integers(3, length + 1, shape[:-1])
    mask = (np.arange(length) < lengths[..., None]).astype(np.int32)
    out[f"{tower}_tokens"] = (rng.integers(1, 64, shape) * mask).astype(np.int32)
    out[f"{tower}_mask"] = mask
  out["positive_key"] = np.arange(batch_size, dtype=np.int32) % (batch_size - 2)
  out["teacher_candidates"] = rng.normal(-20, 5, (batch_size, candidates)).astype(np.float32)
  return out


def test_only_the_towers_the_loss_reads_are_embedded():
  assert train_step._towers(_batch(), LOSS) == ("query", "positive", "negative")
  assert train_step._towers(_batch(), CANDIDATES_LOSS) == ("query", "positive", "negative",
                                                           "candidate")


def _loss_and_grads(mesh_axes, devices, *, grad_cache_chunk=None, model=MODEL, loss_fn=LOSS):
  """Loss and gradients of one step (dropout on), traced with the mesh and rules in force."""
  mesh = partitioning.make_mesh(mesh_axes, devices=devices)
  tx = optax.sgd(0.0)
  _, shardings = train_step.state_shardings(model, tx, mesh, RULES)
  state = train_step.create_state(model, tx, shardings, seed=0)
  batch = jax.device_put(_batch(), partitioning.batch_sharding(mesh))
  specs = jax.tree.map(lambda sharding: sharding.spec, shardings.params)

  def fn(state, batch):
    if grad_cache_chunk:
      return train_step.grad_cache_loss_and_grads(
          model, loss_fn, state.params, batch, state.rng, state.step,
          chunk_size=grad_cache_chunk, data_shards=mesh.shape["data"], param_specs=specs)
    return train_step.plain_loss_and_grads(model, loss_fn, state.params, batch, state.rng,
                                           state.step)

  with partitioning.in_force(mesh, RULES):
    loss, metrics, grads = jax.jit(fn)(state, batch)
  return float(loss), jax.device_get(grads), state


def _per_chunk_reference(chunk: int, loss_fn=LOSS):
  """jax.grad of the loss over embeddings computed chunk by chunk, each chunk with its
  own dropout key (what GradCache computes, without its three passes)."""
  tx = optax.sgd(0.0)
  mesh = partitioning.make_mesh({"data": 1}, devices=jax.devices()[:1])
  _, shardings = train_step.state_shardings(MODEL, tx, mesh, RULES)
  state = train_step.create_state(MODEL, tx, shardings, seed=0)
  batch = _batch()
  chunks = len(batch["query_tokens"]) // chunk
  embed = train_step._embed_fn(MODEL)

  def objective(params):
    embeddings = {}
    for i, tower in enumerate(train_step._towers(batch, loss_fn)):
      keys = jax.random.split(train_step._tower_key(state.rng, state.step, i), chunks)
      tokens, mask = (train_step._chunked(jnp.asarray(batch[f"{tower}_{f}"]), chunks)
                      for f in ("tokens", "mask"))
      embeddings[tower] = train_step._unchunked(
          jnp.stack([embed(params, tokens[c], mask[c], keys[c]) for c in range(chunks)]))
    return loss_fn(embeddings, batch)

  (loss, _), grads = jax.jit(jax.value_and_grad(objective, has_aux=True))(state.params)
  return float(loss), jax.device_get(grads)


@pytest.fixture(scope="module")
def reference():
  return _loss_and_grads({"data": 1}, jax.devices()[:1])


def test_eight_fake_devices():
  assert len(jax.devices()) == 8


@pytest.mark.parametrize("mesh_axes", [{"data": 8}, {"data": 4, "model": 2},
                                       {"data": 4, "fsdp": 2}, {"data": 2, "fsdp": 2, "model": 2}])
def test_loss_and_grads_agree_across_meshes(reference, mesh_axes):
  """Dropout is on (0.1): each shard draws its own part of the one global mask."""
  loss, grads, state = _loss_and_grads(mesh_axes, jax.devices())
  np.testing.assert_allclose(loss, reference[0], atol=1e-5)
  assert_trees_close(grads, reference[1], atol=1e-5, rtol=1e-4)
  if mesh_axes.get("model", 1) > 1:  # tensor-parallel axes really are sharded
    kernel = state.params["encoder"]["layer_0"]["mlp"]["intermediate"]["kernel"]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "model")
    assert kernel.addressable_shards[0].data.shape[1] == 64 // mesh_axes["model"]


def test_dropout_is_on_in_these_tests(reference):
  """Without dropout the step is deterministic; with it, another seed's step differs."""
  import dataclasses
  quiet = dataclasses.replace(MODEL, backbone=dataclasses.replace(MODEL.backbone,
                                                                  dropout_rate=0.0))
  loss, grads, _ = _loss_and_grads({"data": 1}, jax.devices()[:1], model=quiet)
  assert abs(loss - reference[0]) > 1e-3


@pytest.mark.parametrize("mesh_axes, chunk", [
    ({"data": 4, "fsdp": 2}, 8),
    pytest.param({"data": 8}, 8, marks=pytest.mark.slow),  # the fsdp case covers the fast tier
    pytest.param({"data": 1}, 4, marks=pytest.mark.slow),
    pytest.param({"data": 2}, 4, marks=pytest.mark.slow)])
def test_grad_cache_equals_jax_grad_with_the_same_per_chunk_keys(mesh_axes, chunk):
  loss, grads, _ = _loss_and_grads(mesh_axes, jax.devices(), grad_cache_chunk=chunk)
  want_loss, want_grads = _per_chunk_reference(chunk)
  np.testing.assert_allclose(loss, want_loss, atol=1e-5)
  assert_trees_close(grads, want_grads, atol=1e-5, rtol=1e-4)


@pytest.mark.slow  # 70 s of compiles; the fast tier compiles the tower (test_partitioning)
# and trains it with GradCache on 8 devices (test_train)
def test_a_candidate_tower_agrees_across_meshes_and_with_grad_cache(reference):
  """The [B, K, L] tower is embedded as B * K rows: the loss and gradients do not
  depend on the mesh, and GradCache splits its rows with the batch's."""
  loss, grads, _ = _loss_and_grads({"data": 1}, jax.devices()[:1], loss_fn=CANDIDATES_LOSS)
  sharded = _loss_and_grads({"data": 4, "fsdp": 2}, jax.devices(), loss_fn=CANDIDATES_LOSS)
  np.testing.assert_allclose(sharded[0], loss, atol=1e-5)
  assert_trees_close(sharded[1], grads, atol=1e-5, rtol=1e-4)
  cached = _loss_and_grads({"data": 4, "fsdp": 2}, jax.devices(), grad_cache_chunk=8,
                           loss_fn=CANDIDATES_LOSS)
  want_loss, want_grads = _per_chunk_reference(8, CANDIDATES_LOSS)
  np.testing.assert_allclose(cached[0], want_loss, atol=1e-5)
  assert_trees_close(cached[1], want_grads, atol=1e-5, rtol=1e-4)
  assert abs(loss - reference[0]) > 1e-3  # the same batch without its candidates


def _full_step(params=None, lr=1e-2):
  mesh = partitioning.make_mesh({"data": 8})
  tx = AdamW(learning_rate=lr, total_steps=10).transformation()
  _, shardings = train_step.state_shardings(MODEL, tx, mesh,
                                            partitioning.standard_logical_axis_rules())
  state = train_step.create_state(MODEL, tx, shardings, seed=0, params=params)
  step = train_step.jit_train_step(train_step.make_train_step(MODEL, LOSS, tx), shardings, mesh)
  return state, step, jax.device_put(_batch(), partitioning.batch_sharding(mesh))


def test_a_finite_step_updates_and_counts_nothing():
  state, step, batch = _full_step()
  before = jax.device_get(state.params)
  state, metrics = step(state, batch)
  assert int(state.step) == 1 and float(metrics["finite"]) == 1.0
  assert int(state.nonfinite_streak) == 0 and int(state.nonfinite_total) == 0
  assert not np.allclose(before["projection"]["kernel"], state.params["projection"]["kernel"])


def test_non_finite_loss_skips_the_update_and_is_counted():
  params = embedder.init_params(MODEL)
  params["encoder"]["embeddings"]["word_embeddings"] = (
      params["encoder"]["embeddings"]["word_embeddings"].at[5].set(jnp.inf))
  state, step, batch = _full_step(params=params)
  before = jax.device_get(state.params)
  for expected in (1, 2):
    state, metrics = step(state, batch)
    assert float(metrics["finite"]) == 0.0
    assert int(state.nonfinite_streak) == expected and int(state.nonfinite_total) == expected
  assert int(state.step) == 2
  assert_trees_close(jax.device_get(state.params), before, atol=0)


def test_weight_decay_mask_excludes_biases_and_norms():
  mask = decay_mask(embedder.init_params(MODEL))
  layer = mask["encoder"]["layer_0"]
  assert layer["mlp"]["intermediate"]["kernel"] and not layer["mlp"]["intermediate"]["bias"]
  assert not layer["attention_layer_norm"]["LayerNorm_0"]["scale"]
  assert layer["attention"]["query"]["kernel"] and not layer["attention"]["query"]["bias"]
  assert mask["encoder"]["embeddings"]["word_embeddings"] and mask["projection"]["kernel"]


def test_schedules():
  linear = AdamW(learning_rate=1.0, warmup_steps=10, total_steps=110).schedule()
  np.testing.assert_allclose([linear(0), linear(5), linear(10), linear(60), linear(110)],
                             [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6)
  cosine = AdamW(learning_rate=1.0, decay="cosine", total_steps=100).schedule()
  np.testing.assert_allclose([cosine(0), cosine(50), cosine(100)], [1.0, 0.5, 0.0], atol=1e-6)
  with pytest.raises(ValueError, match="decay='step'"):
    AdamW(decay="step")


def test_mesh_errors_name_the_problem():
  with pytest.raises(ValueError, match="needs 6 devices, found 4"):
    partitioning.make_mesh({"data": 3, "model": 2}, devices=jax.devices()[:4])
  with pytest.raises(ValueError, match=r"Unknown mesh axes \['tensor'\]"):
    partitioning.make_mesh({"tensor": 8})
