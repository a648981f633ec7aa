"""Every command the README and docs/ show names things that exist: modules, scripts,
make targets, command-line flags, gin files, and the gin names (macros, configurables)
those files define. A renamed flag or a moved gin file fails here, not in a reader's
terminal."""

import importlib.util
import re
import shlex
import sys

import pytest
from conftest import REPO

PAGES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
FENCE = re.compile(r"^```(?:bash|sh|shell)\n(.*?)^```", re.MULTILINE | re.DOTALL)
GIN_FLAG = "gecko/gin_flags.py"


def commands(page):
  """(page, line) for each command in the page's code blocks, continuations joined."""
  for block in FENCE.findall(page.read_text()):
    joined = re.sub(r"\\\n\s*", " ", block)
    for line in joined.splitlines():
      line = line.split(" #")[0].strip()
      if line and not line.startswith("#"):
        yield line


ALL = [(page.relative_to(REPO).as_posix(), line) for page in PAGES for line in commands(page)]


def _words(line):
  try:
    return shlex.split(line)
  except ValueError:  # an unbalanced quote in a shown fragment: split on blanks
    return line.split()


def _gin_path(name):
  for base in (REPO, REPO / "gin"):
    if (base / name).is_file():
      return base / name
  return None


def _gin_texts(files):
  """The text of `files` and of every file they include, transitively."""
  seen, texts, todo = set(), [], list(files)
  while todo:
    path = _gin_path(todo.pop())
    if path is None or path in seen:
      continue
    seen.add(path)
    text = path.read_text()
    texts.append(text)
    todo += re.findall(r"^include\s+'([^']+)'", text, flags=re.MULTILINE)
  return "\n".join(texts)


def _check_gin(words, problems):
  files = [w.split("=", 1)[1].strip("'\"") for w in words if w.startswith("--gin_file=")]
  for name in files:
    if _gin_path(name) is None:
      problems.append(f"no gin file {name}")
  text = _gin_texts(files)
  imported = set(re.findall(r"^from \S+ import (?:\S+ as )?(\w+)", text, flags=re.MULTILINE))
  for word in words:
    if not word.startswith("--gin."):
      continue
    name = word[len("--gin."):].split("=", 1)[0]
    if "." not in name:
      if not re.search(rf"^{name} = |%{name}\b", text, flags=re.MULTILINE):
        problems.append(f"--gin.{name}: no macro {name} in {files}")
    elif name.split(".")[0] not in imported:
      problems.append(f"--gin.{name}: {files} import no module named {name.split('.')[0]}")


def _module_sources(module):
  spec = importlib.util.find_spec(module)
  if spec is None:
    return None
  sources = [spec.origin]
  if spec.submodule_search_locations:  # a package: its __main__ and what that runs
    main = importlib.util.find_spec(module + ".__main__")
    sources = [main.origin] if main else []
    sources += [importlib.util.find_spec(f"{module}.{m}").origin for m in re.findall(
        rf"from {re.escape(module)} import (\w+)", open(main.origin).read())] if main else []
  return "".join(open(s).read() for s in sources if s)


def _check_flags(words, source, what, problems):
  for word in words:
    if word == "--":  # what follows belongs to another program (Beam, the trainer)
      break
    flag = word.split("=", 1)[0]
    if not flag.startswith("--") or flag.startswith("--gin"):
      continue
    known = (f'"{flag}"' in source  # argparse
             or re.search(rf'_take_flag\(\w+, "{flag[2:]}"', source)  # compile_step
             or re.search(rf"^\s*{re.escape(flag)}[=)|]", source, re.MULTILINE))  # a case arm
    if not known:
      problems.append(f"{what} has no flag {flag}")


def check(line):
  """The problems of one shown command (empty: it names only what exists)."""
  problems, words = [], _words(line)
  for i, word in enumerate(words):
    if word == "-m" and i and words[i - 1].endswith("python") and i + 1 < len(words):
      module = words[i + 1]
      if not module.startswith("gecko"):
        continue
      source = _module_sources(module)
      if source is None:
        problems.append(f"no module {module}")
        continue
      if "gin_flags.run" in source:
        source += (REPO / GIN_FLAG).read_text()
      _check_flags(words[i + 2:], source, module, problems)
    elif word.endswith((".py", ".sh")) and "/" in word and not word.startswith(("-", "gs:")):
      script = REPO / word.lstrip("./")
      if word.startswith(("benchmarks/", "launch/", "experiments/", "./launch/")):
        if not script.is_file():
          problems.append(f"no script {word}")
        else:  # with the scripts it hands on to (tpu_eval.sh runs tpu_train.sh)
          source = script.read_text()
          source += "".join((script.parent / other).read_text() for other in set(
              re.findall(r"(\w+\.sh)", source)) if (script.parent / other).is_file())
          _check_flags(words[i + 1:], source, word, problems)
    elif word == "make" and i + 1 < len(words) and not words[i + 1].startswith("-"):
      target = words[i + 1]
      if "=" not in target and not re.search(rf"^{re.escape(target)}:",
                                            (REPO / "Makefile").read_text(), re.MULTILINE):
        problems.append(f"no make target {target}")
  if any(w.startswith("--gin") for w in words):
    _check_gin(words, problems)
  return problems


def test_the_pages_show_commands():
  assert len(ALL) > 40 and {page for page, _ in ALL} >= {"README.md"}


@pytest.mark.parametrize("page, line", ALL, ids=[f"{p}:{i}" for i, (p, _) in enumerate(ALL)])
def test_a_shown_command_names_what_exists(page, line):
  assert check(line) == []


def test_the_check_catches_what_no_longer_exists():
  """The check itself: each kind of stale name is found."""
  assert check("python -m gecko.nowhere --x=1") == ["no module gecko.nowhere"]
  assert check("python -m gecko.export --model m --outptu o") == [
      "gecko.export has no flag --outptu"]
  assert check("python -m gecko.train --gin_file=gin/runs/nofile.gin") == [
      "no gin file gin/runs/nofile.gin"]
  assert check("python -m gecko.train --gin_file=gin/runs/finetune.gin --gin.TRAIN_STESP=3") == [
      "--gin.TRAIN_STESP: no macro TRAIN_STESP in ['gin/runs/finetune.gin']"]
  assert check("python -m gecko.fret --gin_file=gin/runs/fret.gin "
               "--gin.pipline.run.shard_size=3") == [
      "--gin.pipline.run.shard_size: ['gin/runs/fret.gin'] import no module named pipline"]
  assert check("make tset") == ["no make target tset"]
  assert check("benchmarks/no_such.py --rounds 3") == ["no script benchmarks/no_such.py"]
  assert check("python -m gecko.train --gin_file=gin/runs/finetune.gin "
               "--gin_file=gin/data/seqio.gin --gin.TRAIN_STEPS=3 "
               "--gin.seqio_batches.SeqioBatches.shuffle_buffer=8") == []


# The commands a reader runs on a laptop (README and docs/), run as written (slow tier) in
# a scratch folder laid out like a checkout: `work/` beside `shared/data`, so that
# ../shared/data is the evaluation data. Paths under /tmp/ go to the scratch folder,
# the MODEL_DIRs the pages assume trained (/tmp/gecko/ft, /tmp/gecko_run) are the smoke
# run's (whose Matryoshka dims are 16 and 64, not 256 and 768), an FRet run takes 4
# seeds and 4 neighbours instead of 100 and 20 (minutes per 100 seeds on a CPU), training on
# its records batches of 2, the evaluation of MiniLM on the three tasks scores the smoke
# run's model instead (MiniLM's is tests/test_evaluation.py's published-scores test), and
# the texts a reader brings (texts.txt, docs.jsonl) are written first. Commands that need
# more than a laptop are checked above by name only, each for the reason below.
LAPTOP_PAGES = ["README.md", "docs/training.md", "docs/evaluation.md", "docs/fret.md"]
NOT_ON_A_LAPTOP = {"TASK_DATA_DIR": "the TFDS data of the human-annotated sets",
                   "LLM_BASE_URL": "an LLM server on a GPU", "vllm ": "a GPU",
                   "gecko.train --gin_file=gin/models/gecko_1b.gin": "a TPU pod slice"}
STAND_INS = [("/tmp/gecko/ft/export", "/tmp/tiny/export"), ("/tmp/gecko_run", "/tmp/tiny"),
             ("--step 4000", "--step 18"), ("path/to/model", "/tmp/tiny/export"),
             ("--dim 256", "--dim 16"), ("EVAL_DIMS=\"(256, 768)\"", "EVAL_DIMS=\"(16, 64)\""),
             ("NUM_SEEDS=100", "NUM_SEEDS=4"), ("NUM_NEIGHBORS=20", "NUM_NEIGHBORS=4"),
             ("BATCH_SIZE=16", "BATCH_SIZE=2"),
             ("CHECKPOINT=\"'all-MiniLM-L6-v2'\"", "CHECKPOINT=\"'/tmp/tiny/export'\"")]
# A distillation run trains on the triples of the FRet run (gecko.fret.triples), so it
# runs in page order, after that run; every other training run goes first.
TRAINS_ON_FRET = "scored.jsonl"
# Commands that read nothing another command writes run in a second lane, beside the
# others (their imports and compiles are single-threaded: two lanes use both cores).
BESIDE = ("python -m gecko.compile_step", "python -m gecko.encode --model all-MiniLM-L6-v2",
          "python -m gecko.export --model all-MiniLM-L6-v2",
          "python -m gecko.experiments.few_shot")


def _laptop_commands():
  shown = []
  for page in LAPTOP_PAGES:
    shown += [line for line in commands(REPO / page)
              if line.startswith(("python -m gecko.", "python -c "))
              and not any(mark in line for mark in NOT_ON_A_LAPTOP) and line not in shown]
  first = [line for line in shown if line.startswith(("python -c", "python -m gecko.train",
                                                      "python -m gecko.fret.docstrings"))
           and TRAINS_ON_FRET not in line]
  return first + [line for line in shown if line not in first]


@pytest.mark.slow
def test_the_laptop_commands_of_the_pages_run_as_written(tmp_path):
  import subprocess
  from conftest import SHARED_DATA, cli_env
  from gecko.data import jsonl
  work = tmp_path / "work"
  work.mkdir()
  if SHARED_DATA.is_dir():
    (tmp_path / "shared").symlink_to(SHARED_DATA.parent)
  (work / "texts.txt").write_text("how do geckos climb?\nGeckos cling to walls.\n")
  jsonl.write(work / "docs.jsonl", [{"text": "Geckos cling to walls."}])
  from concurrent import futures

  def run(line):
    return line, subprocess.run(line, shell=True, cwd=work, env=cli_env(1),
                                capture_output=True, text=True, timeout=900)

  done = []
  with futures.ThreadPoolExecutor(max_workers=1) as beside:
    lane = []
    for shown in _laptop_commands():
      line = shown
      for text, stand_in in STAND_INS:
        line = line.replace(text, stand_in)
      line = line.replace("/tmp/", f"{tmp_path}/").replace("python ", f"{sys.executable} ", 1)
      if any(w in line for w in ("../shared/data", "gecko.eval", "--eval_dir")) and not (
          SHARED_DATA.is_dir()):
        continue  # a fresh clone has no evaluation data (eval's default DATA_DIR); the rest runs
      if shown.startswith(BESIDE):
        lane.append(beside.submit(run, line))
      else:
        done.append(run(line))
        assert done[-1][1].returncode == 0, f"{line}\n{done[-1][1].stderr[-3000:]}"
    done += [future.result() for future in lane]
  for line, result in done:
    assert result.returncode == 0, f"{line}\n{result.stderr[-3000:]}"
  ran = [line for line, _ in done]
  assert len(ran) == (16 if SHARED_DATA.is_dir() else 11) and len(lane) >= 3, ran
  assert (tmp_path / "tiny" / "export" / "gecko_model.json").is_file()
  made = ["work/emb.npy", "work/docs.npy", "gecko-st/model.safetensors",
          "minilm-st/model.safetensors", "passages.jsonl", "data/fret/summary.json",
          "gecko_1b_v5e64.json", "distilled/export/gecko_model.json"]
  if SHARED_DATA.is_dir():
    made += ["eval/results.md", "gecko-4000/model.safetensors", "claims.jsonl"]
  for made in made:
    assert (tmp_path / made).is_file(), made
