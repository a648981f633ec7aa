"""The package imports light, and its layout is what the docs promise."""

import subprocess
import sys

from conftest import REPO, cli_env


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
  opening = readme.split("\n## ")[0]
  assert "make test " in opening and "make test-all " in opening, "README opens with both"
  assert "\nmake test-all\n" in ci


def test_an_installed_package_trains_from_any_directory(tmp_path):
  """`pip install .` (not editable) ships the gin files: a run started in another
  directory finds `runs/finetune.gin` and its includes inside the installed package."""
  target, work = tmp_path / "site", tmp_path / "elsewhere"
  work.mkdir()
  install = subprocess.run(
      [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
       "--disable-pip-version-check", "--target", str(target), str(REPO)],
      capture_output=True, text=True, timeout=600, cwd=tmp_path)
  assert install.returncode == 0, install.stderr[-2000:]
  assert (target / "gecko" / "gin" / "runs" / "finetune.gin").exists()
  assert (target / "gecko" / "py.typed").exists() and (target / "gecko_tasks").is_dir()
  records = "".join(f'{{"query": "q {i}", "positive": "p {i}", "negative": "n {i}"}}\n'
                    for i in range(16))
  (work / "triples.jsonl").write_text(records)
  env = dict(cli_env(devices=1), PYTHONPATH=str(target))
  where = subprocess.run([sys.executable, "-c", "import gecko; print(gecko.__file__)"],
                         cwd=work, env=env, capture_output=True, text=True)
  assert where.stdout.strip() == str(target / "gecko" / "__init__.py")
  result = subprocess.run(
      [sys.executable, "-m", "gecko.train", "--gin_file=models/tiny.gin", "--gin_file=runs/finetune.gin",
       "--gin_file=data/jsonl.gin", "--gin_file=overlays/local_tiny.gin",
       "--gin.MODEL_DIR='run'", "--gin.TRAIN_DATA='triples.jsonl'", "--gin.TRAIN_STEPS=2"],
      cwd=work, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert (work / "run" / "export" / "gecko_model.json").exists()
  assert "Path not found" not in result.stderr
