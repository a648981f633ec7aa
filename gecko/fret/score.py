"""FRet step 3: the LLM scores each (query, neighbour) pair two ways.

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
from gecko.fret.generate import load_prompt

RC_SCORES = ("yes", "margin")
LABELS = (" yes", " no")


@dataclasses.dataclass(kw_only=True)
class Scorer:
  """Attributes:
    llm: A backend with `log_likelihood` and `label_logprobs` (see `gecko.fret.llm`).
    cache: LLM-call cache (None: no caching).
    ql_prompt, rc_prompt: Packaged prompt names or file paths.
    rc_score: "yes" (log P(yes)) or "margin" (log P(yes) - log P(no)).
    max_passage_chars: Passages are cut to this many characters in the prompts.
  """

  llm: object
  cache: cache_lib.LLMCache | None = None
  ql_prompt: str = "ql"
  rc_prompt: str = "rc"
  rc_score: str = "yes"
  max_passage_chars: int = 1000

  def __post_init__(self):
    if self.rc_score not in RC_SCORES:
      raise ValueError(f"rc_score={self.rc_score!r}; use one of {RC_SCORES}.")
    for flag in ("query_likelihood", "relevance_classification"):
      if not getattr(self.llm, flag):
        raise ValueError(f"the {self.llm.name} backend ({self.llm.model}) cannot give "
                         f"{flag.replace('_', ' ')} scores; FRet needs both (see gecko.fret.llm).")
    self.ql_template = load_prompt(self.ql_prompt, fields=("{passage}",))
    self.rc_template = load_prompt(self.rc_prompt, fields=("{task}", "{query}", "{passage}"))
    self.llm_calls = 0

  def _cached(self, kind: str, prompt: str, extra, call):
    def counted():
      self.llm_calls += 1
      return call()
    if self.cache is None:
      return counted()
    key = cache_lib.call_key(backend=self.llm.name, model=self.llm.model, kind=kind,
                             prompt=prompt, params={"extra": extra})
    return self.cache.cached(key, counted)

  def _passage(self, passage) -> str:
    text = passage["text"][:self.max_passage_chars]
    return f"{passage['title']}. {text}" if passage.get("title") else text

  def ql(self, query: str, passages: Sequence[dict]) -> list[float]:
    out = []
    for passage in passages:
      prompt = self.ql_template.format(passage=self._passage(passage))
      out.append(self._cached("ql", prompt, query, lambda p=prompt: self.llm.log_likelihood(
          [p], [" " + query.strip()])[0]))
    return out

  def rc(self, task: str, query: str, passages: Sequence[dict]) -> list[float]:
    out = []
    for passage in passages:
      prompt = self.rc_template.format(task=task, query=query, passage=self._passage(passage))
      labels = self._cached("rc", prompt, list(LABELS),
                            lambda p=prompt: self.llm.label_logprobs([p], list(LABELS))[0])
      yes, no = (max(labels[label], -1e4) for label in LABELS)  # absent labels: very unlikely
      out.append(yes - no if self.rc_score == "margin" else yes)
    return [v if math.isfinite(v) else -1e4 for v in out]
