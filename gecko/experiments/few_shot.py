r"""Few-shot examples for FRet's generation prompt from a BEIR corpus's own training
queries, so that the LLM writes queries shaped like the target task's (claims for a
fact-checking corpus, say) instead of copying the packaged prompt's generic examples.

  python -m gecko.experiments.few_shot --corpus_dir=../shared/data/scifact --count=8 \
      --task_type="fact checking" \
      --task="Given a scientific claim, retrieve documents that support or refute it" \
      --output=/tmp/scifact_claims.jsonl
  # then: FretConfig(generator_options={"few_shot": "/tmp/scifact_claims.jsonl",
  #                                     "task_types": ["fact checking"]}, ...)

Each example is a training query and the start of a document judged relevant to it
(`qrels/train.tsv`), in the layout `gecko.fret.generate.load_examples` reads. Queries
are taken in the order of a hash of (seed, query id), so the choice is fixed and spread
over the corpus; `query_ids` restricts it (e.g. to the train side of
`gecko.experiments.human_dev`, so that no dev query is shown to the LLM).
"""

from __future__ import annotations

import argparse
import sys
import zlib
from collections.abc import Sequence

from gecko.data import jsonl

MAX_WORDS = 60  # of each example passage: the examples are read before every passage


def from_beir(corpus_dir: str, *, count: int, task: str, task_type: str,
              query_ids: Sequence[str] | None = None, max_words: int = MAX_WORDS,
              seed: int = 0) -> list[dict[str, str]]:
  """`count` examples {"passage", "task_type", "task", "query"} from the corpus's
  judged training queries (of `query_ids` only, when given).

  Raises:
    ValueError: fewer than `count` judged queries to take them from, or a bad count.
  """
  from gecko.evaluation import datasets
  if count < 1 or max_words < 1:
    raise ValueError(f"count={count} and max_words={max_words} must be >= 1.")
  data = datasets.load_beir(corpus_dir, split="train")
  allowed = set(data.qrels) if query_ids is None else set(query_ids) & set(data.qrels)
  if len(allowed) < count:
    raise ValueError(f"{corpus_dir} has {len(allowed)} judged training queries to choose "
                     f"from, fewer than count={count}.")
  order = sorted(allowed, key=lambda q: (zlib.crc32(f"{seed}:{q}".encode("utf-8")), q))
  examples = []
  for query in order[:count]:
    document = min(d for d, relevance in data.qrels[query].items() if relevance > 0)
    title, text = data.corpus[document]["title"], data.corpus[document]["text"]
    words = (f"{title}. {text}" if title else text).split()
    examples.append({"passage": " ".join(words[:max_words]), "task_type": task_type,
                     "task": task, "query": " ".join(data.queries[query].split())})
  return examples


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m gecko.experiments.few_shot",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--corpus_dir", required=True,
                      help="a BEIR directory with qrels/train.tsv")
  parser.add_argument("--count", type=int, default=8, help="examples to write (default 8)")
  parser.add_argument("--task", required=True, help="the task line of every example")
  parser.add_argument("--task_type", required=True,
                      help="the task type of every example (give the generator the same "
                           "one as its only task type)")
  parser.add_argument("--max_words", type=int, default=MAX_WORDS,
                      help=f"words kept of each passage (default {MAX_WORDS})")
  parser.add_argument("--seed", type=int, default=0, help="the choice's hash seed")
  parser.add_argument("--output", required=True, help="the JSONL file to write")
  args = parser.parse_args(argv)
  try:
    examples = from_beir(args.corpus_dir, count=args.count, task=args.task,
                         task_type=args.task_type, max_words=args.max_words, seed=args.seed)
  except (ValueError, FileNotFoundError) as e:
    parser.error(str(e))
  jsonl.write(args.output, examples)
  print(f"gecko.experiments.few_shot: {len(examples)} examples written to {args.output}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
