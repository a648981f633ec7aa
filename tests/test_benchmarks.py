"""The benchmark helpers: the alternating timer and the prepared GPU script (its smoke
mode on this CPU, so that a GPU session finds it working)."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, cli_env

sys.path.insert(0, str(REPO / "benchmarks"))
import alternating  # noqa: E402


def test_alternate_runs_ours_and_the_peer_in_turn_and_reports_the_median_ratio():
  calls = []
  result = alternating.alternate(lambda: calls.append("a"), lambda: calls.append("b"),
                                 rounds=3, warmup=1)
  assert calls == ["a", "b"] * 4
  result = alternating.Comparison(ours=[1.0, 2.0, 1.0], peer=[2.0, 2.0, 3.0])
  assert result.ratios == [2.0, 1.0, 3.0]
  row = result.row("case", work=10)
  assert row["ratio_median"] == 2.0 and row["ratio_min"] == 1.0 and row["ratio_max"] == 3.0
  assert row["ours_per_s"] == 10.0 and "median 2.00 (min 1.00, max 3.00)" in result.summary()
  with pytest.raises(ValueError, match="rounds must be >= 1"):
    alternating.alternate(lambda: None, lambda: None, rounds=0)
  assert "CPU:" in alternating.machine() and "jax" in alternating.machine()


def test_rotate_times_every_case_in_turn_each_round():
  calls = []
  times = alternating.rotate({k: (lambda k=k: calls.append(k)) for k in "abc"}, rounds=2,
                             warmup=1)
  assert calls == list("abc") * 3
  assert list(times) == list("abc") and all(len(t) == 2 for t in times.values())
  assert alternating.spread([3.0, 1.0, 2.0]) == "2.000 s (1.000-3.000)"
  with pytest.raises(ValueError, match="rounds must be >= 1"):
    alternating.rotate({"a": lambda: None}, rounds=0)


@pytest.mark.slow
def test_gpu_script_runs_in_smoke_mode(tmp_path):
  env = dict(cli_env(devices=1), OUT=str(tmp_path), PY=sys.executable)
  result = subprocess.run(["bash", "benchmarks/gpu.sh", "--smoke", "--repeats", "1"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  report = json.loads((tmp_path / "gpu.json").read_text())
  errors = [r for r in report["rows"] if "error" in r]
  assert not errors, errors
  cases = [r["case"] for r in report["rows"]]
  assert any(c.startswith("jax train gecko_1b") for c in cases), cases
  assert sum(c.startswith("torch") for c in cases) == 4, cases
  assert all(r["mfu"] > 0 for r in report["rows"] if "mfu" in r)
  # JAX and torch ran in separate processes; the JAX part needs nothing the GPU image lacks.
  jax_part = json.loads((tmp_path / "jax.json").read_text())
  assert jax_part["framework"] == "jax" and jax_part["imports_not_on_the_image"] == []
  assert json.loads((tmp_path / "torch.json").read_text())["framework"] == "torch"
  assert {r["precision"] for r in report["rows"] if r["dtype"] == "float32"} == {
      "strict float32 (no TF32)"}
  assert all("ratio_vs_torch" in r for r in report["rows"]
             if r["case"].startswith("jax") and "MiniLM" in r["case"])
  assert os.path.exists(tmp_path / "nvidia-smi.txt")