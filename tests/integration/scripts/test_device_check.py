"""scripts/device_check.py on the CPU: one JSON object whose equality checks pass."""

import json
import os
import subprocess
import sys

import pytest
from conftest import FAST_COMPILE, ROOT


@pytest.mark.slow
def test_device_check_runs_on_cpu():
  env = {**os.environ, "XLA_FLAGS": FAST_COMPILE}  # Its own device count.
  r = subprocess.run(
    [sys.executable, "scripts/device_check.py", "--size", "tiny", "--steps", "2"],
    cwd=ROOT,
    env={**env, "PYTHONPATH": ROOT},
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert r.returncode == 0, r.stderr[-2000:]
  out = json.loads(r.stdout)
  assert out["devices"]["platform"] == "cpu" and out["size"] == "tiny"
  assert set(out["parallel"]["losses"]) == {"jit", "pmap", "sharded"}
  assert out["parallel"]["ok"] and out["parallel"]["max_abs_diff"] < 1e-4
  assert out["attention"]["attention"] in ("reference", "xla")
  assert out["attention"]["ok"] and out["attention"]["max_abs_diff"]["xla"] < 1e-4
  assert out["train"]["tokens_per_sec"] > 0 and out["generate"]["tokens_per_sec"] > 0
  assert out["train"]["peak_memory_bytes"] is None and out["ok"]
