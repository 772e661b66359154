"""What a run writes into its workdir besides checkpoints.

config.json (the resolved config), run.json (versions, commit, devices),
metrics.jsonl (one JSON object per line) and TensorBoard event files; with
train.wandb.project set, the same rows in a W&B run (tracking.py).
Only process 0 writes.
"""

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
import types

import lm_jax
from lm_jax import tracking

VERSIONED = (
  "jax",
  "jaxlib",
  "flax",
  "optax",
  "orbax-checkpoint",
  "tensorflow-datasets",
  "ml-collections",
  "numpy",
)


def _is_writer() -> bool:
  import jax  # pylint: disable=g-import-not-at-top  (reading metrics needs no JAX)

  return jax.process_index() == 0


class MetricWriter:
  """Appends scalars to WORKDIR/metrics.jsonl and to TensorBoard event files, and, where
  `config` sets train.wandb.project, to the run's W&B run."""

  def __init__(self, workdir: str, config=None):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.workdir = workdir
    self._events = None
    w = None if config is None else config.train.get("wandb")
    on = tracking.enabled(w) and _is_writer()
    self._tracker = tracking.Tracker(config, workdir) if on else None

  def _event_writer(self):
    if self._events is None:
      # TensorBoard's writer needs only file I/O, which its own TensorFlow-free layer does;
      # without this marker module it imports TensorFlow when installed, seconds per run.
      sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("notf"))
      from tensorboard.summary.writer.event_file_writer import EventFileWriter  # pylint: disable=g-import-not-at-top

      self._events = EventFileWriter(self.workdir)
    return self._events

  def write(self, step: int, **metrics) -> None:
    if not _is_writer():
      return
    row = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
    if self._tracker is not None and not self._tracker.started:
      # Started at the first row (after a resume's truncate_metrics): it catches up first.
      self._tracker.start(read_metrics(self.workdir))
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    from tensorboard.compat.proto import event_pb2, summary_pb2  # pylint: disable=g-import-not-at-top

    values = [
      summary_pb2.Summary.Value(tag=k, simple_value=v)
      for k, v in row.items()
      if k != "step" and isinstance(v, (int, float))
    ]
    self._event_writer().add_event(
      event_pb2.Event(
        wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=values)
      )
    )
    if self._tracker is not None:
      self._tracker.log(row)

  def write_text(self, tag: str, text: str) -> None:
    """A text summary (TensorBoard's Text tab), e.g. the config."""
    if not _is_writer():
      return
    from tensorboard.compat.proto import (  # pylint: disable=g-import-not-at-top
      event_pb2,
      summary_pb2,
      tensor_pb2,
      tensor_shape_pb2,
      types_pb2,
    )

    tensor = tensor_pb2.TensorProto(
      dtype=types_pb2.DT_STRING,
      string_val=[text.encode()],
      tensor_shape=tensor_shape_pb2.TensorShapeProto(),
    )
    metadata = summary_pb2.SummaryMetadata(
      plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text")
    )
    value = summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=metadata)
    self._event_writer().add_event(
      event_pb2.Event(wall_time=time.time(), step=0, summary=summary_pb2.Summary(value=[value]))
    )

  def flush(self) -> None:
    if self._events is not None:
      self._events.flush()

  def close(self) -> None:
    if self._events is not None:
      self._events.close()
      self._events = None
    if self._tracker is not None:
      self._tracker.finish()


def _plain(v):
  import jax  # pylint: disable=g-import-not-at-top

  v = jax.device_get(v)
  return v.item() if hasattr(v, "item") else v


def read_metrics(workdir: str) -> list[dict]:
  """metrics.jsonl as dicts; [] when there is none. A line cut short by a kill is skipped."""
  rows = []
  try:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      for line in f:
        try:
          rows.append(json.loads(line))
        except ValueError:
          continue
  except OSError:
    return []
  return rows


def truncate_metrics(workdir: str, step: int) -> None:
  """Drops lines past `step`, written after the checkpoint a run resumes from (and any line a
  kill cut short)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not _is_writer() or not os.path.exists(path):
    return
  rows = [r for r in read_metrics(workdir) if r["step"] <= step]
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  os.replace(tmp, path)  # Whole or not at all: a kill here loses no line.


def write_config(config, workdir: str) -> None:
  if _is_writer():
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")


def _git(*args) -> str:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    return subprocess.run(
      ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return ""


def run_info(config, data_fingerprints: dict | None = None, resolved: dict | None = None) -> dict:
  """Everything besides the config that reproducing this run depends on.

  `data_fingerprints`: sha256 of each split's token ids, so runs on the same tokens show it.
  `resolved`: what the config's 'auto' settings became on this device.
  """
  import jax  # pylint: disable=g-import-not-at-top

  versions = {}
  for name in VERSIONED:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return {
    "lm_jax_version": lm_jax.__version__,
    "git_commit": _git("rev-parse", "HEAD") or None,
    "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    "python": platform.python_version(),
    "versions": versions,
    "platform": jax.default_backend(),
    "device_kind": jax.devices()[0].device_kind,
    "device_count": jax.device_count(),
    "process_count": jax.process_count(),
    "seed": config.seed,
    "data_fingerprints": data_fingerprints or {},
    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    **(resolved or {}),
  }


def write_run_info(
  config, workdir: str, data_fingerprints: dict | None = None, resolved: dict | None = None
) -> None:
  if _is_writer():
    with open(os.path.join(workdir, "run.json"), "w") as f:
      json.dump(run_info(config, data_fingerprints, resolved), f, indent=2)
      f.write("\n")
