"""Sweeps running: sharing the host, failures, stopping, kill and restart."""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT
from helpers.runs import write_config

from lm_jax import config as config_lib
from lm_jax import records
from lm_jax.experiments import sweep

# Stands in for train.py where only the sweep's handling of its runs is under test: seed 1
# fails, seed 7 waits for SIGTERM, any other seed writes what a finished run leaves behind.
FAKE_TRAIN = """
import json, os, signal, sys, time
args = sys.argv[1:]
workdir = args[args.index("--workdir") + 1]
seed = int(next(a for a in args if a.startswith("--config.seed=")).split("=")[1])
os.makedirs(workdir, exist_ok=True)
with open(os.path.join(workdir, "fake.json"), "w") as f:
  flags = os.environ.get("XLA_FLAGS", "")
  json.dump({"cores": sorted(os.sched_getaffinity(0)), "xla_flags": flags}, f)
if seed == 1:
  print("step 3: val_loss 2.0")
  sys.exit("error: the fake run failed on purpose.")
if seed == 7:
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(print("saved at step 2", flush=True) or 143))
  open(os.path.join(workdir, "waiting"), "w").close()
  time.sleep(300)
with open(os.path.join(workdir, "config.json"), "w") as f:
  json.dump({"train": {"num_steps": 3}}, f)
with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
  f.write(json.dumps({"step": 3, "val_loss": 1.0 + seed}) + "\\n")
os.makedirs(os.path.join(workdir, "checkpoints", "3"))
"""


@pytest.fixture
def fake_train(tmp_path):
  path = tmp_path / "fake_train.py"
  path.write_text(FAKE_TRAIN)
  return str(path)


def test_a_failing_run_does_not_stop_the_others(config, tmp_path, fake_train):
  spec = write_config(config, tmp_path / "c.json")
  root = str(tmp_path / "sweep")
  runs = sweep.expand([spec], {}, [0, 1, 2], {}, root)
  out = io.StringIO()
  assert sweep.run_sweep(runs, root, fake_train, out=out) == 1  # The exit status counts failures.
  report = out.getvalue()
  failed = os.path.join(root, "seed=1")
  assert f"FAILED seed=1 (exit status 1), workdir {failed}: error: the fake run failed" in report
  assert [sweep.is_finished(r.workdir) for r in runs] == [True, False, True]
  records = json.loads((tmp_path / "sweep" / "sweep.json").read_text())["runs"]
  assert [e["status"] for e in records] == ["finished", "failed", "finished"]
  assert records[1]["error"] == "error: the fake run failed on purpose."
  assert records[1]["workdir"] == "seed=1" and records[1]["overrides"] == {"seed": "1"}

  out = io.StringIO()  # Again: the finished ones are skipped, the failed one is tried again.
  assert sweep.run_sweep(runs, root, fake_train, out=out) == 1
  assert "skip seed=0: finished" in out.getvalue() and "skip seed=2: finished" in out.getvalue()
  assert "resume" not in out.getvalue() and "start seed=1" in out.getvalue()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_jobs_pin_each_run_to_its_own_cores(config, tmp_path, fake_train):
  spec = write_config(config, tmp_path / "c.json")
  root = str(tmp_path / "sweep")
  runs = sweep.expand([spec], {}, [0, 2], {}, root)
  assert "device_count" in os.environ["XLA_FLAGS"]  # Set by conftest; runs must not inherit it.
  assert sweep.run_sweep(runs, root, fake_train, jobs=2, out=io.StringIO()) == 0
  seen = [json.loads(open(os.path.join(r.workdir, "fake.json")).read()) for r in runs]
  cores = sorted(os.sched_getaffinity(0))
  assert [s["cores"] for s in seen] == [cores[: len(cores) // 2], cores[len(cores) // 2 :]]
  assert all("device_count" not in s["xla_flags"] for s in seen)


def sweep_command(*args):
  return [sys.executable, os.path.join(ROOT, "scripts", "sweep.py"), *args]


def test_sigterm_to_the_sweep_stops_its_runs(config, tmp_path, fake_train):
  spec = write_config(config, tmp_path / "c.json")
  root = tmp_path / "sweep"
  args = ["--config", spec, "--root", str(root), "--seeds", "7,0", "--train_script", fake_train]
  p = subprocess.Popen(
    sweep_command(*args),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    start_new_session=True,  # Its own process group, to kill with its run if it never waits.
  )
  waiting = root / "seed=7" / "waiting"
  deadline = time.time() + 60
  while not waiting.exists() and p.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  if not waiting.exists():  # Nothing to stop: fail here, not on a SIGTERM sent too early.
    with contextlib.suppress(ProcessLookupError):  # The sweep and its run, if any is left.
      os.killpg(p.pid, signal.SIGKILL)
    stdout, stderr = p.communicate()
    pytest.fail(f"the sweep's run seed=7 never came to wait for SIGTERM:\n{stdout}{stderr[-2000:]}")
  p.send_signal(signal.SIGTERM)  # To the sweep alone: it forwards SIGTERM to its run.
  stdout, stderr = p.communicate(timeout=60)
  assert p.returncode == 128 + signal.SIGTERM, stderr[-2000:]
  assert "stopped seed=7" in stdout and "start seed=0" not in stdout
  assert "saved at step 2" in (root / "seed=7" / "train.log").read_text()
  records = json.loads((root / "sweep.json").read_text())["runs"]
  assert [e["status"] for e in records] == ["stopped", "pending"]


@pytest.mark.slow
def test_sweep_killed_midway_restarts_without_redoing_finished_runs(config, tmp_path):
  config.train.update(num_steps=300, checkpoint_every=20, log_every=20, eval_every=300)
  gpt = write_config(config, tmp_path / "gpt.json")
  config.model = config_lib.load(os.path.join(ROOT, "configs", "shakespeare_char_llama.py")).model
  config.model.update(num_layers=1, num_heads=2, num_kv_heads=1, d_model=16, max_len=16)
  llama = write_config(config, tmp_path / "llama.json")
  root = tmp_path / "sweep"
  args = ["--config", f"{gpt},{llama}", "--root", str(root), "--seeds", "0"]
  with open(tmp_path / "first.txt", "w") as out:
    p = subprocess.Popen(sweep_command(*args), stdout=out, stderr=out, start_new_session=True)
  deadline = time.time() + 240
  while not (root / "llama-seed=0" / "checkpoints" / "20").exists() and time.time() < deadline:
    time.sleep(0.02)
  os.killpg(p.pid, signal.SIGKILL)  # The sweep and its runs: one process group.
  p.wait()
  assert sweep.is_finished(str(root / "gpt-seed=0")), (tmp_path / "first.txt").read_text()
  assert not sweep.is_finished(str(root / "llama-seed=0"))
  gpt_metrics = (root / "gpt-seed=0" / "metrics.jsonl").read_text()

  r = subprocess.run(sweep_command(*args), capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stdout + r.stderr[-2000:]
  assert "skip gpt-seed=0: finished" in r.stdout and "resume llama-seed=0" in r.stdout
  assert (root / "gpt-seed=0" / "metrics.jsonl").read_text() == gpt_metrics
  assert "resumed" in (root / "llama-seed=0" / "train.log").read_text()
  rows = records.read_metrics(str(root / "llama-seed=0"))
  assert [r["step"] for r in rows if "train_loss" in r] == list(range(20, 301, 20))

  # The two runs differ in their model keys; compare.py names them.
  r = subprocess.run(
    [sys.executable, os.path.join(ROOT, "scripts", "compare.py"), str(root), "--json"],
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert r.returncode == 0, r.stderr[-2000:]
  result = json.loads(r.stdout)
  assert result["differing_keys"]["model.name"] == ["gpt", "llama"]
  assert result["differing_keys"]["model.use_bias"] == [False, "-"]
  assert [g["n"] for g in result["groups"]] == [1, 1]
  assert result["groups"][1]["runs"][0]["value"] == rows[-1]["val_loss"]
