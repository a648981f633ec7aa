"""Peak step memory with and without GradCache (XLA's memory analysis of the compiled step).

  .venv/bin/python benchmarks/grad_cache_memory.py [--batch_size 512] [--length 64] [--chunk 32]

Compiles the MiniLM train step (query + positive + hard negative, Eq. 3) for one
device with abstract inputs (nothing is allocated or run) and prints the compiled
program's temporary (activation) memory plus arguments, for the plain step and for
GradCache chunk sizes.
"""

from __future__ import annotations

import argparse

import jax


def step_memory(*, batch_size: int, length: int, chunk: int | None) -> dict[str, float]:
  from gecko.models import bert
  from gecko.models.dual_encoder import DualEncoder
  from gecko.training import trainer
  from gecko.training.losses import GeckoLoss
  from gecko.training.optimizers import AdamW

  model = DualEncoder(backbone=bert.BertConfig())  # all-MiniLM-L6-v2 sizes
  loss = GeckoLoss()
  program = trainer.build(model=model, loss=loss, optimizer=AdamW(total_steps=1000),
                          batch_size=batch_size, mesh_axes={"data": 1}, grad_cache_chunk=chunk)
  batch = program.abstract_batch(loss, batch_size=batch_size, query_length=length,
                                 passage_length=length)
  memory = program.lower(program.abstract_state, batch).compile().memory_analysis()
  gib = 1024 ** 3
  return {"temp_gib": memory.temp_size_in_bytes / gib,
          "args_gib": memory.argument_size_in_bytes / gib,
          "total_gib": (memory.temp_size_in_bytes + memory.argument_size_in_bytes
                        + memory.output_size_in_bytes - memory.alias_size_in_bytes) / gib}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch_size", type=int, default=512)
  parser.add_argument("--length", type=int, default=64)
  parser.add_argument("--chunk", type=int, action="append", default=None)
  args = parser.parse_args()
  print(f"MiniLM train step, batch {args.batch_size} triples x {args.length} tokens, "
        f"{jax.devices()[0].platform}")
  for chunk in [None] + (args.chunk or [64, 32]):
    m = step_memory(batch_size=args.batch_size, length=args.length, chunk=chunk)
    name = "plain step" if chunk is None else f"GradCache chunk {chunk}"
    print(f"{name:20s} temp {m['temp_gib']:6.2f} GiB   peak (temp+args+out) {m['total_gib']:6.2f} GiB")


if __name__ == "__main__":
  main()
