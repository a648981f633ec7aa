r"""Proof that the suite catches wrong code: `make mutants`.

  .venv/bin/python tests/mutants.py [--only NAME ...] [--list]

Each mutation below is a small, plausible mistake in the code (a tanh GELU, a swapped
positive and negative, a resume that skips a batch, ...). For each, a scratch copy of
the working tree gets the mistake, and the tests named beside it run there (with the
scratch copy first on PYTHONPATH, so that they and every command line they start import
the mutated code). A mutation is *killed* when a test fails, and the table names that
test; one that every test survives makes the run exit 1. The same tests first run on
the unmutated copy, and must pass there, so a kill is the mistake's doing.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Mutation:
  name: str
  path: str  # relative to the repository
  old: str  # must occur exactly once
  new: str
  tests: tuple[str, ...]  # pytest node ids or files


MUTATIONS = (
    Mutation("tanh-approximate GELU", "gecko/models/bert.py",
             "nn.gelu(h, approximate=False)", "nn.gelu(h, approximate=True)",
             ("tests/test_parity.py", "tests/test_checkpoint_import.py")),
    Mutation("LayerNorm eps 1e-5", "gecko/models/bert.py",
             "epsilon=self.eps, dtype=self.dtype,", "epsilon=1e-5, dtype=self.dtype,",
             ("tests/test_parity.py", "tests/test_checkpoint_import.py")),
    Mutation("zeroed encoder gradients under remat", "gecko/models/bert.py",
             '      x = layer_cls(cfg, name=f"layer_{i}")(x, segments, deterministic)\n'
             "    return x",
             '      x = layer_cls(cfg, name=f"layer_{i}")(x, segments, deterministic)\n'
             "    return jax.lax.stop_gradient(x) if self.remat else x",
             ("tests/test_models.py::test_remat_gives_the_same_outputs_and_gradients_with_dropout",)),
    Mutation("GradCache replays another chunk's dropout key", "gecko/training/train_step.py",
             "embed(p, tokens[t], masks[t], keys[t][c])",
             "embed(p, tokens[t], masks[t], keys[t][(c + 1) % chunks])",
             ("tests/test_train_step.py::"
              "test_grad_cache_equals_jax_grad_with_the_same_per_chunk_keys[mesh_axes0-8]",)),
    Mutation("positive and hard negative swapped in relabel", "gecko/fret/relabel.py",
             "pos, neg = passages[chosen.positive], passages[chosen.negative]",
             "neg, pos = passages[chosen.positive], passages[chosen.negative]",
             ("tests/test_fret_pipeline.py::"
              "test_pipeline_writes_records_summary_and_resumes_from_the_cache",)),
    Mutation("de-duplication that keeps everything", "gecko/fret/diversity.py",
             "if row >= earlier and kept and similar[j, kept].any():",
             "if False:",
             ("tests/test_query_diversity.py::test_keep_mask_by_hand",)),
    Mutation("off-by-one in nDCG's discount", "gecko/evaluation/metrics.py",
             "dcg = sum(g / np.log2(i + 2) for i, g in enumerate(gains))",
             "dcg = sum(g / np.log2(i + 3) for i, g in enumerate(gains))",
             ("tests/test_evaluation.py::test_ndcg_with_graded_relevance_by_hand",)),
    Mutation("MRL truncation without re-normalisation", "gecko/models/matryoshka.py",
             "  x = embeddings[..., :dim]\n"
             "  return x / jnp.maximum(jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True)), EPS)",
             "  x = embeddings[..., :dim]\n  return x",
             ("tests/test_models.py::test_matryoshka_prefix_is_renormalised_first_dims",
              "tests/test_losses.py")),
    Mutation("same-tower term with its sign flipped", "gecko/training/losses.py",
             "qq = query @ query.T / temperature", "qq = -(query @ query.T) / temperature",
             ("tests/test_losses.py::test_eq3_with_switches",)),
    Mutation("MarginMSE on the negative-minus-positive margin", "gecko/training/losses.py",
             "return margin_mse(positive, negative, self.teacher_scale * teacher[0],",
             "return margin_mse(negative, positive, self.teacher_scale * teacher[0],",
             ("tests/test_distillation_losses.py",)),
    Mutation("the teacher's scores of positive and negative swapped in the triples",
             "gecko/fret/triples.py",
             'return {**out, "teacher_positive": scores[0], "teacher_negative": scores[1]}',
             'return {**out, "teacher_positive": scores[1], "teacher_negative": scores[0]}',
             ("tests/test_fret.py::test_fret_records_become_triples_with_the_teachers_scores",)),
    Mutation("a resume that skips one batch", "gecko/train.py",
             "      data.seek(step, position)\n    return state, step",
             "      data.seek(step, position)\n    return state, step + 1",
             ("tests/test_train.py::test_sigkill_then_resume_reproduces_the_uninterrupted_run",)),
)

IGNORE = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                ".pytest_cache")


def _pytest(scratch: pathlib.Path, tests, *, timeout: int = 1800) -> tuple[int, str, float]:
  """(exit status, the first failing test, seconds) of the tests in `scratch`."""
  env = dict(os.environ, PYTHONPATH=str(scratch), GECKO_REQUIRE_ALL="1")
  start = time.perf_counter()
  result = subprocess.run(
      [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
      cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout)
  failed = re.findall(r"^FAILED (\S+)", result.stdout, flags=re.MULTILINE)
  return result.returncode, (failed[0] if failed else ""), time.perf_counter() - start


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="tests/mutants.py", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--only", action="append", default=[],
                      help="run only the mutation whose name contains this (repeatable)")
  parser.add_argument("--list", action="store_true", help="list the mutations and exit")
  args = parser.parse_args(argv)
  chosen = [m for m in MUTATIONS if not args.only or any(o in m.name for o in args.only)]
  if args.list or not chosen:
    for m in MUTATIONS:
      print(f"{m.name}: {m.path} -> {', '.join(m.tests)}")
    return 0 if chosen or args.list else 2
  with tempfile.TemporaryDirectory(prefix="gecko-mutants-") as tmp:
    scratch = pathlib.Path(tmp) / "repo"
    shutil.copytree(REPO, scratch, ignore=IGNORE)
    for m in chosen:  # every mutation must apply to today's code
      if (scratch / m.path).read_text().count(m.old) != 1:
        print(f"tests/mutants.py: {m.name!r} no longer applies to {m.path} (its text is not "
              "there exactly once); update the mutation.", file=sys.stderr)
        return 2
    tests = sorted({t for m in chosen for t in m.tests})
    status, failed, seconds = _pytest(scratch, tests)
    print(f"baseline: the {len(tests)} test selections pass unmutated ({seconds:.0f} s)"
          if status == 0 else f"baseline: {failed or 'the tests'} fails unmutated; fix that "
          "first", file=sys.stderr)
    if status:
      return 2
    rows, survivors = [], 0
    for m in chosen:
      path = scratch / m.path
      original = path.read_text()
      path.write_text(original.replace(m.old, m.new))
      try:
        status, failed, seconds = _pytest(scratch, m.tests)
      finally:
        path.write_text(original)
      killed = status == 1 and failed
      survivors += not killed
      verdict = f"killed by {failed}" if killed else (
          "SURVIVED" if status == 0 else f"not a test failure (pytest exit {status})")
      rows.append(f"| {m.name} | `{m.path}` | {verdict} | {seconds:.0f} s |")
      print(rows[-1], file=sys.stderr, flush=True)
  print("| mutation | file | result | time |\n|---|---|---|---|\n" + "\n".join(rows))
  print(f"\n{len(chosen) - survivors} of {len(chosen)} mutations killed.")
  return 1 if survivors else 0


if __name__ == "__main__":
  sys.exit(main())
