"""GPU figures, one prepared run: MiniLM encode and train step, the 1.2B train step in
bfloat16, each with MFU against the chip's own measured matmul peak, and the torch
model sentence-transformers wraps, on the same GPU, for MiniLM. Run by benchmarks/gpu.sh.

  python3 benchmarks/gpu_step.py --json OUT.json [--smoke]

Weights are random (speed does not depend on them, and the device machine cannot
reach a hub); the sizes are MiniLM-L6's and T5 v1.1 XL's. `--smoke` shrinks every size
so the script can be checked on a CPU. Each measurement is the median of `--repeats`
timed calls after a warm-up; MFU = model FLOPs / time / peak, where the peak is the
best bf16 (or fp32) matmul rate measured in this run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def median_time(fn, repeats: int) -> float:
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def matmul_peak(dtype: str, n: int, repeats: int) -> float:
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
  f = jax.jit(lambda x: x @ x)
  return 2 * n ** 3 / median_time(lambda: f(a).block_until_ready(), repeats) / 1e12


def encoder_flops(cfg, *, tokens: int, length: int, train: bool) -> float:
  """Forward (x3 with the backward) FLOPs of the encoder over `tokens` in rows of `length`."""
  width = cfg.hidden_size
  per_token = cfg.num_layers * (2 * 4 * width * width + 2 * 2 * width * cfg.mlp_dim
                                + 4 * length * width)
  return per_token * tokens * (3 if train else 1)


def bench_encode(cfg, *, rows: int, length: int, repeats: int, peak: float) -> dict:
  import jax
  import numpy as np

  from gecko.models import dual_encoder, embedder
  module = dual_encoder.DualEncoder(backbone=cfg)
  params = embedder.init_params(module)
  ids = np.random.default_rng(0).integers(1000, 20000, (rows, length)).astype(np.int32)
  mask = np.ones_like(ids)
  apply = jax.jit(lambda p, i, m: module.apply({"params": p}, i, m))
  ids_d, mask_d = jax.device_put(ids), jax.device_put(mask)
  seconds = median_time(lambda: apply(params, ids_d, mask_d).block_until_ready(), repeats)
  flops = encoder_flops(cfg, tokens=rows * length, length=length, train=False)
  return {"case": f"encode {cfg.dtype} [{rows} x {length}]", "seconds": seconds,
          "texts_per_s": rows / seconds, "tflops": flops / seconds / 1e12,
          "mfu": flops / seconds / 1e12 / peak}


def bench_train(model, *, batch_size: int, query_length: int, passage_length: int,
                repeats: int, peak: float, name: str) -> dict:
  import jax
  import numpy as np

  from gecko.compile_step import model_flops
  from gecko.training import trainer
  from gecko.training.losses import GeckoLoss
  from gecko.training.optimizers import AdamW
  loss = GeckoLoss(temperature=0.05)
  program = trainer.build(model=model, loss=loss, optimizer=AdamW(learning_rate=1e-5,
                                                                   total_steps=1000),
                          batch_size=batch_size, mesh_axes={"data": 1})
  rng = np.random.default_rng(0)
  local = {k: (rng.integers(5, 1000, v.shape) if k.endswith("tokens") else np.ones(v.shape)
               ).astype(np.int32)
           for k, v in program.abstract_batch(loss, batch_size=batch_size,
                                              query_length=query_length,
                                              passage_length=passage_length).items()}
  batch = program.global_batch(local)
  holder = {"state": program.init_state(seed=0)}

  def step():
    holder["state"], metrics = program.step(holder["state"], batch)
    jax.block_until_ready(metrics)

  seconds = median_time(step, repeats)
  flops = model_flops(model, batch_size=batch_size,
                      lengths=(query_length, passage_length, passage_length))
  return {"case": f"train {name} batch {batch_size} ({query_length}/{passage_length})",
          "seconds": seconds, "pairs_per_s": batch_size / seconds,
          "tflops": flops / seconds / 1e12, "mfu": flops / seconds / 1e12 / peak}


def bench_torch(cfg, *, rows: int, length: int, batch_size: int, query_length: int,
                passage_length: int, repeats: int, peak: float) -> list[dict]:
  """The peer on the same GPU: transformers' BertModel (the module sentence-transformers
  wraps) with mean pooling, and a train step with MNRL's loss (scaled cosine, in-batch
  and hard negatives, cross-entropy) and AdamW, as sentence-transformers computes it."""
  import torch
  from transformers import BertConfig, BertModel

  if not torch.cuda.is_available():
    return [{"case": "torch", "skipped": "torch sees no CUDA device"}]
  config = BertConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                      num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                      intermediate_size=cfg.mlp_dim, max_position_embeddings=cfg.max_length,
                      attn_implementation="sdpa")
  model = BertModel(config).cuda()

  def embed(tokens):
    mask = torch.ones_like(tokens)
    states = model(input_ids=tokens, attention_mask=mask).last_hidden_state
    pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return torch.nn.functional.normalize(pooled, dim=-1)

  ids = torch.randint(1000, 20000, (rows, length), device="cuda")

  def forward():
    with torch.inference_mode():
      embed(ids)
    torch.cuda.synchronize()

  model.eval()
  out = []
  seconds = median_time(forward, repeats)
  flops = encoder_flops(cfg, tokens=rows * length, length=length, train=False)
  out.append({"case": f"torch encode fp32 [{rows} x {length}]", "seconds": seconds,
              "texts_per_s": rows / seconds, "tflops": flops / seconds / 1e12,
              "mfu": flops / seconds / 1e12 / peak})
  model.train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
  towers = [torch.randint(1000, 20000, (batch_size, n), device="cuda")
            for n in (query_length, passage_length, passage_length)]

  def step():
    q, p, n = (embed(t) for t in towers)
    scores = 20.0 * q @ torch.cat([p, n]).T
    loss = torch.nn.functional.cross_entropy(scores, torch.arange(batch_size, device="cuda"))
    loss.backward()
    opt.step()
    opt.zero_grad()
    torch.cuda.synchronize()

  seconds = median_time(step, repeats)
  flops = sum(encoder_flops(cfg, tokens=batch_size * n, length=n, train=True)
              for n in (query_length, passage_length, passage_length))
  out.append({"case": f"torch MNRL train fp32 batch {batch_size} ({query_length}/"
                      f"{passage_length})", "seconds": seconds,
              "pairs_per_s": batch_size / seconds, "tflops": flops / seconds / 1e12,
              "mfu": flops / seconds / 1e12 / peak})
  return out


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--json", required=True, help="where to write the figures")
  parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check on a CPU")
  parser.add_argument("--repeats", type=int, default=10)
  args = parser.parse_args()

  import jax

  from gecko.models import bert, dual_encoder, t5
  smoke = args.smoke
  minilm = bert.BertConfig(dropout_rate=0.1) if not smoke else bert.BertConfig(
      num_layers=1, hidden_size=64, num_heads=2, mlp_dim=128)
  xl = t5.T5Config.xl(dtype="bfloat16") if not smoke else t5.T5Config(
      vocab_size=512, hidden_size=64, num_layers=2, num_heads=2, head_dim=32, mlp_dim=128,
      dtype="bfloat16")
  n, rows, length = (256, 8, 32) if smoke else (8192, 1024, 256)
  batch, q_len, p_len = (4, 16, 32) if smoke else (256, 64, 256)
  report = {"devices": [str(d) for d in jax.devices()], "jax": jax.__version__, "rows": []}
  peaks = {"bfloat16": matmul_peak("bfloat16", n, args.repeats),
           "float32": matmul_peak("float32", n, args.repeats)}
  report["matmul_peak_tflops"] = peaks
  print(json.dumps(report), flush=True)

  def record(fn, **kwargs):
    try:
      rows_out = fn(**kwargs)
    except Exception as e:  # noqa: BLE001 - one failed case must not lose the others
      rows_out = [{"case": fn.__name__, "error": f"{type(e).__name__}: {e}",
                   "traceback": traceback.format_exc()[-2000:]}]
    for row in rows_out if isinstance(rows_out, list) else [rows_out]:
      report["rows"].append(row)
      print(json.dumps({k: v for k, v in row.items() if k != "traceback"}), flush=True)
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(report, f, indent=1)

  for dtype in ("float32", "bfloat16"):
    record(bench_encode, cfg=dataclasses.replace(minilm, dtype=dtype), rows=rows,
           length=length, repeats=args.repeats, peak=peaks[dtype])
  for dtype in ("float32", "bfloat16"):
    record(bench_train, model=dual_encoder.DualEncoder(
        backbone=dataclasses.replace(minilm, dtype=dtype)), batch_size=batch,
        query_length=q_len, passage_length=p_len, repeats=args.repeats, peak=peaks[dtype],
        name=f"MiniLM {dtype}")
  # The paper-scale model: the largest batch that fits, tried from the top.
  for xl_batch in ((64, 32, 16) if not smoke else (4,)):
    before = len(report["rows"])
    record(bench_train, model=dual_encoder.DualEncoder(backbone=xl, embed_dim=768 if not smoke
                                                       else 32, dims=(), remat=True),
           batch_size=xl_batch, query_length=q_len, passage_length=p_len,
           repeats=max(3, args.repeats // 3), peak=peaks["bfloat16"], name="gecko_1b bf16")
    if "error" not in report["rows"][before]:
      break
  record(bench_torch, cfg=minilm, rows=rows, length=length, batch_size=batch,
         query_length=q_len, passage_length=p_len, repeats=args.repeats,
         peak=peaks["float32"])
  return 0


if __name__ == "__main__":
  sys.exit(main())
