"""Model soups: the weighted average of the parameters of models with one architecture
(several seeds, variants or steps of a run), as Gemini Embedding and EmbeddingGemma
average checkpoints.

  soup = average([a, b, c])                      # uniform
  soup = average([a, b], weights=[0.25, 0.75])   # weighted (normalised to sum to 1)
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import jax
import numpy as np

from gecko.models.embedder import Embedder


def check_weights(weights: Sequence[float] | None, count: int) -> list[float]:
  """`weights` normalised to sum to 1 (None: uniform); finite, >= 0, one per model."""
  if weights is None:
    return [1.0 / count] * count
  weights = [float(w) for w in weights]
  if len(weights) != count:
    raise ValueError(f"{len(weights)} weights for {count} models; give one per model.")
  if not all(math.isfinite(w) and w >= 0 for w in weights) or not sum(weights) > 0:
    raise ValueError(f"weights must be finite, >= 0 and not all 0, got {weights}.")
  return [w / sum(weights) for w in weights]


def average(models: Sequence[Embedder], *, weights: Sequence[float] | None = None) -> Embedder:
  """The soup of `models`: the first model's module and tokenizer with the weighted mean
  of every parameter (float32, computed in float64 on the host).

  Raises:
    ValueError: fewer than one model, bad weights, or models whose architectures differ.
  """
  if not models:
    raise ValueError("a soup needs at least one model.")
  weights = check_weights(weights, len(models))
  first = models[0]
  for i, model in enumerate(models[1:], 1):
    if model.module != first.module:
      raise ValueError(f"model {i} has another architecture ({model.module}) than model 0 "
                       f"({first.module}); a soup averages models of one architecture.")
    if jax.tree.structure(model.params) != jax.tree.structure(first.params):
      raise ValueError(f"model {i}'s parameter tree differs from model 0's.")
    if model.tokenizer.vocab != first.tokenizer.vocab:
      raise ValueError(f"model {i} has another vocabulary than model 0.")

  for i, model in enumerate(models[1:], 1):
    twin = next((j for j in range(i) if _same_params(models[j].params, model.params)), None)
    if twin is not None:
      print(f"gecko: models {twin} and {i} of the soup have the same parameters, so that "
            "model counts twice (check for a repeated path).", file=sys.stderr)

  def mean(*leaves):
    total = sum(w * np.asarray(x, np.float64) for w, x in zip(weights, leaves))
    return total.astype(np.float32)
  params = jax.tree.map(mean, *[m.params for m in models])
  return Embedder(module=first.module, params=params, tokenizer=first.tokenizer,
                  prompts=dict(first.prompts))


def _same_params(a, b) -> bool:
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
