"""Scaled dot-product attention: one entry point, a fast path per backend.

Both encoders (`bert`, `t5`) call `dot_product_attention` with the projected query, key
and value, the batch's `Mask` (padding, or the segments of packed rows) and, for T5,
the relative-position bias. `implementation` picks the kernel:

* `"reference"`: the XLA ops below, laid out for XLA:CPU (BENCHMARKS.md, "Attention"):
  heads first, so both products are plain batched matmuls; the mask as one additive
  bias broadcast over heads and queries (a `where` over the `[b, h, q, k]` logits is
  3x slower there); the softmax normalised after the value product, so the division
  touches `[b, h, q, head_dim]` numbers instead of `[b, h, q, k]`. Dropout on the
  unnormalised weights commutes with that division, so training sees the distribution
  of `dropout(softmax(s)) @ v`. It materialises the float32 `[b, h, q, k]` scores.
* `"xla"`: `jax.nn.dot_product_attention(implementation="xla")`, the same function
  through JAX's own composite (a check of the others, on any backend).
* `"cudnn"`: `jax.nn.dot_product_attention(implementation="cudnn")`, cuDNN's fused
  (flash) attention on NVIDIA GPUs: bfloat16/float16, head_dim a multiple of 8; the
  padding goes in as key lengths (the tokenizer pads on the right), packed segments as
  a boolean mask.
* `"tpu_flash"`: the Pallas flash-attention kernel of
  `jax.experimental.pallas.ops.tpu`: lengths a multiple of 128; padding and packed
  segments go in as segment ids, T5's bias as its `ab` input. Under a device mesh it
  runs inside `shard_map` over the batch and head axes (a Pallas kernel cannot be
  partitioned by XLA).
* `"auto"` (the default): `cudnn` on GPU, `tpu_flash` on TPU, `reference` elsewhere. The
  platform is that of the device mesh in force (`jax.set_mesh`, as the trainer and the
  TPU compile report set it), else JAX's default backend.

No fused kernel takes dropout on the attention weights: with it active (training with
`attention_dropout_rate > 0`), or with inputs a kernel cannot take, the call runs the
reference path and logs one line saying why (once per reason and process).

Padded query positions may differ between paths (cuDNN zeroes them, the TPU kernel lets
padding attend padding); every real position agrees, and only those are pooled.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

Array = jax.Array

IMPLEMENTATIONS = ("auto", "reference", "xla", "cudnn", "tpu_flash")
_FUSED_FOR_PLATFORM = {"gpu": "cudnn", "cuda": "cudnn", "tpu": "tpu_flash"}
_TPU_BLOCK = 128  # the Pallas TPU kernel's tile: lengths must be multiples of it

_log = logging.getLogger(__name__)


@flax.struct.dataclass
class Mask:
  """Which keys each query may attend to, for a batch of `[batch, length]` tokens.

  Attributes:
    ids: int `[batch, length]`: 1 for tokens and 0 for padding; with `packed`, each
      token's segment id (1, 2, ... for the texts sharing a row, 0 for padding).
    packed: Several texts share each row: a token attends only to its own segment.
  """

  ids: Array
  packed: bool = flax.struct.field(pytree_node=False, default=False)

  def bias(self, dtype=jnp.float32) -> Array:
    """The additive logits bias: `segment_bias` if packed, else `padding_bias`."""
    return segment_bias(self.ids, dtype) if self.packed else padding_bias(self.ids, dtype)


def padding_bias(mask: Array, dtype=jnp.float32) -> Array:
  """`[batch, 1, 1, length]` additive bias: 0 for tokens (mask 1), the dtype's minimum for
  padding (mask 0). A row with no token at all attends uniformly (no NaN)."""
  return jnp.where(mask.astype(bool), 0.0, jnp.finfo(dtype).min).astype(dtype)[:, None, None, :]


def segment_bias(segment_ids: Array, dtype=jnp.float32) -> Array:
  """`[batch, 1, length, length]` additive bias for packed rows: a token attends only to
  tokens of its own segment (`segment_ids` 1, 2, ...; 0 is padding, which attends
  nowhere useful and is never pooled)."""
  same = _same_segment(segment_ids)
  return jnp.where(same, 0.0, jnp.finfo(dtype).min).astype(dtype)[:, None]


def _same_segment(segment_ids: Array) -> Array:
  return (segment_ids[:, :, None] == segment_ids[:, None, :]) & (segment_ids[:, None, :] > 0)


def check_settings(config) -> None:
  """Checks a backbone config's `dropout_rate`, `attention_dropout_rate` (None: the same
  as `dropout_rate`) and `attention` (one of `IMPLEMENTATIONS`), naming the config."""
  owner = type(config).__name__
  for name in ("dropout_rate", "attention_dropout_rate"):
    rate = getattr(config, name)
    if rate is not None and not 0.0 <= rate < 1.0:
      raise ValueError(f"{owner}.{name} must be in [0, 1), got {rate}.")
  if config.attention not in IMPLEMENTATIONS:
    raise ValueError(f"{owner}.attention={config.attention!r} is unknown; use one of "
                     f"{list(IMPLEMENTATIONS)}.")


def weights_dropout(config) -> float:
  """A backbone config's dropout rate on the attention weights."""
  return config.dropout_rate if config.attention_dropout_rate is None else config.attention_dropout_rate


def mesh_platform() -> str:
  """The platform attention compiles for: the device mesh in force, else the default
  backend (a TPU topology's mesh on a CPU host gives "tpu")."""
  device = _mesh_in_force().abstract_device
  return device.platform if device is not None else jax.default_backend()


def _mesh_in_force() -> jax.sharding.AbstractMesh:
  """The mesh `jax.set_mesh` put in force (empty when none), inside `jax.jit` too."""
  return jax.sharding.get_abstract_mesh()


def choose(implementation: str, *, platform: str, dtype, head_dim: int, length: int,
           has_dropout: bool, has_bias: bool) -> tuple[str, str | None]:
  """(the path to run, why it is not the one asked for, or None).

  Raises:
    ValueError: `implementation` is not one of `IMPLEMENTATIONS`.
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"attention implementation {implementation!r} is unknown; use one of "
                     f"{list(IMPLEMENTATIONS)}.")
  wanted = (_FUSED_FOR_PLATFORM.get(platform, "reference") if implementation == "auto"
            else implementation)
  if wanted == "reference":
    return wanted, None
  if has_dropout:
    return "reference", (f"{wanted} attention takes no dropout on the attention weights; set "
                         "attention_dropout_rate=0.0 to use it")
  reason = None
  if wanted == "cudnn":
    if platform not in ("gpu", "cuda"):
      reason = f"cudnn attention needs an NVIDIA GPU, and this runs on {platform}"
    elif jnp.dtype(dtype) not in (jnp.bfloat16, jnp.float16):
      reason = f"cudnn attention takes bfloat16 or float16, not {jnp.dtype(dtype).name}"
    elif head_dim % 8 or head_dim > 256:
      reason = f"cudnn attention needs head_dim a multiple of 8 up to 256, not {head_dim}"
    elif has_bias and length % 2:
      reason = f"cudnn attention with a bias needs an even length, not {length}"
  elif wanted == "tpu_flash":
    if platform != "tpu":
      reason = f"tpu_flash attention needs a TPU, and this runs on {platform}"
    elif length % _TPU_BLOCK:
      reason = f"tpu_flash attention needs a length that is a multiple of 128, not {length}"
    elif head_dim > _TPU_BLOCK and head_dim % _TPU_BLOCK:
      reason = f"tpu_flash attention needs head_dim <= 128 or a multiple of 128, not {head_dim}"
  return ("reference", reason) if reason else (wanted, None)


@functools.cache
def _say_once(message: str) -> None:
  _log.warning("gecko attention: %s; using the reference path.", message)


def dot_product_attention(query: Array, key: Array, value: Array, mask: Mask, *,
                          bias: Array | None = None,
                          dropout: Callable[[Array], Array] | None = None,
                          implementation: str = "auto") -> Array:
  """`softmax(query key^T + bias + mask) value` per head.

  Args:
    query, key, value: `[batch, length, heads, head_dim]`, as projected (scale the query
      beforehand if the model scales its logits).
    mask: The batch's padding or packed segments.
    bias: An additive logits bias broadcastable to `[batch, heads, length, length]`
      besides the mask (T5's relative positions), or None.
    dropout: Applied to the attention weights when training (e.g. a
      `gecko.models.dropout.Dropout`); None when inactive.
    implementation: One of `IMPLEMENTATIONS` (see the module docstring).

  Returns:
    `[batch, length, heads, head_dim]` in the inputs' dtype. Logits and the softmax are
    computed in float32.
  """
  path, reason = choose(implementation, platform=mesh_platform(), dtype=query.dtype,
                        head_dim=query.shape[-1], length=key.shape[1],
                        has_dropout=dropout is not None, has_bias=bias is not None)
  if reason:
    _say_once(reason)
  if path == "xla":
    return _jax_nn(query, key, value, mask, bias, implementation="xla")
  if path == "cudnn":
    return _jax_nn(query, key, value, mask, bias, implementation="cudnn")
  if path == "tpu_flash":
    return tpu_flash(query, key, value, mask, bias)
  return reference(query, key, value, mask.bias(jnp.dtype(query.dtype)) if bias is None
                   else bias.astype(jnp.float32) + mask.bias(), dropout=dropout)


def reference(query: Array, key: Array, value: Array, bias: Array, *,
              dropout: Callable[[Array], Array] | None = None) -> Array:
  """The XLA-ops path, with the mask already folded into the additive `bias`."""
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


def _jax_nn(query, key, value, mask: Mask, bias, *, implementation: str) -> Array:
  """`jax.nn.dot_product_attention` (layout `[batch, length, heads, head_dim]`, as ours)."""
  if bias is not None:
    bias = bias.astype(query.dtype if implementation == "cudnn" else jnp.float32)
  if mask.packed:
    return jax.nn.dot_product_attention(query, key, value, bias=bias,
                                        mask=_same_segment(mask.ids)[:, None], scale=1.0,
                                        implementation=implementation)
  if implementation == "cudnn":  # right padding: the keys' lengths say all of it
    lengths = mask.ids.astype(bool).sum(axis=-1).astype(jnp.int32)
    return jax.nn.dot_product_attention(query, key, value, bias=bias, scale=1.0,
                                        key_value_seq_lengths=lengths,
                                        implementation=implementation)
  return jax.nn.dot_product_attention(query, key, value, bias=bias,
                                      mask=mask.ids.astype(bool)[:, None, None, :], scale=1.0,
                                      implementation=implementation)


def tpu_flash(query: Array, key: Array, value: Array, mask: Mask,
              bias: Array | None = None) -> Array:
  """The Pallas TPU flash-attention kernel (on CPU too, under
  `jax.experimental.pallas.tpu.force_tpu_interpret_mode()`); inside `shard_map` over the
  batch and head axes when a device mesh is in force."""
  from jax.experimental.pallas.ops.tpu import flash_attention as flash

  batch, length, heads, _ = query.shape
  blocks = flash.BlockSizes(**{f.name: min(_TPU_BLOCK, length)
                               for f in dataclasses.fields(flash.BlockSizes)
                               if f.name != "block_b"}, block_b=1)

  def kernel(q, k, v, ids, ab):
    q, k, v = (jnp.swapaxes(x, 1, 2) for x in (q, k, v))  # [b, h, l, d]
    out = flash.flash_attention(q, k, v, ab, flash.SegmentIds(q=ids, kv=ids), sm_scale=1.0,
                                block_sizes=blocks)
    return jnp.swapaxes(out, 1, 2)

  ids = mask.ids.astype(jnp.int32)
  ab = (None if bias is None else
        jnp.broadcast_to(bias.astype(jnp.float32), (batch, heads, length, length)))
  mesh = _mesh_in_force()
  if mesh.empty:
    return kernel(query, key, value, ids, ab)
  spec = nn.logical_to_mesh_axes(("batch", "length", "heads", "kv"))
  batch_axes, head_axes = spec[0], spec[2]
  tokens = jax.sharding.PartitionSpec(batch_axes, None)
  ab_spec = jax.sharding.PartitionSpec(batch_axes, head_axes, None, None)
  sharded = jax.shard_map(kernel, mesh=mesh, in_specs=(spec, spec, spec, tokens,
                                                       None if ab is None else ab_spec),
                          out_specs=spec, check_vma=False)
  return sharded(query, key, value, ids, ab)

