"""What a run records about itself: run.json, TensorBoard events, FLOPs per second."""

import glob
import json

from lm_jax import records, train


def test_run_records(config, tmp_path):
  workdir = tmp_path / "run"
  train.train_and_evaluate(config, str(workdir))
  info = json.loads((workdir / "run.json").read_text())
  assert info["seed"] == config.seed and info["device_count"] == 8
  assert {"jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets"} <= set(
    info["versions"]
  )
  assert isinstance(info["git_dirty"], bool) and info["process_count"] == 1
  # The config's 'auto' dtype and attention, settled for this CPU.
  assert (info["compute_dtype"], info["attention"]) == ("float32", "reference")
  assert info["attention_reason"]
  assert glob.glob(str(workdir / "events.out.tfevents.*"))
  row = next(r for r in records.read_metrics(str(workdir)) if "train_loss" in r)
  assert row["flops_per_sec"] > 0
