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
import gpu_profile  # noqa: E402


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


def test_profile_summary_sums_kernel_time_per_op_and_per_call():
  gemm = ("gemm_fusion.1", "sm90_xmma_gemm_bf16")
  events = [(*gemm, 0.004), (*gemm, 0.002),
            ("custom-call.3", "cudnn_generated_fort_native_sdpa_sm90_flash_fprop", 0.002),
            ("input_reduce_fusion", "input_reduce_fusion", 0.001),
            ("loop_add_fusion", "loop_add_fusion", 0.001)]
  summary = gpu_profile.summarise(events, calls=2, wall_s=0.012, source="GPU kernels")
  assert summary["wall_ms_per_call"] == pytest.approx(6.0)
  assert summary["kernel_ms_per_call"] == pytest.approx(5.0)
  assert summary["launches_per_call"] == 2.5
  assert summary["categories_ms_per_call"] == pytest.approx({
      "matmul": 3.0, "attention": 1.0, "normalisation and reductions": 0.5,
      "elementwise and other": 0.5})
  first = summary["top"][0]
  assert (first["name"], first["launches_per_call"]) == ("gemm_fusion.1", 1.0)
  assert first["ms_per_call"] == pytest.approx(3.0) and first["share"] == pytest.approx(0.6)
  assert [g["category"] for g in summary["top"]][1] == "attention"


@pytest.mark.slow
def test_gpu_script_profiles_the_encode_in_smoke_mode(tmp_path):
  env = dict(cli_env(devices=1), OUT=str(tmp_path), PY=sys.executable, GPU_PARTS="profile",
             PROFILE_XLA_FLAGS="\n--xla_gpu_enable_triton_gemm=false")
  result = subprocess.run(["bash", "benchmarks/gpu.sh", "--smoke"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  for i, flags in enumerate(("", "--xla_gpu_enable_triton_gemm=false")):
    report = json.loads((tmp_path / f"profile-jax-{i}.json").read_text())
    assert report["xla_flags"].endswith(flags)
    assert [v["variant"] for v in report["variants"]] == ["float32 parameters",
                                                          "bfloat16 parameters"]
    assert report["profile"]["kernel_ms_per_call"] > 0 and report["profile"]["top"]
    assert report["imports_not_on_the_image"] == []
    assert "HloModule" in (tmp_path / report["hlo"]).read_text()[:200]
  torch_report = json.loads((tmp_path / "profile-torch.json").read_text())
  assert torch_report["profile"]["categories_ms_per_call"]["matmul"] > 0
  assert "profile-jax-1" in result.stdout and "matmul" in result.stdout  # the side-by-side table
  assert not (tmp_path / "jax.json").exists()  # the profile ran alone
