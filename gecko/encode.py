r"""Embed texts with a Gecko dual encoder: a Python API and a command line.

Python:

  from gecko.encode import encode
  emb = encode(["a query", "a passage"], model="all-MiniLM-L6-v2", batch_size=64)

Command line:

  python -m gecko.encode --model all-MiniLM-L6-v2 --input texts.txt --output emb.npy

Texts are tokenized once and packed several to a row (`gecko.data.packing`: attention
and pooling stay within each text, so the result equals one text per row), rows of one
length batched by a token budget; no FLOP goes to padding beyond each row's tail.
Embeddings come back in input order as float32 rows of unit norm.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import os
import sys
import weakref
from collections.abc import Sequence

import jax
import numpy as np
import tqdm
from jax.sharding import Mesh

from gecko.data import jsonl, packing, paths, placement
from gecko.data.input_format import apply_prompt
from gecko.models import embedder as embedder_lib
from gecko.models import matryoshka, sharding

IN_FLIGHT = 4  # batches dispatched ahead of the one being copied back
# model -> {mesh: the model with its parameters replicated on that mesh}
_REPLICATED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
MAX_SEGMENTS = 32  # texts per packed row at most (a static size of the compiled program)
# A batch holds `batch_size` texts' worth of tokens, counting this many per text. On a
# 2-core CPU, MiniLM's throughput peaks near 2,048 tokens a batch (BENCHMARKS.md).
TOKENS_PER_TEXT = 64


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


def packed_batches(lengths: Sequence[int], *, batch_size: int, max_length: int
                   ) -> list[list[packing.Row]]:
  """Texts packed into rows (`gecko.data.packing`), rows into batches of about
  `batch_size * TOKENS_PER_TEXT` tokens (at least one row)."""
  rows = packing.pack(lengths, max_length=max_length, max_segments=MAX_SEGMENTS)
  return packing.batches(rows, token_budget=batch_size * TOKENS_PER_TEXT)


def encode(texts: Sequence[str], *, model: str | os.PathLike | embedder_lib.Embedder,
           batch_size: int = 32, dim: int | None = None, prompt: str | None = None,
           show_progress: bool = False, mesh: Mesh | None = None,
           param_shardings=None) -> np.ndarray:
  """Embeds texts.

  Args:
    texts: The strings to embed (a list or tuple; empty strings are allowed).
    model: An `Embedder`, a packaged model name, or a model directory
      (see `gecko.models.embedder.load`).
    batch_size: Texts per forward pass, counted as texts of `TOKENS_PER_TEXT` (64)
      tokens: a batch holds about `batch_size * 64` tokens, so shorter texts come more
      to a batch and longer ones fewer (at least one row of the model's longest length).
    dim: A Matryoshka dim of the model (e.g. 256); None for the full size.
    prompt: Text put before every input (e.g. "task: search result | query: "), or a
      template containing `{text}`.
    show_progress: Show a progress bar on stderr.
    mesh: Split every batch's rows over the devices of this mesh (all axes but
      `model`), in one process or several; every process passes the same texts and
      gets all the embeddings. None: the default device.
    param_shardings: With `mesh`, where the parameters live: a tree of shardings
      matching `model.params` (e.g. FSDP, from `gecko.training.partitioning`), or None
      to replicate them on every device.

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
  if mesh is not None and not placement.on_mesh(model.params, mesh):
    model = _on_mesh(model, mesh, param_shardings)
  result = _embed(model, model.tokenizer.encode_batch(texts), batch_size=batch_size,
                  mesh=mesh, show_progress=show_progress)
  if dim is not None and dim != model.output_dim:
    result = matryoshka.prefix_numpy(result, dim)
  return result


def _on_mesh(model: embedder_lib.Embedder, mesh: Mesh, param_shardings
             ) -> embedder_lib.Embedder:
  """The model with its parameters placed on `mesh`; with replicated parameters, one copy
  per (model, mesh) is kept, so repeated calls (an evaluation's tasks) neither place
  nor compile again."""
  if param_shardings is not None:
    return dataclasses.replace(model, params=placement.put_tree(model.params, param_shardings))
  placed = _REPLICATED.setdefault(model, {})
  if mesh not in placed:
    placed[mesh] = dataclasses.replace(model, params=placement.put_tree(
        model.params, placement.replicated(mesh)))
  return placed[mesh]


def _embed(model: embedder_lib.Embedder, ids: list[list[int]], *, batch_size: int,
           mesh: Mesh | None, show_progress: bool) -> np.ndarray:
  """Full-size embeddings of tokenized texts, in input order: packed rows, token-budget
  batches, dispatched ahead and copied back `IN_FLIGHT` batches later."""
  tokenizer = model.tokenizer
  result = np.empty((len(ids), model.output_dim), np.float32)
  # Rows as long as the tokenizer allows and the model has positions for.
  max_length = min(tokenizer.max_length, model.module.backbone.max_length)
  batches = packed_batches([len(x) for x in ids], batch_size=batch_size, max_length=max_length)
  shards = placement.row_shards(mesh) if mesh is not None else 1
  limit = -(-max(len(b) for b in batches) // shards) * shards
  pending: collections.deque = collections.deque()
  # On a mesh, the models' activation constraints and kernel choice follow it.
  rules = sharding.standard_logical_axis_rules()

  def context():
    return sharding.in_force(mesh, rules) if mesh is not None else contextlib.nullcontext()

  def collect() -> None:
    batch, embeddings = pending.popleft()
    embeddings = placement.fetch(embeddings)
    for r, row in enumerate(batch):
      result[list(row.texts)] = embeddings[r, :len(row.texts)]
    bar.update(sum(len(row.texts) for row in batch))

  with tqdm.tqdm(total=len(ids), disable=not show_progress, unit="text",
                 desc="encode", file=sys.stderr) as bar:
    for batch in batches:
      rows = packing.padded_rows(len(batch), limit=limit)  # few distinct batch shapes
      rows = -(-rows // shards) * shards
      token_ids, segment_ids = packing.arrays(batch, ids, rows=rows, pad_id=tokenizer.pad_id)
      if mesh is not None:
        token_ids, segment_ids = (placement.put(x, placement.rows_sharding(mesh))
                                  for x in (token_ids, segment_ids))
      with context():
        embeddings = model.embed_packed(token_ids, segment_ids, segments=MAX_SEGMENTS)
      pending.append((batch, embeddings))
      if len(pending) > IN_FLIGHT:
        collect()
    while pending:
      collect()
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
  parser.add_argument("--batch_size", type=int, default=32,
                      help="texts per forward pass, counted as 64-token texts: a batch holds "
                           "about batch_size x 64 tokens, packed several texts to a row")
  parser.add_argument("--dim", type=int, default=None, help="Matryoshka dim (default: full)")
  parser.add_argument("--prompt", default=None,
                      help='prefix, or template with {text}, e.g. "task: search result | query: "')
  parser.add_argument("--all_devices", action="store_true",
                      help="split every batch over all devices (e.g. a TPU host's chips; "
                           "parameters replicated); default: the first device")
  args = parser.parse_args(argv)
  try:
    output = check_output(args.output)
    paths.check_apart(output, args.input, args.model, flag="--output")
    texts = read_texts(args.input, field=args.field)
    mesh = Mesh(np.asarray(jax.devices()), ("data",)) if args.all_devices else None
    embeddings = encode(texts, model=args.model, batch_size=args.batch_size, dim=args.dim,
                        prompt=args.prompt, show_progress=True, mesh=mesh)
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
