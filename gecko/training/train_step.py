"""The sharded train step: plain or GradCache, with a non-finite guard.

State creation follows the modern idiom: `jax.eval_shape` of the initialiser ->
logical partition specs -> `NamedSharding`s -> `jax.jit(init, out_shardings=...)`;
the step is `jax.jit(step, in_shardings, out_shardings, donate_argnums=0)`. The loss
sees the global batch, so cross-device in-batch negatives come for free.

GradCache (Gao et al. 2021) makes the contrastive batch independent of activation
memory: (1) embed every tower chunk by chunk without keeping activations, (2) take
the loss and its gradient w.r.t. the embeddings, (3) re-run each chunk and
back-propagate that chunk's embedding gradient into the parameters, accumulating.
The result equals the plain step's gradient.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from gecko.data import features
from gecko.models import dual_encoder
from gecko.models.dual_encoder import DualEncoder
from gecko.training import partitioning
from gecko.training.losses import GeckoLoss

Params = Any
Batch = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs besides the data position (which is `step`)."""

  step: jax.Array
  params: Params
  opt_state: optax.OptState
  rng: jax.Array  # dropout key data; per-step keys are fold_in(rng, step)
  nonfinite_streak: jax.Array  # consecutive skipped (non-finite) steps
  nonfinite_total: jax.Array


def _towers(batch_keys) -> tuple[str, ...]:
  return tuple(t for t, (tokens, _) in features.TOWERS.items() if tokens in batch_keys)


def state_shardings(model: DualEncoder, tx: optax.GradientTransformation, mesh: Mesh,
                    rules) -> tuple[TrainState, TrainState]:
  """(abstract state, shardings) for a TrainState of this model on this mesh."""
  boxed = dual_encoder.abstract_params(model, boxed=True)
  param_sh = partitioning.logical_shardings(boxed, mesh, rules)
  params = nn.unbox(boxed)
  opt_state = jax.eval_shape(tx.init, params)
  repl = partitioning.replicated(mesh)
  opt_sh = optax.tree_map_params(tx, lambda _, sh: sh, opt_state, param_sh,
                                 transform_non_params=lambda _: repl)
  scalar = jax.ShapeDtypeStruct((), jnp.int32)
  abstract = TrainState(step=scalar, params=params, opt_state=opt_state,
                        rng=jax.ShapeDtypeStruct((2,), jnp.uint32), nonfinite_streak=scalar,
                        nonfinite_total=scalar)
  shardings = TrainState(step=repl, params=param_sh, opt_state=opt_sh, rng=repl,
                         nonfinite_streak=repl, nonfinite_total=repl)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)
  return abstract, shardings


def create_state(model: DualEncoder, tx: optax.GradientTransformation, shardings: TrainState,
                 *, seed: int, params: Params | None = None) -> TrainState:
  """Initialises a sharded TrainState (random params, or the given ones placed on the mesh)."""

  def init(key):
    init_key, dropout_key = jax.random.split(key)
    p = nn.unbox(model.init(init_key, *dual_encoder.example_inputs())["params"])
    if params is not None:
      p = params
    zero = jnp.zeros((), jnp.int32)
    return TrainState(step=zero, params=p, opt_state=tx.init(p),
                      rng=jax.random.key_data(dropout_key), nonfinite_streak=zero,
                      nonfinite_total=zero)

  return jax.jit(init, out_shardings=shardings)(jax.random.key(seed))


def _embed_fn(model: DualEncoder):
  def embed(params, tokens, mask, key):
    return model.apply({"params": params}, tokens, mask, deterministic=False,
                       rngs={"dropout": key})
  return embed


def _tower_key(rng, step, index):
  return jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(rng), step), index)


def plain_loss_and_grads(model, loss_fn, params, batch, rng, step):
  """Loss, metrics and parameter gradients, all towers in one backward pass."""
  embed = _embed_fn(model)
  towers = _towers(batch)

  def objective(p):
    embeddings = {t: embed(p, batch[f"{t}_tokens"], batch[f"{t}_mask"], _tower_key(rng, step, i))
                  for i, t in enumerate(towers)}
    return loss_fn(embeddings, batch)

  (loss, metrics), grads = jax.value_and_grad(objective, has_aux=True)(params)
  return loss, metrics, grads


def _chunked(x, chunks):
  """[B, ...] -> [chunks, B // chunks, ...] taking every `chunks`-th row (keeps sharding)."""
  return jnp.swapaxes(x.reshape((x.shape[0] // chunks, chunks) + x.shape[1:]), 0, 1)


def _unchunked(x):
  return jnp.swapaxes(x, 0, 1).reshape((-1,) + x.shape[2:])


def grad_cache_loss_and_grads(model, loss_fn, params, batch, rng, step, *, chunk_size: int):
  """Same result as `plain_loss_and_grads`, with activation memory of one chunk."""
  embed = _embed_fn(model)
  towers = _towers(batch)
  batch_size = batch["query_tokens"].shape[0]
  if batch_size % chunk_size:
    raise ValueError(f"grad_cache_chunk={chunk_size} must divide the global batch {batch_size}.")
  chunks = batch_size // chunk_size
  inputs = {t: (_chunked(batch[f"{t}_tokens"], chunks), _chunked(batch[f"{t}_mask"], chunks))
            for t in towers}
  keys = {t: jax.random.split(_tower_key(rng, step, i), chunks) for i, t in enumerate(towers)}

  # Dropout keys are per chunk, so the re-run in (3) sees the same masks as (1).
  def embed_all(p, tower):
    tokens, mask = inputs[tower]
    return jax.lax.map(lambda x: embed(p, *x), (tokens, mask, keys[tower]))

  params_const = jax.lax.stop_gradient(params)
  embeddings = {t: embed_all(params_const, t) for t in towers}  # (1) [chunks, B/chunks, D]
  flat = {t: _unchunked(e) for t, e in embeddings.items()}
  (loss, metrics), emb_grads = jax.value_and_grad(
      lambda e: loss_fn(e, batch), has_aux=True)(flat)  # (2)
  emb_grads = {t: _chunked(g, chunks) for t, g in emb_grads.items()}

  def backward_chunk(acc, c):  # (3)
    def surrogate(p):
      total = 0.0
      for t in towers:
        tokens, mask = inputs[t]
        e = embed(p, tokens[c], mask[c], keys[t][c])
        total = total + jnp.vdot(e, emb_grads[t][c])
      return total
    return jax.tree.map(jnp.add, acc, jax.grad(surrogate)(params)), None

  zeros = jax.tree.map(jnp.zeros_like, params)
  grads, _ = jax.lax.scan(backward_chunk, zeros, jnp.arange(chunks))
  return loss, metrics, grads


def all_finite(tree) -> jax.Array:
  """True when every leaf of `tree` is finite (a traced scalar)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
  return functools.reduce(jnp.logical_and, leaves)


def make_train_step(model: DualEncoder, loss_fn: GeckoLoss, tx: optax.GradientTransformation,
                    *, grad_cache_chunk: int | None = None) -> Callable:
  """The (unjitted) step `(state, batch) -> (state, metrics)`.

  A non-finite loss or gradient skips the update (params and optimiser state stay),
  increments `nonfinite_streak`/`nonfinite_total`, and reports `metrics["finite"] = 0`.
  """

  def step_fn(state: TrainState, batch: Batch):
    if grad_cache_chunk:
      loss, metrics, grads = grad_cache_loss_and_grads(
          model, loss_fn, state.params, batch, state.rng, state.step, chunk_size=grad_cache_chunk)
    else:
      loss, metrics, grads = plain_loss_and_grads(model, loss_fn, state.params, batch,
                                                  state.rng, state.step)
    finite = jnp.isfinite(loss) & all_finite(grads)
    safe_grads = jax.tree.map(lambda g: jnp.where(finite, g, 0.0), grads)
    updates, opt_state = tx.update(safe_grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads),
                   finite=finite.astype(jnp.float32))
    new_state = state.replace(
        step=state.step + 1, params=keep(params, state.params),
        opt_state=keep(opt_state, state.opt_state),
        nonfinite_streak=jnp.where(finite, 0, state.nonfinite_streak + 1),
        nonfinite_total=state.nonfinite_total + (~finite).astype(jnp.int32))
    return new_state, metrics

  return step_fn


def jit_train_step(step_fn: Callable, shardings: TrainState, mesh: Mesh) -> Callable:
  """`jax.jit` with explicit shardings: state in/out as given, batch over (data, fsdp)."""
  return jax.jit(step_fn, in_shardings=(shardings, partitioning.batch_sharding(mesh)),
                 out_shardings=(shardings, partitioning.replicated(mesh)), donate_argnums=0)
