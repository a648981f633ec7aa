"""The Gecko dual encoder: one shared tower for queries and passages.

    tokens -> backbone -> masked mean pool -> [bias-free projection] -> L2 norm

Matryoshka (MRL) embeddings are prefixes of the output: the `d`-dim embedding is the
first `d` coordinates re-normalised (`gecko.models.matryoshka`). The full output is itself one of
the configured `dims`.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gecko.models import bert, t5

BackboneConfig = bert.BertConfig | t5.T5Config
# Each backbone's sizes -> the module producing its token states.
ENCODERS = {bert.BertConfig: bert.BertEncoder, t5.T5Config: t5.T5Encoder}

Array = jax.Array


def mean_pool(states: Array, mask: Array) -> Array:
  """Mean of token states over the real (mask == 1) tokens; all-pad rows give zeros."""
  mask = mask.astype(states.dtype)[..., None]
  total = jnp.sum(states * mask, axis=-2)
  count = jnp.maximum(jnp.sum(mask, axis=-2), 1e-9)
  return total / count


def segment_mean_pool(states: Array, segment_ids: Array, segments: int) -> Array:
  """`[batch, segments, hidden]` means of the token states of segments 1 ... `segments`
  of each packed row (an unused segment id gives zeros)."""
  one_hot = (segment_ids[..., None] == jnp.arange(1, segments + 1)).astype(states.dtype)
  total = jnp.einsum("bls,bld->bsd", one_hot, states)
  count = jnp.maximum(jnp.sum(one_hot, axis=1), 1e-9)[..., None]
  return total / count


def l2_normalize(x: Array, eps: float = 1e-12) -> Array:
  """Unit-norm rows; a zero row stays zero (as torch's F.normalize does)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps)


class DualEncoder(nn.Module):
  """Shared-tower text encoder producing L2-normalised embeddings.

  Attributes:
    backbone: Sizes of the backbone: a `bert.BertConfig` (MiniLM, BERT) or a
      `t5.T5Config` (the paper-scale T5 v1.1 XL encoder).
    embed_dim: Output size of a bias-free projection after pooling, or None for no
      projection (an imported sentence-transformers model has none).
    dims: Matryoshka dims, ascending, the last equal to the output size; empty means
      just the full size.
    remat: Rematerialise backbone blocks in the backward pass.
  """

  backbone: BackboneConfig
  embed_dim: int | None = None
  dims: Sequence[int] = ()
  remat: bool = False

  def setup(self):
    out = self.output_dim
    dims = tuple(self.dims) or (out,)
    if list(dims) != sorted(set(dims)) or dims[-1] != out or dims[0] <= 0:
      raise ValueError(
          f"DualEncoder.dims={tuple(self.dims)} must be strictly ascending positive ints "
          f"ending at the output size {out} (e.g. (256, {out})).")
    encoder_cls = ENCODERS.get(type(self.backbone))
    if encoder_cls is None:
      raise TypeError(f"DualEncoder.backbone must be one of {[c.__name__ for c in ENCODERS]}, "
                      f"got {type(self.backbone).__name__}.")
    self.encoder = encoder_cls(self.backbone, remat=self.remat)
    if self.embed_dim is not None:
      self.projection = nn.Dense(
          self.embed_dim, use_bias=False, name="projection",
          kernel_init=nn.with_logical_partitioning(
              nn.initializers.lecun_normal(), ("embed", "projection")))

  @property
  def output_dim(self) -> int:
    return self.backbone.hidden_size if self.embed_dim is None else self.embed_dim

  @property
  def matryoshka_dims(self) -> tuple[int, ...]:
    return tuple(self.dims) or (self.output_dim,)

  def __call__(self, input_ids: Array, mask: Array, *, deterministic: bool = True,
               segments: int | None = None) -> Array:
    """Embeds a padded token batch, or a packed one (several texts per row).

    Args:
      input_ids: int `[batch, length]` token ids (from the model's vocabulary).
      mask: `[batch, length]`, 1 for tokens and 0 for padding; for packed rows, the
        segment id of each token: 1 ... `segments` for the texts of the row, 0 for padding.
      deterministic: disables dropout when True.
      segments: None for one text per row; else the rows are packed with at most this
        many texts each (attention and pooling stay within a text).

    Returns:
      float32 `[batch, output_dim]` unit-norm embeddings; packed: `[batch, segments,
      output_dim]`, zero rows for the segment ids a row does not use.
    """
    packed = segments is not None
    states = self.encoder(input_ids, mask, deterministic=deterministic, packed=packed)
    states = states.astype(jnp.float32)
    pooled = segment_mean_pool(states, mask, segments) if packed else mean_pool(states, mask)
    if self.embed_dim is not None:
      pooled = self.projection(pooled)
    return l2_normalize(pooled)


def example_inputs(*, batch: int = 1, length: int = 8) -> tuple[Array, Array]:
  """Token ids and mask of the right dtype to initialise or trace a `DualEncoder`."""
  return jnp.zeros((batch, length), jnp.int32), jnp.ones((batch, length), jnp.int32)


def abstract_params(module: DualEncoder, *, boxed: bool = False):
  """Shapes and dtypes of the module's parameters, without allocating them; `boxed`
  keeps the logical-axis annotations (`nn.Partitioned`) for sharding."""
  params = jax.eval_shape(module.init, jax.random.key(0), *example_inputs())["params"]
  return params if boxed else nn.unbox(params)
