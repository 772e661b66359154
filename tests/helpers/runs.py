"""Runs from outside: a config file to start one from, a script in its own process, its losses."""

import subprocess
import sys

from conftest import ROOT

from lm_jax import records


def write_config(config, path) -> str:
  """`config` as a JSON file at `path`, which --config reads; the path as a string."""
  with open(path, "w") as f:
    f.write(config.to_json_best_effort())
  return str(path)


def script(name, *args):
  """scripts/`name`.py run with `args` in its own process; the completed process, text."""
  return subprocess.run(
    [sys.executable, f"scripts/{name}.py", *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )


def train_losses(workdir) -> list[tuple[int, float]]:
  """(step, train_loss) of each logged step of the run in `workdir`."""
  return [(r["step"], r["train_loss"]) for r in records.read_metrics(workdir) if "train_loss" in r]
