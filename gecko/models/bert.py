"""A BERT-family encoder in Flax Linen, with logical axis names on every parameter.

The layout follows Hugging Face's `BertModel` (post-LN blocks, exact GELU, learned
absolute positions, token-type embeddings) so that checkpoints import one-to-one
(`gecko.models.checkpoint_import`). Parameters carry the t5x logical axis names
(`vocab`, `embed`, `heads`, `kv`, `mlp`, ...) which `gecko.training.partitioning` maps onto a
device mesh; activations are constrained to (`batch`, `length`, `embed`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gecko.models import attention, dense
from gecko.models import dropout as dropout_lib

Array = jax.Array
DType = Any


@dataclasses.dataclass(frozen=True, kw_only=True)
class BertConfig:
  """Sizes of a BERT-family encoder.

  Attributes:
    vocab_size: Number of WordPiece ids.
    hidden_size: Model width (`embed` axis).
    num_layers: Number of transformer blocks.
    num_heads: Attention heads; `hidden_size` must be divisible by it.
    mlp_dim: Width of the feed-forward block (`mlp` axis).
    max_length: Number of learned absolute positions.
    type_vocab_size: Number of token-type (segment) ids.
    layer_norm_eps: Epsilon of every LayerNorm.
    dropout_rate: Dropout on embeddings, attention probabilities and block outputs.
    dtype: Computation dtype (parameters stay float32).
    attention: The attention kernel (`gecko.models.attention.IMPLEMENTATIONS`; "auto"
      takes the backend's fused kernel where the inputs allow).
    attention_dropout_rate: Dropout on the attention probabilities; None means
      `dropout_rate`. The fused kernels take none: 0.0 lets them run in training.
  """

  vocab_size: int = 30522
  hidden_size: int = 384
  num_layers: int = 6
  num_heads: int = 12
  mlp_dim: int = 1536
  max_length: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  dropout_rate: float = 0.1
  dtype: str = "float32"
  attention: str = "auto"
  attention_dropout_rate: float | None = None

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "mlp_dim",
                 "max_length", "type_vocab_size"):
      value = getattr(self, name)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"BertConfig.{name} must be a positive int, got {value!r}.")
    if self.hidden_size % self.num_heads:
      raise ValueError(
          f"BertConfig.hidden_size={self.hidden_size} is not divisible by "
          f"num_heads={self.num_heads}; pick a head count that divides it.")
    attention.check_settings(self)

  @property
  def attention_dropout(self) -> float:
    """The dropout rate on the attention probabilities."""
    return attention.weights_dropout(self)

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads


def _init(stddev: float = 0.02):
  return nn.initializers.normal(stddev=stddev)


def _param_axes(init, axes: tuple[str | None, ...]):
  return nn.with_logical_partitioning(init, axes)


class _LayerNorm(nn.Module):
  eps: float
  dtype: DType

  @nn.compact
  def __call__(self, x: Array) -> Array:
    return nn.LayerNorm(
        epsilon=self.eps, dtype=self.dtype,
        scale_init=_param_axes(nn.initializers.ones, ("embed",)),
        bias_init=_param_axes(nn.initializers.zeros, ("embed",)))(x)


class Embeddings(nn.Module):
  """Word + position + token-type embeddings, then LayerNorm and dropout."""

  config: BertConfig

  @nn.compact
  def __call__(self, input_ids: Array, token_type_ids: Array, positions: Array, *,
               deterministic: bool) -> Array:
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    word = self.param("word_embeddings", _param_axes(_init(), ("vocab", "embed")),
                      (cfg.vocab_size, cfg.hidden_size), jnp.float32)
    position = self.param("position_embeddings", _param_axes(_init(), ("length", "embed")),
                          (cfg.max_length, cfg.hidden_size), jnp.float32)
    token_type = self.param("token_type_embeddings", _param_axes(_init(), ("type", "embed")),
                            (cfg.type_vocab_size, cfg.hidden_size), jnp.float32)
    x = (jnp.take(word, input_ids, axis=0) + jnp.take(position, positions, axis=0)
         + jnp.take(token_type, token_type_ids, axis=0))
    x = _LayerNorm(cfg.layer_norm_eps, dtype, name="layer_norm")(x.astype(dtype))
    return dropout_lib.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)


def segment_positions(segment_ids: Array) -> Array:
  """Position of each token within its segment: 0 at every segment's first token."""
  index = jnp.arange(segment_ids.shape[-1])
  starts = jnp.concatenate([jnp.ones_like(segment_ids[:, :1], bool),
                            segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
  return index - jax.lax.cummax(jnp.where(starts, index, 0), axis=1)


class SelfAttention(nn.Module):
  """Multi-head self-attention over padded or packed sequences (`attention.Mask`)."""

  config: BertConfig

  @nn.compact
  def __call__(self, x: Array, mask: attention.Mask, *, deterministic: bool) -> Array:
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)

    def project(name: str) -> Array:
      return dense.DenseGeneral(
          features=(cfg.num_heads, cfg.head_dim), axis=-1, dtype=dtype, name=name,
          kernel_init=_param_axes(_init(), ("embed", "heads", "kv")),
          bias_init=_param_axes(nn.initializers.zeros, ("heads", "kv")))(x)

    query = project("query") * jnp.asarray(cfg.head_dim ** -0.5, dtype)
    context = attention.dot_product_attention(
        query, project("key"), project("value"), mask,
        dropout=dropout_lib.attention_dropout(cfg.attention_dropout, deterministic),
        implementation=cfg.attention)
    return dense.DenseGeneral(
        features=cfg.hidden_size, axis=(-2, -1), dtype=dtype, name="output",
        kernel_init=_param_axes(_init(), ("heads", "kv", "embed")),
        bias_init=_param_axes(nn.initializers.zeros, ("embed",)))(context)


class MlpBlock(nn.Module):
  """The feed-forward block: dense to `mlp_dim`, exact GELU, dense back."""

  config: BertConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    h = nn.Dense(cfg.mlp_dim, dtype=dtype, name="intermediate",
                 kernel_init=_param_axes(_init(), ("embed", "mlp")),
                 bias_init=_param_axes(nn.initializers.zeros, ("mlp",)))(x)
    h = nn.gelu(h, approximate=False)
    return nn.Dense(cfg.hidden_size, dtype=dtype, name="output",
                    kernel_init=_param_axes(_init(), ("mlp", "embed")),
                    bias_init=_param_axes(nn.initializers.zeros, ("embed",)))(h)


class EncoderLayer(nn.Module):
  """One post-LN transformer block, as in the original BERT."""

  config: BertConfig

  @nn.compact
  def __call__(self, x: Array, mask: attention.Mask, deterministic: bool) -> Array:
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    dropout = dropout_lib.Dropout(cfg.dropout_rate)
    h = SelfAttention(cfg, name="attention")(x, mask, deterministic=deterministic)
    x = _LayerNorm(cfg.layer_norm_eps, dtype, name="attention_layer_norm")(
        x + dropout(h, deterministic=deterministic))
    h = MlpBlock(cfg, name="mlp")(x)
    x = _LayerNorm(cfg.layer_norm_eps, dtype, name="output_layer_norm")(
        x + dropout(h, deterministic=deterministic))
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class BertEncoder(nn.Module):
  """Token states of a BERT-family encoder.

  Attributes:
    config: The sizes (`BertConfig`).
    remat: Rematerialise each block in the backward pass (saves activation memory).
  """

  config: BertConfig
  remat: bool = False

  @nn.compact
  def __call__(self, input_ids: Array, mask: Array, token_type_ids: Array | None = None,
               *, deterministic: bool = True, packed: bool = False) -> Array:
    """Encodes a padded (or packed) batch.

    Args:
      input_ids: int `[batch, length]` WordPiece ids.
      mask: `[batch, length]`, 1 for real tokens and 0 for padding; with `packed`, the
        segment id of each token (1, 2, ... for the texts sharing a row, 0 for padding).
      token_type_ids: optional int `[batch, length]` token types (zeros if None).
      deterministic: disables dropout when True.
      packed: Several texts share each row: attention stays within a segment and
        positions restart at each segment's first token.

    Returns:
      `[batch, length, hidden_size]` token states.
    """
    cfg = self.config
    if input_ids.shape[-1] > cfg.max_length:
      raise ValueError(
          f"Sequence length {input_ids.shape[-1]} exceeds the model's {cfg.max_length} "
          "positions; truncate the inputs (the vocabulary's max_length does this).")
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    length = input_ids.shape[-1]
    positions = segment_positions(mask) if packed else jnp.arange(length)[None, :]
    x = Embeddings(cfg, name="embeddings")(input_ids, token_type_ids, positions,
                                           deterministic=deterministic)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    layer_cls = nn.remat(EncoderLayer, static_argnums=(3,)) if self.remat else EncoderLayer
    segments = attention.Mask(ids=mask, packed=packed)
    for i in range(cfg.num_layers):
      x = layer_cls(cfg, name=f"layer_{i}")(x, segments, deterministic)
    return x
