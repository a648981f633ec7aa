"""FRet records split by a hash of their id: training shards, and a held-out BEIR task.

The held-out queries become a BEIR directory (`corpus.jsonl`, `queries.jsonl`,
`qrels/<split>.tsv`) that `gecko.eval` scores; each qrels split names the record field
holding the relevant passage (FRet's `positive_id`, or the `seed_id`). The rest goes to
`DATA_DIR/fret/fret-00000.jsonl`, where the `gecko_fret` SeqIO task reads it.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping, Sequence

from gecko.data import jsonl


def is_held_out(record_id: str, *, fraction: int) -> bool:
  """One record in `fraction` is held out, chosen by a hash of its id (stable)."""
  return zlib.crc32(record_id.encode("utf-8")) % fraction == 0


def split_records(records: Sequence[dict], *, fraction: int, data_dir: str, eval_dir: str,
                  corpus: Sequence[Mapping[str, str]], qrels: Mapping[str, str],
                  hint: str) -> tuple[int, int]:
  """Writes the training shard and the held-out BEIR task; returns (train, held out).

  Args:
    records: FRet records (`gecko.fret.schema`).
    fraction: One record in `fraction` is held out.
    data_dir, eval_dir: Where the training shard and the BEIR task go.
    corpus: The passages, {"id", "title"?, "text"}.
    qrels: qrels split name -> record field with the relevant passage id.
    hint: What to raise when either side is empty (named in the error).
  """
  train = [r for r in records if not is_held_out(r["id"], fraction=fraction)]
  held = [r for r in records if is_held_out(r["id"], fraction=fraction)]
  if not train or not held:
    raise ValueError(f"{len(records)} FRet records give {len(train)} to train on and "
                     f"{len(held)} held out; raise {hint}.")
  jsonl.write(os.path.join(data_dir, "fret", "fret-00000.jsonl"), train)
  jsonl.write_beir(eval_dir, corpus=corpus,
                   queries=[{"id": r["id"], "text": r["query"]} for r in held],
                   qrels={split: [(r["id"], r[field]) for r in held]
                          for split, field in qrels.items()})
  return len(train), len(held)
