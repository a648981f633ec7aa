r"""Train a Gecko dual encoder: `python -m gecko.train --gin_file=... --gin.X=Y`.

  python -m gecko.train \
    --gin_file=gin/models/minilm_l6.gin --gin_file=gin/runs/finetune.gin \
    --gin_file=gin/data/seqio.gin \
    --gin.MODEL_DIR="'/tmp/gecko_run'" --gin.TASK_DATA_DIR="'/data/gecko'" \
    --gin.TRAIN_STEPS=1000 --gin.BATCH_SIZE=64

A run is a model file + a run file + a data file (+ sharding, overlays, ablations).
`--gin_file` may be repeated (later files override earlier ones); `--gin.NAME=VALUE`
binds anything (strings need inner quotes). The operative config is written to
`MODEL_DIR/config.gin`. A run resumes from the latest checkpoint in MODEL_DIR.
On several hosts pass `--multihost` (TPU pods: coordinator found automatically) or
`--coordinator_address/--num_processes/--process_id`.

`train()` itself is a plain keyword-only function, callable without gin.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence

import time

import jax
import tqdm

from gecko import gin_flags
from gecko.data import paths
from gecko.data.features import BatchSource, ResumableSource
from gecko.data.packaged_models import DEFAULT_MODEL
from gecko.models import embedder as embedder_lib
from gecko.models.dual_encoder import DualEncoder
from gecko.training import checkpointing, partitioning, trainer
from gecko.training import preemption as preemption_lib
from gecko.training.losses import GeckoLoss
from gecko.training.optimizers import AdamW


class NonFiniteLossError(RuntimeError):
  """Too many consecutive non-finite steps."""


def train(*, model: DualEncoder, loss: GeckoLoss, optimizer: AdamW,
          data_fn: Callable[..., BatchSource], model_dir: str, train_steps: int,
          tokenizer_from: str = DEFAULT_MODEL, init_from: str | None = None,
          mesh_axes: Mapping[str, int] | None = None,
          dcn_mesh_axes: Mapping[str, int] | None = None,
          additional_axis_rules: Sequence[tuple] = (), grad_cache_chunk: int | None = None,
          checkpoint_every: int = 1000, keep_checkpoints: int = 3, log_every: int = 50,
          max_nonfinite_steps: int = 5, seed: int = 0, export: bool = True,
          eval_every: int = 0, eval_fn: Callable[..., dict] | None = None) -> dict[str, float]:
  """Trains `model` with `loss`; returns the last logged metrics (averaged over the window).

  Args:
    model: The dual encoder (sizes, projection, Matryoshka dims).
    loss: The Gecko loss (Eq. 2 / Eq. 3 switches, temperature, MRL dims).
    optimizer: Optimiser and learning-rate schedule.
    data_fn: Builds the batch source (`gecko.data.features.BatchSource`) given
      `tokenizer=, shard_index=, shard_count=` (this process's input shard under the
      batch sharding, `gecko.training.partitioning.data_shard`).
    model_dir: Checkpoints, TensorBoard events, metrics.jsonl, config.gin and the
      exported model.
    train_steps: Total steps (a resumed run continues up to this).
    tokenizer_from: Model whose tokenizer the data uses (a name or directory).
    init_from: Start from this model's weights (packaged name, Hugging Face directory,
      or the `export/` of an earlier stage); None for random initialisation.
    mesh_axes: The mesh within a slice, e.g. {"data": -1, "fsdp": 1, "model": 1}.
    dcn_mesh_axes: The mesh across slices (multi-slice TPU), e.g. {"data": 2}.
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
  paths.check_output_dir(model_dir, init_from, tokenizer_from, flag="MODEL_DIR")
  if train_steps < 1:
    raise ValueError(f"train_steps must be >= 1, got {train_steps}.")
  paths.makedirs(model_dir)
  with contextlib.ExitStack() as cleanup:  # undone in reverse, whatever happens
    if jax.process_index() == 0:
      cleanup.enter_context(paths.locked(model_dir, what="MODEL_DIR"))
    source = embedder_lib.load(init_from) if init_from else None
    tokenizer = (source or embedder_lib.load(tokenizer_from)).tokenizer
    mesh = partitioning.make_mesh(mesh_axes, dcn_axes=dcn_mesh_axes)
    shard_index, shard_count = partitioning.data_shard(mesh)
    data = data_fn(tokenizer=tokenizer, shard_index=shard_index, shard_count=shard_count)
    cleanup.callback(data.close)  # tf.data's threads, left to interpreter exit, can hang it
    loss.validate_features(data.feature_names)
    program = trainer.build(model=model, loss=loss, optimizer=optimizer,
                            batch_size=data.batch_size, mesh=mesh,
                            additional_axis_rules=additional_axis_rules,
                            grad_cache_chunk=grad_cache_chunk)
    ckpt = checkpointing.Checkpointer(model_dir, every=checkpoint_every, keep=keep_checkpoints)
    cleanup.callback(ckpt.close)  # waits for the last write
    state, start = _start_state(program, ckpt, source, data, init_from=init_from, seed=seed,
                                train_steps=train_steps)
    gin_flags.write_operative_config(model_dir)
    log = cleanup.enter_context(contextlib.closing(_MetricsLog(model_dir)))
    preemption = cleanup.enter_context(contextlib.closing(preemption_lib.Preemption()))
    state, last, stopped = _loop(
        program, data, state, start=start, train_steps=train_steps, ckpt=ckpt, log=log,
        schedule=optimizer.schedule(), preemption=preemption, log_every=log_every,
        max_nonfinite_steps=max_nonfinite_steps, seed=seed,
        evaluate=(lambda state, done: _evaluate(eval_fn, model, state, tokenizer, model_dir, done))
        if eval_fn is not None and eval_every else None, eval_every=eval_every)
    if export and stopped is None:
      embedder_lib.save(embedder_lib.Embedder(module=model, params=trainer.host_params(state),
                                              tokenizer=tokenizer),
                        paths.join(model_dir, "export"), overwrite=True)
  if stopped is not None:  # said once the checkpoint is written (closing waits for it)
    print(f"gecko.train: preempted (SIGTERM); saved step {stopped} in {model_dir}; the same "
          "command resumes from it.", file=sys.stderr)
    return dict(last, preempted_at_step=stopped)
  return last


def _loop(program: trainer.ShardedTraining, data: BatchSource, state, *, start: int,
          train_steps: int, ckpt: checkpointing.Checkpointer, log: _MetricsLog, schedule,
          preemption, log_every: int, max_nonfinite_steps: int, seed: int, evaluate,
          eval_every: int):
  """Steps `start` to `train_steps`: (state, last logged metrics, the step saved on
  preemption or None). Nothing reads the device each step: the non-finite streak is
  read when metrics are logged and before a checkpoint is written."""
  window, last = trainer.MetricsWindow(), {}
  quiet, bar = jax.process_index() > 0, None
  try:
    for step in range(start, train_steps):
      if bar is None and not quiet:  # the first call traces and compiles: said as such
        print("gecko.train: compiling the train step ...", file=sys.stderr, flush=True)
      began = time.perf_counter()
      state, metrics = program.step(state, program.batch_at(data, step))
      if bar is None:  # the bar starts after compiling, not as 0% for its duration
        if not quiet:
          print(f"gecko.train: compiled in {time.perf_counter() - began:.1f} s", file=sys.stderr)
        bar = tqdm.tqdm(total=train_steps, initial=step, desc="train", unit="step",
                        disable=quiet, file=sys.stderr)
      window.add(metrics)
      done = step + 1
      if preemption.reached(done):
        _check_finite(state, step=step, limit=max_nonfinite_steps, last_checkpoint=ckpt.latest_step)
        ckpt.save(done, state, _meta(done, seed, data), position=_position(data, done),
                  force=True)
        return state, last, done
      if done % log_every == 0 or done == train_steps:
        _check_finite(state, step=step, limit=max_nonfinite_steps, last_checkpoint=ckpt.latest_step)
        last = dict(window.average(batch_size=data.batch_size),
                    learning_rate=float(schedule(step)),
                    nonfinite_total=float(state.nonfinite_total))
        log(done, last)
        bar.set_postfix(loss=f"{last['loss']:.4f}")
      if ckpt.due(done):
        _check_finite(state, step=step, limit=max_nonfinite_steps, last_checkpoint=ckpt.latest_step)
        ckpt.save(done, state, _meta(done, seed, data), position=_position(data, done))
      if evaluate is not None and (done % eval_every == 0 or done == train_steps):
        log(done, evaluate(state, done))
      bar.update(1)
    ckpt.save(train_steps, state, _meta(train_steps, seed, data),
              position=_position(data, train_steps), force=True)
  finally:
    if bar is not None:
      bar.close()
  return state, last, None


def _meta(step: int, seed: int, data: BatchSource) -> dict:
  return {"step": step, "seed": seed, "batch_size": data.batch_size}


def _position(data: BatchSource, step: int) -> Callable[[], bytes] | None:
  """The input's position before `step`, taken only if a checkpoint is written."""
  return (lambda: data.position(step)) if isinstance(data, ResumableSource) else None


def _start_state(program: trainer.ShardedTraining, ckpt: checkpointing.Checkpointer,
                 source: embedder_lib.Embedder | None, data: BatchSource, *,
                 init_from: str | None, seed: int, train_steps: int):
  """(state, first step): the latest checkpoint (and the input's position there), else
  `init_from`'s weights, else random. A run whose checkpoints are past `train_steps`,
  or were trained with another batch size, is refused before anything is written."""
  latest = ckpt.latest_step
  if latest is not None and latest > train_steps:
    raise ValueError(f"{ckpt.directory} is at step {latest}, past TRAIN_STEPS={train_steps}; "
                     "nothing would be trained, and its later checkpoints could be pruned. "
                     f"Raise TRAIN_STEPS above {latest} to train on, or use a new MODEL_DIR.")
  if latest is not None:  # before anything is read or written
    ckpt.check_shapes(program.abstract_state, latest)
    _check_config(ckpt.directory, step=latest)
  restored = ckpt.restore_latest(program.abstract_state)
  if restored is not None:
    state, meta = restored
    step = int(meta["step"])
    if meta.get("batch_size", data.batch_size) != data.batch_size:
      raise ValueError(f"step {step} in {ckpt.directory} was trained with batch size "
                       f"{meta['batch_size']}, and this run's is {data.batch_size}: the data "
                       "position would no longer match. Resume with BATCH_SIZE="
                       f"{meta['batch_size']}, or use a new MODEL_DIR.")
    print(f"gecko.train: resuming from step {step} in {ckpt.directory}", file=sys.stderr)
    position = ckpt.position(step) if isinstance(data, ResumableSource) else None
    if position is not None:
      data.seek(step, position)
    return state, step
  params = (trainer.initial_params(program.model, source, name=init_from, seed=seed)
            if source is not None else None)
  return program.init_state(seed=seed, params=params), 0


def _check_config(model_dir: str, *, step: int) -> None:
  """Compares the run's settings with the `config.gin` its checkpoints were trained
  with: a changed loss is refused (the checkpoints would mean another objective), any
  other change (learning rate, schedule, steps, data) is said in one line."""
  changes = gin_flags.config_changes(model_dir)
  if not changes:
    return
  said = lambda names: "; ".join(f"{n} {changes[n][0]} -> {changes[n][1]}" for n in names)  # noqa: E731
  loss = [n for n in changes if n.split("/")[-1].startswith(("losses.GeckoLoss.", "GeckoLoss."))]
  if loss:
    raise ValueError(f"the loss changed since {model_dir} was trained ({said(loss)}): resume with "
                     "the settings in its config.gin, or give this run a new MODEL_DIR.")
  macros = {changes[n] for n in changes if n.isupper()}  # a changed macro, said once
  names = [n for n in changes if n.isupper() or changes[n] not in macros]
  print(f"gecko.train: settings changed since step {step}: {said(names)}.", file=sys.stderr)


def _check_finite(state, *, step: int, limit: int, last_checkpoint: int | None) -> None:
  streak = int(state.nonfinite_streak)
  if streak >= limit:
    raise NonFiniteLossError(
        f"{streak} consecutive non-finite steps (last at step {step}); aborting. The last "
        f"checkpoint ({last_checkpoint}) is intact: lower the learning rate or check the data.")


class _MetricsLog:
  """Writes scalars to TensorBoard and (process 0) `MODEL_DIR/metrics.jsonl`; for a
  bucket MODEL_DIR both are written locally and copied up after every write."""

  def __init__(self, model_dir: str):
    from clu import metric_writers  # TensorBoard (imports TensorFlow): training only
    self._primary = jax.process_index() == 0
    self._mirror = paths.Mirror(model_dir)
    self._writer = metric_writers.create_default_writer(self._mirror.root,
                                                        just_logging=not self._primary)
    self._path = self._mirror.local("metrics.jsonl", fetch=self._primary)

  def __call__(self, step: int, scalars: dict[str, float]) -> None:
    self._writer.write_scalars(step, scalars)
    if self._primary:  # JSON has no NaN: a non-finite value is written as null
      row = {k: v if math.isfinite(v) else None for k, v in scalars.items()}
      with open(self._path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": step, **row}, allow_nan=False) + "\n")
      self._writer.flush()
      self._mirror.push()

  def close(self) -> None:
    self._writer.flush()
    if self._primary:
      self._mirror.push()


def _evaluate(eval_fn, model, state, tokenizer, model_dir: str, step: int) -> dict[str, float]:
  current = embedder_lib.Embedder(module=model, params=trainer.host_params(state),
                                  tokenizer=tokenizer)
  results = eval_fn(checkpoint=current, output_dir=paths.join(model_dir, "eval", str(step)),
                    model_name=f"step_{step}")
  return {f"eval/{task}/{dim}": scores["main_score"]
          for task, per_dim in results.items() for dim, scores in per_dim.items()}


def main(argv: Sequence[str]) -> int:
  return gin_flags.run(train, argv, prog="python -m gecko.train", doc=__doc__,
                       expected=(NonFiniteLossError, checkpointing.CheckpointError,
                                 paths.FolderInUseError, FileNotFoundError, ValueError))


if __name__ == "__main__":
  from gecko import (
    train as _train_module,  # gin binds the importable module, not __main__
  )
  sys.exit(_train_module.main(sys.argv[1:]))
