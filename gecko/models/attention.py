"""Scaled dot-product attention laid out for XLA:CPU as well as for TPU and GPU.

Both encoders (`bert`, `t5`) call `dot_product_attention`. Three choices, each measured
on MiniLM's `[32 texts, 256 tokens, 12 heads, 32 dims]` (BENCHMARKS.md, "Attention"):

* heads first: query, key and value go to `[batch, heads, length, head_dim]` once, so both
  products are plain batched matmuls (XLA:CPU lowers `einsum("bqhd,bkhd->bhqk")` to a
  slower loop over a strided operand);
* the padding mask as one additive bias, broadcast over heads and queries, computed once
  per batch by the caller (a `where` over the `[b, h, q, k]` logits is 3x slower there);
* the softmax normalised after the value product: `(exp(s - max) @ v) / sum(exp(s - max))`
  divides `[b, h, q, head_dim]` numbers instead of `[b, h, q, k]`, the same result up to
  rounding. Dropout on the attention weights commutes with that division (it scales
  each weight independently), so training sees the same distribution as
  `dropout(softmax(s)) @ v`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array


def padding_bias(mask: Array, dtype=jnp.float32) -> Array:
  """`[batch, 1, 1, length]` additive bias: 0 for tokens (mask 1), the dtype's minimum for
  padding (mask 0). A row with no token at all attends uniformly (no NaN)."""
  return jnp.where(mask.astype(bool), 0.0, jnp.finfo(dtype).min).astype(dtype)[:, None, None, :]


def segment_bias(segment_ids: Array, dtype=jnp.float32) -> Array:
  """`[batch, 1, length, length]` additive bias for packed rows: a token attends only to
  tokens of its own segment (`segment_ids` 1, 2, ...; 0 is padding, which attends
  nowhere useful and is never pooled)."""
  same = (segment_ids[:, :, None] == segment_ids[:, None, :]) & (segment_ids[:, None, :] > 0)
  return jnp.where(same, 0.0, jnp.finfo(dtype).min).astype(dtype)[:, None]


def mask_bias(mask: Array, *, packed: bool, dtype=jnp.float32) -> Array:
  """`segment_bias` if the rows are packed (mask holds segment ids), else `padding_bias`."""
  return segment_bias(mask, dtype) if packed else padding_bias(mask, dtype)


def dot_product_attention(query: Array, key: Array, value: Array, bias: Array, *,
                          dropout: Callable[[Array], Array] | None = None) -> Array:
  """`softmax(query key^T + bias) value` per head.

  Args:
    query, key, value: `[batch, length, heads, head_dim]`, as projected (scale the query
      beforehand if the model scales its logits).
    bias: Additive logits bias broadcastable to `[batch, heads, length, length]` (see
      `padding_bias`; T5 adds its relative positions to it).
    dropout: Applied to the unnormalised attention weights (e.g. a `gecko.models.dropout.Dropout`).

  Returns:
    `[batch, length, heads, head_dim]` in the inputs' dtype. Logits and the softmax are
    computed in float32.
  """
  dtype = query.dtype
  q, k, v = (jnp.swapaxes(x, 1, 2) for x in (query, key, value))  # [b, h, l, d]
  logits = jnp.matmul(q, jnp.swapaxes(k, -1, -2), preferred_element_type=jnp.float32)
  logits = logits + bias.astype(jnp.float32)
  # The max is only a shift for stability; softmax does not depend on it.
  weights = jnp.exp(logits - jax.lax.stop_gradient(logits.max(axis=-1, keepdims=True)))
  total = weights.sum(axis=-1, keepdims=True)
  weights = weights.astype(dtype)
  if dropout is not None:
    weights = dropout(weights)
  context = jnp.matmul(weights, v, preferred_element_type=jnp.float32) / total
  return jnp.swapaxes(context.astype(dtype), 1, 2)
