"""`DenseGeneral`: a dense layer over several axes whose kernel keeps its shape.

Flax's `nn.DenseGeneral` initialises a flattened 2-D kernel and reshapes it. Under a
device mesh (`jax.set_mesh`, as the trainer traces), unboxing that flat kernel applies
the kernel's 3-D logical partitioning to a 2-D value and fails; flax runs the
initialiser in `apply` too, to check parameter shapes. This layer initialises the
kernel in its own shape. Parameter names, shapes, values (the same initialiser draws
the same numbers for the same element count) and the computation are those of
`nn.DenseGeneral`, so checkpoints are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


class DenseGeneral(nn.Module):
  """`y = x · kernel (+ bias)`, contracting `axis` of x with the kernel's leading axes.

  Attributes:
    features: The output feature shape (e.g. `(heads, head_dim)`).
    axis: The input axes contracted (e.g. `-1`, or `(-2, -1)` for heads and head_dim).
    use_bias: Add a bias of shape `features`.
    dtype: Computation dtype (parameters are float32).
    kernel_init, bias_init: Initialisers (may carry logical partitioning).
  """

  features: int | Sequence[int]
  axis: int | Sequence[int] = -1
  use_bias: bool = True
  dtype: Any = None
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: Array) -> Array:
    features = tuple(self.features) if isinstance(self.features, Sequence) else (self.features,)
    axes = tuple(self.axis) if isinstance(self.axis, Sequence) else (self.axis,)
    axes = tuple(a % x.ndim for a in axes)
    kernel = self.param("kernel", self.kernel_init,
                        tuple(x.shape[a] for a in axes) + features, jnp.float32)
    bias = self.param("bias", self.bias_init, features, jnp.float32) if self.use_bias else None
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = jax.lax.dot_general(x, kernel, ((axes, tuple(range(len(axes)))), ((), ())))
    return y if bias is None else y + bias
