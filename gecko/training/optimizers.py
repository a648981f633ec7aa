"""AdamW with warmup + decay and global-norm clipping, configured as one gin-friendly object."""

from __future__ import annotations

import dataclasses
import math

import jax
import optax


def decay_mask(params):
  """Weight decay on kernels and embedding tables only: not on biases or LayerNorm."""
  def decays(path, _):
    name = getattr(path[-1], "key", str(path[-1]))
    return name == "kernel" or name.endswith("embeddings")
  return jax.tree_util.tree_map_with_path(decays, params)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AdamW:
  """AdamW with a learning-rate schedule.

  Attributes:
    learning_rate: Peak learning rate.
    warmup_steps: Linear warmup from 0 to the peak.
    decay: "linear", "cosine" or "constant" after warmup.
    total_steps: Steps over which the decay runs (the run's `train_steps`).
    end_factor: Final learning rate as a fraction of the peak.
    weight_decay: Decoupled weight decay (masked to matrices, see `decay_mask`).
    b1, b2, eps: Adam moments.
    clip_norm: Global gradient-norm clip, or None.
  """

  learning_rate: float = 2e-5
  warmup_steps: int = 0
  decay: str = "linear"
  total_steps: int = 10_000
  end_factor: float = 0.0
  weight_decay: float = 0.01
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  clip_norm: float | None = 1.0

  def __post_init__(self):
    if self.decay not in ("linear", "cosine", "constant"):
      raise ValueError(f"AdamW.decay={self.decay!r}; choose 'linear', 'cosine' or 'constant'.")
    numbers = {"learning_rate": self.learning_rate, "end_factor": self.end_factor,
               "weight_decay": self.weight_decay, "b1": self.b1, "b2": self.b2,
               "eps": self.eps, "clip_norm": 1.0 if self.clip_norm is None else self.clip_norm}
    bad = {k: v for k, v in numbers.items()
           if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)}
    if bad:
      raise ValueError(f"AdamW needs finite numbers, got {bad}.")
    if not (self.learning_rate > 0 and self.total_steps > 0 and self.warmup_steps >= 0):
      raise ValueError(f"AdamW needs learning_rate > 0, total_steps > 0, warmup_steps >= 0; got "
                       f"{self.learning_rate}, {self.total_steps}, {self.warmup_steps}.")

  def schedule(self) -> optax.Schedule:
    decay_steps = max(self.total_steps - self.warmup_steps, 1)
    end = self.learning_rate * self.end_factor
    if self.decay == "linear":
      after = optax.linear_schedule(self.learning_rate, end, decay_steps)
    elif self.decay == "cosine":
      after = optax.cosine_decay_schedule(self.learning_rate, decay_steps, alpha=self.end_factor)
    else:
      after = optax.constant_schedule(self.learning_rate)
    if not self.warmup_steps:
      return after
    warmup = optax.linear_schedule(0.0, self.learning_rate, self.warmup_steps)
    return optax.join_schedules([warmup, after], [self.warmup_steps])

  def transformation(self) -> optax.GradientTransformation:
    adamw = optax.adamw(self.schedule(), b1=self.b1, b2=self.b2, eps=self.eps,
                        weight_decay=self.weight_decay, mask=decay_mask)
    if self.clip_norm is None:
      return adamw
    return optax.chain(optax.clip_by_global_norm(self.clip_norm), adamw)
