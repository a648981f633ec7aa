"""How well does a teacher LLM rank? FRet's step 3 scored against human judgements.

FRet trusts the LLM to pick the positive among the encoder's top N passages. This
measures that choice where the answer is known: for human queries of a BEIR corpus
(SciFact's training claims), the encoder retrieves the top N passages, the teacher
scores them by query likelihood (QL) and relevance classification (RC) exactly as FRet
does (`gecko.fret.score`, `gecko.fret.label`), and each ranking's first passage is
checked against the qrels. The encoder's own first passage is the baseline: an LLM
ranking that picks the judged passage less often than the encoder does makes FRet's
positives worse than the encoder's retrieval it is meant to correct.

    python -m gecko.experiments.ranker_accuracy --corpus_dir=../shared/data/scifact \\
        --output_dir=/tmp/rankers --teacher=gemma3-270m --queries=60 --neighbors=4

Writes `<output_dir>/ranker_<teacher>.json` (accuracy@1 and MRR per ranking, paired
bootstrap intervals of each LLM ranking against the encoder, per-query results) and
prints a Markdown table. LLM calls are cached in `<output_dir>/llm_cache.sqlite`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence

import numpy as np

from gecko.data.packaged_models import DEFAULT_MODEL
from gecko.experiments import arguments
from gecko.experiments.recipes import TEACHERS

RANKERS = ("encoder", "ql", "rc", "rrf")
DEFAULT_TASK = "Given a claim, retrieve passages that support or refute it"


def first_judged(order: Sequence[int], *, ids: Sequence[str], judged: Mapping[str, int]
                 ) -> tuple[float, float]:
  """(accuracy@1, reciprocal rank) of a ranking of candidate `ids` (`order`: best first)."""
  for rank, index in enumerate(order, start=1):
    if judged.get(ids[index], 0) > 0:
      return float(rank == 1), 1.0 / rank
  return 0.0, 0.0


def rankings(ql: Sequence[float], rc: Sequence[float]) -> dict[str, list[int]]:
  """Each ranking's order of the candidates (best first), as FRet breaks ties; the
  encoder's is the retrieval order."""
  from gecko.fret import label
  return {"encoder": list(range(len(ql))),
          **{name: label.order(ql, rc, ranking=name) for name in ("ql", "rc", "rrf")}}


def measure(*, corpus_dir: str, output_dir: str, teacher: str, queries: int, neighbors: int,
            encoder: str = DEFAULT_MODEL, task: str = DEFAULT_TASK, split: str = "train",
            seed: int = 0, threads: int | None = None, rc_score: str = "yes"
            ) -> dict[str, object]:
  """Score `queries` judged queries of `corpus_dir`'s `split` (a seeded sample) and
  return the summary (see the module docstring); `threads`: llama.cpp's CPU threads;
  `rc_score`: RC as log P(yes) or the yes-no margin (`gecko.fret.score.Scorer`)."""
  from tqdm import tqdm

  from gecko import retrieval
  from gecko.data.input_format import GECKO
  from gecko.encode import encode
  from gecko.evaluation import bootstrap, datasets
  from gecko.fret import corpus as corpus_lib
  from gecko.fret import score
  from gecko.fret.cache import LLMCache
  from gecko.fret.llm import LlamaCpp
  data = datasets.load_beir(corpus_dir, split=split)  # keeps queries with a relevant passage
  judged_ids = sorted(data.qrels)
  rng = np.random.default_rng(seed)
  sample = sorted(rng.choice(judged_ids, size=min(queries, len(judged_ids)), replace=False))
  corpus = [{"id": doc_id, **doc} for doc_id, doc in data.corpus.items()]
  os.makedirs(output_dir, exist_ok=True)
  vectors = corpus_lib.embed(corpus, encoder=encoder, output_dir=output_dir, batch_size=64)
  embedded = encode([GECKO.query(data.queries[q], task=task) for q in sample], model=encoder,
                    batch_size=64)
  ranked, _ = retrieval.top_n(embedded, vectors, neighbors)
  cache = LLMCache(os.path.join(output_dir, "llm_cache.sqlite"))
  scorer = score.Scorer(llm=LlamaCpp(model_path=teacher, n_threads=threads), cache=cache,
                        rc_score=rc_score)
  per_query: dict[str, dict[str, float]] = {name: {} for name in RANKERS}
  reciprocal: dict[str, list[float]] = {name: [] for name in RANKERS}
  for qid, row in zip(tqdm(sample, desc=f"rank ({teacher})", unit="query"), ranked, strict=True):
    passages = [corpus[i] for i in row]
    ql = scorer.ql(data.queries[qid], passages)
    rc = scorer.rc(task, data.queries[qid], passages)
    ids = [p["id"] for p in passages]
    for name, order in rankings(ql, rc).items():
      hit, rr = first_judged(order, ids=ids, judged=data.qrels[qid])
      per_query[name][qid] = hit
      reciprocal[name].append(rr)
  cache.close()
  judged_share = [np.mean([data.qrels[q].get(corpus[i]["id"], 0) > 0 for i in row])
                  for q, row in zip(sample, ranked, strict=True)]
  return {
      "teacher": teacher, "encoder": encoder, "split": split, "queries": len(sample),
      "neighbors": neighbors, "task": task, "rc_score": rc_score,
      "judged_in_top_n": int(np.count_nonzero(judged_share)),
      "chance_at_1": float(np.mean(judged_share)),  # a random pick among the N
      "accuracy_at_1": {n: float(np.mean(list(per_query[n].values()))) for n in RANKERS},
      "mrr": {n: float(np.mean(reciprocal[n])) for n in RANKERS},
      "vs_encoder": {n: str(bootstrap.paired(per_query["encoder"], per_query[n]))
                     for n in RANKERS[1:]},
      "llm_calls": scorer.llm_calls, "per_query": per_query}


def table(results: Sequence[Mapping[str, object]]) -> str:
  """One Markdown row per teacher: accuracy@1 of each ranking and of a random pick among
  the N (chance), and the QL and RRF rankings' differences to the encoder."""
  lines = ["| teacher (RC score) | queries | judged in top N | chance acc@1 | encoder acc@1 | "
           "QL acc@1 | RC acc@1 | RRF acc@1 | QL − encoder [95%] | RRF − encoder [95%] |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for r in results:
    acc = r["accuracy_at_1"]
    lines.append(f"| {r['teacher']} ({r['rc_score']}) | {r['queries']} | {r['judged_in_top_n']} | "
                 f"{r['chance_at_1']:.3f} | " + " | ".join(f"{acc[n]:.3f}" for n in RANKERS)
                 + f" | {r['vs_encoder']['ql']} | {r['vs_encoder']['rrf']} |")
  return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m gecko.experiments.ranker_accuracy",
      description="Score a teacher LLM's FRet ranking (QL, RC, their RRF) against human "
                  "judgements: for judged queries of a BEIR corpus, how often each ranking's "
                  "first of the encoder's top N passages is a judged one.")
  parser.add_argument("--corpus_dir", required=True,
                      help="BEIR directory (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv).")
  parser.add_argument("--output_dir", required=True,
                      help="Where the results, the corpus embeddings and the LLM cache go.")
  parser.add_argument("--teacher", choices=TEACHERS, action="append",
                      help="Teacher LLM (repeat for several; default: every teacher).")
  parser.add_argument("--queries", type=arguments.at_least(1), default=60,
                      help="Judged queries sampled (seeded).")
  parser.add_argument("--neighbors", type=arguments.at_least(2), default=4,
                      help="N: the encoder's top passages the teacher ranks.")
  parser.add_argument("--split", default="train", help="The qrels split to sample.")
  parser.add_argument("--task", default=DEFAULT_TASK, help="The task text of the RC prompt.")
  parser.add_argument("--seed", type=int, default=0, help="Sampling seed of the queries.")
  parser.add_argument("--rc_score", choices=("yes", "margin"), default="yes",
                      help="RC as log P(yes) (FRet's default) or log P(yes) - log P(no).")
  parser.add_argument("--threads", type=arguments.at_least(1), default=None,
                      help="llama.cpp CPU threads (default: its own choice; 1 is much faster "
                           "when another job shares the cores, as its threads spin-wait).")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  results = []
  for teacher in args.teacher or TEACHERS:
    result = measure(corpus_dir=args.corpus_dir, output_dir=args.output_dir, teacher=teacher,
                     queries=args.queries, neighbors=args.neighbors, split=args.split,
                     task=args.task, seed=args.seed, threads=args.threads,
                     rc_score=args.rc_score)
    suffix = "" if args.rc_score == "yes" else f"_rc{args.rc_score}"
    path = os.path.join(args.output_dir, f"ranker_{teacher}{suffix}.json")
    with open(path, "w") as f:
      json.dump(result, f, indent=2)
    results.append(result)
  print(table(results))
  return 0


if __name__ == "__main__":
  sys.exit(main())
