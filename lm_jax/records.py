"""What a run writes into its workdir: config.json and metrics.jsonl."""

import json
import os

import jax


class MetricWriter:
  """Appends one JSON object per line to WORKDIR/metrics.jsonl (process 0 only)."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.active = jax.process_index() == 0

  def write(self, step: int, **metrics) -> None:
    if not self.active:
      return
    row = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")


def _plain(v):
  v = jax.device_get(v)
  return v.item() if hasattr(v, "item") else v


def read_metrics(workdir: str) -> list[dict]:
  """Reads metrics.jsonl back as a list of dicts."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def write_config(config, workdir: str) -> None:
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
