"""scripts/plot.py: the curves of runs, and of groups of runs as a mean with a band."""

import subprocess
import sys

from conftest import ROOT

from lm_jax import train


def test_plot_draws_runs(config, tmp_path):
  for name in ("a", "b"):
    train.train_and_evaluate(config, str(tmp_path / name))
  out = tmp_path / "curves.png"
  r = subprocess.run(
    [
      sys.executable,
      "scripts/plot.py",
      str(tmp_path / "a"),
      str(tmp_path / "b"),
      "--out",
      str(out),
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert r.returncode == 0, r.stderr
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_draws_each_group_as_a_mean_with_a_band(runs):
  root, _, _ = runs
  out = root / "curves.png"
  r = subprocess.run(
    [sys.executable, "scripts/plot.py", str(root), "--group_by", "model.name", "--out", str(out)],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert r.returncode == 0, r.stderr[-2000:]
  assert out.stat().st_size > 0
