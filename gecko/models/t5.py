"""A T5 encoder (v1.1 layout) in Flax Linen: Gecko's paper-scale backbone.

The layout follows Hugging Face's `T5EncoderModel` so that checkpoints import one to
one (`gecko.models.checkpoint_import`): pre-LN blocks with RMS norm (no bias, no mean),
attention without the 1/sqrt(d) scale and without biases, a bucketed relative position
bias computed in the first block and shared by all, a gated-GELU feed-forward block
(`wi_0`, `wi_1`, `wo`; tanh GELU), and a final RMS norm. T5 v1.1 XL
(`T5Config.xl()`: 24 layers, width 2048) is the 1.2B encoder that GTR-XL and
sentence-T5-XL embed with, so a Gecko dual encoder on it has their architecture.

Parameters carry the same logical axis names as `gecko.models.bert` (`vocab`, `embed`,
`heads`, `kv`, `mlp`, plus `relpos_buckets` and the stacked blocks' `layers`), so one
rule set in `gecko.training.partitioning` shards both.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gecko.models import attention, dense
from gecko.models import dropout as dropout_lib

Array = jax.Array
DType = Any


@dataclasses.dataclass(frozen=True, kw_only=True)
class T5Config:
  """Sizes of a T5 (v1.1) encoder.

  Attributes:
    vocab_size: Number of SentencePiece ids (32128 for T5).
    hidden_size: Model width, `d_model` (`embed` axis).
    num_layers: Number of transformer blocks.
    num_heads: Attention heads.
    head_dim: Width of one head, `d_kv` (T5 does not tie it to hidden_size / num_heads).
    mlp_dim: Width of the gated feed-forward block, `d_ff` (`mlp` axis).
    relative_buckets: Relative-position buckets, `relative_attention_num_buckets`.
    relative_max_distance: Distance beyond which positions share the last bucket.
    layer_norm_eps: Epsilon of every RMS norm.
    dropout_rate: Dropout on embeddings, attention probabilities and block outputs.
    max_length: Longest input accepted (T5 has no absolute positions; this bounds
      the tokenizer, as the paper's 512).
    dtype: Computation dtype (parameters stay float32).
    attention: The attention kernel (`gecko.models.attention.IMPLEMENTATIONS`; "auto"
      takes the backend's fused kernel where the inputs allow).
    attention_dropout_rate: Dropout on the attention probabilities; None means
      `dropout_rate`. The fused kernels take none: 0.0 lets them run in training.
  """

  vocab_size: int = 32128
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  head_dim: int = 64
  mlp_dim: int = 2048
  relative_buckets: int = 32
  relative_max_distance: int = 128
  layer_norm_eps: float = 1e-6
  dropout_rate: float = 0.1
  max_length: int = 512
  dtype: str = "float32"
  attention: str = "auto"
  attention_dropout_rate: float | None = None

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "head_dim", "mlp_dim",
                 "relative_buckets", "relative_max_distance", "max_length"):
      value = getattr(self, name)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"T5Config.{name} must be a positive int, got {value!r}.")
    if self.relative_buckets % 4:
      raise ValueError(f"T5Config.relative_buckets={self.relative_buckets} must be divisible "
                       "by 4 (half per direction, half of those exact); T5 uses 32.")
    attention.check_settings(self)

  @property
  def attention_dropout(self) -> float:
    """The dropout rate on the attention probabilities."""
    return attention.weights_dropout(self)

  @classmethod
  def xl(cls, **overrides) -> T5Config:
    """T5 v1.1 XL's encoder (google/t5-v1_1-xl, GTR-XL): about 1.22B parameters."""
    sizes = dict(vocab_size=32128, hidden_size=2048, num_layers=24, num_heads=32, head_dim=64,
                 mlp_dim=5120)
    return cls(**{**sizes, **overrides})


def _param_axes(init, axes: tuple[str | None, ...]):
  return nn.with_logical_partitioning(init, axes)


def _normal(stddev: float):
  return nn.initializers.normal(stddev=stddev)


class RMSNorm(nn.Module):
  """T5's layer norm: scale by the root mean square (no mean, no bias), in float32."""

  eps: float
  dtype: DType

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = self.param("scale", _param_axes(nn.initializers.ones, ("embed",)),
                       (x.shape[-1],), jnp.float32)
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    return (x32 * scale).astype(self.dtype)


def relative_position_buckets(length: int, *, num_buckets: int, max_distance: int) -> Array:
  """`[length, length]` bucket ids of key position minus query position (bidirectional).

  Half the buckets are for keys after the query; within each half, distances below a
  quarter of the buckets get one bucket each and longer ones share log-spaced buckets
  up to `max_distance` (as `T5Attention._relative_position_bucket`).
  """
  position = jnp.arange(length)
  relative = position[None, :] - position[:, None]
  half = num_buckets // 2
  buckets = jnp.where(relative > 0, half, 0)
  distance = jnp.abs(relative)
  exact = half // 2
  scaled = jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / exact) / math.log(
      max_distance / exact)
  large = jnp.minimum(exact + (scaled * (half - exact)).astype(jnp.int32), half - 1)
  return buckets + jnp.where(distance < exact, distance, large)


class RelativePositionBias(nn.Module):
  """The learned `[1, heads, length, length]` additive attention bias."""

  config: T5Config

  @nn.compact
  def __call__(self, length: int) -> Array:
    cfg = self.config
    table = self.param("rel_embedding", _param_axes(_normal(1.0), ("relpos_buckets", "heads")),
                       (cfg.relative_buckets, cfg.num_heads), jnp.float32)
    buckets = relative_position_buckets(length, num_buckets=cfg.relative_buckets,
                                        max_distance=cfg.relative_max_distance)
    return jnp.transpose(jnp.take(table, buckets, axis=0), (2, 0, 1))[None]


class SelfAttention(nn.Module):
  """T5 attention: no biases, no 1/sqrt(d) scale, the position bias added to the logits."""

  config: T5Config

  @nn.compact
  def __call__(self, x: Array, mask: attention.Mask, bias: Array, *,
               deterministic: bool) -> Array:
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)

    def project(name: str, stddev: float) -> Array:
      return dense.DenseGeneral(
          features=(cfg.num_heads, cfg.head_dim), axis=-1, use_bias=False, dtype=dtype,
          name=name, kernel_init=_param_axes(_normal(stddev), ("embed", "heads", "kv")))(x)

    # T5's initialisation folds the missing 1/sqrt(d) into the query's scale.
    query = project("query", (cfg.hidden_size * cfg.head_dim) ** -0.5)
    key = project("key", cfg.hidden_size ** -0.5)
    value = project("value", cfg.hidden_size ** -0.5)
    context = attention.dot_product_attention(
        query, key, value, mask, bias=bias,
        dropout=dropout_lib.attention_dropout(cfg.attention_dropout, deterministic),
        implementation=cfg.attention)
    return dense.DenseGeneral(
        features=cfg.hidden_size, axis=(-2, -1), use_bias=False, dtype=dtype, name="output",
        kernel_init=_param_axes(_normal((cfg.num_heads * cfg.head_dim) ** -0.5),
                                ("heads", "kv", "embed")))(context)


class GatedMlp(nn.Module):
  """`wo(gelu_tanh(wi_0 x) * wi_1 x)`, T5 v1.1's gated-GELU feed-forward block."""

  config: T5Config

  @nn.compact
  def __call__(self, x: Array, *, deterministic: bool) -> Array:
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)

    def dense(name: str, features: int, axes: tuple[str, str], fan_in: int) -> nn.Dense:
      return nn.Dense(features, use_bias=False, dtype=dtype, name=name,
                      kernel_init=_param_axes(_normal(fan_in ** -0.5), axes))

    gate = dense("wi_0", cfg.mlp_dim, ("embed", "mlp"), cfg.hidden_size)(x)
    linear = dense("wi_1", cfg.mlp_dim, ("embed", "mlp"), cfg.hidden_size)(x)
    h = nn.gelu(gate, approximate=True) * linear
    h = dropout_lib.Dropout(cfg.dropout_rate)(h, deterministic=deterministic)
    return dense("wo", cfg.hidden_size, ("mlp", "embed"), cfg.mlp_dim)(h)


class EncoderLayer(nn.Module):
  """One pre-LN block: `x + attn(norm(x))`, then `x + mlp(norm(x))` (a scan body)."""

  config: T5Config
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: Array, mask: attention.Mask, bias: Array) -> tuple[Array, None]:
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    dropout = dropout_lib.Dropout(cfg.dropout_rate)
    h = RMSNorm(cfg.layer_norm_eps, dtype, name="attention_norm")(x)
    h = SelfAttention(cfg, name="attention")(h, mask, bias, deterministic=self.deterministic)
    x = x + dropout(h, deterministic=self.deterministic)
    h = RMSNorm(cfg.layer_norm_eps, dtype, name="mlp_norm")(x)
    h = GatedMlp(cfg, name="mlp")(h, deterministic=self.deterministic)
    x = x + dropout(h, deterministic=self.deterministic)
    return nn.with_logical_constraint(x, ("batch", "length", "embed")), None


class T5Encoder(nn.Module):
  """Token states of a T5 encoder (same call signature as `bert.BertEncoder`).

  The blocks run as one `nn.scan` over a stacked `layers` parameter axis (as t5x and
  MaxText do): the program holds one block, so a 24-layer model compiles as fast as
  a 1-layer one, and under FSDP each block's weights are gathered inside the loop,
  one block at a time.

  Attributes:
    config: The sizes (`T5Config`).
    remat: Rematerialise each block in the backward pass (saves activation memory).
  """

  config: T5Config
  remat: bool = False

  @nn.compact
  def __call__(self, input_ids: Array, mask: Array, token_type_ids: Array | None = None,
               *, deterministic: bool = True, packed: bool = False) -> Array:
    """Encodes a padded (or packed) batch.

    Args:
      input_ids: int `[batch, length]` SentencePiece ids.
      mask: `[batch, length]`, 1 for real tokens and 0 for padding; with `packed`, the
        segment id of each token (1, 2, ...; 0 for padding).
      token_type_ids: Must be None (T5 has no token types); accepted for a common signature.
      deterministic: disables dropout when True.
      packed: Several texts share each row; attention stays within a segment (relative
        positions need no restart).

    Returns:
      `[batch, length, hidden_size]` token states (after the final norm).
    """
    cfg = self.config
    if token_type_ids is not None:
      raise ValueError("A T5 encoder has no token types; pass token_type_ids=None.")
    if input_ids.shape[-1] > cfg.max_length:
      raise ValueError(
          f"Sequence length {input_ids.shape[-1]} exceeds the model's max_length "
          f"{cfg.max_length}; truncate the inputs (the vocabulary's max_length does this).")
    dtype = jnp.dtype(cfg.dtype)
    table = self.param("token_embedder", _param_axes(_normal(1.0), ("vocab", "embed")),
                       (cfg.vocab_size, cfg.hidden_size), jnp.float32)
    x = jnp.take(table, input_ids, axis=0).astype(dtype)
    dropout = dropout_lib.Dropout(cfg.dropout_rate)
    x = dropout(x, deterministic=deterministic)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    length = input_ids.shape[-1]
    bias = RelativePositionBias(cfg, name="relative_bias")(length)
    segments = attention.Mask(ids=mask, packed=packed)
    block = nn.remat(EncoderLayer, prevent_cse=False) if self.remat else EncoderLayer
    layers = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True,
                                                                     "dropout": True},
                     in_axes=nn.broadcast, length=cfg.num_layers,
                     metadata_params={nn.PARTITION_NAME: "layers"})
    x, _ = layers(cfg, deterministic=deterministic, name="layers")(x, segments, bias)
    x = RMSNorm(cfg.layer_norm_eps, dtype, name="final_norm")(x)
    return dropout(x, deterministic=deterministic)
