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
