"""FRet generation: the strict parser, the task-type mix, prompts, and real SmolLM2
completions through the cache (a rerun repeats no LLM call)."""

import collections

import pytest

from gecko.fret import generate
from gecko.fret.cache import LLMCache


PASSAGES = [
    {"id": "p1", "title": "Gecko", "text": "Geckos are lizards. Their toe pads have tiny hairs "
     "that stick to walls, so geckos can climb glass."},
    {"id": "p2", "title": "", "text": "The Moon orbits the Earth about every 27 days and "
     "causes the ocean tides."},
    {"id": "p3", "title": "Python", "text": "A dictionary maps keys to values; keys must be "
     "hashable, and lookups take constant time on average."},
    {"id": "p4", "title": "Bread", "text": "Yeast ferments the sugars in dough, making carbon "
     "dioxide bubbles that make bread rise."},
]


@pytest.mark.parametrize("text, want", [
    (" Given a question, retrieve the answer\nQuery: why do geckos stick",
     ("Given a question, retrieve the answer", "why do geckos stick")),
    ("Find facts\n  query:  moon tides  \n", ("Find facts", "moon tides")),
])
def test_parse_accepts_a_task_and_a_query(text, want):
  assert generate.parse(text) == want


@pytest.mark.parametrize("text, reason", [
    ("Only a task line", "expected a task line and a query line"),
    ("A task\nQuestion: what", "does not start with 'Query:'"),
    ("A task\nQuery:   ", "empty task or query"),
    ("A task\nQuery: " + "x" * 400, "longer than 300"),
    ("A task\nQuery: the passage itself", "copies the passage"),
    ("A task\nQuery: How can geckos climb walls", "repeats a few-shot example"),
])
def test_parse_rejects_malformed_completions(text, reason):
  with pytest.raises(generate.ParseError, match=reason):
    generate.parse(text, passage="The passage itself", examples=["how can geckos climb walls"])


def test_task_types_are_diverse_and_stable():
  draws = [generate.task_type_for(f"doc{i}", seed=0) for i in range(400)]
  assert draws == [generate.task_type_for(f"doc{i}", seed=0) for i in range(400)]
  counts = collections.Counter(draws)
  assert set(counts) == set(generate.TASK_TYPES) and min(counts.values()) > 60


def test_prompts_are_checked(tmp_path):
  assert "{passage}" in generate.load_prompt("generate")
  bad = tmp_path / "bad.txt"
  bad.write_text("Passage: {passage}\nTask:")
  with pytest.raises(ValueError, match="lacks the placeholder {task_type}"):
    generate.load_prompt(str(bad))
  with pytest.raises(FileNotFoundError, match="packaged: .*'generate'"):
    generate.load_prompt("nope")


# A prompt that makes the real SmolLM2 break the format: it counts instead of writing a
# task and a query.
COUNTING_PROMPT = """You are a counting machine. You only ever count upward, one number per line, and write nothing else.

Passage: {passage}
Task type: {task_type}
1
2
3
4
"""


def test_malformed_outputs_are_retried_then_recorded_as_failures(tmp_path, smollm2):
  prompt = tmp_path / "counting.txt"
  prompt.write_text(COUNTING_PROMPT)
  generator = generate.Generator(llm=smollm2, prompt=str(prompt), attempts=3)
  (failure,) = generator(PASSAGES[:1])
  assert isinstance(failure, generate.Failure) and len(failure.outputs) == 3
  assert all(output.strip()[0].isdigit() for output in failure.outputs), failure.outputs
  assert "does not start with 'Query:'" in failure.reason and generator.llm_calls == 3


def test_smollm2_generates_tasks_and_queries_and_a_rerun_hits_the_cache(tmp_path, smollm2):
  """10 real passages: Python standard-library docstrings."""
  from gecko.fret import docstrings
  model = smollm2
  cache = LLMCache(tmp_path / "calls.sqlite")
  first = generate.Generator(llm=model, cache=cache, max_passage_tokens=192)
  passages = docstrings.passages(limit=200)[::20]
  assert len(passages) == 10
  results = first(passages)
  assert [r.id for r in results] == [p["id"] for p in passages]
  made = [r for r in results if isinstance(r, generate.Generated)]
  assert len(made) >= 8, results
  assert len({r.task_type for r in made}) >= 3
  for r in made:
    assert r.task and r.query and r.task_type in generate.TASK_TYPES
    assert r.query.lower() not in {e.lower() for e in first.examples}
  again = generate.Generator(llm=model, cache=cache, max_passage_tokens=192)
  assert again(passages) == results and again.llm_calls == 0
