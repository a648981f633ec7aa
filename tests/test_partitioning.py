"""The mesh and its rules in force: mesh_utils layouts (ICI and DCN), activation
constraints in the lowered step, no weight constants in the init, and the train step
compiled for real TPU topologies through libtpu."""

import contextlib
import dataclasses
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.experimental import mesh_utils

from gecko.models import bert, dual_encoder
from gecko.training import partitioning, train_step, trainer
from gecko.training.losses import GeckoLoss
from gecko.training.optimizers import AdamW

from conftest import REPO, require_module

TINY = bert.BertConfig(vocab_size=128, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64,
                       max_length=128, dropout_rate=0.1)


def _program(mesh_axes, *, devices=None, backbone=TINY, batch_size=16, **kwargs):
  return trainer.build(model=dual_encoder.DualEncoder(backbone=backbone, embed_dim=16),
                       loss=GeckoLoss(temperature=0.05),
                       optimizer=AdamW(learning_rate=1e-4, total_steps=10),
                       batch_size=batch_size, mesh_axes=mesh_axes, devices=devices, **kwargs)


def _lowered_text(program, *, length=16):
  loss = GeckoLoss(temperature=0.05)
  batch = program.abstract_batch(loss, batch_size=16, query_length=length,
                                 passage_length=length)
  return program.lower(program.abstract_state, batch).as_text()


def _topology(name, *, slices=1):
  require_module("libtpu", "compiling for TPU topologies (pip install -e '.[tpu-aot]')")
  from gecko import compile_step
  return compile_step.topology_devices(name, slices=slices)


def test_mesh_is_laid_out_by_mesh_utils():
  mesh = partitioning.make_mesh({"data": 2, "fsdp": 4})
  want = mesh_utils.create_device_mesh([2, 4, 1], jax.devices())
  assert mesh.axis_names == ("data", "fsdp", "model")
  np.testing.assert_array_equal(mesh.device_ids, np.vectorize(lambda d: d.id)(want))


def test_mesh_on_a_tpu_torus_follows_the_physical_layout():
  devices = _topology("v4:2x2x4")  # v4-32: 16 chips (megacore), 4 per host
  mesh = partitioning.make_mesh({"data": 2, "fsdp": 8}, devices=devices)
  want = mesh_utils.create_device_mesh([2, 8, 1], devices, allow_split_physical_axes=True)
  assert mesh.devices.tolist() == want.tolist()
  # Each fsdp group is one y plane, holding whole z rings (the torus's wrap-around
  # links); a plain reshape of jax.devices() would take two hosts' chips instead.
  for row in mesh.devices[:, :, 0]:
    assert len({d.coords[1] for d in row}) == 1 and {d.coords[2] for d in row} == {0, 1, 2, 3}
  naive = np.asarray(devices).reshape(2, 8)
  assert {d.coords[2] for d in naive[0]} == {0, 1}


def test_multi_slice_mesh_puts_each_slice_on_its_own_dcn_row():
  devices = _topology("v5e:2x2", slices=2)
  mesh = partitioning.make_mesh({"data": 1, "fsdp": 4}, dcn_axes={"data": 2}, devices=devices)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "model": 1}
  assert [{d.slice_index for d in row.flat} for row in mesh.devices] == [{0}, {1}]


def test_dcn_axes_are_checked():
  with pytest.raises(ValueError, match=r"Unknown DCN mesh axes \['dp'\]"):
    partitioning.make_mesh({"data": -1}, dcn_axes={"dp": 2})
  with pytest.raises(ValueError, match="split into 3 slices"):
    partitioning.make_mesh({"data": -1}, dcn_axes={"data": 3})


def test_activation_constraints_are_in_the_lowered_step(monkeypatch):
  """Under an FSDP mesh every block's output is constrained to (batch, length, embed);
  without the mesh and rules in force flax drops the constraints silently."""
  program = _program({"fsdp": 8})
  constrained = _lowered_text(program).count("sharding_constraint")
  # embeddings + each layer's output, for each of the three towers (forward pass)
  assert constrained >= 3 * (TINY.num_layers + 1), constrained
  monkeypatch.setattr(partitioning, "in_force", lambda mesh, rules: contextlib.nullcontext())
  assert _lowered_text(program).count("sharding_constraint") == 0


def test_init_from_weights_takes_them_as_arguments_not_constants():
  program = _program({"fsdp": 8})
  with partitioning.in_force(program.mesh, program.rules):
    lowered = jax.jit(train_step.params_init_fn(program.tx),
                      in_shardings=(None, program.shardings.params),
                      out_shardings=program.shardings).lower(
        jax.random.key(0), program.abstract_state.params)
  text = lowered.as_text()
  word = TINY.vocab_size * TINY.hidden_size
  constants = [int(np.prod([int(d) for d in dims.split("x")]))
               for dims in re.findall(r"stablehlo\.constant dense<[^>]*> : tensor<([\dx]+)x", text)]
  assert max(constants, default=0) < word  # zeros for AdamW's moments are splats, not weights
  params = jax.tree.map(lambda a: np.random.default_rng(0).normal(size=a.shape).astype(a.dtype),
                        program.abstract_state.params)
  state = program.init_state(seed=0, params=params)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), params)
  kernel = state.params["encoder"]["embeddings"]["word_embeddings"]
  assert kernel.sharding.spec == jax.sharding.PartitionSpec("model", "fsdp")  # vocab, embed


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_fused_attention_compiles_for_a_tpu_slice(dropout):
  """On a v5e topology the step calls the Pallas kernel (a Mosaic custom call), sharded
  over the batch, unless attention dropout rules it out."""
  devices = _topology("v5e:2x2")
  backbone = dataclasses.replace(TINY, attention_dropout_rate=dropout)
  program = _program({"data": 2, "fsdp": 2}, devices=devices, backbone=backbone)
  text = _lowered_text(program, length=128)
  kernels = text.count("tpu_custom_call")
  assert (kernels > 0) == (dropout == 0.0), kernels


@pytest.mark.slow
def test_compile_step_reports_hbm_for_a_tpu_topology(tmp_path):
  _topology("v5e:2x2")
  output = tmp_path / "v5e.json"
  result = subprocess.run(
      [sys.executable, "-m", "gecko.compile_step", "--topology=v5e:2x2",
       "--gin_file=gin/models/minilm_l6.gin", "--gin_file=gin/runs/finetune.gin",
       "--gin_file=gin/overlays/compile_step.gin", "--gin.BATCH_SIZE=64", f"--json={output}"],
      cwd=REPO, capture_output=True, text=True, timeout=1200,
      env={k: v for k, v in os.environ.items() if k != "XLA_FLAGS"})
  assert result.returncode == 0, result.stderr[-2000:]
  report = json.loads(output.read_text())
  assert report["topology"] == "v5e:2x2" and report["chips"] == 4
  assert report["device_kind"] == "TPU v5 lite" and report["hbm_capacity_bytes"] == 16 * 2**30
  assert 0 < report["hbm_per_chip_bytes"] < report["hbm_capacity_bytes"]
  assert report["flops_per_step"] > 0
  assert re.search(r"GiB of 16 GiB HBM per chip \(\d+%\) on v5e:2x2", result.stderr)
  assert "TPU_ACCELERATOR_TYPE" not in result.stderr  # libtpu's start-up noise is kept out


def test_compile_step_topology_errors():
  bad = subprocess.run([sys.executable, "-m", "gecko.compile_step", "--topology=v9:2x2",
                        "--gin_file=gin/models/tiny.gin"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
  assert bad.returncode == 2 and "expected GENERATION:SHAPE" in bad.stderr
  both = subprocess.run([sys.executable, "-m", "gecko.compile_step", "--topology=v5e:2x2",
                         "--fake_devices=4"], cwd=REPO, capture_output=True, text=True,
                        timeout=120)
  assert both.returncode != 0 and "exclude each other" in both.stderr


# ---------------------------------------------------------------------- scale traps

_COLLECTIVE = re.compile(r" (all-reduce|reduce-scatter|all-gather|collective-permute|all-to-all)"
                         r"(?:-start)?\(")


def _collectives(hlo: str) -> tuple[dict[str, int], dict[str, int]]:
  """(collectives in the whole compiled module, collectives inside while-loop bodies,
  the computations they call included), by kind."""
  computations, name = {}, None
  for line in hlo.splitlines():
    header = re.match(r"^(?:ENTRY )?%(\S+) .*\{$", line)
    if header:
      name = header.group(1)
      computations[name] = []
    elif name:
      computations[name].append(line)
  texts = {k: "\n".join(v) for k, v in computations.items()}
  inside, todo = set(), re.findall(r"body=%([\w.\-]+)", hlo)
  while todo:
    current = todo.pop()
    if current in inside or current not in texts:
      continue
    inside.add(current)
    todo += re.findall(r"(?:body|condition|to_apply|calls)=%([\w.\-]+)", texts[current])

  def count(text):
    out = {}
    for match in _COLLECTIVE.finditer(text):
      out[match.group(1)] = out.get(match.group(1), 0) + 1
    return out

  return count(hlo), count("\n".join(texts[c] for c in inside))


@pytest.mark.slow
def test_grad_cache_reduces_gradients_over_data_once_per_step():
  """Per-chunk gradients stay on their data shard through the chunk loop: the loop body
  holds no collective, and the step's collectives do not grow with the chunk count."""
  totals = []
  for chunk in (8, 16):  # 4 and 2 chunks of the batch of 32
    program = _program({"data": 8}, batch_size=32, grad_cache_chunk=chunk)
    batch = program.abstract_batch(GeckoLoss(temperature=0.05), batch_size=32,
                                   query_length=16, passage_length=16)
    total, in_loops = _collectives(program.lower(program.abstract_state, batch).compile().as_text())
    assert in_loops == {}, (chunk, in_loops)
    assert total.get("all-reduce", 0) >= 1  # the one reduction is there, after the loop
    totals.append(total)
  assert totals[0] == totals[1]


def test_grad_cache_chunk_must_split_over_the_data_axis():
  with pytest.raises(ValueError, match="grad_cache_chunk=4 must be divisible by the mesh's data"):
    _program({"data": 8}, batch_size=32, grad_cache_chunk=4)


def test_dropout_numbers_a_4096_by_256_batch_of_the_1b_model():
  """A 1.2B step's attention dropout at 4096 x 256 tokens covers 2**33 elements."""
  import jax.numpy as jnp

  from gecko.models import embedder, t5
  module = dual_encoder.DualEncoder(backbone=t5.T5Config.xl(dtype="bfloat16"), embed_dim=768)
  params = jax.eval_shape(lambda: embedder.init_params(module))
  tokens = jax.ShapeDtypeStruct((4096, 256), jnp.int32)
  out = jax.eval_shape(lambda p, t: module.apply({"params": p}, t, jnp.ones_like(t),
                                                 deterministic=False,
                                                 rngs={"dropout": jax.random.key(0)}),
                       params, tokens)
  assert out.shape == (4096, 768)


def test_dropout_beyond_2_32_elements_draws_by_row_and_position(monkeypatch):
  """The two-word hash (taken past 2**32 elements; here past 2**10) keeps what matters:
  a slice draws what the whole draws, rows differ, and the keep rate is right."""
  import jax.numpy as jnp

  from gecko.models import dropout
  monkeypatch.setattr(dropout, "_LEVELS", 1 << 10)
  key = jax.random.key(1)
  whole = np.asarray(dropout.hashed_bits(key, (64, 8, 4)))  # 2048 elements > 2**10
  pieces = []
  for index in range(4):
    with dropout.rows_of(index, 4):
      pieces.append(np.asarray(dropout.hashed_bits(key, (16, 8, 4))))
  np.testing.assert_array_equal(np.concatenate(pieces), whole)
  assert len({row.tobytes() for row in whole}) == 64
  keep = np.mean(whole >= np.uint32(0.1 * 2**32))
  assert 0.87 < keep < 0.93, keep
  with dropout.rows_of(jnp.int32(2), 4):  # a traced piece index works as well
    np.testing.assert_array_equal(jax.jit(lambda: dropout.hashed_bits(key, (16, 8, 4)))(),
                                  pieces[2])


def test_a_candidate_tower_compiles_with_k_passages_per_row():
  """The abstract batch of a listwise loss over K candidates holds a [B, K, Lp] tower and
  [B, K] teacher scores; the compiled step's FLOPs count K passages per row more than
  the same step without them, and a missing K is named."""
  from gecko import compile_step
  model = dual_encoder.DualEncoder(backbone=TINY, embed_dim=16)
  listwise = GeckoLoss(temperature=0.05, distillation="listwise_kl", distill_over="candidates")
  common = dict(model=model, optimizer=AdamW(learning_rate=1e-4, total_steps=10),
                batch_size=16, query_length=8, passage_length=16, mesh_axes={"data": 8})
  program = _program({"data": 8})
  batch = program.abstract_batch(listwise, batch_size=16, query_length=8, passage_length=16,
                                 candidates=4)
  assert batch["candidate_tokens"].shape == (16, 4, 16)
  assert batch["teacher_candidates"].shape == (16, 4)
  assert batch["teacher_candidates"].dtype == np.float32
  with pytest.raises(ValueError, match="give candidates=K >= 2, got None"):
    program.abstract_batch(listwise, batch_size=16, query_length=8, passage_length=16)
  report = compile_step.memory_report(loss=listwise, candidates=4, **common)
  plain = compile_step.memory_report(loss=GeckoLoss(temperature=0.05), **common)
  assert report["towers"] == ["candidate", "negative", "positive", "query"]
  one_passage = compile_step.model_flops(model, batch_size=16, lengths=[16])
  assert report["flops_per_step"] == pytest.approx(plain["flops_per_step"] + 4 * one_passage)
