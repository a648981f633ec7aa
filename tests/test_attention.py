"""Every attention path computes the reference's function, forward and gradient, with
padding, packed segments and T5's bias; the choice of path and its fallbacks."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import tpu as pltpu

from gecko.models import attention, bert, dual_encoder, embedder, t5
from test_packing import TINY_BACKBONES

B, L, H, D = 2, 128, 2, 32  # 128: the TPU kernel's tile


def _inputs(seed: int, *, packed: bool):
  rng = np.random.default_rng(seed)
  q, k, v = (jnp.asarray(rng.normal(size=(B, L, H, D)), jnp.float32) for _ in range(3))
  ids = np.zeros((B, L), np.int32)
  if packed:
    ids[0, :40], ids[0, 40:100], ids[0, 100:] = 1, 2, 3
    ids[1, :7], ids[1, 7:90] = 1, 2
  else:
    ids[0, :], ids[1, :77] = 1, 1
  bias = jnp.asarray(rng.normal(size=(1, H, L, L)), jnp.float32)
  return q, k, v, attention.Mask(ids=jnp.asarray(ids), packed=packed), bias


def _real(mask):
  return np.asarray(mask.ids).astype(bool)[:, :, None, None]


def _reference(q, k, v, mask, bias):
  return attention.reference(q, k, v, mask.bias() if bias is None else bias + mask.bias())


def _paths():
  def xla(q, k, v, mask, bias):
    return attention._jax_nn(q, k, v, mask, bias, implementation="xla")

  return {"xla": xla, "tpu_flash": attention.tpu_flash}


@pytest.fixture(autouse=True)
def _interpret_pallas_tpu():
  """The Pallas TPU kernel runs interpreted on this CPU (forward and backward)."""
  with pltpu.force_tpu_interpret_mode():
    yield


@pytest.mark.parametrize("with_bias", [False, True], ids=["bert", "t5_bias"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("path", ["xla", "tpu_flash"])
def test_path_equals_reference_forward_and_gradient(path, packed, with_bias):
  q, k, v, mask, bias = _inputs(1 + packed + 2 * with_bias, packed=packed)
  bias = bias if with_bias else None
  fn = _paths()[path]
  real = _real(mask)
  want = _reference(q, k, v, mask, bias)
  got = fn(q, k, v, mask, bias)
  np.testing.assert_allclose(np.where(real, got, 0), np.where(real, want, 0), atol=1e-5, rtol=1e-5)
  # Gradients of a weighted sum over the real positions (padded outputs are never pooled).
  weights = jnp.asarray(np.random.default_rng(7).normal(size=(B, L, H, D)), jnp.float32)

  def loss(f):
    def value(q, k, v, b):
      return jnp.sum(jnp.where(real, f(q, k, v, mask, b), 0.0) * weights)
    return value

  argnums = (0, 1, 2, 3) if with_bias else (0, 1, 2)
  want_grads = jax.grad(loss(_reference), argnums=argnums)(q, k, v, bias)
  got_grads = jax.grad(loss(fn), argnums=argnums)(q, k, v, bias)
  for name, g, w in zip("qkvb", got_grads, want_grads):
    scale = float(jnp.abs(w).max())
    assert scale > 0.1, name  # a gradient that is there to compare
    np.testing.assert_allclose(g, w, atol=2e-5 * scale, rtol=1e-4, err_msg=f"d{name}")


def test_a_mask_changes_the_result():
  """The equality above is not vacuous: the padding and the segments do change outputs."""
  q, k, v, padded, _ = _inputs(0, packed=False)
  _, _, _, packed, _ = _inputs(0, packed=True)
  everything = attention.Mask(ids=jnp.ones((B, L), jnp.int32))
  base = _reference(q, k, v, everything, None)
  for mask in (padded, packed):
    real = _real(mask)
    for path, fn in _paths().items():
      out = fn(q, k, v, mask, None)
      assert float(jnp.abs(jnp.where(real, out - base, 0)).max()) > 1e-2, path


@pytest.mark.parametrize("kwargs, want", [
    (dict(implementation="auto", platform="cpu"), ("reference", None)),
    (dict(implementation="auto", platform="gpu"), ("cudnn", None)),
    (dict(implementation="auto", platform="tpu", length=512), ("tpu_flash", None)),
    (dict(implementation="xla", platform="cpu"), ("xla", None)),
    (dict(implementation="auto", platform="gpu", dtype=jnp.float32),
     ("reference", "cudnn attention takes bfloat16 or float16, not float32")),
    (dict(implementation="auto", platform="gpu", has_dropout=True),
     ("reference", "cudnn attention takes no dropout on the attention weights; set "
                   "attention_dropout_rate=0.0 to use it")),
    (dict(implementation="auto", platform="gpu", head_dim=60),
     ("reference", "cudnn attention needs head_dim a multiple of 8 up to 256, not 60")),
    (dict(implementation="auto", platform="tpu", length=64),
     ("reference", "tpu_flash attention needs a length that is a multiple of 128, not 64")),
    (dict(implementation="tpu_flash", platform="cpu", length=128),
     ("reference", "tpu_flash attention needs a TPU, and this runs on cpu")),
    (dict(implementation="cudnn", platform="tpu"),
     ("reference", "cudnn attention needs an NVIDIA GPU, and this runs on tpu")),
])
def test_choose(kwargs, want):
  args = dict(dtype=jnp.bfloat16, head_dim=64, length=256, has_dropout=False, has_bias=False)
  assert attention.choose(**{**args, **kwargs}) == want


def test_unknown_implementation_is_refused_by_name():
  with pytest.raises(ValueError, match="'flash'.*'tpu_flash'"):
    attention.choose("flash", platform="cpu", dtype=jnp.float32, head_dim=64, length=8,
                     has_dropout=False, has_bias=False)
  with pytest.raises(ValueError, match="BertConfig.attention='flash'"):
    bert.BertConfig(attention="flash")
  with pytest.raises(ValueError, match="T5Config.attention_dropout_rate must be in"):
    t5.T5Config(attention_dropout_rate=1.5)


def test_a_kernel_that_cannot_run_falls_back_with_a_log_line(caplog):
  q, k, v, mask, _ = _inputs(0, packed=False)
  attention._say_once.cache_clear()
  with caplog.at_level(logging.WARNING, logger="gecko.models.attention"):
    out = attention.dot_product_attention(q, k, v, mask, implementation="cudnn")
  assert [r.getMessage() for r in caplog.records] == [
      "gecko attention: cudnn attention needs an NVIDIA GPU, and this runs on cpu; using the "
      "reference path."]
  np.testing.assert_array_equal(out, _reference(q, k, v, mask, None))


@pytest.mark.parametrize("backbone", TINY_BACKBONES, ids=["bert", "t5"])
def test_models_embed_alike_through_jax_nn(backbone):
  """The encoders reach every path through their config's `attention` field."""
  import dataclasses
  rng = np.random.default_rng(3)
  ids = rng.integers(2, 64, (3, 16)).astype(np.int32)
  mask = (np.arange(16)[None] < np.array([[16], [9], [1]])).astype(np.int32)
  out = {}
  for implementation in ("reference", "xla"):
    module = dual_encoder.DualEncoder(
        backbone=dataclasses.replace(backbone, attention=implementation), embed_dim=16)
    out[implementation] = module.apply({"params": embedder.init_params(module, seed=2)}, ids, mask)
  np.testing.assert_allclose(out["xla"], out["reference"], atol=2e-6)
