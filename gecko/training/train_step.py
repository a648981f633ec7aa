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
import numpy as np
import optax
from jax.sharding import Mesh, PartitionSpec

from gecko.data import features
from gecko.models import dropout as dropout_lib
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


def _towers(batch_keys, loss_fn: GeckoLoss) -> tuple[str, ...]:
  """The towers to embed: those the batch holds and the loss uses (a batch may carry
  more, e.g. candidates that only a listwise distillation reads)."""
  needed = set(loss_fn.required_features)
  return tuple(t for t, (tokens, _) in features.TOWERS.items()
               if tokens in batch_keys and tokens in needed)


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
  """Initialises a sharded TrainState: random parameters, or the given (host) ones
  placed with their shardings and passed to the jitted init as an argument, so its
  program holds no weight constants (a 1.2B model's would be gigabytes)."""
  if params is None:
    return jax.jit(random_init_fn(model, tx), out_shardings=shardings)(jax.random.key(seed))
  placed = jax.tree.map(_place, params, shardings.params)
  init = jax.jit(params_init_fn(tx), in_shardings=(None, shardings.params),
                 out_shardings=shardings)
  return init(jax.random.key(seed), placed)


def _place(value, sharding) -> jax.Array:
  """A host array as a global array with `sharding`: each process gives the shards its
  devices hold (every process holds the whole value)."""
  value = np.asarray(value)
  return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def _fresh_state(tx, params, dropout_key) -> TrainState:
  zero = jnp.zeros((), jnp.int32)
  return TrainState(step=zero, params=params, opt_state=tx.init(params),
                    rng=jax.random.key_data(dropout_key), nonfinite_streak=zero,
                    nonfinite_total=zero)


def random_init_fn(model: DualEncoder, tx: optax.GradientTransformation) -> Callable:
  """`key -> TrainState` with randomly initialised parameters (to jit)."""
  def init(key):
    init_key, dropout_key = jax.random.split(key)
    params = nn.unbox(model.init(init_key, *dual_encoder.example_inputs())["params"])
    return _fresh_state(tx, params, dropout_key)
  return init


def params_init_fn(tx: optax.GradientTransformation) -> Callable:
  """`(key, params) -> TrainState` around given parameters (to jit)."""
  def init(key, params):
    return _fresh_state(tx, params, jax.random.split(key)[1])
  return init


def _embed_fn(model: DualEncoder):
  """`(params, tokens, mask, key) -> embeddings`: `[B, L]` -> `[B, D]`, and a candidate
  tower's `[B, K, L]` -> `[B, K, D]` (embedded as B * K rows; row-major, so the rows of
  a slice of the batch are a slice of the B * K rows, and dropout by position holds)."""
  def embed(params, tokens, mask, key):
    lead = tokens.shape[:-1]
    flat = tokens.reshape((-1, tokens.shape[-1])), mask.reshape((-1, mask.shape[-1]))
    out = model.apply({"params": params}, *flat, deterministic=False, rngs={"dropout": key})
    return out.reshape(lead + out.shape[-1:])
  return embed


def _tower_key(rng, step, index):
  return jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(rng), step), index)


def plain_loss_and_grads(model, loss_fn, params, batch, rng, step):
  """Loss, metrics and parameter gradients, all towers in one backward pass."""
  embed = _embed_fn(model)
  towers = _towers(batch, loss_fn)

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


def grad_cache_loss_and_grads(model, loss_fn, params, batch, rng, step, *, chunk_size: int,
                              data_shards: int = 1, param_specs=None):
  """Same result as `plain_loss_and_grads`, with activation memory of one chunk.

  Each chunk's rows are taken as `data_shards` pieces, one per slice of the mesh's
  `data` axis, by a `vmap` sharded over that axis: each piece's gradient stays on its
  devices, accumulated over the chunks, and the pieces are summed once, after the
  last chunk. So gradients cross the `data` axis once per step, not once per chunk
  (under FSDP each chunk's gradient is still reduce-scattered over `fsdp`, as its
  weights are gathered). Dropout draws by global position (`dropout.rows_of`), so the
  masks, and the result, do not depend on the mesh.
  """
  embed = _embed_fn(model)
  towers = _towers(batch, loss_fn)
  batch_size = batch["query_tokens"].shape[0]
  if batch_size % chunk_size:
    raise ValueError(f"grad_cache_chunk={chunk_size} must divide the global batch {batch_size}.")
  if chunk_size % data_shards:
    raise ValueError(f"grad_cache_chunk={chunk_size} must be divisible by the mesh's data "
                     f"axis ({data_shards}), which splits every chunk.")
  chunks, pieces = batch_size // chunk_size, data_shards
  per_piece = _per_piece(pieces)

  def split(x):  # [B, ...] -> [chunks, pieces, rows, ...]
    x = _chunked(x, chunks)
    return x.reshape((chunks, pieces, chunk_size // pieces) + x.shape[2:])

  inputs = {t: (split(batch[f"{t}_tokens"]), split(batch[f"{t}_mask"])) for t in towers}
  keys = {t: jax.random.split(_tower_key(rng, step, i), chunks) for i, t in enumerate(towers)}

  # (1) Embeddings without activations; dropout keys are per chunk, so (3) sees the same masks.
  params_const = jax.lax.stop_gradient(params)

  def embed_chunk(c):
    return {t: per_piece(lambda p, tokens, mask: embed(p, tokens, mask, keys[t][c]),  # noqa: B023
                         params_const, inputs[t][0][c], inputs[t][1][c]) for t in towers}

  embeddings = jax.lax.map(embed_chunk, jnp.arange(chunks))  # {t: [chunks, pieces, rows, D]}
  flat = {t: _unchunked(e.reshape((chunks, chunk_size) + e.shape[3:]))
          for t, e in embeddings.items()}
  (loss, metrics), emb_grads = jax.value_and_grad(
      lambda e: loss_fn(e, batch), has_aux=True)(flat)  # (2)
  emb_grads = {t: split(g) for t, g in emb_grads.items()}

  def backward_chunk(acc, c):  # (3): each piece's gradient, kept apart until the end
    def piece_grads(p, tokens, masks, grads):
      def surrogate(p):
        return sum(jnp.vdot(embed(p, tokens[t], masks[t], keys[t][c]), grads[t]) for t in towers)
      return jax.grad(surrogate)(p)

    grads = per_piece(piece_grads, params, {t: inputs[t][0][c] for t in towers},
                      {t: inputs[t][1][c] for t in towers}, {t: emb_grads[t][c] for t in towers})
    return _constrain_pieces(jax.tree.map(jnp.add, acc, grads), param_specs), None

  zeros = jax.tree.map(lambda x: jnp.zeros((pieces,) + x.shape, x.dtype), params)
  grads, _ = jax.lax.scan(backward_chunk, _constrain_pieces(zeros, param_specs),
                          jnp.arange(chunks))
  return loss, metrics, jax.tree.map(lambda g: g.sum(axis=0), grads)


def _per_piece(pieces: int):
  """`run(fn, params, *rows)`: `fn(params, *rows_of_one_piece)` on each of `pieces`
  slices (the rows' leading axis), stacked on a new leading axis; with several pieces,
  a `vmap` sharded over the mesh's `data` axis (the model's `batch` then maps to the
  remaining batch axes), each piece drawing dropout by its global rows."""
  if pieces == 1:
    return lambda fn, params, *rows: jax.tree.map(
        lambda x: x[None], fn(params, *jax.tree.map(lambda x: x[0], rows)))
  rules = tuple((name, _without(axes, "data")) for name, axes in nn.get_logical_axis_rules())

  def one(fn, params, index, *rows):
    with dropout_lib.rows_of(index, pieces), nn.logical_axis_rules(rules):
      return fn(params, *rows)

  def run(fn, params, *rows):
    return jax.vmap(functools.partial(one, fn), in_axes=(None, 0) + (0,) * len(rows),
                    spmd_axis_name="data")(params, jnp.arange(pieces), *rows)

  return run


def _without(axes, name: str):
  """Mesh axes of a logical-axis rule, less `name`."""
  if axes is None or axes == name:
    return None
  if isinstance(axes, str):
    return axes
  rest = tuple(a for a in axes if a != name)
  return rest if len(rest) > 1 else (rest[0] if rest else None)


def _constrain_pieces(tree, param_specs):
  """Per-piece gradients: the pieces over `data`, each laid out as its parameter."""
  if param_specs is None:
    return tree
  return jax.tree.map(lambda g, spec: jax.lax.with_sharding_constraint(
      g, PartitionSpec("data", *spec)), tree, param_specs)


def all_finite(tree) -> jax.Array:
  """True when every leaf of `tree` is finite (a traced scalar)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
  return functools.reduce(jnp.logical_and, leaves)


def make_train_step(model: DualEncoder, loss_fn: GeckoLoss, tx: optax.GradientTransformation,
                    *, grad_cache_chunk: int | None = None, data_shards: int = 1,
                    param_specs=None) -> Callable:
  """The (unjitted) step `(state, batch) -> (state, metrics)`.

  With `grad_cache_chunk`, `data_shards` (the mesh's `data` axis) and `param_specs`
  (the parameters' `PartitionSpec`s) let GradCache reduce over `data` once per step.

  A non-finite loss or gradient skips the update (params and optimiser state stay),
  increments `nonfinite_streak`/`nonfinite_total`, and reports `metrics["finite"] = 0`.
  """

  def step_fn(state: TrainState, batch: Batch):
    if grad_cache_chunk:
      loss, metrics, grads = grad_cache_loss_and_grads(
          model, loss_fn, state.params, batch, state.rng, state.step, chunk_size=grad_cache_chunk,
          data_shards=data_shards, param_specs=param_specs)
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
