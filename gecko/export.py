r"""Export a model as a sentence-transformers / Hugging Face directory.

  python -m gecko.export --model /runs/gecko_ft --output /tmp/gecko-ft-st
  python -m gecko.export --model /runs/gecko_ft --step 4000 --output /tmp/gecko-ft-4000 \
      --eval_dir /tmp/eval/ft            # the evaluation results go into the model card
  python -m gecko.export --model all-MiniLM-L6-v2 --output /tmp/minilm-st

MODEL is anything `gecko.models.embedder.load` accepts (a packaged name, a Hugging Face
or sentence-transformers directory, a saved model such as a run's `MODEL_DIR/export`),
or a training MODEL_DIR: its latest checkpoint (or `--step`) is restored on this host's
first device, whatever mesh wrote it (an FSDP run on a TPU pod included), with the
model, loss and optimiser rebuilt from `MODEL_DIR/config.gin`.

The directory loads with `SentenceTransformer(DIR)` and `transformers.AutoModel` and no
custom code (layout: `gecko.models.hf_directory`): safetensors weights (never pickle), the
tokenizer, mean pooling, the projection as a bias-free `2_Dense`, Gecko's input format as
named prompts, the Matryoshka dims, and a model card. A non-empty OUTPUT is refused
without `--overwrite`, and so is one that is, contains or lies inside an input; the
new directory replaces the old one whole (written beside it, then renamed), so an
interruption never leaves half of either. MODEL and OUTPUT may be bucket URLs (gs://).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from gecko import gin_flags
from gecko.data import paths
from gecko.data.packaged_models import DEFAULT_MODEL
from gecko.models import embedder as embedder_lib
from gecko.models import hf_directory


def restore_run(model_dir: str, *, step: int | None = None, tokenizer: str | None = None
                ) -> tuple[embedder_lib.Embedder, int, dict]:
  """(model, step, run bindings) from a training MODEL_DIR's checkpoint, on one device.

  The run's model, loss and optimiser come from its `config.gin` (the optimiser state's
  structure is needed to read the checkpoint); the tokenizer from `tokenizer`, else the
  run's `export/`, else its `init_from` / `tokenizer_from`.
  """
  import gin
  import jax

  from gecko import gin_flags, train
  from gecko.training import checkpointing, trainer
  try:
    gin_flags.configure([paths.local_copy(paths.join(model_dir, "config.gin"))], [])
    bindings = gin.get_bindings(train.train)
  except Exception as e:  # gin_flags.ConfigError, or a binding gin cannot build
    raise ValueError(f"{paths.join(model_dir, 'config.gin')} (the run's settings, which rebuild "
                     f"its model) cannot be read: {str(e).splitlines()[0]}. Restore it from "
                     "a copy of the run, or fix the line it names.") from None
  finally:
    gin.clear_config()
  model, loss, optimizer = bindings["model"], bindings["loss"], bindings["optimizer"]
  ckpt = checkpointing.Checkpointer(model_dir, every=1, keep=1 << 30)  # never prunes
  try:
    steps = ckpt.steps()
    step = steps[-1] if step is None and steps else step
    if step not in steps:
      raise ValueError(f"{model_dir} has no checkpoint at step {step}; it has {steps}.")
    program = trainer.build(model=model, loss=loss, optimizer=optimizer, batch_size=1,
                            mesh_axes={"data": 1})
    state, _ = ckpt.restore(program.abstract_state, step)
  finally:
    ckpt.close()
  params = jax.device_get(state.params)
  exported = paths.join(model_dir, "export")
  source = tokenizer or (exported if paths.isdir(exported) else
                         bindings.get("init_from") or bindings.get("tokenizer_from")
                         or DEFAULT_MODEL)
  return (embedder_lib.Embedder(module=model, params=params,
                                tokenizer=embedder_lib.load(source).tokenizer), step, bindings)


def _training_summary(model_dir: str, step: int) -> str:
  """The run's macros (its `config.gin` settings in brief) and the exported step."""
  macros = [line for line in paths.read_text(paths.join(model_dir, "config.gin")).splitlines()
            if line and line[0].isupper() and " = " in line and not line.startswith("MODEL_DIR")]
  return "\n".join([f"step {step} of {os.path.basename(os.path.normpath(model_dir))}", *macros])


def export(*, model: str, output: str, step: int | None = None, eval_dir: str | None = None,
           tokenizer: str | None = None, overwrite: bool = False,
           default_prompt_name: str | None = None, name: str | None = None) -> str:
  """Writes `model` as a sentence-transformers directory at `output`; returns it.

  Args:
    model: A model `embedder.load` accepts, or a training MODEL_DIR.
    output: The directory to write (refused when not empty, unless `overwrite`).
    step: With a MODEL_DIR, the checkpoint to export (default: the latest).
    eval_dir: A `gecko.eval` OUTPUT_DIR whose results.md goes into the model card.
    tokenizer: With a MODEL_DIR, where the tokenizer comes from (default: the run's).
    overwrite: Replace a non-empty `output`.
    default_prompt_name: A prompt `encode` applies when given none (default: none).
    name: The model card's title (default: the output directory's name).
  """
  paths.check_apart(output, model, eval_dir, tokenizer)
  hf_directory.check_output(output, overwrite=overwrite)  # before a checkpoint is restored
  results = None
  if eval_dir is not None:
    path = paths.join(eval_dir, "results.md")
    if not paths.exists(path):
      raise FileNotFoundError(f"--eval_dir {eval_dir!r} has no results.md (a gecko.eval "
                              "OUTPUT_DIR has one).")
    results = paths.read_text(path)
  if paths.is_run_dir(model):
    embedder, step, bindings = restore_run(model, step=step, tokenizer=tokenizer)
    base, training = bindings.get("init_from"), _training_summary(model, step)
  else:
    if step is not None:
      raise ValueError(f"--step applies to a training MODEL_DIR; {model!r} is not one "
                       "(it has no checkpoints/ and config.gin).")
    embedder, base, training = embedder_lib.load(model), model, None
  card = hf_directory.model_card(
      embedder, named_prompts=hf_directory.prompts(), base_model=base, training=training,
      results=results, name=name or os.path.basename(os.path.normpath(output)))
  return hf_directory.save_hf(embedder, output, overwrite=overwrite, card=card,
                            default_prompt_name=default_prompt_name)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m gecko.export", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", required=True,
                      help="a packaged name, a model directory, or a training MODEL_DIR")
  parser.add_argument("--output", required=True, help="the directory to write")
  parser.add_argument("--step", type=int, default=None,
                      help="with a MODEL_DIR: the checkpoint step (default: the latest)")
  parser.add_argument("--eval_dir", default=None,
                      help="a gecko.eval OUTPUT_DIR: its results.md goes into the model card")
  parser.add_argument("--tokenizer", default=None,
                      help="with a MODEL_DIR: the model whose tokenizer to ship (default: the "
                           "run's export/, else its init_from)")
  parser.add_argument("--default_prompt", default=None, choices=sorted(hf_directory.prompts()),
                      help="a prompt applied when encode() is given none (default: none)")
  parser.add_argument("--name", default=None, help="the model card's title")
  parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
  args = parser.parse_args(argv)
  return gin_flags.run_plain(
      export, prog="gecko.export", success="gecko.export: wrote {0} (SentenceTransformer('{0}') "
      "loads it)", model=args.model, output=args.output, step=args.step,
      eval_dir=args.eval_dir, tokenizer=args.tokenizer, overwrite=args.overwrite,
      default_prompt_name=args.default_prompt, name=args.name)


if __name__ == "__main__":
  sys.exit(main())
