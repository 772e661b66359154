"""What a run records about itself: run.json, TensorBoard events, FLOPs per second."""

import glob
import json

import numpy as np
from tensorboard.backend.event_processing import event_accumulator

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
  # TensorBoard reads the event files back: the same scalars as metrics.jsonl.
  assert glob.glob(str(workdir / "events.out.tfevents.*"))
  events = event_accumulator.EventAccumulator(str(workdir))
  events.Reload()
  logged = [(e.step, e.value) for e in events.Scalars("train_loss")]
  rows = records.read_metrics(str(workdir))
  expected = [(r["step"], r["train_loss"]) for r in rows if "train_loss" in r]
  assert [s for s, _ in logged] == [s for s, _ in expected]
  np.testing.assert_allclose([v for _, v in logged], [v for _, v in expected], rtol=1e-6)
  row = next(r for r in rows if "train_loss" in r)
  assert row["flops_per_sec"] > 0
