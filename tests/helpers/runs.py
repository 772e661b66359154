"""Runs from outside: a config file to start one from, a script in its own process, its losses."""

import glob
import os
import signal
import subprocess
import sys
import time

from conftest import ROOT

from lm_jax import records


def write_config(config, path) -> str:
  """`config` as a JSON file at `path`, which --config reads; the path as a string."""
  with open(path, "w") as f:
    f.write(config.to_json_best_effort())
  return str(path)


def script(name, *args, env=None):
  """scripts/`name`.py run with `args` (and `env` added to the environment) in its own process;
  the completed process, text."""
  return subprocess.run(
    [sys.executable, f"scripts/{name}.py", *args],
    cwd=ROOT,
    env={**os.environ, **(env or {})},
    capture_output=True,
    text=True,
    timeout=300,
  )


def train_losses(workdir) -> list[tuple[int, float]]:
  """(step, train_loss) of each logged step of the run in `workdir`."""
  return [(r["step"], r["train_loss"]) for r in records.read_metrics(workdir) if "train_loss" in r]


def kill_once(spec: str, workdir: str, pattern: str, delay: float, env=None) -> None:
  """Starts scripts/train.py on config file `spec` in `workdir` and SIGKILLs it `delay` s after
  a file matching `pattern` (under the workdir) appears."""
  command = [sys.executable, "scripts/train.py", "--config", spec, "--workdir", workdir]
  env = {**os.environ, **(env or {})}
  pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  p = subprocess.Popen(command, cwd=ROOT, env=env, **pipes)
  deadline = time.time() + 120
  while not glob.glob(os.path.join(workdir, pattern)) and time.time() < deadline:
    assert p.poll() is None, p.communicate()[1][-2000:]  # It ended before the file appeared.
    time.sleep(0.01)
  time.sleep(delay)
  p.send_signal(signal.SIGKILL)
  p.communicate()


def sigterm_at(monkeypatch, at_step: int) -> None:
  """Makes a run in this process receive SIGTERM while it logs the metrics of `at_step`."""
  real = records.MetricWriter.write

  def write(self, step, **metrics):
    if step == at_step and "train_loss" in metrics:
      os.kill(os.getpid(), signal.SIGTERM)
    return real(self, step, **metrics)

  monkeypatch.setattr(records.MetricWriter, "write", write)
