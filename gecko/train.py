r"""Train a Gecko dual encoder: `python -m gecko.train --gin_file=... --gin.X=Y`.

  python -m gecko.train \
    --gin_file=gin/models/minilm_l6.gin --gin_file=gin/runs/finetune.gin \
    --gin.MODEL_DIR="'/tmp/gecko_run'" --gin.TASK_DATA_DIR="'/data/gecko'" \
    --gin.TRAIN_STEPS=1000 --gin.BATCH_SIZE=64

`--gin_file` may be repeated (later files override earlier ones); `--gin.NAME=VALUE`
binds anything (strings need inner quotes). The operative config is written to
`MODEL_DIR/config.gin`. A run resumes from the latest checkpoint in MODEL_DIR.
On several hosts pass `--multihost` (TPU pods: coordinator found automatically) or
`--coordinator_address/--num_processes/--process_id`.

`train()` itself is a plain keyword-only function, callable without gin.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from gecko import checkpointing, gin_flags, partitioning, train_step
from gecko.losses import GeckoLoss
from gecko.models import embedder as embedder_lib
from gecko.models.dual_encoder import DualEncoder
from gecko.optimizers import AdamW
from gecko.pair_data import PairBatches
from gecko.seqio_data import SeqioBatches


class NonFiniteLossError(RuntimeError):
  """Too many consecutive non-finite steps."""


# Backbone fields a run chooses freely, whatever the checkpoint it starts from says.
RUN_TIME_FIELDS = ("dtype", "dropout_rate")


def _initial_params(model: DualEncoder, init_from: str, seed: int):
  """Params from a pretrained/saved model, random where it has nothing (e.g. the projection)."""
  loaded = embedder_lib.load(init_from)
  run_time = {f: getattr(model.backbone, f) for f in RUN_TIME_FIELDS}  # not the checkpoint's
  if dataclasses.replace(loaded.module.backbone, **run_time) != model.backbone:
    raise ValueError(f"init_from={init_from!r} has backbone {loaded.module.backbone}, but the "
                     f"configured model has {model.backbone}; use the matching model gin file.")
  params = embedder_lib.init_params(model, seed=seed)
  params["encoder"] = loaded.params["encoder"]
  if "projection" in params and "projection" in loaded.params:
    if loaded.params["projection"]["kernel"].shape == params["projection"]["kernel"].shape:
      params["projection"] = loaded.params["projection"]
  return params


def _global_batch(local: Mapping[str, np.ndarray], sharding) -> dict[str, jax.Array]:
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def _host_params(state) -> dict:
  """The full parameters as NumPy on every process (gathers FSDP/model shards)."""
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(state.params, tiled=True)


def _evaluate(eval_fn, model, state, tokenizer, model_dir: str, step: int) -> dict[str, float]:
  current = embedder_lib.Embedder(module=model, params=_host_params(state),
                                  tokenizer=tokenizer)
  results = eval_fn(checkpoint=current, output_dir=os.path.join(model_dir, "eval", str(step)),
                    model_name=f"step_{step}")
  return {f"eval/{task}/{dim}": scores["main_score"]
          for task, per_dim in results.items() for dim, scores in per_dim.items()}


def train(*, model: DualEncoder, loss: GeckoLoss, optimizer: AdamW,
          data_fn: Callable[..., PairBatches | SeqioBatches], model_dir: str, train_steps: int,
          tokenizer_from: str = "all-MiniLM-L6-v2", init_from: str | None = None,
          mesh_axes: Mapping[str, int] | None = None,
          additional_axis_rules: Sequence[tuple] = (), grad_cache_chunk: int | None = None,
          checkpoint_every: int = 1000, keep_checkpoints: int = 3, log_every: int = 50,
          max_nonfinite_steps: int = 5, seed: int = 0, export: bool = True,
          eval_every: int = 0, eval_fn: Callable[..., dict] | None = None) -> dict[str, float]:
  """Trains `model` with `loss`; returns the last logged metrics (averaged over the window).

  Args:
    model: The dual encoder (sizes, projection, Matryoshka dims).
    loss: The Gecko loss (Eq. 2 / Eq. 3 switches, temperature, MRL dims).
    optimizer: Optimiser and learning-rate schedule.
    data_fn: Builds the batch source given `tokenizer=, process_index=, process_count=`.
    model_dir: Checkpoints, TensorBoard events, metrics.jsonl, config.gin and the
      exported model.
    train_steps: Total steps (a resumed run continues up to this).
    tokenizer_from: Model whose tokenizer the data uses (a name or directory).
    init_from: Start from this model's weights (packaged name, Hugging Face directory,
      or the `export/` of an earlier stage); None for random initialisation.
    mesh_axes: e.g. {"data": -1, "fsdp": 1, "model": 1}.
    additional_axis_rules: Logical-axis rules taking precedence over the standard ones.
    grad_cache_chunk: Embed and back-propagate in chunks of this many examples
      (GradCache); None for the plain step.
    checkpoint_every, keep_checkpoints: Orbax checkpoint cadence and retention.
    log_every: Metric logging cadence (steps).
    max_nonfinite_steps: Abort after this many consecutive non-finite steps.
    seed: Parameter-init and dropout seed.
    export: Write the final model to `model_dir/export` (loadable by `gecko.encode`).
    eval_every: Evaluate every this many steps (0: never) with `eval_fn`.
    eval_fn: Called as `eval_fn(checkpoint=<Embedder>, output_dir=..., model_name=...)`
      returning {task: {dim: {"main_score": ...}}} (e.g. gin's
      `@train_eval/eval.evaluate`); main scores go to the same TensorBoard as
      `eval/<task>/<dim>`.
  """
  if train_steps < 1:
    raise ValueError(f"train_steps must be >= 1, got {train_steps}.")
  os.makedirs(model_dir, exist_ok=True)
  mesh = partitioning.make_mesh(mesh_axes)
  rules = partitioning.standard_logical_axis_rules(additional_axis_rules)
  tokenizer = embedder_lib.load(init_from or tokenizer_from).tokenizer
  data = data_fn(tokenizer=tokenizer, process_index=jax.process_index(),
                 process_count=jax.process_count())
  partitioning.check_batch_size(data.batch_size, mesh)
  loss.validate_features(data.feature_names)
  loss.check_dims(model.matryoshka_dims)
  if grad_cache_chunk and data.batch_size % grad_cache_chunk:
    raise ValueError(f"grad_cache_chunk={grad_cache_chunk} must divide the batch size "
                     f"{data.batch_size}.")
  tx = optimizer.transformation()
  schedule = optimizer.schedule()
  abstract, shardings = train_step.state_shardings(model, tx, mesh, rules)
  ckpt = checkpointing.Checkpointer(model_dir, every=checkpoint_every, keep=keep_checkpoints)
  if ckpt.latest_step is not None:
    state, meta = ckpt.restore(abstract)
    start = int(meta["step"])
    print(f"gecko.train: resuming from step {start} in {model_dir}", file=sys.stderr)
  else:
    params = _initial_params(model, init_from, seed) if init_from else None
    state = train_step.create_state(model, tx, shardings, seed=seed, params=params)
    start = 0
  gin_flags.write_operative_config(model_dir)
  step_fn = train_step.jit_train_step(
      train_step.make_train_step(model, loss, tx, grad_cache_chunk=grad_cache_chunk),
      shardings, mesh)
  batch_sharding = partitioning.batch_sharding(mesh)

  from clu import metric_writers  # TensorBoard (imports TensorFlow): training only
  writer = metric_writers.create_default_writer(model_dir, just_logging=jax.process_index() > 0)

  def log(step: int, scalars: dict[str, float]) -> None:  # TensorBoard + metrics.jsonl
    writer.write_scalars(step, scalars)
    if jax.process_index() == 0:
      with open(os.path.join(model_dir, "metrics.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": step, **scalars}) + "\n")

  last: dict[str, float] = {}
  window, window_start, window_steps = None, time.perf_counter(), 0
  bar = tqdm.tqdm(total=train_steps, initial=start, desc="train", unit="step",
                  disable=jax.process_index() > 0, file=sys.stderr)
  try:
    for step in range(start, train_steps):
      batch = _global_batch(data.batch(step), batch_sharding)
      state, metrics = step_fn(state, batch)
      window = metrics if window is None else jax.tree.map(jnp.add, window, metrics)
      window_steps += 1
      streak = int(state.nonfinite_streak)
      if streak >= max_nonfinite_steps:
        raise NonFiniteLossError(
            f"{streak} consecutive non-finite steps (last at step {step}); aborting. The last "
            f"checkpoint ({ckpt.latest_step}) is intact: lower the learning rate or check the data.")
      done = step + 1
      if done % log_every == 0 or done == train_steps:
        elapsed = time.perf_counter() - window_start
        last = {k: float(v) / window_steps for k, v in jax.device_get(window).items()}
        last.update(learning_rate=float(schedule(step)),
                    step_time=elapsed / window_steps,
                    examples_per_second=window_steps * data.batch_size / elapsed,
                    nonfinite_total=float(state.nonfinite_total))
        log(done, last)
        bar.set_postfix(loss=f"{last['loss']:.4f}")
        window, window_start, window_steps = None, time.perf_counter(), 0
      ckpt.save(done, state, {"step": done, "seed": seed})
      if eval_fn is not None and eval_every and (done % eval_every == 0 or done == train_steps):
        log(done, _evaluate(eval_fn, model, state, tokenizer, model_dir, done))
      bar.update(1)
    ckpt.save(train_steps, state, {"step": train_steps, "seed": seed}, force=True)
  finally:
    bar.close()
    writer.flush()
    ckpt.close()
    data.close()
  if export:
    embedder_lib.save(embedder_lib.Embedder(module=model, params=_host_params(state),
                                            tokenizer=tokenizer),
                      os.path.join(model_dir, "export"), overwrite=True)
  return last


def main(argv: Sequence[str]) -> int:
  return gin_flags.run(train, argv, prog="python -m gecko.train", doc=__doc__)


if __name__ == "__main__":
  from gecko import train as _train_module  # gin binds the importable module, not __main__
  sys.exit(_train_module.main(sys.argv[1:]))
