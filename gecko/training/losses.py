r"""Gecko's contrastive losses (paper Eq. 2 and Eq. 3) with Matryoshka dims.

With unit-norm embeddings, s(a, b) = a . b and temperature tau, for query i:

  Eq. 2 (pre-finetuning):  -log  e^{s(q_i,p_i)/tau} / sum_j e^{s(q_i,p_j)/tau}
  Eq. 3 (fine-tuning):     -log  e^{s(q_i,p_i+)/tau} / ( sum_j e^{s(q_i,p_j+)/tau}
                                   + sum_{j!=i} e^{s(q_i,q_j)/tau} + e^{s(q_i,p_i-)/tau} )

averaged over the batch. Eq. 3's same-tower terms (q_i, q_j) and hard-negative term
are switches, so one class covers both stages. Only the example's *own* hard negative
is in its denominator (the paper's choice). Optional false-negative masking drops
in-batch positives p_j (j != i) whose `positive_key` equals p_i's, and other queries
whose `query_key` equals q_i's. An optional margin m also drops every candidate that is
more similar to q_i than its positive by more than m, s(q_i, c) > s(q_i, p_i+) + m (the
Qwen3-Embedding loss masks false negatives this way, with m = 0.1): near-duplicate
queries and unlabelled relevant passages stop counting as negatives. Matryoshka: the
loss is the weighted sum over `dims` of the same loss on the re-normalised prefixes.

Distillation (optional): with a teacher's scores of each example's positive and hard
negative (the `teacher_positive` / `teacher_negative` features, e.g. a FRet record's
QL log-probabilities), `GeckoLoss(distillation=...)` adds, per dim and with a weight,

  "margin_mse"   ((s(q,p+) - s(q,p-)) - scale * (t+ - t-))^2          (`margin_mse`)
  "listwise_kl"  KL(softmax([t+, t-] / T) || softmax([s(q,p+), s(q,p-)] / tau))
                                                                        (`listwise_kl`)

and `contrastive_weight=0` trains on the teacher's scores alone. The term is averaged
over the rows whose teacher scores are finite, so unscored human data can share the
batch with NaN scores (it trains on Eq. 3 alone). With
`distill_over="candidates"`, "listwise_kl" is taken over each query's K candidates
instead (the `candidate_*` towers and `teacher_candidates`: a FRet record's N retrieved
passages with the LLM's score of each, as ART and UPR distil a ranking):

  KL(softmax(t_1..K / T) || softmax(s(q,c_1)..s(q,c_K) / tau)).

All similarities are taken over the *global* batch: inside `jax.jit` with sharded
embeddings, XLA gathers what each device needs, so negatives cross devices for free.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from gecko.data import features
from gecko.models import matryoshka

Array = jax.Array

DISTILLATIONS = (None, "margin_mse", "listwise_kl")
DISTILL_OVER = ("pair", "candidates")


def contrastive_loss(query: Array, positive: Array, negative: Array | None = None, *,
                     temperature: float, same_tower: bool,
                     positive_key: Array | None = None, query_key: Array | None = None,
                     margin: float | None = None
                     ) -> tuple[Array, Array, dict[str, Array]]:
  """Per-example Eq. 2 / Eq. 3 loss, in-batch correctness and where the negatives are.

  Args:
    query: `[B, d]` unit-norm query embeddings.
    positive: `[B, d]` unit-norm positive passage embeddings.
    negative: `[B, d]` each example's hard negative, or None (no hard-negative term).
    temperature: tau.
    same_tower: include the other queries q_j (j != i) in the denominator.
    positive_key, query_key: `[B]` ints; equal keys mark in-batch false negatives to
      mask (None: no masking).
    margin: drop candidates c with s(q_i, c) > s(q_i, p_i) + margin (None: keep all).

  Returns:
    (loss `[B]`, correct `[B]` bool: the positive has the highest logit in its row,
    stats of `[B]` arrays: `same_tower_share`, the share of the softmax denominator
    on the other queries (with same_tower), and `margin_dropped`, the share of the
    negatives the margin rule removed (with margin)).
  """
  qp = query @ positive.T / temperature
  target = jnp.diagonal(qp)
  columns, dropped, negatives = _logit_columns(
      query, qp, negative, target=target, temperature=temperature,
      same_tower=same_tower, positive_key=positive_key, query_key=query_key, margin=margin)
  logits = jnp.concatenate(columns, axis=1)
  denominator = jax.nn.logsumexp(logits, axis=1)
  loss = denominator - target
  correct = jnp.argmax(logits, axis=1) == jnp.arange(query.shape[0])
  stats = {}
  if same_tower:
    stats["same_tower_share"] = jnp.exp(jax.nn.logsumexp(columns[1], axis=1) - denominator)
  if margin is not None:
    stats["margin_dropped"] = dropped / negatives
  return loss, correct, jax.lax.stop_gradient(stats)


def _logit_columns(query, qp, negative, *, target, temperature, same_tower,
                   positive_key, query_key, margin) -> tuple[list[Array], Array, int]:
  """The denominator's logits in blocks, masked entries at -inf: `[B, B]` s(q_i, p_j)
  (`qp`, the target on the diagonal), then `[B, B]` s(q_i, q_j) with same_tower, then `[B, 1]`
  s(q_i, n_i) with a negative; and per row, how many negatives the margin rule dropped
  out of how many."""
  batch = query.shape[0]
  eye = jnp.eye(batch, dtype=bool)
  neg_inf = jnp.array(-jnp.inf, query.dtype)

  def too_close(logits):  # the margin rule (a bool mask; no gradient flows through it)
    if margin is None:
      return jnp.zeros(logits.shape, bool)
    return logits > target[:, None] + margin / temperature

  close = ~eye & too_close(qp)
  dropped, negatives = jnp.sum(close, axis=1), batch - 1
  drop = close
  if positive_key is not None:
    drop |= (positive_key[:, None] == positive_key[None, :]) & ~eye
  columns = [jnp.where(drop, neg_inf, qp)]
  if same_tower:
    qq = query @ query.T / temperature
    close = ~eye & too_close(qq)
    dropped, negatives = dropped + jnp.sum(close, axis=1), negatives + batch - 1
    drop = eye | close
    if query_key is not None:
      drop |= query_key[:, None] == query_key[None, :]
    columns.append(jnp.where(drop, neg_inf, qq))
  if negative is not None:
    qn = jnp.sum(query * negative, axis=-1, keepdims=True) / temperature
    close = too_close(qn)
    dropped, negatives = dropped + close[:, 0], negatives + 1
    columns.append(jnp.where(close, neg_inf, qn))
  return columns, dropped, negatives


def listwise_kl(student: Array, teacher: Array, *, temperature: float,
                teacher_temperature: float = 1.0, standardize: bool = False,
                mask: Array | None = None) -> Array:
  """Per-query KL(p_teacher || p_student) over each query's candidates (ART, UPR and
  sentence-transformers' DistillKLDivLoss distil a teacher's ranking this way).

    p_student = softmax(s / temperature),  p_teacher = softmax(t' / teacher_temperature),

  where t' is the teacher's scores, standardised per query (zero mean, unit variance
  over its candidates) when `standardize`: an LLM's query log-likelihoods differ in
  scale from query to query.

  Args:
    student: `[B, N]` the student's similarities s(q, c) (cosines).
    teacher: `[B, N]` the teacher's scores of the same candidates (e.g. QL log-probs).
    temperature: the student's tau.
    teacher_temperature: the teacher's softmax temperature.
    standardize: standardise the teacher's scores per query first.
    mask: `[B, N]` bool, False for padding candidates (None: all are real).

  Returns:
    `[B]` the KL divergence per query (no gradient flows to the teacher).
  """
  teacher = jax.lax.stop_gradient(teacher.astype(jnp.float32))
  valid = jnp.ones(student.shape, bool) if mask is None else mask.astype(bool)
  if standardize:
    count = jnp.maximum(valid.sum(-1, keepdims=True), 1)
    mean = jnp.where(valid, teacher, 0).sum(-1, keepdims=True) / count
    var = jnp.where(valid, (teacher - mean) ** 2, 0).sum(-1, keepdims=True) / count
    teacher = (teacher - mean) / jnp.sqrt(var + 1e-6)
  low = jnp.finfo(jnp.float32).min
  log_p_teacher = jax.nn.log_softmax(jnp.where(valid, teacher / teacher_temperature, low), -1)
  log_p_student = jax.nn.log_softmax(
      jnp.where(valid, student.astype(jnp.float32) / temperature, low), -1)
  p_teacher = jnp.where(valid, jnp.exp(log_p_teacher), 0.0)
  return jnp.sum(jnp.where(valid, p_teacher * (log_p_teacher - log_p_student), 0.0), -1)


def margin_mse(student_positive: Array, student_negative: Array, teacher_positive: Array,
               teacher_negative: Array) -> Array:
  """Per-example MarginMSE (Hofstaetter et al. 2020; GPL distils a cross-encoder with
  it): the squared difference between the student's and the teacher's score margins,

    ((s(q, p+) - s(q, p-)) - (t(q, p+) - t(q, p-)))^2,

  each argument `[B]`; no gradient flows to the teacher. The teacher's margin is in its
  own units, so scale it to the student's (cosines) before, e.g. by a constant."""
  teacher_margin = jax.lax.stop_gradient((teacher_positive - teacher_negative).astype(jnp.float32))
  return ((student_positive - student_negative).astype(jnp.float32) - teacher_margin) ** 2


@dataclasses.dataclass(frozen=True, kw_only=True)
class GeckoLoss:
  """The Gecko loss, configured once (gin-friendly).

  Attributes:
    temperature: tau (not published; t5x_retrieval used 0.01, sentence-transformers
      0.05, FlagEmbedding 0.02).
    same_tower_negatives: Eq. 3's q_i-q_j terms (False for Eq. 2).
    hard_negatives: the example's own hard negative (False for Eq. 2).
    mask_false_negatives: mask in-batch positives/queries with equal keys (needs the
      `positive_key` feature; `query_key` is used when present).
    false_negative_margin: drop every candidate more similar to the query than its
      positive by more than this (cosine units; None keeps all; Qwen3-Embedding: 0.1).
    dims: Matryoshka dims, e.g. (256, 768); () means the full embedding only.
    dim_weights: one weight per dim (default all 1.0).
    distillation: None, "margin_mse" or "listwise_kl": a term on the teacher's scores
      (`distill_over`).
    distill_over: "pair": of each example's positive and hard negative (needs
      `hard_negatives` and the `teacher_positive` / `teacher_negative` features);
      "candidates": of each query's K candidates ("listwise_kl" only; the
      `candidate_tokens` / `candidate_mask` and `teacher_candidates` features).
    distillation_weight: the distillation term's weight.
    contrastive_weight: the contrastive term's weight (0: the teacher's scores alone).
    teacher_temperature: "listwise_kl": the teacher's softmax temperature.
    teacher_standardize: "listwise_kl": standardise the teacher's scores per query
      first (an LLM's log-likelihoods differ in scale from query to query).
    teacher_scale: "margin_mse": the teacher's margin times this is the student's
      target (cosine units; a QL margin of 10 nats is far from a cosine's range).
  """

  temperature: float = 0.05
  same_tower_negatives: bool = True
  hard_negatives: bool = True
  mask_false_negatives: bool = False
  false_negative_margin: float | None = None
  dims: Sequence[int] = ()
  dim_weights: Sequence[float] | None = None
  distillation: str | None = None
  distill_over: str = "pair"
  distillation_weight: float = 1.0
  contrastive_weight: float = 1.0
  teacher_temperature: float = 1.0
  teacher_standardize: bool = False
  teacher_scale: float = 1.0

  def __post_init__(self):
    if not (isinstance(self.temperature, (int, float)) and 0 < self.temperature < math.inf):
      raise ValueError(f"GeckoLoss.temperature must be > 0, got {self.temperature!r}.")
    margin = self.false_negative_margin
    if margin is not None and not 0 <= margin < 2:
      raise ValueError(f"GeckoLoss.false_negative_margin must be in [0, 2) (a cosine "
                       f"difference) or None, got {margin!r}.")
    if self.dim_weights is not None and not all(math.isfinite(w) and w >= 0
                                                for w in self.dim_weights):
      raise ValueError(f"GeckoLoss.dim_weights must be finite and >= 0, got "
                       f"{tuple(self.dim_weights)}.")
    if self.dim_weights is not None and len(self.dim_weights) != len(self.dims):
      raise ValueError(f"GeckoLoss.dim_weights={tuple(self.dim_weights)} needs one weight per "
                       f"dim in dims={tuple(self.dims)}.")
    self._check_distillation()

  def _check_distillation(self) -> None:
    if self.distillation not in DISTILLATIONS:
      raise ValueError(f"GeckoLoss.distillation={self.distillation!r}; use one of "
                       f"{DISTILLATIONS}.")
    if self.distill_over not in DISTILL_OVER:
      raise ValueError(f"GeckoLoss.distill_over={self.distill_over!r}; use one of "
                       f"{DISTILL_OVER}.")
    if self.distill_over == "candidates" and self.distillation != "listwise_kl":
      raise ValueError(f"GeckoLoss.distill_over='candidates' is a listwise term: it needs "
                       f"distillation='listwise_kl', got {self.distillation!r}.")
    for name in ("distillation_weight", "contrastive_weight", "teacher_scale"):
      value = getattr(self, name)
      if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"GeckoLoss.{name} must be finite and >= 0, got {value!r}.")
    if not (isinstance(self.teacher_temperature, (int, float))
            and 0 < self.teacher_temperature < math.inf):
      raise ValueError(f"GeckoLoss.teacher_temperature must be > 0, got "
                       f"{self.teacher_temperature!r}.")
    if self.distillation is None and self.contrastive_weight == 0:
      raise ValueError("GeckoLoss.contrastive_weight=0 leaves no loss without a distillation "
                       "term; set distillation='margin_mse' or 'listwise_kl', or the weight > 0.")
    if self.distillation is not None and self.distill_over == "pair" and not self.hard_negatives:
      raise ValueError(f"GeckoLoss.distillation={self.distillation!r} scores each example's "
                       "positive against its hard negative: it needs hard_negatives=True.")

  @property
  def required_features(self) -> tuple[str, ...]:
    required = features.QUERY + features.POSITIVE
    if self.hard_negatives:
      required += features.NEGATIVE
    if self.mask_false_negatives:
      required += (features.POSITIVE_KEY,)
    if self.distillation is not None and self.distill_over == "candidates":
      required += features.CANDIDATE + (features.TEACHER_CANDIDATES,)
    elif self.distillation is not None:
      required += features.TEACHER
    return required

  def validate_features(self, available) -> None:
    """Checks at construction time that the data supplies what this loss needs."""
    features.validate_features(available, self.required_features, who="GeckoLoss")

  def check_dims(self, model_dims: Sequence[int]) -> None:
    bad = [d for d in self.dims if d not in tuple(model_dims)]
    if bad:
      raise ValueError(f"GeckoLoss.dims {bad} are not Matryoshka dims of the model "
                       f"{tuple(model_dims)}; set MATRYOSHKA_DIMS or the loss dims to match.")

  def __call__(self, embeddings: dict[str, Array], batch: dict[str, Array] | None = None
               ) -> tuple[Array, dict[str, Array]]:
    """Loss over a batch of full-size embeddings.

    Args:
      embeddings: {"query", "positive"[, "negative"]} -> `[B, D]` unit-norm arrays
        (and "candidate" -> `[B, K, D]` with `distill_over="candidates"`).
      batch: the model features, for `positive_key` / `query_key`.

    Returns:
      (scalar loss, metrics): `loss/{d}` and `accuracy/{d}` per Matryoshka dim (the
      contrastive term), `same_tower_share/{d}` / `margin_dropped/{d}` when those terms
      are on, and `distillation/{d}` with a distillation term.
    """
    batch = batch or {}
    full = embeddings["query"].shape[-1]
    dims = tuple(self.dims) or (full,)
    weights = tuple(self.dim_weights) if self.dim_weights is not None else (1.0,) * len(dims)
    keys = {}
    if self.mask_false_negatives:
      keys = {"positive_key": batch[features.POSITIVE_KEY],
              "query_key": batch.get(features.QUERY_KEY)}
    total, metrics = 0.0, {}
    for dim, weight in zip(dims, weights):
      prefix = {k: matryoshka.prefix(v, dim) if dim != full else v for k, v in embeddings.items()}
      negative = prefix.get("negative") if self.hard_negatives else None
      loss, correct, stats = contrastive_loss(
          prefix["query"], prefix["positive"], negative, temperature=self.temperature,
          same_tower=self.same_tower_negatives, margin=self.false_negative_margin, **keys)
      metrics[f"loss/{dim}"] = jnp.mean(loss)
      metrics[f"accuracy/{dim}"] = jnp.mean(correct.astype(jnp.float32))
      metrics.update({f"{name}/{dim}": jnp.mean(value) for name, value in stats.items()})
      term = self.contrastive_weight * jnp.mean(loss)
      if self.distillation is not None:
        per_row, scored = self._distillation(prefix, batch)
        distilled = jnp.sum(per_row) / jnp.maximum(jnp.sum(scored), 1)
        metrics[f"distillation/{dim}"] = distilled
        term = term + self.distillation_weight * distilled
      total = total + weight * term
    metrics["loss"] = total
    return total, metrics

  def _distillation(self, embeddings: dict[str, Array], batch: dict[str, Array]
                    ) -> tuple[Array, Array]:
    """(`[B]` the distillation term of each example, 0 where it has no teacher, and `[B]`
    whether it has one). A row whose teacher scores are not all finite has none: the
    human tasks of a scored mixture carry NaN (`gecko.data.preprocessors.no_teacher`)."""
    if self.distill_over == "candidates":
      student = jnp.einsum("bd,bkd->bk", embeddings["query"], embeddings["candidate"])
      teacher = batch[features.TEACHER_CANDIDATES].astype(jnp.float32)
    else:
      student = jnp.stack([jnp.sum(embeddings["query"] * embeddings[side], -1)
                           for side in ("positive", "negative")], -1)
      teacher = jnp.stack([batch[features.TEACHER_POSITIVE],
                           batch[features.TEACHER_NEGATIVE]], -1).astype(jnp.float32)
    scored = jnp.all(jnp.isfinite(teacher), -1)
    teacher = jnp.where(scored[:, None], teacher, 0.0)  # no NaN reaches a gradient
    if self.distillation == "margin_mse":
      scaled = self.teacher_scale * teacher
      term = margin_mse(student[:, 0], student[:, 1], scaled[:, 0], scaled[:, 1])
    else:
      term = listwise_kl(student, teacher, temperature=self.temperature,
                         teacher_temperature=self.teacher_temperature,
                         standardize=self.teacher_standardize)
    return jnp.where(scored, term, 0.0), scored
