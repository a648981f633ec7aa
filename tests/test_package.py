"""The package imports light, and its layout is what the docs promise."""

import subprocess
import sys

from conftest import REPO


def test_import_gecko_does_not_import_tensorflow():
  code = ("import sys, gecko, gecko.encode, gecko.models.embedder, gecko.models.dual_encoder; "
          "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
          "('tensorflow', 'seqio', 'tensorflow_text')); print(bad); sys.exit(1 if bad else 0)")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert result.returncode == 0, result.stdout + result.stderr


def test_tasks_package_installs_as_gecko_tasks():
  import gecko_tasks
  assert gecko_tasks.__file__.startswith(str(REPO / "tasks"))


def test_ci_runs_the_readme_test_command():
  readme = (REPO / "README.md").read_text()
  ci = (REPO / ".ci" / "run").read_text()
  assert "make test" in readme.split("\n## ")[0], "README must open with the test command"
  assert "\nmake test\n" in ci
