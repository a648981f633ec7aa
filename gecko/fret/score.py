"""FRet step 3: the LLM scores each (query, candidate passage) pair two ways.

  QL  query likelihood: log P(" " + query | QL prompt with the passage), prompt
      `prompts/ql.txt` ({passage}); needs a backend with `query_likelihood`.
  RC  relevance classification: log P(" yes" | RC prompt with task, query, passage),
      prompt `prompts/rc.txt` (few-shot); `rc_score="margin"` uses
      log P(" yes") - log P(" no") instead.

Every call goes through the LLM cache, keyed by backend, model, prompt and text.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from gecko.fret import cache as cache_lib
from gecko.fret import label as label_lib
from gecko.fret.generate import load_prompt, passage_text
from gecko.fret.llm import LLM

RC_SCORES = ("yes", "margin")
LABELS = (" yes", " no")


@dataclasses.dataclass(kw_only=True)
class Scorer:
  """Attributes:
    llm: The backend (`gecko.fret.llm.LLM`; `log_likelihood` and `label_logprobs`).
    cache: LLM-call cache (None: no caching).
    ql_prompt, rc_prompt: Packaged prompt names or file paths.
    rc_score: "yes" (log P(yes)) or "margin" (log P(yes) - log P(no)).
    max_passage_tokens: Passages are cut to this many LLM tokens in the prompts.
    ranking: The run's ranking (`gecko.fret.label.RANKINGS`): the backend must give the scores
      it uses (a server without prompt logprobs can still rank by RC alone).
  """

  llm: LLM
  cache: cache_lib.LLMCache | None = None
  ql_prompt: str = "ql"
  rc_prompt: str = "rc"
  rc_score: str = "yes"
  max_passage_tokens: int = 256
  ranking: str = "rrf"

  def __post_init__(self):
    if self.rc_score not in RC_SCORES:
      raise ValueError(f"rc_score={self.rc_score!r}; use one of {RC_SCORES}.")
    if self.ranking not in label_lib.RANKINGS:
      raise ValueError(f"ranking={self.ranking!r}; use one of {label_lib.RANKINGS}.")
    gives = {"query likelihood": self.llm.query_likelihood,
             "relevance classification": self.llm.relevance_classification}
    for score, what in (("ql", "query likelihood"), ("rc", "relevance classification")):
      if score in label_lib.NEEDS[self.ranking] and not gives[what]:
        raise ValueError(f"the {self.llm.name} backend ({self.llm.model}) cannot give "
                         f"{what} scores, which ranking="
                         f"{self.ranking!r} uses; rank by the other score or use a backend "
                         "that gives both (see gecko.fret.llm).")
    self.ql_template = load_prompt(self.ql_prompt, fields=("{passage}",))
    self.rc_template = load_prompt(self.rc_prompt, fields=("{task}", "{query}", "{passage}"))
    self.llm_calls = 0

  def _scores(self, kind: str, prompts: Sequence[str], extra, compute) -> list:
    """One batched backend call for the prompts not in the cache."""
    keys = [cache_lib.call_key(backend=self.llm.name, model=self.llm.model, kind=kind,
                               prompt=prompt, params={"extra": extra}) for prompt in prompts]

    def call(missing):
      self.llm_calls += len(missing)
      return compute([prompts[i] for i in missing])
    return cache_lib.through(self.cache, keys, call)

  def _prompt_passages(self, passages: Sequence[dict]) -> list[str]:
    return [passage_text(p, llm=self.llm, max_tokens=self.max_passage_tokens) for p in passages]

  def ql(self, query: str, passages: Sequence[dict]) -> list[float]:
    """log P(query | passage) for each passage."""
    prompts = [self.ql_template.format(passage=p) for p in self._prompt_passages(passages)]
    continuation = " " + query.strip()
    return self._scores("ql", prompts, query, lambda batch: self.llm.log_likelihood(
        batch, [continuation] * len(batch)))

  def rc(self, task: str, query: str, passages: Sequence[dict]) -> list[float]:
    """log P(yes | task, query, passage) (or the yes-no margin) for each passage."""
    prompts = [self.rc_template.format(task=task, query=query, passage=p)
               for p in self._prompt_passages(passages)]
    out = []
    for labels in self._scores("rc", prompts, list(LABELS),
                               lambda batch: self.llm.label_logprobs(batch, list(LABELS))):
      yes, no = (max(labels[label], -1e4) for label in LABELS)  # absent labels: very unlikely
      out.append(yes - no if self.rc_score == "margin" else yes)
    return [v if math.isfinite(v) else -1e4 for v in out]
