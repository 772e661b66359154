"""A run on disk: one trainer per workdir, and resuming after a kill needs no clean-up."""

import glob
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT

from lm_jax import records


def train_script(*args, wait=True):
  cmd = [sys.executable, "scripts/train.py", *args]
  if wait:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, seconds=120):
  deadline = time.time() + seconds
  while not predicate():
    assert time.time() < deadline, "timed out"
    time.sleep(0.05)


@pytest.mark.slow
def test_second_trainer_is_refused_and_a_killed_one_leaves_no_stale_lock(config, tmp_path):
  config.train.update(num_steps=100_000, log_every=1, checkpoint_every=5, eval_every=100_000)
  spec = str(tmp_path / "config.json")
  with open(spec, "w") as f:
    f.write(config.to_json_best_effort())
  workdir = str(tmp_path / "run")
  metrics = os.path.join(workdir, "metrics.jsonl")
  first = train_script("--config", spec, "--workdir", workdir, wait=False)
  try:
    wait_for(lambda: glob.glob(os.path.join(workdir, "checkpoints", "5")))
    second = train_script("--workdir", workdir)
    assert second.returncode != 0 and "Traceback" not in second.stderr
    assert "in use by a live training run (host " in second.stderr
    assert f"pid {first.pid})" in second.stderr
    # The first goes on undisturbed: alive, still logging, one line per step.
    logged = len(records.read_metrics(workdir))
    wait_for(lambda: len(records.read_metrics(workdir)) > logged + 5)
    assert first.poll() is None
    steps = [r["step"] for r in records.read_metrics(workdir) if "train_loss" in r]
    assert steps == list(range(1, len(steps) + 1))
  finally:
    first.send_signal(signal.SIGKILL)
    first.communicate()
  assert os.path.exists(metrics)
  # SIGKILL released the OS lock: the same command resumes with no clean-up.
  resumed = train_script(
    "--workdir", workdir, "--config.train.num_steps=3", "--override=train.num_steps"
  )
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "resumed" in resumed.stderr
