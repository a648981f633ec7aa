"""GPU figures, one prepared run (benchmarks/gpu.sh): MiniLM encode and train step and the
1.2B train step, ours in JAX against the torch model sentence-transformers wraps, each
with MFU against the chip's own measured matmul peak.

  python3 benchmarks/gpu_step.py --part=jax   --json OUT/jax.json   [--smoke]
  python3 benchmarks/gpu_step.py --part=torch --json OUT/torch.json [--smoke]
  python3 benchmarks/gpu_step.py --part=report --json OUT/gpu.json OUT/jax.json OUT/torch.json

The two frameworks run in separate processes, so neither holds memory the other needs
(JAX's preallocation is off as well). The same matmul precision is set on both sides
and printed with every row: strict IEEE float32 for the float32 rows
(`jax_default_matmul_precision=highest`; torch `allow_tf32=False`), bfloat16 operands
with float32 accumulation for the bfloat16 rows. Weights are random (speed does not
depend on them, and the GPU machine reaches no hub); the sizes are MiniLM-L6's and
T5 v1.1 XL's. Each figure is the median of `--repeats` timed calls after a warm-up.
MFU = model FLOPs / time / peak, the peak being the best matmul rate of that precision
measured in this run by either framework. `--smoke` shrinks every size so that a CPU
runs the script (CI does). The JAX part imports only what the GPU machine's image has:
no gin, seqio, clu or TensorFlow (checked at the end of the part).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Modules the GPU image lacks; the JAX part must not need them.
NOT_ON_THE_IMAGE = ("gin", "seqio", "clu", "tensorflow")
PRECISION = {"float32": "strict float32 (no TF32)", "bfloat16": "bf16 operands, f32 accumulate"}


@dataclasses.dataclass(frozen=True)
class Sizes:
  """Problem sizes: `full` on the GPU, `smoke` on a CPU."""
  peak_n: int
  encode_rows: int
  encode_length: int
  batch: int
  query_length: int
  passage_length: int
  xl_batch: int

  @classmethod
  def get(cls, smoke: bool) -> Sizes:
    if smoke:
      return cls(peak_n=256, encode_rows=8, encode_length=32, batch=4, query_length=16,
                 passage_length=32, xl_batch=4)
    return cls(peak_n=8192, encode_rows=1024, encode_length=256, batch=256, query_length=64,
               passage_length=256, xl_batch=128)


def median_time(fn, repeats: int) -> float:
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def encoder_flops(cfg, *, tokens: int, length: int, train: bool) -> float:
  """Forward (x3 with the backward) FLOPs of the encoder over `tokens` in rows of `length`."""
  width, heads_width = cfg.hidden_size, cfg.num_heads * cfg.head_dim
  per_token = cfg.num_layers * (2 * 4 * width * heads_width + 2 * 2 * width * cfg.mlp_dim
                                + 4 * length * heads_width)
  return per_token * tokens * (3 if train else 1)


def _row(case: str, dtype: str, seconds: float, flops: float, peaks: dict, **extra) -> dict:
  tflops = flops / seconds / 1e12
  return {"case": case, "dtype": dtype, "precision": PRECISION[dtype], "seconds": seconds,
          **extra, "tflops": tflops, "mfu": tflops / peaks[dtype] if peaks.get(dtype) else None}


def minilm_and_xl(smoke: bool):
  from gecko.models import bert, t5
  minilm = bert.BertConfig(dropout_rate=0.1) if not smoke else bert.BertConfig(
      num_layers=1, hidden_size=64, num_heads=2, mlp_dim=128, dropout_rate=0.1)
  xl = t5.T5Config.xl(dtype="bfloat16") if not smoke else t5.T5Config(
      vocab_size=512, hidden_size=64, num_layers=2, num_heads=2, head_dim=32, mlp_dim=128,
      dtype="bfloat16")
  return minilm, xl


# ---------------------------------------------------------------------------- JAX part


@contextlib.contextmanager
def jax_precision(dtype: str):
  import jax
  with jax.default_matmul_precision("highest" if dtype == "float32" else "default"):
    yield


def jax_matmul_peak(dtype: str, n: int, repeats: int) -> float:
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
  with jax_precision(dtype):
    f = jax.jit(lambda x: x @ x)
    return 2 * n ** 3 / median_time(lambda: f(a).block_until_ready(), repeats) / 1e12


def jax_encode_case(cfg, sizes: Sizes):
  """The encode case: the dual encoder, its random parameters, and `[rows x length]` ids
  and mask (every token real) on the device."""
  import jax
  import numpy as np

  from gecko.models import dual_encoder, embedder
  module = dual_encoder.DualEncoder(backbone=cfg)
  rows, length = sizes.encode_rows, sizes.encode_length
  ids = np.random.default_rng(0).integers(1000, 20000, (rows, length)).astype(np.int32)
  return (module, embedder.init_params(module), jax.device_put(ids),
          jax.device_put(np.ones((rows, length), np.int32)))


def jax_encode(cfg, *, sizes: Sizes, repeats: int, peaks: dict) -> dict:
  import jax
  module, params, ids, mask = jax_encode_case(cfg, sizes)
  rows, length = sizes.encode_rows, sizes.encode_length
  with jax_precision(cfg.dtype):
    apply = jax.jit(lambda p, i, m: module.apply({"params": p}, i, m))
    seconds = median_time(lambda: apply(params, ids, mask).block_until_ready(), repeats)
  flops = encoder_flops(cfg, tokens=rows * length, length=length, train=False)
  return _row(f"jax encode MiniLM [{rows} x {length}] attention={cfg.attention}", cfg.dtype,
              seconds, flops, peaks, texts_per_s=rows / seconds)


def jax_train(model, *, name: str, batch_size: int, sizes: Sizes, repeats: int,
              peaks: dict) -> dict:
  import jax
  import numpy as np

  from gecko.compile_step import model_flops
  from gecko.training import trainer
  from gecko.training.losses import GeckoLoss
  from gecko.training.optimizers import AdamW
  loss = GeckoLoss(temperature=0.05)
  dtype = model.backbone.dtype
  with jax_precision(dtype):
    program = trainer.build(model=model, loss=loss, batch_size=batch_size, mesh_axes={"data": 1},
                            optimizer=AdamW(learning_rate=1e-5, total_steps=1000))
    rng = np.random.default_rng(0)
    local = {k: (rng.integers(5, 1000, v.shape) if k.endswith("tokens") else np.ones(v.shape)
                 ).astype(np.int32)
             for k, v in program.abstract_batch(loss, batch_size=batch_size,
                                                query_length=sizes.query_length,
                                                passage_length=sizes.passage_length).items()}
    batch = program.global_batch(local)
    holder = {"state": program.init_state(seed=0)}

    def step():
      holder["state"], metrics = program.step(holder["state"], batch)
      jax.block_until_ready(metrics)

    seconds = median_time(step, repeats)
  flops = model_flops(model, batch_size=batch_size,
                      lengths=(sizes.query_length, sizes.passage_length, sizes.passage_length))
  cfg = model.backbone
  return _row(f"jax train {name} batch {batch_size} ({sizes.query_length}/"
              f"{sizes.passage_length}) attention={cfg.attention}, attention dropout "
              f"{cfg.attention_dropout}", dtype, seconds, flops, peaks,
              pairs_per_s=batch_size / seconds)


def jax_part(args, sizes: Sizes) -> int:
  import jax

  from gecko.models import dual_encoder
  minilm, xl = minilm_and_xl(args.smoke)
  report = {"framework": "jax", "jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
            "rows": []}
  peaks = {d: jax_matmul_peak(d, sizes.peak_n, args.repeats) for d in ("bfloat16", "float32")}
  report["matmul_peak_tflops"] = peaks
  cases = []
  for attention in ("reference", "auto"):  # auto: cuDNN's fused attention on a GPU
    for dtype in ("float32", "bfloat16"):
      if attention == "auto" and dtype == "float32":
        continue  # cuDNN takes bf16/fp16 only
      cfg = dataclasses.replace(minilm, dtype=dtype, attention=attention)
      cases.append((jax_encode, dict(cfg=cfg)))
  for attention in ("auto", "reference"):  # the paper-scale model, fused attention or not
    cfg = dataclasses.replace(xl, attention=attention, attention_dropout_rate=0.0)
    model = dual_encoder.DualEncoder(backbone=cfg, embed_dim=768 if not args.smoke else 32,
                                     dims=(), remat=True)
    cases.append((jax_train, dict(model=model, name="gecko_1b bf16", batch_size=sizes.xl_batch,
                                  repeats=max(3, args.repeats // 3))))
  for dtype, attention_dropout in (("float32", None), ("bfloat16", None), ("bfloat16", 0.0)):
    cfg = dataclasses.replace(minilm, dtype=dtype, attention_dropout_rate=attention_dropout)
    cases.append((jax_train, dict(model=dual_encoder.DualEncoder(backbone=cfg),
                                  name=f"MiniLM {dtype}", batch_size=sizes.batch)))
  for fn, kwargs in cases:
    kwargs = {"sizes": sizes, "repeats": args.repeats, "peaks": peaks, **kwargs}
    record(report, args.json, fn, only=args.only, **kwargs)
  return finish_jax_report(report, args.json, "gpu_step")


def finish_jax_report(report: dict, path: str, who: str) -> int:
  """Records the modules imported that the GPU image lacks and writes the report; 1 if any."""
  leaked = [m for m in NOT_ON_THE_IMAGE if m in sys.modules]
  report["imports_not_on_the_image"] = leaked
  write(report, path)
  if leaked:
    print(f"{who}: the JAX part imported {leaked}, which the GPU image lacks", file=sys.stderr)
    return 1
  return 0


# -------------------------------------------------------------------------- torch part


def torch_precision(dtype: str) -> None:
  import torch
  strict = dtype == "float32"
  torch.backends.cuda.matmul.allow_tf32 = not strict
  torch.backends.cudnn.allow_tf32 = not strict
  torch.set_float32_matmul_precision("highest" if strict else "high")


def torch_sync() -> None:
  import torch
  if torch.cuda.is_available():
    torch.cuda.synchronize()


def torch_matmul_peak(dtype: str, n: int, repeats: int, device: str) -> float:
  import torch
  torch_precision(dtype)
  a = torch.randn(n, n, device=device).to(getattr(torch, dtype))

  def run():
    a @ a
    torch_sync()

  return 2 * n ** 3 / median_time(run, repeats) / 1e12


def torch_bert(cfg, device: str):
  from transformers import BertConfig, BertModel
  config = BertConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                      num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                      intermediate_size=cfg.mlp_dim, max_position_embeddings=cfg.max_length,
                      attn_implementation="sdpa")
  return BertModel(config).to(device)


def torch_embed(model, tokens):
  import torch
  mask = torch.ones_like(tokens)
  states = model(input_ids=tokens, attention_mask=mask).last_hidden_state
  pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
  return torch.nn.functional.normalize(pooled.float(), dim=-1)


def torch_encode_case(cfg, *, dtype: str, sizes: Sizes, device: str):
  """The encode case in torch: a call that embeds `[rows x length]` ids and waits."""
  import torch
  torch_precision(dtype)
  model = torch_bert(cfg, device).to(getattr(torch, dtype)).eval()
  ids = torch.randint(1000, 20000, (sizes.encode_rows, sizes.encode_length), device=device)

  def forward():
    with torch.inference_mode():
      torch_embed(model, ids)
    torch_sync()

  return forward


def torch_encode(cfg, *, dtype: str, sizes: Sizes, repeats: int, peaks: dict, device: str):
  rows, length = sizes.encode_rows, sizes.encode_length
  seconds = median_time(torch_encode_case(cfg, dtype=dtype, sizes=sizes, device=device), repeats)
  flops = encoder_flops(cfg, tokens=rows * length, length=length, train=False)
  return _row(f"torch encode MiniLM [{rows} x {length}] sdpa", dtype, seconds, flops, peaks,
              texts_per_s=rows / seconds)


def torch_train(cfg, *, dtype: str, sizes: Sizes, repeats: int, peaks: dict, device: str):
  """sentence-transformers' MultipleNegativesRankingLoss step: scaled cosine over
  in-batch and hard negatives, cross-entropy, AdamW (bf16 through autocast, float32
  weights, as our bf16 step keeps float32 parameters)."""
  import torch
  torch_precision(dtype)
  model = torch_bert(cfg, device).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
  batch = sizes.batch
  towers = [torch.randint(1000, 20000, (batch, n), device=device)
            for n in (sizes.query_length, sizes.passage_length, sizes.passage_length)]
  autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16,
                            enabled=dtype == "bfloat16")

  def step():
    with autocast:
      q, p, n = (torch_embed(model, t) for t in towers)
      scores = 20.0 * q @ torch.cat([p, n]).T
      loss = torch.nn.functional.cross_entropy(scores, torch.arange(batch, device=device))
    loss.backward()
    opt.step()
    opt.zero_grad()
    torch_sync()

  seconds = median_time(step, repeats)
  flops = sum(encoder_flops(cfg, tokens=batch * n, length=n, train=True)
              for n in (sizes.query_length, sizes.passage_length, sizes.passage_length))
  return _row(f"torch MNRL train MiniLM batch {batch} ({sizes.query_length}/"
              f"{sizes.passage_length})", dtype, seconds, flops, peaks,
              pairs_per_s=batch / seconds)


def torch_part(args, sizes: Sizes) -> int:
  import torch
  device = "cuda" if torch.cuda.is_available() else "cpu"
  if device == "cpu" and not args.smoke:
    write({"framework": "torch", "rows": [], "skipped": "torch sees no CUDA device"}, args.json)
    return 1
  minilm, _ = minilm_and_xl(args.smoke)
  report = {"framework": "torch", "torch": torch.__version__, "device": device, "rows": []}
  peaks = {d: torch_matmul_peak(d, sizes.peak_n, args.repeats, device)
           for d in ("bfloat16", "float32")}
  report["matmul_peak_tflops"] = peaks
  for dtype in ("float32", "bfloat16"):
    record(report, args.json, torch_encode, only=args.only, cfg=minilm, dtype=dtype, sizes=sizes,
           repeats=args.repeats, peaks=peaks, device=device)
  for dtype in ("float32", "bfloat16"):
    record(report, args.json, torch_train, only=args.only, cfg=minilm, dtype=dtype, sizes=sizes,
           repeats=args.repeats, peaks=peaks, device=device)
  return 0


# ------------------------------------------------------------------------------ report


def write(report: dict, path: str) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1)


def record(report: dict, path: str, fn, *, only: str = "", **kwargs) -> None:
  """Runs one case (if its name holds `only`); a failure is recorded as the case's error
  and the others still run. `wall_s` is the case's whole time, compiles included."""
  settings = repr({k: v for k, v in kwargs.items() if k not in ("peaks", "sizes", "repeats")})
  if only and only not in settings and only not in fn.__name__:
    return
  start = time.perf_counter()
  print(f"gpu_step: {fn.__name__} {kwargs.get('name') or kwargs.get('cfg', '')!s:.100}",
        file=sys.stderr, flush=True)
  try:
    row = dict(fn(**kwargs), wall_s=round(time.perf_counter() - start, 1))
  except Exception as e:  # noqa: BLE001 - one failed case must not lose the others
    row = {"case": f"{fn.__name__} {kwargs.get('name', '')}".strip(),
           "error": f"{type(e).__name__}: {str(e)[:500]}",
           "traceback": traceback.format_exc()[-2000:]}
  report["rows"].append(row)
  print(json.dumps({k: v for k, v in row.items() if k != "traceback"}), flush=True)
  write(report, path)


def report_part(args, parts: list[str]) -> int:
  """Merges the parts: the chip's peak per precision is the best either measured, every
  MFU is recomputed against it, and each JAX row gets its ratio to the torch row of the
  same kind and dtype."""
  loaded = [json.load(open(p, encoding="utf-8")) for p in parts]
  peaks = {d: max(part.get("matmul_peak_tflops", {}).get(d, 0.0) for part in loaded)
           for d in ("bfloat16", "float32")}
  rows = [row for part in loaded for row in part["rows"]]
  for row in rows:
    if "tflops" in row:
      row["mfu"] = row["tflops"] / peaks[row["dtype"]]
  for row in rows:
    if row.get("case", "").startswith("jax") and "seconds" in row:
      kind = "encode" if " encode " in row["case"] else "train"
      peer = next((r for r in rows if r.get("case", "").startswith("torch") and kind in r["case"]
                   and "MiniLM" in row["case"] and r.get("dtype") == row["dtype"]
                   and "seconds" in r), None)
      if peer:
        row["ratio_vs_torch"] = peer["seconds"] / row["seconds"]
  merged = {"parts": [{k: v for k, v in p.items() if k != "rows"} for p in loaded],
            "matmul_peak_tflops": peaks, "rows": rows}
  write(merged, args.json)
  print(f"{'case':<92} {'dtype':<9} {'ms':>9} {'TFLOP/s':>8} {'MFU':>6} {'vs torch':>8}")
  for row in rows:
    if "seconds" not in row:
      print(f"{row.get('case', '?'):<92} {row.get('error') or row.get('skipped')}")
      continue
    ratio = f"{row['ratio_vs_torch']:.2f}x" if "ratio_vs_torch" in row else ""
    print(f"{row['case']:<92} {row['dtype']:<9} {row['seconds'] * 1e3:9.2f} "
          f"{row['tflops']:8.1f} {row['mfu']:6.1%} {ratio:>8}")
  print(f"matmul peaks (TFLOP/s): {json.dumps(peaks)}; precision: {json.dumps(PRECISION)}")
  return 0


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--part", choices=("jax", "torch", "report"), required=True)
  parser.add_argument("--json", required=True, help="where to write this part's figures")
  parser.add_argument("parts", nargs="*", help="with --part=report: the parts' JSON files")
  parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check on a CPU")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--only", default="", help="run only the cases whose settings hold this")
  args = parser.parse_args()
  sizes = Sizes.get(args.smoke)
  if args.part == "report":
    if not args.parts:
      parser.error("--part=report needs the parts' JSON files")
    return report_part(args, args.parts)
  return jax_part(args, sizes) if args.part == "jax" else torch_part(args, sizes)


if __name__ == "__main__":
  sys.exit(main())
