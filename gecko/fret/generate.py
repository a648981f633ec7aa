"""FRet step 1: the LLM reads a seed passage and writes a task description and a query.

A few-shot prompt (`gecko/fret/prompts/generate.txt`, or any file with `{passage}` and
`{task_type}`) ends in "Task:"; its examples may come from a JSONL file instead
(`few_shot`, e.g. a target corpus's own training queries, written by
`gecko.experiments.few_shot`). The completion must be exactly

  <task description>
  Query: <query>

`parse` is strict (both lines present, non-empty, bounded length, the query neither a
copy of the passage nor of a few-shot example). A malformed completion is retried with
a new sampling seed, up to `attempts` times, then recorded as a `Failure` (with every
raw output), never as data; so is a passage whose LLM call failed for good
(`LLMError`, after the backend's own retries), and a rerun tries it again. Each
passage gets a task type drawn from `task_types` by a hash of (seed, id), so the mix is
diverse and the same on every run. LLM calls go through the cache.
"""

from __future__ import annotations

import dataclasses
import os
import re
import zlib
from collections.abc import Mapping, Sequence

from gecko.fret import cache as cache_lib
from gecko.fret.llm import LLM, LLMError

TASK_TYPES = ("question answering", "search result", "fact checking", "sentence similarity")
PROMPTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prompts")
STOP = ("\n\n", "\nPassage:", "\nTask type:")


class ParseError(ValueError):
  """A completion that is not a task line followed by a query line."""


@dataclasses.dataclass(frozen=True)
class Generated:
  id: str
  task_type: str
  task: str
  query: str


@dataclasses.dataclass(frozen=True)
class Failure:
  id: str
  task_type: str
  reason: str
  outputs: tuple[str, ...]


def load_prompt(name: str, *, fields: Sequence[str] = ("{passage}", "{task_type}")) -> str:
  """A packaged prompt by name ("generate") or a prompt file's path, checked for `fields`."""
  path = name if os.path.sep in name or name.endswith(".txt") else os.path.join(
      PROMPTS_DIR, f"{name}.txt")
  if not os.path.exists(path):
    raise FileNotFoundError(f"prompt {name!r} not found (looked at {path!r}); packaged: "
                            f"{sorted(f[:-4] for f in os.listdir(PROMPTS_DIR))}.")
  with open(path, encoding="utf-8") as f:
    template = f.read().rstrip()  # the completion starts right after the final "Task:"
  for field in fields:
    if field not in template:
      raise ValueError(f"prompt {path!r} lacks the placeholder {field}.")
  return template


EXAMPLE_FIELDS = ("passage", "task_type", "task", "query")


def load_examples(path: str) -> list[dict[str, str]]:
  """Few-shot examples from JSONL, one {"passage", "task_type", "task", "query"} each."""
  from gecko.data import jsonl
  examples = jsonl.read_objects(path, what="few-shot examples")
  for i, example in enumerate(examples, 1):
    bad = [k for k in EXAMPLE_FIELDS if not isinstance(example.get(k), str)
           or not example[k].strip()]
    if bad:
      raise ValueError(f"{path}: example {i} lacks a non-empty string {bad[0]!r}; each line "
                       f"is {{{', '.join(map(repr, EXAMPLE_FIELDS))}}}.")
  if not examples:
    raise ValueError(f"{path} holds no few-shot example.")
  return examples


def with_examples(template: str, examples: Sequence[Mapping[str, str]]) -> str:
  """`template` with its few-shot examples replaced by `examples`: its first paragraph
  (the instruction) and its last (the `{passage}` block) are kept, and the paragraphs
  between are the examples, each written as the packaged prompt writes them."""
  paragraphs = template.split("\n\n")
  if len(paragraphs) < 2 or "{passage}" not in paragraphs[-1]:
    raise ValueError("few-shot examples go between the prompt's first paragraph (the "
                     "instruction) and its last (with {passage}); this prompt has no such "
                     "layout.")
  one_line = lambda text: " ".join(text.split()).replace("{", "{{").replace("}", "}}")  # noqa: E731
  blocks = ["\n".join(f"{label}: {one_line(e[key])}" for label, key in (
      ("Passage", "passage"), ("Task type", "task_type"), ("Task", "task"), ("Query", "query")))
            for e in examples]
  return "\n\n".join([paragraphs[0], *blocks, paragraphs[-1]])


def example_task(task_type: str, *, prompt: str = "generate") -> str:
  """The task line of `prompt`'s few-shot example of `task_type` (e.g. "fact checking":
  "Given a claim, retrieve passages that support or refute it")."""
  for paragraph in load_prompt(prompt).split("\n\n"):
    fields = dict(line.split(": ", 1) for line in paragraph.splitlines() if ": " in line)
    if fields.get("Task type") == task_type and fields.get("Task"):
      return fields["Task"]
  raise ValueError(f"prompt {prompt!r} has no example of task type {task_type!r}; its "
                   f"types are {list(TASK_TYPES)}.")


_QUERY_LINE = re.compile(r"^\s*query\s*:\s*(.*)$", re.IGNORECASE)


def parse(text: str, *, passage: str = "", examples: Sequence[str] = (), max_chars: int = 300
          ) -> tuple[str, str]:
  """(task, query) from a completion of a prompt ending in "Task:"; ParseError otherwise.

  `examples` are the prompt's few-shot queries, which a small model sometimes repeats.
  """
  lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
  if len(lines) < 2:
    raise ParseError(f"expected a task line and a query line, got {len(lines)} line(s)")
  task, match = lines[0], _QUERY_LINE.match(lines[1])
  if match is None:
    raise ParseError(f"second line does not start with 'Query:': {lines[1][:80]!r}")
  query = match.group(1).strip()
  if not task or not query:
    raise ParseError("empty task or query")
  if max(len(task), len(query)) > max_chars:
    raise ParseError(f"task or query longer than {max_chars} characters")
  if passage and query.lower() == passage.strip().lower():
    raise ParseError("the query copies the passage")
  if query.lower() in {e.lower() for e in examples}:
    raise ParseError(f"the query repeats a few-shot example: {query[:80]!r}")
  return task, query


def task_type_for(passage_id: str, *, seed: int, task_types: Sequence[str] = TASK_TYPES) -> str:
  return task_types[zlib.crc32(f"{seed}:{passage_id}".encode("utf-8")) % len(task_types)]


def passage_text(passage: Mapping[str, str], *, llm, max_tokens: int) -> str:
  """"title. text" (or the text) cut to `max_tokens` of the LLM's tokens for a prompt."""
  title = (passage.get("title") or "")[:300]
  text = f"{title}. {passage['text']}" if title else passage["text"]
  return llm.truncate(text, max_tokens)


@dataclasses.dataclass(kw_only=True)
class Generator:
  """Writes (task, query) for passages with an LLM backend (see `gecko.fret.llm`).

  Attributes:
    llm: The backend (`gecko.fret.llm.LLM`).
    cache: LLM-call cache (None: no caching).
    prompt: Packaged prompt name or file path.
    few_shot: A JSONL file of few-shot examples (`load_examples`) replacing the
      prompt's own; None keeps them.
    task_types: The task types to draw from.
    attempts: Completions tried per passage before it is recorded as a failure.
    max_tokens: Completion budget.
    temperature: Sampling temperature (for retries; for every attempt with `sampling`).
    top_p: Nucleus sampling's probability mass, where sampling.
    sampling: Sample the first attempt too, seeded per passage (a hash of the seed, the
      passage id and the attempt), for diverse queries; False: the first attempt is
      greedy, which a small LLM answers with near-identical queries.
    max_passage_tokens: Passages are cut to this many LLM tokens in the prompt.
    seed: Seeds the task-type draw and the sampling.
  """

  llm: LLM
  cache: cache_lib.LLMCache | None = None
  prompt: str = "generate"
  few_shot: str | None = None
  task_types: Sequence[str] = TASK_TYPES
  attempts: int = 3
  max_tokens: int = 96
  temperature: float = 0.8
  top_p: float = 1.0
  sampling: bool = False
  max_passage_tokens: int = 384
  seed: int = 0

  def __post_init__(self):
    self.template = load_prompt(self.prompt)
    if self.few_shot is not None:
      self.template = with_examples(self.template, load_examples(self.few_shot))
    self.examples = tuple(m.group(1).strip() for m in map(_QUERY_LINE.match,
                                                          self.template.splitlines()) if m)
    if self.attempts < 1:
      raise ValueError(f"attempts must be >= 1, got {self.attempts}.")
    if not 0.0 <= self.temperature <= 5.0 or not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"temperature must be in [0, 5] and top_p in (0, 1], got "
                       f"{self.temperature!r} and {self.top_p!r}.")
    if self.sampling and self.temperature == 0.0:
      raise ValueError("sampling=True needs temperature > 0 (0 is greedy decoding).")
    self.llm_calls = 0

  def _complete(self, prompts: Sequence[str], ids: Sequence[str], attempt: int) -> list[str]:
    """Completions of `prompts` (the passages `ids`), through the cache."""
    params = {"max_tokens": self.max_tokens, "stop": list(STOP),
              "temperature": 0.0 if attempt == 0 and not self.sampling else self.temperature}
    if self.sampling:
      params["top_p"] = self.top_p
      seeds = [zlib.crc32(f"{self.seed}:{i}:{attempt}".encode("utf-8")) for i in ids]
    else:  # the cache keys of earlier, unsampled runs stay valid
      seeds = [self.seed * 1000 + attempt] * len(prompts)
    keys = [cache_lib.call_key(backend=self.llm.name, model=self.llm.model, kind="generate",
                               prompt=prompt, params={**params, "seed": seed})
            for prompt, seed in zip(prompts, seeds, strict=True)]

    def call(missing):
      self.llm_calls += len(missing)
      return self.llm.generate([prompts[i] for i in missing], **params,
                               seed=[seeds[i] for i in missing])
    return cache_lib.through(self.cache, keys, call)

  def __call__(self, passages: Sequence[Mapping[str, str]]) -> list[Generated | Failure]:
    """For each {"id", "text", "title"?} passage, in order: a `Generated` or a `Failure`.

    Each attempt is one batched LLM call for the passages still unparsed (a server
    backend answers them concurrently); give a few passages at a time (the batch is
    the unit of work a kill can lose)."""
    task_types = [task_type_for(p["id"], seed=self.seed, task_types=self.task_types)
                  for p in passages]
    texts = [passage_text(p, llm=self.llm, max_tokens=self.max_passage_tokens) for p in passages]
    prompts = [self.template.format(passage=text, task_type=task_type)
               for text, task_type in zip(texts, task_types)]
    results: dict[int, Generated] = {}
    outputs = [[] for _ in passages]
    reasons = [""] * len(passages)
    pending = list(range(len(passages)))
    for attempt in range(self.attempts):
      if not pending:
        break
      try:
        completions = self._complete([prompts[i] for i in pending],
                                     [passages[i]["id"] for i in pending], attempt)
      except LLMError as e:  # retried by the backend already: report, not data
        for i in pending:
          reasons[i] = f"LLM call failed: {e}"
        break
      unparsed = []
      for i, completion in zip(pending, completions, strict=True):
        outputs[i].append(completion)
        try:
          task, query = parse(completion, passage=passages[i]["text"], examples=self.examples)
        except ParseError as e:
          reasons[i] = str(e)
          unparsed.append(i)
          continue
        results[i] = Generated(id=passages[i]["id"], task_type=task_types[i], task=task,
                               query=query)
      pending = unparsed
    return [results[i] if i in results else
            Failure(id=p["id"], task_type=task_types[i], reason=reasons[i],
                    outputs=tuple(outputs[i])) for i, p in enumerate(passages)]
