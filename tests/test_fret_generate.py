"""FRet generation: the strict parser, the task-type mix, prompts, and real SmolLM2
completions through the cache (a rerun repeats no LLM call)."""

import collections

import pytest

from gecko.data import jsonl
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


CLAIMS = [{"passage": "Vitamin D {levels} in newborns.\n\nLow levels lower birth weight.",
           "task_type": "fact checking", "task": "Given a claim, retrieve evidence",
           "query": "Vitamin D deficiency lowers birth weight."},
          {"passage": "Clathrin binds the spindle in mitosis.", "task_type": "fact checking",
           "task": "Given a claim, retrieve evidence",
           "query": "Clathrin stabilizes the spindle during mitosis."}]


def test_few_shot_examples_from_a_file_replace_the_prompts_own(tmp_path):
  path = tmp_path / "claims.jsonl"
  jsonl.write(path, CLAIMS)
  template = generate.with_examples(generate.load_prompt("generate"), CLAIMS)
  paragraphs = template.split("\n\n")
  # The instruction, the two examples (one line per field; braces kept literal for
  # str.format), then the passage block.
  assert paragraphs[0] == generate.load_prompt("generate").split("\n\n")[0]
  assert paragraphs[1] == ("Passage: Vitamin D {{levels}} in newborns. Low levels lower birth "
                           "weight.\nTask type: fact checking\nTask: Given a claim, retrieve "
                           "evidence\nQuery: Vitamin D deficiency lowers birth weight.")
  assert paragraphs[-1] == "Passage: {passage}\nTask type: {task_type}\nTask:"
  assert len(paragraphs) == 4 and "geckos climb" not in template
  generator = generate.Generator(llm=None, few_shot=str(path), task_types=["fact checking"])
  assert generator.template == template.rstrip()
  assert generator.examples == tuple(c["query"] for c in CLAIMS)  # the repeat guard's
  assert "Vitamin D {levels}" in generator.template.format(passage="x", task_type="y")
  assert generate.example_task("fact checking") == (
      "Given a claim, retrieve passages that support or refute it")
  with pytest.raises(ValueError, match="no example of task type 'poetry'"):
    generate.example_task("poetry")


def test_bad_few_shot_files_are_named(tmp_path):
  path = tmp_path / "bad.jsonl"
  jsonl.write(path, [CLAIMS[0], {**CLAIMS[1], "query": " "}])
  with pytest.raises(ValueError, match="example 2 lacks a non-empty string 'query'"):
    generate.load_examples(str(path))
  path.write_text("")
  with pytest.raises(ValueError, match="holds no few-shot example"):
    generate.load_examples(str(path))
  flat = tmp_path / "flat.txt"
  flat.write_text("Passage: {passage} Task type: {task_type} Task:")
  with pytest.raises(ValueError, match="no such layout"):
    generate.with_examples(generate.load_prompt(str(flat)), CLAIMS)


def test_smollm2_writes_claims_from_claim_examples(tmp_path, smollm2):
  path = tmp_path / "claims.jsonl"
  jsonl.write(path, CLAIMS)
  generator = generate.Generator(llm=smollm2, few_shot=str(path), task_types=["fact checking"])
  made = [r for r in generator(PASSAGES) if isinstance(r, generate.Generated)]
  assert len(made) >= 3 and {r.task_type for r in made} == {"fact checking"}
  assert not {r.query.lower() for r in made} & {c["query"].lower() for c in CLAIMS}


def test_few_shot_examples_come_from_a_corpus_training_queries(tmp_path):
  from gecko.experiments import few_shot
  jsonl.write(tmp_path / "corpus.jsonl", [
      {"_id": f"d{i}", "title": f"Doc {i}", "text": " ".join(f"w{j}" for j in range(100))}
      for i in range(4)])
  jsonl.write(tmp_path / "queries.jsonl", [{"_id": f"q{i}", "text": f"claim  {i}."}
                                           for i in range(4)])
  (tmp_path / "qrels").mkdir()
  (tmp_path / "qrels" / "train.tsv").write_text(
      "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{3 - i}\t1\n" for i in range(4)))
  examples = few_shot.from_beir(str(tmp_path), count=2, task="Given a claim, find evidence",
                                task_type="fact checking", query_ids=["q1", "q2", "q9"],
                                max_words=5)
  assert sorted(e["query"] for e in examples) == ["claim 1.", "claim 2."]
  by_query = {e["query"]: e for e in examples}
  assert by_query["claim 1."] == {"passage": "Doc 2. w0 w1 w2", "task_type": "fact checking",
                                  "task": "Given a claim, find evidence", "query": "claim 1."}
  every = few_shot.from_beir(str(tmp_path), count=4, task="t", task_type="fact checking")
  assert sorted(e["query"] for e in every) == [f"claim {i}." for i in range(4)]
  # The order is a hash of (seed, id): the same on every call.
  assert [e["query"] for e in few_shot.from_beir(str(tmp_path), count=4, task="t",
                                                task_type="fact checking")] == [
      e["query"] for e in every]
  with pytest.raises(ValueError, match="has 2 judged training queries to choose from, fewer "
                                       "than count=3"):
    few_shot.from_beir(str(tmp_path), count=3, task="t", task_type="fact checking",
                       query_ids=["q1", "q2"])
  out = tmp_path / "claims.jsonl"
  assert few_shot.main([f"--corpus_dir={tmp_path}", "--count=3", "--task=t",
                        "--task_type=fact checking", f"--output={out}"]) == 0
  assert len(generate.load_examples(str(out))) == 3
