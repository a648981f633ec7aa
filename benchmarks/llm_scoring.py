"""FRet's scoring calls (QL and RC) through llama.cpp: logits for the rows read only,
against logits for every evaluated position, the same model in one process.

  .venv/bin/python benchmarks/llm_scoring.py [--teachers smollm2-135m,gemma3-270m]
      [--passages 6] [--rounds 5]

Each turn scores one query against `--passages` standard-library docstring passages
(joined to about 256 LLM tokens each), by query likelihood and by relevance
classification, with no LLM cache, exactly as `gecko.fret.score.Scorer` does in a run.
`gecko.fret.llm.LlamaCpp` asks llama.cpp for the logits of the rows it reads (the
query's tokens for QL, the last token for RC); the peer turn forces logits for every
position, as llama-cpp-python does with `logits_all=True`, which is how scoring ran
before. The scores of both turns must agree (checked), so only the time differs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alternating  # noqa: E402
from texts import stdlib_paragraphs  # noqa: E402

TASK = "Given a question, retrieve a passage that answers it"
QUERY = "how does the module read a configuration file"


def passages(count: int, *, words: int = 180) -> list[dict[str, str]]:
  """`count` passages of about `words` words, paragraphs joined."""
  out, current = [], []
  for para in stdlib_paragraphs(3000):
    current += para.split()
    if len(current) >= words:
      out.append({"id": str(len(out)), "title": "", "text": " ".join(current[:words])})
      current = []
      if len(out) == count:
        return out
  raise RuntimeError(f"only {len(out)} passages of {words} words")


def run_teacher(teacher: str, *, count: int, rounds: int) -> dict:
  from gecko.fret import llm as llm_lib
  from gecko.fret import score
  scorer = score.Scorer(llm=llm_lib.LlamaCpp(model_path=teacher))
  texts = passages(count)
  rows_read = llm_lib._logits

  @contextlib.contextmanager
  def every_row(llm, *, every_row):  # the peer: logits for every evaluated position
    with rows_read(llm, every_row=True):
      yield

  def turn(logits):
    def run():
      llm_lib._logits = logits
      try:
        return scorer.ql(QUERY, texts), scorer.rc(TASK, QUERY, texts)
      finally:
        llm_lib._logits = rows_read
    return run

  ours, peer = turn(rows_read), turn(every_row)
  a, b = ours(), peer()
  worst = max(abs(x - y) for x, y in zip(a[0] + a[1], b[0] + b[1]))
  if worst > 1e-3:
    raise AssertionError(f"{teacher}: the two ways score differently (max {worst:.2e})")
  result = alternating.alternate(ours, peer, rounds=rounds, warmup=0)
  calls = 2 * count
  print(f"\n[{teacher}] {count} passages x (QL + RC) a turn, max score difference {worst:.1e}")
  print(f"  {result.summary(work=calls, unit='calls/s')}")
  return result.row(teacher, work=calls)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--teachers", default="smollm2-135m,gemma3-270m")
  parser.add_argument("--passages", type=int, default=6)
  parser.add_argument("--rounds", type=int, default=5)
  args = parser.parse_args()
  print(alternating.machine())
  for teacher in args.teachers.split(","):
    run_teacher(teacher.strip(), count=args.passages, rounds=args.rounds)


if __name__ == "__main__":
  main()
