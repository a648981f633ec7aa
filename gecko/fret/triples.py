"""FRet records -> training triples with the teacher's scores (`gecko.data.pairs`).

  python -m gecko.fret.triples --fret FRET_DIR --output triples.jsonl [--teacher ql]
      [--candidates CORPUS]

Each record of FRET_DIR (either runner's shards) becomes one line

  {"query": "task: {task} | query: {query}", "positive": "title: ... | text: ...",
   "negative": "title: ... | text: ...",
   "teacher_positive": -12.3, "teacher_negative": -40.2}

in Gecko's input format, as the `gecko_fret` SeqIO task formats them, with the LLM's
score of the positive and of the hard negative: QL (`--teacher ql`, log P(query |
passage)) or RC (`--teacher rc`, log P(relevant | query, passage)); `--teacher none`
leaves them out. Train on the file with `gin/data/jsonl.gin` and
`--gin.losses.GeckoLoss.distillation='margin_mse'` (or `'listwise_kl'`).

`--candidates CORPUS` (the run's corpus file) adds every passage the LLM scored, in the
record's order, with the teacher's score of each,

   "candidates": ["title: ... | text: ...", ...], "teacher_candidates": [-12.3, ...],

for the listwise loss over all N (`--gin.losses.GeckoLoss.distill_over='candidates'`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence

from gecko import gin_flags
from gecko.data import jsonl, paths
from gecko.data.input_format import GECKO
from gecko.fret import records as records_lib

TEACHERS = ("ql", "rc", "none")


def triple(record: Mapping[str, object], *, teacher: str = "ql",
           passages: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, object]:
  """One FRet record as a training triple (Gecko's format), with the teacher's scores;
  with `passages` (the corpus by id), also its candidates and the teacher's score of
  each."""
  out = {"query": GECKO.query(record["query"], task=record["task"]),
         "positive": GECKO.document(record["positive_text"], title=record["positive_title"]),
         "negative": GECKO.document(record["negative_text"], title=record["negative_title"])}
  if teacher == "none":
    return out
  scores = [record.get(f"{side}_{teacher}") for side in ("positive", "negative")]
  if any(s is None for s in scores):
    other = {"ql": "rc", "rc": "ql"}[teacher]
    raise ValueError(f"record {record['id']!r} has no {teacher.upper()} scores (its run's "
                     f"ranking did not compute them): use --teacher {other} or none.")
  out.update(teacher_positive=scores[0], teacher_negative=scores[1])
  if passages is None:
    return out
  ids, candidate_scores = record.get("candidate_ids"), record.get(f"candidate_{teacher}")
  if not ids or candidate_scores is None:
    raise ValueError(f"record {record['id']!r} has no candidate {teacher.upper()} scores (its "
                     "run's ranking did not compute them): drop --candidates, or use the "
                     "other --teacher.")
  missing = [i for i in ids if i not in passages]
  if missing:
    raise ValueError(f"record {record['id']!r}: candidate {missing[0]!r} is not in the "
                     "--candidates corpus; give the corpus file the FRet run read.")
  return {**out, "candidates": [GECKO.document(passages[i]["text"], title=passages[i]["title"])
                                for i in ids],
          "teacher_candidates": list(candidate_scores)}


def convert(*, fret: str, output: str, teacher: str = "ql", overwrite: bool = False,
            candidates: str | None = None) -> int:
  """Writes FRET_DIR's records as triples to `output` (with each record's candidates
  when `candidates` names the run's corpus file); returns how many."""
  if teacher not in TEACHERS:
    raise ValueError(f"teacher={teacher!r}; use one of {TEACHERS}.")
  if candidates is not None and teacher == "none":
    raise ValueError("--candidates carries the teacher's score of each candidate: use "
                     "--teacher ql or rc with it.")
  if paths.exists(output) and not overwrite:
    raise FileExistsError(f"{output} exists; pass --overwrite to replace it.")
  if records_lib.SHARD.search(str(output)):
    raise ValueError(f"--output {output} is named like a FRet shard (fret-NNNNN.jsonl), which "
                     "a FRet run or the gecko_fret task would read: choose another name.")
  found = records_lib.read(fret)
  if not found:
    raise ValueError(f"{fret} holds no FRet records (no complete fret-*.jsonl shard): give "
                     "the OUTPUT_DIR of a finished gecko.fret run.")
  passages = None
  if candidates is not None:
    from gecko.fret.corpus import read_corpus
    passages = {p["id"]: p for p in read_corpus(candidates)[0]}
  # Every record is converted (and checked) before the file is written.
  return jsonl.write(output, [triple(record, teacher=teacher, passages=passages)
                              for record in found])


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m gecko.fret.triples", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--fret", required=True, help="a FRet run's OUTPUT_DIR (local or gs://)")
  parser.add_argument("--output", required=True, help="the triples' JSONL file (local)")
  parser.add_argument("--teacher", choices=TEACHERS, default="ql",
                      help="the LLM score to carry: ql (default), rc or none")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
  parser.add_argument("--candidates", metavar="CORPUS",
                      help="the run's corpus file: add each record's N candidates and the "
                           "teacher's score of each (a listwise loss over all of them)")
  args = parser.parse_args(argv)
  return gin_flags.run_plain(convert, prog="gecko.fret.triples",
                             success=f"gecko.fret.triples: wrote {{}} triples to {args.output}",
                             fret=args.fret, output=args.output, teacher=args.teacher,
                             overwrite=args.overwrite, candidates=args.candidates)


if __name__ == "__main__":
  sys.exit(main())
