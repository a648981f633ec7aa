"""Outputs never clobber inputs, and a replaced export is swapped in whole
(docs/troubleshooting.md): every command that writes a folder refuses one that is,
contains or lies inside what it reads, touching nothing (hashes compared), and an
export killed while it replaces another leaves the old one intact."""

import os
import shutil
import signal
import subprocess
import sys

import pytest
from conftest import REPO, TINY_RUN_GIN, cli_env, tree_hashes

from gecko import encode, eval as eval_lib, export, soup, train
from gecko.fret.config import FretConfig


@pytest.fixture
def run(tiny_run, tmp_path):
  """A copy of the shared tiny run, which a wrong refusal would damage."""
  copy = tmp_path / "run"
  shutil.copytree(tiny_run, copy)
  return copy


@pytest.mark.parametrize("output", ["run", "run/export", "run/checkpoints/inside", "."])
def test_an_export_onto_its_own_run_is_refused_and_every_byte_kept(run, capsys, output):
  before = tree_hashes(run)
  target = run.parent / output if output != "." else run.parent
  assert export.main(["--model", str(run), "--output", str(target), "--overwrite"]) == 2
  relation = {"run": "is", ".": "contains"}.get(output, "lies inside")
  assert (f"--output '{target}' {relation} the input '{run}'; writing there could overwrite "
          "what is being read" in capsys.readouterr().err)
  assert tree_hashes(run) == before


# A real `gecko.export` process that SIGKILLs itself just before the swap's rename number
# KILL_AT in its output's folder: 0 before the old export is set aside, 1 between setting
# it aside and renaming the new one over it. (Killing it from outside at those instants
# is a race the test would lose on a fast disk.)
KILLED_AT_A_RENAME = """
import os, signal, sys
parent, kill_at, argv = os.path.realpath(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
real_replace, renames = os.replace, []
def replace(src, dst, **kwargs):
  if os.path.realpath(os.path.dirname(os.path.abspath(src))) == parent:
    if len(renames) == kill_at:
      os.kill(os.getpid(), signal.SIGKILL)
    renames.append(src)
  return real_replace(src, dst, **kwargs)
os.replace = replace
from gecko import export
sys.exit(export.main(argv))
"""


@pytest.mark.parametrize("kill_at", [0, 1], ids=["before_setting_aside", "between_renames"])
def test_an_export_killed_while_replacing_another_leaves_the_old_one_whole(minilm_dir, tmp_path,
                                                                           capsys, kill_at):
  target = tmp_path / "hf"
  assert export.main(["--model", minilm_dir, "--output", str(target), "--name", "first"]) == 0
  before = tree_hashes(target)
  process = subprocess.run(
      [sys.executable, "-c", KILLED_AT_A_RENAME, str(tmp_path), str(kill_at), "--model",
       minilm_dir, "--output", str(target), "--overwrite", "--name", "second"], cwd=REPO,
      env=cli_env(1), capture_output=True, text=True, timeout=600)
  assert process.returncode == -signal.SIGKILL, process.stderr
  leftovers = sorted(n for n in os.listdir(tmp_path) if n.startswith(".hf."))
  if kill_at == 0:  # the old export untouched; the new one whole beside it, never used
    assert tree_hashes(target) == before
    assert [n.split("-")[0] for n in leftovers] == [".hf.partial"]
    said = f"gecko: removed {tmp_path / leftovers[0]}, a half-written copy of {target}"
  else:  # the old export set aside whole, the new one not yet renamed over it
    assert not target.exists()
    assert [n.split("-")[0] for n in leftovers] == [".hf.old", ".hf.partial"]
    assert tree_hashes(tmp_path / leftovers[0]) == before
    said = f"gecko: restored {target} from {tmp_path / leftovers[0]}"
  capsys.readouterr()
  assert export.main(["--model", minilm_dir, "--output", str(target), "--overwrite",
                      "--name", "third"]) == 0
  assert said in capsys.readouterr().err
  assert "# third" in (target / "README.md").read_text()
  assert not [n for n in os.listdir(tmp_path) if n.startswith(".hf.")]


def test_a_soup_into_one_of_its_runs_is_refused(run, capsys):
  before = tree_hashes(run)
  assert soup.main(["--model", f"{run}@2", "--model", str(run), "--output",
                    str(run / "soup"), "--overwrite"]) == 2
  assert f"--output '{run / 'soup'}' lies inside the input '{run}'" in capsys.readouterr().err
  assert tree_hashes(run) == before


def test_encode_into_its_model_folder_is_refused(run, tmp_path, capsys):
  before = tree_hashes(run)
  (tmp_path / "in.txt").write_text("hello\n")
  assert encode.main(["--model", str(run / "export"), "--input", str(tmp_path / "in.txt"),
                      "--output", str(run / "export" / "emb.npy")]) == 2
  assert f"lies inside the input '{run / 'export'}'" in capsys.readouterr().err
  assert tree_hashes(run) == before


def test_eval_into_its_model_folder_is_refused(run, capsys):
  before = tree_hashes(run)
  assert eval_lib.main(["--gin_file=gin/runs/eval.gin", f"--gin.CHECKPOINT='{run / 'export'}'",
                        f"--gin.OUTPUT_DIR='{run / 'export' / 'eval'}'"]) == 1
  assert (f"OUTPUT_DIR '{run / 'export' / 'eval'}' lies inside the input '{run / 'export'}'"
          in capsys.readouterr().err)
  assert tree_hashes(run) == before


def test_training_into_the_folder_of_its_initial_model_is_refused(run, tmp_path, capsys):
  before = tree_hashes(run)
  assert train.main([f"--gin_file={f}" for f in TINY_RUN_GIN] + [
      f"--gin.TRAIN_DATA='{tmp_path / 'absent.jsonl'}'", f"--gin.MODEL_DIR='{run}'",
      f"--gin.INIT_FROM='{run / 'export'}'", "--gin.TRAIN_STEPS=8"]) == 1
  assert f"MODEL_DIR '{run}' contains the input '{run / 'export'}'" in capsys.readouterr().err
  assert tree_hashes(run) == before


@pytest.mark.parametrize("layout, message", [
    ({"corpus": "out/corpus.jsonl", "output_dir": "out"}, "contains the input"),
    ({"corpus": "corpus.jsonl", "output_dir": "corpus.jsonl"}, "is a file"),
    ({"corpus": "corpus.jsonl", "output_dir": "model/fret", "encoder": "model"}, "lies inside"),
])
def test_a_fret_output_dir_apart_from_its_corpus_and_encoder(tmp_path, layout, message):
  (tmp_path / "out").mkdir()
  (tmp_path / "model").mkdir()
  for name in ("corpus.jsonl", "out/corpus.jsonl"):
    (tmp_path / name).write_text('{"id": "a", "text": "a passage"}\n')
  config = FretConfig(**{k: str(tmp_path / v) for k, v in layout.items()})
  with pytest.raises(ValueError, match=f"OUTPUT_DIR '{config.output_dir}' {message}"):
    config.check_output_dir()
  FretConfig(corpus=config.corpus, output_dir=str(tmp_path / "apart")).check_output_dir()
