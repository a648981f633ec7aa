"""The rows of the domain-adaptation experiment: a `Variant` (how FRet labels the
records, or which other data trains) and a `Recipe` (the run-level levers: the teacher,
query diversity, the consistency filter, the human mixture), and the names they give
to directories and table rows."""

from __future__ import annotations

import dataclasses

from gecko.fret.generate import TASK_TYPES
from gecko.fret.llm import TEACHERS as PACKAGED_TEACHERS

DEFAULT_TEACHER = "smollm2-135m"
DEFAULT_PASSAGES = 150  # FRet's seed passages (the driver's --passages)
TEACHERS = tuple(PACKAGED_TEACHERS)  # the packaged GGUF teachers, DEFAULT_TEACHER first
SEED_POSITIVE_GIN = "gin/ablations/fret_seed_positive.gin"
NO_SAME_TOWER_GIN = "gin/ablations/no_same_tower.gin"
HUMAN_MIXTURE_GIN = "gin/experiments/human_mixture.gin"
DISTILL_GIN = {"margin_mse": "gin/ablations/distill_margin_mse.gin",
               "listwise_kl": "gin/ablations/distill_listwise_kl.gin",
               "candidates": "gin/ablations/distill_candidates.gin"}
# `GeckoLoss` settings a row may set (`Recipe.loss`, the driver's --loss NAME=VALUE).
LOSS_SETTINGS = ("distillation_weight", "contrastive_weight", "teacher_scale",
                 "teacher_temperature")


def seeds_part(passages: int) -> str:
  """How FRet's seed `passages` name a row and its data: "" for the default, else
  "600seeds"."""
  return "" if passages == DEFAULT_PASSAGES else f"{passages}seeds"


@dataclasses.dataclass(frozen=True)
class Variant:
  """One row's labelling: FRet's ranking and negative and the ablation file training
  adds; `source` says where the records come from ("fret", "in_domain": the corpus's
  own human training queries, or "none": the start model, untrained); `teacher_score`
  trains on the LLM's scores of each pair ("ql" or "rc": the SeqIO task
  gecko_fret_ql / gecko_fret_rc, mixed with the human tasks as gecko_fret_ql_human), or
  with `candidates`, on its scores of all N candidates (the triples that carry them,
  `gecko.fret.triples --candidates`, as the SeqIO task gecko_fret_candidates, mixed with
  the human tasks as gecko_fret_candidates_human)."""

  description: str
  ranking: str = "rrf"
  negative: str = "lowest"
  gin_files: tuple[str, ...] = ()
  source: str = "fret"
  teacher_score: str | None = None
  candidates: bool = False

  @property
  def trains_on_seed(self) -> bool:
    """Whether training takes the seed passage as the positive, whatever FRet ranked."""
    return SEED_POSITIVE_GIN in self.gin_files


VARIANTS = {
    "start": Variant("all-MiniLM-L6-v2, not fine-tuned", source="none"),
    "main": Variant("LLM positive (RRF of QL and RC), lowest-ranked negative"),
    "seed_positive": Variant("seed passage as the positive",
                             gin_files=(SEED_POSITIVE_GIN,)),
    "ql": Variant("ranking by query likelihood only", ranking="ql"),
    "rc": Variant("ranking by relevance classification only", ranking="rc"),
    "random_negative": Variant("random neighbour as the hard negative", negative="random"),
    "no_same_tower": Variant("without same-tower negatives",
                             gin_files=(NO_SAME_TOWER_GIN,)),
    "seed_no_same_tower": Variant("seed passage as the positive, without same-tower "
                                  "negatives", gin_files=(SEED_POSITIVE_GIN, NO_SAME_TOWER_GIN)),
    "unranked": Variant("seed passage as the positive with no LLM ranking (generation alone; "
                        "the encoder's lowest of N the negative), as in_domain's records",
                        ranking="seed"),
    "unranked_no_same_tower": Variant(
        "seed passage as the positive with no LLM ranking (generation alone; the encoder's "
        "lowest of N the negative), without same-tower negatives", ranking="seed",
        gin_files=(NO_SAME_TOWER_GIN,)),
    "margin_mask": Variant("negatives closer than the positive + 0.1 masked",
                           gin_files=("gin/ablations/false_negative_margin.gin",)),
    "in_domain": Variant("the corpus's own human training queries (the in-domain "
                         "reference)", source="in_domain"),
    "margin_mse": Variant("main, plus MarginMSE on the LLM's QL margin of each pair",
                          gin_files=(DISTILL_GIN["margin_mse"],), teacher_score="ql"),
    "listwise_kl": Variant("main, plus the KL to the LLM's QL softmax over each pair",
                           gin_files=(DISTILL_GIN["listwise_kl"],), teacher_score="ql"),
    "candidates_kl": Variant("main, plus the KL to the LLM's QL softmax over all N "
                             "candidates", gin_files=(DISTILL_GIN["candidates"],),
                             teacher_score="ql", candidates=True),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Budget:
  """A training row's budget: `steps` of `batch_size` examples at peak `learning_rate`
  (warm-up over a tenth of the steps, then linear decay to 0).

  Attributes:
    steps, batch_size, learning_rate: Each names the row where it is not the default
      ("+300steps", "+batch64", "+lr5e-05").
    checkpoint_every: Keep a checkpoint every this many steps (and the last); None: the
      last only. With a dev split, each is scored on it (model selection).
    eval_step: Score this checkpoint instead of the last ("@150" ends the row's name);
      a multiple of `checkpoint_every`. The run trains up to it and stops there: the
      learning-rate schedule stays that of `steps`, so the checkpoint is the one a run
      of all `steps` keeps at that step.
    grad_cache_chunk: Embed and back-propagate in chunks of this many examples
      (GradCache: the same model in the activation memory of one chunk, for a step
      too large for the machine, e.g. every candidate's); not in the row's name.
  """

  steps: int = 30
  batch_size: int = 32
  learning_rate: float = 2e-5
  checkpoint_every: int | None = None
  eval_step: int | None = None
  grad_cache_chunk: int | None = None

  def __post_init__(self):
    for name in ("steps", "batch_size", "checkpoint_every", "eval_step", "grad_cache_chunk"):
      value = getattr(self, name)
      if value is not None and value < 1:
        raise ValueError(f"the budget's {name} must be >= 1, got {value}.")
    if self.learning_rate <= 0:
      raise ValueError(f"the budget's learning_rate must be > 0, got {self.learning_rate}.")
    if self.eval_step is not None and self.eval_step not in self.checkpoint_steps():
      raise ValueError(f"eval_step={self.eval_step} is not a checkpoint of this budget "
                       f"({self.checkpoint_steps()}); set checkpoint_every to divide it.")
    if self.grad_cache_chunk and self.batch_size % self.grad_cache_chunk:
      raise ValueError(f"grad_cache_chunk={self.grad_cache_chunk} must divide the batch "
                       f"size {self.batch_size}.")

  def checkpoint_steps(self) -> list[int]:
    """The steps whose checkpoints the run keeps."""
    every = self.checkpoint_every or self.steps
    return sorted({*range(every, self.steps + 1, every), self.steps})

  def scored_steps(self) -> list[int]:
    """The checkpoints a row is scored at: `eval_step` alone where set, else each kept one."""
    return [self.eval_step] if self.eval_step else self.checkpoint_steps()

  def name_parts(self) -> list[str]:
    """The parts of a row's name that say how this budget differs from the default."""
    default = Budget()
    return ([f"{self.steps}steps"] * (self.steps != default.steps)
            + [f"batch{self.batch_size}"] * (self.batch_size != default.batch_size)
            + [f"lr{self.learning_rate:g}"] * (self.learning_rate != default.learning_rate))

  def step_suffix(self) -> str:
    """"@STEP" when a checkpoint other than the last is scored, else ""."""
    return "" if self.eval_step in (None, self.steps) else f"@{self.eval_step}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recipe:
  """The levers a row may pull besides its variant (each a flag of the driver).

  Attributes:
    teacher: The GGUF LLM that writes and ranks (`gecko.fret.llm.TEACHERS`).
    sampling: Sample each passage's query with its own seed (`Generator.sampling`).
    temperature, top_p: The sampling's settings.
    dedup_cosine: Drop near-duplicate queries (`gecko.fret.diversity`).
    few_shot_type: Generate queries of this task type alone, the prompt's few-shot
      examples being the corpus's own training queries (`gecko.experiments.few_shot`,
      from the train side of the human dev split), e.g. "fact checking" for claims.
    consistency_top_k: Keep a record only if its positive is in the encoder's top k.
    human: Train on FRet plus the human mixture (STS-B train, Banking77 train).
    human_dev: Score every row on the human dev split of the corpus's training queries
      (`gecko.experiments.human_dev`), and train in_domain on the train part alone.
    max_records: Train on this many of the row's records (the held-out dev records
      aside): those whose id has the lowest crc32, so a smaller cap keeps a subset of a
      larger one. Compares rows at equal data, e.g. in_domain at a FRet row's size.
    loss: `GeckoLoss` settings, ((name, value), ...) from `LOSS_SETTINGS`, e.g.
      (("teacher_scale", 0.05),): each names the row ("+teacher_scale0.05").
  """

  teacher: str = DEFAULT_TEACHER
  sampling: bool = False
  temperature: float = 0.8
  top_p: float = 1.0
  dedup_cosine: float | None = None
  few_shot_type: str | None = None
  consistency_top_k: int | None = None
  human: bool = False
  human_dev: bool = False
  max_records: int | None = None
  loss: tuple[tuple[str, float], ...] = ()

  def __post_init__(self):
    for name, value in self.loss:
      if name not in LOSS_SETTINGS:
        raise ValueError(f"unknown loss setting {name!r}; use one of {list(LOSS_SETTINGS)}.")
      if not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"loss setting {name}={value!r} must be a number >= 0.")
    if self.max_records is not None and self.max_records < 1:
      raise ValueError(f"max_records must be >= 1, got {self.max_records}.")
    if self.teacher not in TEACHERS:
      raise ValueError(f"unknown teacher {self.teacher!r}; use one of {TEACHERS}.")
    if self.few_shot_type is not None and self.few_shot_type not in TASK_TYPES:
      raise ValueError(f"unknown few-shot task type {self.few_shot_type!r}; use one of "
                       f"{list(TASK_TYPES)}.")

  def _generation_parts(self) -> list[str]:
    parts = [] if self.teacher == DEFAULT_TEACHER else [self.teacher]
    if self.sampling:
      parts.append(f"sampled{self.temperature:g}p{self.top_p:g}")
    if self.dedup_cosine is not None:
      parts.append(f"dedup{self.dedup_cosine:g}")
    if self.few_shot_type is not None:
      parts.append("fewshot-" + self.few_shot_type.replace(" ", "-"))
    return parts

  def fret_name(self, variant: Variant) -> str:
    """The FRet output directory of `variant` under this recipe (its records and cache)."""
    parts = ["fret", *self._generation_parts(), variant.ranking, variant.negative]
    if self.consistency_top_k is not None:
      parts.append(f"consistent{self.consistency_top_k}")
    return "_".join(parts)

  def row_name(self, variant_name: str, budget: Budget | None = None, *,
               passages: int = DEFAULT_PASSAGES) -> str:
    """The table row: the variant, then each lever pulled, FRet's seed `passages` and the
    budget where they are not the default ("main+gemma3-270m+human+300steps+lr5e-05@150",
    "main+600seeds")."""
    variant = VARIANTS[variant_name]
    parts = [variant_name]
    if variant.source == "fret":
      parts += self._generation_parts()
      if self.consistency_top_k is not None:
        parts.append(f"consistent{self.consistency_top_k}")
      if seeds := seeds_part(passages):
        parts.append(seeds)
    if self.human and variant.source != "none":
      parts.append("human")
    if self.human_dev and variant.source == "in_domain":
      parts.append("trainpart")  # the dev split's queries are not trained on
    if self.max_records is not None and variant.source != "none":
      parts.append(f"records{self.max_records}")
    if variant.source != "none":
      parts += [f"{name}{value:g}" for name, value in self.loss]
    if variant.source == "none" or budget is None:
      return "+".join(parts)
    return "+".join(parts + budget.name_parts()) + budget.step_suffix()

  def llm_options(self) -> dict[str, object]:
    """`gecko.fret.generate.Generator` options."""
    return {"sampling": self.sampling, "temperature": self.temperature, "top_p": self.top_p}
