"""The benchmark script runs and reports what it promises (values are not asserted)."""

import json
import subprocess
import sys

from conftest import ROOT


def test_benchmark_reports_speed_and_flops():
  r = subprocess.run(
    [
      sys.executable,
      "scripts/benchmark.py",
      "--config",
      "configs/tiny.py",
      "--steps",
      "3",
      "--gen_tokens",
      "8",
      "--gen_batches",
      "2",
      "--config.train.parallel=jit",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert r.returncode == 0, r.stderr[-2000:]
  result = json.loads(r.stdout)
  for key in (
    "compile_sec",
    "step_sec",
    "tokens_per_sec",
    "flops_per_token",
    "xla_flops_per_token",
    "model_flops_per_sec",
    "mfu",
    "gen_tokens_per_sec_b2_cached",
    "gen_tokens_per_sec_b2_uncached",
  ):
    assert result[key] > 0, key
  # The model's formula and XLA's count of the compiled step agree to within a factor of 2.
  assert 0.5 < result["xla_flops_per_token"] / result["flops_per_token"] < 2.0
