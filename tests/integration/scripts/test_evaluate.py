"""scripts/evaluate.py on a trained run."""

import json

from helpers.runs import script


def test_evaluate_script_prints_json_alone(run_dir):
  r = script("evaluate", "--workdir", str(run_dir), "--split", "test", "--parallel", "jit")
  assert r.returncode == 0, r.stderr[-2000:]
  result = json.loads(r.stdout)
  keys = {"split", "step", "loss", "perplexity", "bits_per_byte", "tokens", "bytes", "protocol"}
  assert set(result) == keys
  assert result["protocol"].startswith("windows")
