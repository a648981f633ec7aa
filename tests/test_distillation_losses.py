"""The distillation losses (listwise KL to a teacher's scores, MarginMSE) against a NumPy
transcription written from their definitions, with a gradient check."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from gecko.training import losses


def _kl_by_hand(student, teacher, *, tau, teacher_tau, standardize, mask):
  out = []
  for s_row, t_row, m_row in zip(student, teacher, mask):
    s = [x for x, m in zip(s_row, m_row) if m]
    t = [x for x, m in zip(t_row, m_row) if m]
    if standardize:
      mean = sum(t) / len(t)
      std = math.sqrt(sum((x - mean) ** 2 for x in t) / len(t) + 1e-6)
      t = [(x - mean) / std for x in t]
    zt = sum(math.exp(x / teacher_tau) for x in t)
    zs = sum(math.exp(x / tau) for x in s)
    p = [math.exp(x / teacher_tau) / zt for x in t]
    q = [math.exp(x / tau) / zs for x in s]
    out.append(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)))
  return np.array(out)


@pytest.fixture
def scores():
  rng = np.random.default_rng(0)
  student = rng.uniform(-1, 1, (3, 5)).astype(np.float32)  # cosines
  teacher = rng.normal(-20, 6, (3, 5)).astype(np.float32)  # QL log-probs
  mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], bool)
  return student, teacher, mask


@pytest.mark.parametrize("standardize, teacher_tau", [(False, 4.0), (True, 1.0), (True, 0.5)])
def test_listwise_kl_by_hand(scores, standardize, teacher_tau):
  student, teacher, mask = scores
  got = losses.listwise_kl(jnp.asarray(student), jnp.asarray(teacher), temperature=0.05,
                           teacher_temperature=teacher_tau, standardize=standardize,
                           mask=jnp.asarray(mask))
  want = _kl_by_hand(student.tolist(), teacher.tolist(), tau=0.05, teacher_tau=teacher_tau,
                     standardize=standardize, mask=mask.tolist())
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


def test_listwise_kl_is_zero_where_the_student_agrees_and_ignores_the_teachers_scale(scores):
  student, _, mask = scores
  same = losses.listwise_kl(jnp.asarray(student), jnp.asarray(student) / 0.05, temperature=0.05)
  np.testing.assert_allclose(same, 0.0, atol=1e-5)
  _, teacher, _ = scores
  one = losses.listwise_kl(jnp.asarray(student), jnp.asarray(teacher), temperature=0.05,
                           standardize=True, mask=jnp.asarray(mask))
  scaled = losses.listwise_kl(jnp.asarray(student), jnp.asarray(3 * teacher - 7),
                              temperature=0.05, standardize=True, mask=jnp.asarray(mask))
  np.testing.assert_allclose(one, scaled, rtol=1e-4)
  padded = np.where(mask, student, 123.0)  # a padding candidate's score changes nothing
  np.testing.assert_allclose(
      losses.listwise_kl(jnp.asarray(padded), jnp.asarray(teacher), temperature=0.05,
                         standardize=True, mask=jnp.asarray(mask)), one, rtol=1e-6)


def test_margin_mse_by_hand():
  sp, sn = np.array([0.9, 0.2, 0.5]), np.array([0.1, 0.4, 0.5])
  tp, tn = np.array([2.0, -1.0, 0.3]), np.array([1.0, -3.0, 0.3])
  want = [((a - b) - (c - d)) ** 2 for a, b, c, d in zip(sp, sn, tp, tn)]  # 0.04, 4.84, 0
  got = losses.margin_mse(*(jnp.asarray(x, jnp.float32) for x in (sp, sn, tp, tn)))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_gradients_match_finite_differences_and_skip_the_teacher(scores):
  student, teacher, mask = scores
  kl = lambda s: jnp.sum(losses.listwise_kl(s, jnp.asarray(teacher), temperature=0.5,  # noqa: E731
                                            standardize=True, mask=jnp.asarray(mask)))
  check_grads(kl, (jnp.asarray(student),), order=1, modes=("rev",), atol=2e-2, rtol=2e-2,
              eps=1e-2)
  mse = lambda p, n: jnp.sum(losses.margin_mse(p, n, jnp.ones(3), jnp.zeros(3)))  # noqa: E731
  check_grads(mse, (jnp.asarray(student[:, 0]), jnp.asarray(student[:, 1])), order=1,
              modes=("rev",), atol=2e-2, rtol=2e-2, eps=1e-2)
  teacher_grad = jax.grad(lambda t: jnp.sum(losses.listwise_kl(
      jnp.asarray(student), t, temperature=0.5)))(jnp.asarray(teacher))
  assert not np.any(np.asarray(teacher_grad))  # the teacher is a target, not a parameter
  # Where the student's own margin is short of the teacher's, its gradient widens it.
  grad_p = jax.grad(lambda p: jnp.sum(losses.margin_mse(p, jnp.zeros(1), jnp.ones(1),
                                                        jnp.zeros(1))))(jnp.array([0.2]))
  assert float(grad_p[0]) == pytest.approx(2 * (0.2 - 1.0))


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture
def batch():
  rng = np.random.default_rng(1)
  embeddings = {k: _unit(rng.normal(size=(6, 8))).astype(np.float32)
                for k in ("query", "positive", "negative")}
  teacher = {"teacher_positive": rng.normal(-12, 3, 6).astype(np.float32),
             "teacher_negative": rng.normal(-20, 3, 6).astype(np.float32)}
  return embeddings, teacher


@pytest.mark.parametrize("distillation", ["margin_mse", "listwise_kl"])
@pytest.mark.parametrize("contrastive_weight", [1.0, 0.0])
def test_gecko_loss_adds_the_weighted_distillation_term_per_dim(batch, distillation,
                                                                contrastive_weight):
  """Each dim's loss is w_c * contrastive + w_d * distillation, the distillation term
  by hand on that dim's re-normalised prefixes: the student's pair (s+, s-) against
  the teacher's (t+, t-)."""
  embeddings, teacher = batch
  loss_fn = losses.GeckoLoss(temperature=0.05, dims=(4, 8), dim_weights=(0.5, 2.0),
                             distillation=distillation, distillation_weight=0.3,
                             contrastive_weight=contrastive_weight, teacher_temperature=2.0,
                             teacher_scale=0.01)
  plain = losses.GeckoLoss(temperature=0.05, dims=(4, 8), dim_weights=(0.5, 2.0))
  got, metrics = loss_fn(embeddings, teacher)
  _, contrastive = plain(embeddings, teacher)
  t_pos, t_neg = teacher["teacher_positive"].tolist(), teacher["teacher_negative"].tolist()
  total = 0.0
  for dim, weight in ((4, 0.5), (8, 2.0)):
    e = {k: _unit(v[:, :dim].astype(np.float64)) for k, v in embeddings.items()}
    s_pos = np.sum(e["query"] * e["positive"], -1).tolist()
    s_neg = np.sum(e["query"] * e["negative"], -1).tolist()
    if distillation == "margin_mse":
      by_hand = np.mean([((sp - sn) - 0.01 * (tp - tn)) ** 2
                         for sp, sn, tp, tn in zip(s_pos, s_neg, t_pos, t_neg)])
    else:
      by_hand = np.mean(_kl_by_hand([[sp, sn] for sp, sn in zip(s_pos, s_neg)],
                                    [[tp, tn] for tp, tn in zip(t_pos, t_neg)], tau=0.05,
                                    teacher_tau=2.0, standardize=False, mask=[[1, 1]] * 6))
    np.testing.assert_allclose(metrics[f"distillation/{dim}"], by_hand, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(metrics[f"loss/{dim}"], contrastive[f"loss/{dim}"], rtol=1e-6)
    total += weight * (contrastive_weight * contrastive[f"loss/{dim}"] + 0.3 * by_hand)
  np.testing.assert_allclose(got, total, rtol=1e-4)
  assert loss_fn.required_features[-2:] == ("teacher_positive", "teacher_negative")


def test_the_distillation_gradient_reaches_the_embeddings_and_not_the_teacher(batch):
  embeddings, teacher = batch
  loss_fn = losses.GeckoLoss(distillation="margin_mse", contrastive_weight=0.0)
  grads = jax.grad(lambda e, t: loss_fn(e, t)[0], argnums=(0, 1))(embeddings, teacher)
  assert all(float(jnp.abs(grads[0][k]).sum()) > 0 for k in ("query", "positive", "negative"))
  assert all(float(jnp.abs(g).sum()) == 0 for g in grads[1].values())


@pytest.mark.parametrize("distillation", ["margin_mse", "listwise_kl"])
def test_rows_without_teacher_scores_train_on_eq3_alone(batch, distillation):
  """A mixed batch: rows with NaN teacher scores (the human tasks of a scored mixture)
  are left out of the distillation term's mean, and no NaN reaches a gradient; a batch
  of such rows has a distillation term of 0."""
  embeddings, teacher = batch
  loss_fn = losses.GeckoLoss(temperature=0.05, distillation=distillation, teacher_scale=0.01)
  unscored = {k: v.copy() for k, v in teacher.items()}
  unscored["teacher_positive"][[1, 4]] = np.nan
  unscored["teacher_negative"][4] = np.nan
  _, metrics = loss_fn(embeddings, unscored)
  kept = [0, 2, 3, 5]
  _, only_kept = loss_fn({k: v[kept] for k, v in embeddings.items()},
                         {k: v[kept] for k, v in teacher.items()})
  per_row = {"margin_mse": lambda s, t: losses.margin_mse(s[:, 0], s[:, 1], 0.01 * t[:, 0],
                                                          0.01 * t[:, 1]),
             "listwise_kl": lambda s, t: losses.listwise_kl(s, t, temperature=0.05)}
  student = np.stack([np.sum(embeddings["query"] * embeddings[side], -1)
                      for side in ("positive", "negative")], -1)
  scores = np.stack([teacher["teacher_positive"], teacher["teacher_negative"]], -1)
  by_hand = np.mean(np.asarray(per_row[distillation](student, scores))[kept])
  np.testing.assert_allclose(metrics["distillation/8"], by_hand, rtol=1e-5)
  assert float(metrics["distillation/8"]) == pytest.approx(float(only_kept["distillation/8"]))
  grads = jax.grad(lambda e: loss_fn(e, unscored)[0])(embeddings)
  assert all(np.isfinite(np.asarray(g)).all() for g in grads.values())
  none = {k: np.full_like(v, np.nan) for k, v in teacher.items()}
  _, metrics = loss_fn(embeddings, none)
  assert float(metrics["distillation/8"]) == 0.0


@pytest.mark.parametrize("standardize", [False, True])
def test_listwise_kl_over_every_candidate_by_hand(standardize):
  """`distill_over="candidates"`: each query's K candidates (a `[B, K, D]` tower) against
  the teacher's K scores, on each dim's re-normalised prefixes; no hard negative needed."""
  rng = np.random.default_rng(2)
  embeddings = {k: _unit(rng.normal(size=(4, 8))).astype(np.float32)
                for k in ("query", "positive")}
  embeddings["candidate"] = _unit(rng.normal(size=(4, 5, 8))).astype(np.float32)
  teacher = rng.normal(-20, 6, (4, 5)).astype(np.float32)
  loss_fn = losses.GeckoLoss(temperature=0.05, dims=(4, 8), hard_negatives=False,
                             distillation="listwise_kl", distill_over="candidates",
                             teacher_temperature=2.0, teacher_standardize=standardize,
                             distillation_weight=0.5)
  assert loss_fn.required_features == ("query_tokens", "query_mask", "positive_tokens",
                                       "positive_mask", "candidate_tokens", "candidate_mask",
                                       "teacher_candidates")
  got, metrics = loss_fn(embeddings, {"teacher_candidates": teacher})
  _, contrastive = losses.GeckoLoss(temperature=0.05, dims=(4, 8), hard_negatives=False)(
      embeddings)
  total = 0.0
  for dim in (4, 8):
    q = _unit(embeddings["query"][:, :dim].astype(np.float64))
    c = _unit(embeddings["candidate"][..., :dim].astype(np.float64))
    student = [[float(np.dot(q[b], c[b, k])) for k in range(5)] for b in range(4)]
    by_hand = np.mean(_kl_by_hand(student, teacher.tolist(), tau=0.05, teacher_tau=2.0,
                                  standardize=standardize, mask=[[1] * 5] * 4))
    np.testing.assert_allclose(metrics[f"distillation/{dim}"], by_hand, rtol=1e-4, atol=1e-7)
    total += contrastive[f"loss/{dim}"] + 0.5 * by_hand
  np.testing.assert_allclose(got, total, rtol=1e-4)
  grads = jax.grad(lambda e: loss_fn(e, {"teacher_candidates": teacher})[0])(embeddings)
  assert float(jnp.abs(grads["candidate"]).sum()) > 0


@pytest.mark.parametrize("settings, message", [
    (dict(distillation="listwise_kl", distill_over="all"), r"distill_over='all'; use one of"),
    (dict(distillation="margin_mse", distill_over="candidates"),
     "needs distillation='listwise_kl'"),
    (dict(distillation="kl"), r"distillation='kl'; use one of \(None, 'margin_mse'"),
    (dict(distillation="margin_mse", hard_negatives=False), "it needs hard_negatives=True"),
    (dict(contrastive_weight=0.0), "leaves no loss without a distillation term"),
    (dict(distillation="listwise_kl", distillation_weight=-1), "distillation_weight must be"),
    (dict(distillation="listwise_kl", teacher_temperature=0), "teacher_temperature must be > 0"),
    (dict(distillation="margin_mse", teacher_scale=float("nan")), "teacher_scale must be finite"),
])
def test_bad_distillation_settings_are_named(settings, message):
  with pytest.raises(ValueError, match=message):
    losses.GeckoLoss(**settings)
