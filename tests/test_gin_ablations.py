"""Gin: each ablation file changes exactly the bindings it says (the operative config
once the loss and the SeqIO batches are built), and the experiment files compose a
model and a run."""

import gecko_tasks  # noqa: F401  (registers the tasks the data files name)
import pytest

from gecko.data.seqio_batches import SeqioBatches

ABLATIONS = {
    "no_same_tower": ({"losses.GeckoLoss.same_tower_negatives = False"},
                      {"losses.GeckoLoss.same_tower_negatives = True"}),
    "false_negative_margin": ({"losses.GeckoLoss.false_negative_margin = 0.1"},
                              {"losses.GeckoLoss.false_negative_margin = None"}),
    "no_hard_negative": ({"losses.GeckoLoss.hard_negatives = False"},
                         {"losses.GeckoLoss.hard_negatives = True"}),
    "fret_seed_positive": ({"seqio_batches.SeqioBatches.fret_positive = 'seed'"},
                           {"seqio_batches.SeqioBatches.fret_positive = 'llm'"}),
    "fret_only": ({"MIXTURE_OR_TASK_NAME = 'gecko_fret_only'"},
                  {"MIXTURE_OR_TASK_NAME = 'gecko_finetune'"}),
    "distill_margin_mse": ({"losses.GeckoLoss.distillation = 'margin_mse'",
                            "losses.GeckoLoss.teacher_scale = 0.01"},
                           {"losses.GeckoLoss.distillation = None",
                            "losses.GeckoLoss.teacher_scale = 1.0"}),
    "distill_listwise_kl": ({"losses.GeckoLoss.distillation = 'listwise_kl'"},
                            {"losses.GeckoLoss.distillation = None"}),
    "distill_candidates": ({"losses.GeckoLoss.distillation = 'listwise_kl'",
                            "losses.GeckoLoss.distill_over = 'candidates'"},
                           {"losses.GeckoLoss.distillation = None",
                            "losses.GeckoLoss.distill_over = 'pair'"}),
    "no_mrl": ({"losses.GeckoLoss.dims = ()"},
               {"losses.GeckoLoss.dims = %MATRYOSHKA_DIMS", "MATRYOSHKA_DIMS = (16, 64)"}),
    "plain_format": ({"seqio_batches.SeqioBatches.input_format = @input_format.InputFormat()",
                      "input_format.InputFormat.query_template = '{task} {text}'",
                      "input_format.InputFormat.document_template = '{title} {text}'",
                      "input_format.InputFormat.empty_title = ''"}, set()),
}


def _operative_bindings(files, tokenizer) -> set[str]:
  """The operative config's binding lines once the loss and the data are built."""
  import gin

  from gecko import gin_flags
  from gecko.training.losses import GeckoLoss
  gin.clear_config()
  try:
    gin_flags.configure(files, ["MODEL_DIR = '/tmp/unused'", "TASK_DATA_DIR = '/tmp/unused'",
                                "TRAIN_STEPS = 1"])
    gin.get_configurable(GeckoLoss)()
    gin.get_configurable(SeqioBatches)(tokenizer=tokenizer)
    lines = gin.operative_config_str().splitlines()
  finally:
    gin.clear_config()
  return {line for line in lines if " = " in line and not line.startswith(("#", "from"))}


@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
def test_each_ablation_changes_exactly_what_it_says(minilm, ablation):
  run = ["gin/models/tiny.gin", "gin/runs/finetune.gin", "gin/data/seqio.gin"]
  base = _operative_bindings(run, minilm.tokenizer)
  changed = _operative_bindings(run + [f"gin/ablations/{ablation}.gin"], minilm.tokenizer)
  added, removed = ABLATIONS[ablation]
  assert (changed - base, base - changed) == (added, removed)


def test_experiments_compose_a_model_and_a_run(minilm):
  pft = _operative_bindings(["gin/experiments/minilm_prefinetune.gin"], minilm.tokenizer)
  ft = _operative_bindings(["gin/experiments/minilm_finetune.gin"], minilm.tokenizer)
  assert {"MIXTURE_OR_TASK_NAME = 'gecko_prefinetune'", "losses.GeckoLoss.hard_negatives = False",
          "MATRYOSHKA_DIMS = (128, 256)", "BATCH_SIZE = 128"} <= pft
  assert {"MIXTURE_OR_TASK_NAME = 'gecko_finetune'", "losses.GeckoLoss.hard_negatives = True",
          "losses.GeckoLoss.same_tower_negatives = True", "BATCH_SIZE = 32"} <= ft
