r"""Embed texts with a Gecko dual encoder: a Python API and a command line.

Python:

  from gecko.encode import encode
  emb = encode(["a query", "a passage"], model="all-MiniLM-L6-v2", batch_size=64)

Command line:

  python -m gecko.encode --model all-MiniLM-L6-v2 --input texts.txt --output emb.npy

Texts are tokenized once, sorted by length and batched so that short texts are
padded only to their own length bucket (multiples of `BUCKET`); embeddings come back
in input order as float32 rows of unit norm.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from collections.abc import Sequence

import numpy as np
import tqdm

from gecko.data import jsonl
from gecko.data.input_format import apply_prompt
from gecko.models import embedder as embedder_lib
from gecko.models import matryoshka

BUCKET = 16  # sequence lengths are rounded up to a multiple of this (one compile each)
IN_FLIGHT = 4  # batches dispatched ahead of the one being copied back


def _check_texts(texts: Sequence[str]) -> list[str]:
  if isinstance(texts, (str, bytes)):
    raise TypeError(f"texts must be a sequence of strings, not a single {type(texts).__name__} "
                    f"({texts[:40]!r}); wrap it in a list.")
  try:
    texts = list(texts)
  except TypeError as e:
    raise TypeError(f"texts must be a sequence of strings, got {type(texts).__name__}.") from e
  for i, text in enumerate(texts):
    if not isinstance(text, str):
      raise TypeError(f"texts[{i}] is {type(text).__name__} ({text!r}), not a str.")
  return texts


def length_buckets(lengths: Sequence[int], *, batch_size: int, max_length: int
                   ) -> list[tuple[np.ndarray, int]]:
  """Groups indices into batches of similar length.

  Returns:
    (indices, padded_length) per batch, longest first; each padded length is the
    batch's longest text rounded up to a multiple of `BUCKET` (capped at max_length).
  """
  order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
  batches = []
  for start in range(0, len(order), batch_size):
    idx = order[start:start + batch_size]
    longest = int(lengths[idx[0]])
    batches.append((idx, min(max_length, -(-longest // BUCKET) * BUCKET)))
  return batches


def encode(texts: Sequence[str], *, model: str | os.PathLike | embedder_lib.Embedder,
           batch_size: int = 32, dim: int | None = None, prompt: str | None = None,
           show_progress: bool = False) -> np.ndarray:
  """Embeds texts.

  Args:
    texts: The strings to embed (a list or tuple; empty strings are allowed).
    model: An `Embedder`, a packaged model name, or a model directory
      (see `gecko.models.embedder.load`).
    batch_size: Texts per forward pass.
    dim: A Matryoshka dim of the model (e.g. 256); None for the full size.
    prompt: Text put before every input (e.g. "task: search result | query: "), or a
      template containing `{text}`.
    show_progress: Show a progress bar on stderr.

  Returns:
    float32 `[len(texts), dim or model.output_dim]`, unit-norm rows in input order.
  """
  texts = apply_prompt(_check_texts(texts), prompt)
  if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
  model = embedder_lib.load(model)
  if dim is not None and dim not in model.dims:
    raise ValueError(f"dim={dim!r} is not one of the model's Matryoshka dims {model.dims}.")
  out_dim = dim or model.output_dim
  if not texts:
    return np.zeros((0, out_dim), np.float32)
  tokenizer = model.tokenizer
  ids = tokenizer.encode_batch(texts)
  lengths = [len(x) for x in ids]
  result = np.empty((len(texts), model.output_dim), np.float32)
  pending: collections.deque = collections.deque()

  def collect() -> None:
    idx, embeddings = pending.popleft()
    result[idx] = np.asarray(embeddings)[:len(idx)]
    bar.update(len(idx))

  with tqdm.tqdm(total=len(texts), disable=not show_progress, unit="text",
                 desc="encode", file=sys.stderr) as bar:
    for idx, length in length_buckets(lengths, batch_size=batch_size,
                                      max_length=tokenizer.max_length):
      rows = min(batch_size, 1 << (len(idx) - 1).bit_length())  # few distinct batch shapes
      batch_ids, mask = tokenizer.pad([ids[i] for i in idx] + [[]] * (rows - len(idx)), length)
      pending.append((idx, model.embed_tokens(batch_ids, mask)))  # dispatched asynchronously
      if len(pending) > IN_FLIGHT:
        collect()
    while pending:
      collect()
  if dim is not None and dim != model.output_dim:
    result = matryoshka.prefix_numpy(result, dim)
  return result


def read_texts(path: str, *, field: str = "text") -> list[str]:
  """Texts from a `.txt` file (one per line) or `.jsonl` (`field` of each object)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"Input file not found: {path!r}.")
  if path.endswith(".jsonl"):
    with open(path, "rb") as f:
      texts = []
      for n, record in jsonl.parse(f, path=path):
        value = record if isinstance(record, str) else (
            record.get(field) if isinstance(record, dict) else None)
        if not isinstance(value, str):
          raise ValueError(f"{path}:{n}: expected a string or an object with a string "
                           f"{field!r} field, got {json.dumps(record)[:80]}.")
        texts.append(value)
      return texts
  texts = []
  with open(path, "rb") as f:
    for n, raw in enumerate(f, 1):
      try:
        texts.append(raw.decode("utf-8").rstrip("\r\n"))
      except UnicodeDecodeError as e:
        raise ValueError(f"{path}:{n}: not valid UTF-8 ({e.reason} at byte {e.start} of the "
                         "line); re-encode the file as UTF-8.") from None
  return texts


def check_output(path: str) -> str:
  """The absolute `.npy` path to write, checked before any work: its folder is created
  (or must be one) and writable, and the path is not a folder."""
  if not path.endswith(".npy"):
    raise ValueError(f"--output {path!r} must end in .npy (the embeddings are saved with "
                     "numpy.save); e.g. --output emb.npy.")
  path = os.path.abspath(path)
  if os.path.isdir(path):
    raise ValueError(f"--output {path!r} is a directory; name a file such as {path}/emb.npy.")
  folder = os.path.dirname(path)
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as e:
    raise ValueError(f"--output {path!r}: cannot create its folder ({e.strerror}).") from None
  if not os.access(folder, os.W_OK):
    raise ValueError(f"--output {path!r}: its folder {folder!r} is not writable.")
  return path


def save(path: str, embeddings: np.ndarray) -> None:
  """`np.save` through a temporary file renamed into place; nothing is left on failure."""
  tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.partial.npy")
  try:
    np.save(tmp, embeddings)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m gecko.encode",
      description="Embed texts with a Gecko dual encoder and save them as a .npy array "
                  "(float32, one unit-norm row per input text, in input order).")
  parser.add_argument("--model", required=True,
                      help="packaged model name (e.g. all-MiniLM-L6-v2), a Hugging Face BERT "
                           "directory, or a directory written by gecko.models.embedder.save")
  parser.add_argument("--input", required=True,
                      help=".txt (one text per line) or .jsonl (objects with --field)")
  parser.add_argument("--output", required=True, help="where to write the .npy array")
  parser.add_argument("--field", default="text", help="JSONL field holding the text")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--dim", type=int, default=None, help="Matryoshka dim (default: full)")
  parser.add_argument("--prompt", default=None,
                      help='prefix, or template with {text}, e.g. "task: search result | query: "')
  args = parser.parse_args(argv)
  try:
    output = check_output(args.output)
    texts = read_texts(args.input, field=args.field)
    embeddings = encode(texts, model=args.model, batch_size=args.batch_size, dim=args.dim,
                        prompt=args.prompt, show_progress=True)
    save(output, embeddings)
  except (FileNotFoundError, ValueError, TypeError) as e:
    print(f"gecko.encode: error: {e}", file=sys.stderr)
    return 2
  except OSError as e:
    print(f"gecko.encode: error: cannot write {args.output!r}: {e.strerror or e}", file=sys.stderr)
    return 1
  print(f"wrote {embeddings.shape[0]} x {embeddings.shape[1]} embeddings to {output}",
        file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
