"""Every FRet setting in one frozen, validated object, shared by both runners.

  config = FretConfig(corpus="passages.jsonl", output_dir="/tmp/fret", num_seeds=1000)
  pipeline.run(config, llm=LlamaCpp())                    # one machine
  beam.run(config, llm=LlamaCpp(), pipeline_args=[...])   # Apache Beam

gin binds it once (`gin/runs/fret.gin`: `config.FretConfig`), and both
`pipeline.run.config` and `beam.run.config` take that binding, so a setting cannot reach
one runner and not the other. Each field is checked here, once, when the object is
made. What only lays out the output (the local writer's `shard_size`, Beam's
`num_shards`, `block_size` and cache) stays with the runner: it changes no record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from gecko.data import paths
from gecko.data.packaged_models import DEFAULT_MODEL
from gecko.fret import label


def check_count(name: str, value, *, minimum: int = 1, allow_none: bool = False) -> None:
  """A count must be an int >= `minimum` (None only where it means "all")."""
  if value is None and allow_none:
    return
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    what = " or None (every passage)" if allow_none else ""
    raise ValueError(f"{name} must be an int >= {minimum}{what}, got {value!r}.")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FretConfig:
  """Attributes:
    corpus: The seeds and the retrieval pool: JSONL {"id", "text", "title"?}, BEIR
      corpus.jsonl, or .txt with one passage per line (local runner only; see
      `gecko.fret.corpus`). Local or gs://.
    output_dir: Shards, LLM cache, summary.json / summary.png, config.gin.
    encoder: Embedding model for retrieval (packaged name or directory).
    num_seeds: Seed passages to use (None: all). The local runner takes the first
      ones in the file; Beam, which has no file order, the ones with the highest hash
      of (seed, id).
    num_neighbors: N, neighbours retrieved and relabelled per query (>= 2).
    negative: "lowest" fused neighbour, a "random" other one, or "window": mined from
      the encoder's ranks `negative_window` (NV-Retriever's positive-aware rule).
    negative_window: (first, last) 1-based ranks of the encoder's retrieval the
      "window" negative is mined from; the retrieval goes that deep.
    negative_max_ratio: "window": passages the encoder scores above this times its
      score of the positive are skipped as likely false negatives (NV-Retriever: 0.95);
      the negative is the best-ranked passage of the window left, neither the positive
      nor the seed. A query with none left is dropped (counted in the summary).
    ranking: "rrf" (QL and RC fused), or "ql" / "rc" alone (the paper's ablation), or
      "seed": no LLM score, the seed passage the positive and the negative from the
      encoder's order (`gecko.fret.label.choose_seed`; generation is the only LLM work).
    tfrecord: Also write each shard as TFRecord (tf.train.Example).
    generator_options: Extra `gecko.fret.generate.Generator` attributes, e.g.
      {"task_types": [...], "prompt": "my_prompt.txt", "sampling": True}.
    scorer_options: Extra `gecko.fret.score.Scorer` attributes, e.g. {"rc_score": "margin"}.
    batch_size: Encoder batch size.
    seed: Task-type draw, retries and random negatives.
    consistency_top_k: Round-trip consistency filter (Promptagator): keep a record only
      if its positive is among the encoder's top k passages for its own query (no LLM
      call; k <= num_neighbors). None: keep every record.
    seed_top_k: Seed round-trip filter: keep a query only if its own seed passage is
      among the encoder's top k passages for it, judged before any scoring call (a
      query that does not find its seed is generic or off its passage; k <=
      num_neighbors). None: keep every query.
    dedup_cosine: Query diversity (`gecko.fret.diversity`): a new query above this
      cosine to an earlier kept query of the same task type is dropped. None: keep
      every query.
    min_spread: Generic-query guard: keep a query only if the encoder's cosine to its
      best passage exceeds that to its `num_neighbors`-th by at least this much,
      judged before any scoring call (a query that matches many passages equally
      says little about any of them). None: keep every query.
  """

  corpus: str
  output_dir: str
  encoder: str = DEFAULT_MODEL
  num_seeds: int | None = None
  num_neighbors: int = 20
  negative: str = "lowest"
  negative_window: tuple[int, int] = (10, 50)
  negative_max_ratio: float = 0.95
  ranking: str = "rrf"
  tfrecord: bool = False
  generator_options: Mapping[str, object] = dataclasses.field(default_factory=dict)
  scorer_options: Mapping[str, object] = dataclasses.field(default_factory=dict)
  batch_size: int = 64
  seed: int = 0
  consistency_top_k: int | None = None
  seed_top_k: int | None = None
  dedup_cosine: float | None = None
  min_spread: float | None = None

  def __post_init__(self):
    for name in ("corpus", "output_dir", "encoder"):
      value = getattr(self, name)
      if not isinstance(value, str) or not value:
        raise ValueError(f"FretConfig.{name} must be a non-empty path or name, got {value!r}.")
    check_count("num_seeds", self.num_seeds, allow_none=True)
    check_count("num_neighbors", self.num_neighbors, minimum=2)
    check_count("batch_size", self.batch_size)
    check_count("consistency_top_k", self.consistency_top_k, allow_none=True)
    check_count("seed_top_k", self.seed_top_k, allow_none=True)
    for name, value, choices in (("negative", self.negative, label.NEGATIVE_CHOICES),
                                 ("ranking", self.ranking, label.RANKINGS)):
      if value not in choices:
        raise ValueError(f"{name}={value!r}; use one of {choices}.")
    if self.dedup_cosine is not None and not -1.0 < self.dedup_cosine <= 1.0:
      raise ValueError(f"dedup_cosine must be a cosine in (-1, 1] or None, "
                       f"got {self.dedup_cosine!r}.")
    for name in ("consistency_top_k", "seed_top_k"):
      top_k = getattr(self, name)
      if top_k is not None and top_k > self.num_neighbors:
        raise ValueError(f"{name}={top_k} must be <= num_neighbors={self.num_neighbors} (the "
                         "passages retrieved per query).")
    window = tuple(self.negative_window)
    if (len(window) != 2 or not all(isinstance(r, int) and not isinstance(r, bool)
                                    for r in window) or not 1 <= window[0] <= window[1]):
      raise ValueError(f"negative_window must be (first, last) ranks with 1 <= first <= last, "
                       f"got {self.negative_window!r}.")
    object.__setattr__(self, "negative_window", window)  # a gin list, too
    if not 0.0 < self.negative_max_ratio <= 1.0:
      raise ValueError(f"negative_max_ratio must be in (0, 1], got {self.negative_max_ratio!r}.")
    if self.min_spread is not None and not 0.0 <= self.min_spread < 2.0:
      raise ValueError(f"min_spread must be a cosine difference in [0, 2) or None, got "
                       f"{self.min_spread!r}.")
    for name in ("generator_options", "scorer_options"):
      if not isinstance(getattr(self, name), Mapping):
        raise ValueError(f"FretConfig.{name} must be a dict, got {getattr(self, name)!r}.")
    if not isinstance(self.seed, int) or isinstance(self.seed, bool):
      raise ValueError(f"seed must be an int, got {self.seed!r}.")

  @property
  def retrieval_depth(self) -> int:
    """Passages the encoder retrieves per query: the candidates, or as deep as the
    "window" negative's last rank."""
    return max(self.num_neighbors, self.negative_window[1]) if self.negative == "window" else (
        self.num_neighbors)

  def check_output_dir(self) -> None:
    """ValueError when OUTPUT_DIR is a file, or is, contains or lies inside the corpus or
    a local encoder (a run's writes would mix with what it reads); the runners ask
    before any work."""
    paths.check_output_dir(self.output_dir, self.corpus, self.encoder, flag="OUTPUT_DIR")
