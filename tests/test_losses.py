"""Eq. 2 / Eq. 3 / MRL against a plain NumPy transcription of the paper's formulas."""

import numpy as np
import pytest

from gecko.training import losses


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _numpy_loss(q, p, n=None, *, tau, same_tower, pkey=None, qkey=None, margin=None):
  """Loops over i, j exactly as Eq. 3 is written (Eq. 2 when same_tower=False, n=None)."""
  b = len(q)
  out = []
  for i in range(b):
    num = np.exp(q[i] @ p[i] / tau)
    kept = lambda c: margin is None or q[i] @ c <= q[i] @ p[i] + margin  # noqa: E731
    den = num
    for j in range(b):
      if j != i and (pkey is None or pkey[j] != pkey[i]) and kept(p[j]):
        den += np.exp(q[i] @ p[j] / tau)
      if same_tower and j != i and (qkey is None or qkey[j] != qkey[i]) and kept(q[j]):
        den += np.exp(q[i] @ q[j] / tau)
    if n is not None and kept(n[i]):
      den += np.exp(q[i] @ n[i] / tau)
    out.append(-np.log(num / den))
  return np.mean(out)


@pytest.fixture
def embeddings():
  rng = np.random.default_rng(0)
  return {k: _unit(rng.normal(size=(6, 8))).astype(np.float32)
          for k in ("query", "positive", "negative")}


def test_eq2_in_batch_softmax(embeddings):
  loss_fn = losses.GeckoLoss(temperature=0.1, same_tower_negatives=False, hard_negatives=False)
  got, metrics = loss_fn({k: embeddings[k] for k in ("query", "positive")})
  want = _numpy_loss(embeddings["query"], embeddings["positive"], tau=0.1, same_tower=False)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert set(metrics) == {"loss", "loss/8", "accuracy/8"}


@pytest.mark.parametrize("same_tower", [True, False])
@pytest.mark.parametrize("hard_negatives", [True, False])
def test_eq3_with_switches(embeddings, same_tower, hard_negatives):
  loss_fn = losses.GeckoLoss(temperature=0.05, same_tower_negatives=same_tower,
                             hard_negatives=hard_negatives)
  got, metrics = loss_fn(embeddings)
  want = _numpy_loss(embeddings["query"], embeddings["positive"],
                     embeddings["negative"] if hard_negatives else None,
                     tau=0.05, same_tower=same_tower)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert ("same_tower_share/8" in metrics) == same_tower
  if same_tower:  # exp(q_i . q_j / tau) summed over j != i, over the whole denominator
    q, p, n = embeddings["query"], embeddings["positive"], embeddings["negative"]
    qq = np.exp(q @ q.T / 0.05) * (1 - np.eye(6))
    den = qq.sum(1) + np.exp(q @ p.T / 0.05).sum(1) + hard_negatives * np.exp((q * n).sum(1) / 0.05)
    np.testing.assert_allclose(metrics["same_tower_share/8"], np.mean(qq.sum(1) / den), rtol=1e-4)


def test_false_negative_masking(embeddings):
  pkey = np.array([7, 3, 7, 1, 3, 9], np.int32)
  qkey = np.array([0, 1, 2, 0, 4, 5], np.int32)
  embeddings["positive"][2] = embeddings["positive"][0]  # a real duplicate positive
  loss_fn = losses.GeckoLoss(temperature=0.5, mask_false_negatives=True)
  got, _ = loss_fn(embeddings, {"positive_key": pkey, "query_key": qkey})
  want = _numpy_loss(embeddings["query"], embeddings["positive"], embeddings["negative"],
                     tau=0.5, same_tower=True, pkey=pkey, qkey=qkey)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  unmasked, _ = losses.GeckoLoss(temperature=0.5)(embeddings)
  assert float(unmasked) - float(got) > 0.05  # masking changed something


def test_false_negative_margin_drops_candidates_closer_than_the_positive(embeddings):
  embeddings["query"][1] = _unit(embeddings["query"][0] + 0.1)  # a near-duplicate query
  want = _numpy_loss(embeddings["query"], embeddings["positive"], embeddings["negative"],
                     tau=0.05, same_tower=True, margin=0.1)
  got, metrics = losses.GeckoLoss(temperature=0.05, false_negative_margin=0.1)(embeddings)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  q, p, n = embeddings["query"], embeddings["positive"], embeddings["negative"]
  pos = (q * p).sum(1, keepdims=True)
  off = 1 - np.eye(6)
  dropped = ((q @ p.T > pos + 0.1) * off).sum(1) + ((q @ q.T > pos + 0.1) * off).sum(1) + (
      (q * n).sum(1) > pos[:, 0] + 0.1)
  assert dropped[0] >= 1  # q_1, the near-duplicate
  np.testing.assert_allclose(metrics["margin_dropped/8"], np.mean(dropped / 11), rtol=1e-5)
  unmasked, _ = losses.GeckoLoss(temperature=0.05)(embeddings)
  assert float(unmasked) - float(got) > 1.0  # the near-duplicate dominated the unmasked loss
  loose, _ = losses.GeckoLoss(temperature=0.05, false_negative_margin=1.99)(embeddings)
  np.testing.assert_allclose(loose, unmasked, rtol=1e-6)  # nothing is that much closer


def test_matryoshka_sum_over_dims_with_weights(embeddings):
  loss_fn = losses.GeckoLoss(temperature=0.05, dims=(4, 8), dim_weights=(0.5, 2.0))
  got, metrics = loss_fn(embeddings)
  small = {k: _unit(v[:, :4]) for k, v in embeddings.items()}
  want4 = _numpy_loss(small["query"], small["positive"], small["negative"], tau=0.05,
                      same_tower=True)
  want8 = _numpy_loss(embeddings["query"], embeddings["positive"], embeddings["negative"],
                      tau=0.05, same_tower=True)
  np.testing.assert_allclose(metrics["loss/4"], want4, rtol=1e-5)
  np.testing.assert_allclose(metrics["loss/8"], want8, rtol=1e-5)
  np.testing.assert_allclose(got, 0.5 * want4 + 2.0 * want8, rtol=1e-5)


def test_in_batch_accuracy():
  q = np.eye(4, dtype=np.float32)
  p = q.copy()
  p[3] = q[0]  # example 3's positive is example 0's: row 3 picks column 0 or its own
  _, metrics = losses.GeckoLoss(temperature=0.1, same_tower_negatives=False,
                                hard_negatives=False)({"query": q, "positive": p})
  np.testing.assert_allclose(metrics["accuracy/4"], 0.75)


def test_feature_validation_names_what_is_missing():
  loss_fn = losses.GeckoLoss(mask_false_negatives=True)
  with pytest.raises(ValueError, match=r"needs the model features \['negative_tokens', "
                     r"'negative_mask', 'positive_key'\]"):
    loss_fn.validate_features(["query_tokens", "query_mask", "positive_tokens", "positive_mask"])
  with pytest.raises(ValueError, match="unknown model features"):
    loss_fn.validate_features(["query_tokens", "inputs"])
  losses.GeckoLoss(hard_negatives=False).validate_features(
      ["query_tokens", "query_mask", "positive_tokens", "positive_mask"])


def test_bad_settings_are_named():
  with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
    losses.GeckoLoss(temperature=0)
  with pytest.raises(ValueError, match="one weight per dim"):
    losses.GeckoLoss(dims=(4, 8), dim_weights=(1.0,))
  with pytest.raises(ValueError, match=r"false_negative_margin must be in \[0, 2\).*got -0.1"):
    losses.GeckoLoss(false_negative_margin=-0.1)
  with pytest.raises(ValueError, match=r"\[100\] are not Matryoshka dims"):
    losses.GeckoLoss(dims=(100,)).check_dims((256, 768))
