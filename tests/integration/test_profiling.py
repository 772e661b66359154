"""Traces of chosen steps."""

import glob

from lm_jax import records, train


def test_profile_steps_write_a_trace(config, tmp_path):
  config.train.profile_steps = [2, 3]
  train.train_and_evaluate(config, str(tmp_path / "run"))
  assert glob.glob(str(tmp_path / "run" / "profile" / "**" / "*.xplane.pb"), recursive=True)
  rows = [r for r in records.read_metrics(str(tmp_path / "run")) if "train_loss" in r]
  assert rows and all("peak_memory_bytes" not in r for r in rows)  # The CPU reports none.
