"""scripts/train.py: errors in one line, tiny-shakespeare, a device per CPU core."""

import json
import os
import subprocess
import sys

import pytest
from conftest import MANUAL_DIR, ROOT

from lm_jax import records


def run_script(*args):
  return subprocess.run(
    [sys.executable, "scripts/train.py", *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_script_refuses_unknown_key_in_one_line(tmp_path):
  r = run_script(
    "--config", "configs/tiny.py", "--workdir", str(tmp_path), "--config.model.depth=2"
  )
  assert r.returncode == 1
  assert r.stderr.strip().splitlines()[-1].startswith("error: unknown config key 'model.depth'")
  assert "Traceback" not in r.stderr


@pytest.mark.skipif(not MANUAL_DIR, reason="set LM_JAX_MANUAL_DIR to tiny-shakespeare's folder")
@pytest.mark.slow
def test_script_trains_tiny_shakespeare(tmp_path):
  workdir = tmp_path / "run"
  r = run_script(
    "--config",
    "configs/tiny.py",
    "--workdir",
    str(workdir),
    f"--config.data.manual_dir={MANUAL_DIR}",
    f"--config.data.data_dir={tmp_path / 'tfds'}",
    "--config.train.num_steps=40",
    "--config.train.eval_every=20",
  )
  assert r.returncode == 0, r.stderr[-3000:]
  rows = records.read_metrics(str(workdir))
  evals = [r["val_loss"] for r in rows if "val_loss" in r]
  assert len(evals) == 2 and evals[1] < evals[0]
  with open(workdir / "tokenizer.json") as f:
    assert len(json.load(f)["chars"]) == 65


def test_script_makes_each_cpu_core_a_device(config, tmp_path):
  config.train.update(parallel="auto", num_steps=2, eval_every=2, log_every=1)
  spec = tmp_path / "config.json"
  spec.write_text(json.dumps(config.to_dict()))
  # As a user starts it: no simulated devices, no compilation cache named by the tests.
  unset = ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")
  env = {k: v for k, v in os.environ.items() if k not in unset}
  r = subprocess.run(
    [sys.executable, "scripts/train.py", "--config", str(spec), "--workdir", str(tmp_path / "run")],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert r.returncode == 0, r.stderr[-2000:]
  cores = len(os.sched_getaffinity(0))
  expected = max(d for d in range(1, cores + 1) if 8 % d == 0)  # Batch 8 splits evenly.
  info = json.loads((tmp_path / "run" / "run.json").read_text())
  assert info["device_count"] == expected
  if expected > 1:  # A tiny model: auto keeps a replica per core (parallel.resolve_mode).
    assert info["parallel"] == "pmap" and "GFLOP per core" in info["parallel_reason"]
  # The script turned on JAX's compilation cache beside the token cache.
  assert os.listdir(os.path.join(os.environ["XDG_CACHE_HOME"], "lm_jax", "jax_cache"))
