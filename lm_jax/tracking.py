"""Weights & Biases (the optional [wandb] extra): a run's metrics, config and run.json in a W&B run.

With train.wandb.project set, records.MetricWriter hands every row it writes to metrics.jsonl
to a `Tracker` (process 0 only), which starts the W&B run at the first row. The run's W&B files
lie in WORKDIR/wandb; WORKDIR/wandb/run_id keeps its id, so a resumed run, even one killed
with SIGKILL, continues the same W&B run. The only module that imports wandb.

Each step once: a killed process loses the rows W&B had not yet written to its files (its
transaction log, flushed every 15 s), and a resumed one redoes the steps after its checkpoint.
So at its first row a Tracker finds the last step the run's W&B files (or, online, the server)
hold, logs the rows of metrics.jsonl after it (records.truncate_metrics has cut the lines past
the checkpoint) and from then on only steps past it: a step the killed process's W&B files kept
is not logged twice, and one they lost comes back from metrics.jsonl.
"""

import glob
import importlib.util
import json
import os
import secrets
import struct
import sys
import zlib

from lm_jax import UserError, network
from lm_jax import config as config_lib

MODES = ("online", "offline", "disabled")
INSTALL = 'pip install -e ".[wandb]"'
ID_FILE = "run_id"  # In WORKDIR/wandb: the W&B run id every process of this run continues.


def check_config(w) -> None:
  """Refuses train.wandb values W&B cannot use; None (a config from before the section): off."""
  if w is None:
    return
  for key in ("project", "entity", "name", "group"):
    config_lib.check_str(f"train.wandb.{key}", w[key])
  tags = w.tags
  if not isinstance(tags, list | tuple) or not all(isinstance(t, str) for t in tags):
    raise UserError(
      f"train.wandb.tags={tags!r} is not a list of strings: change it in the config or with "
      "--config.train.wandb.tags=\"['a','b']\"."
    )
  config_lib.check_choice("train.wandb.mode", w.mode, MODES)
  if enabled(w) and importlib.util.find_spec("wandb") is None:
    raise UserError(
      f"train.wandb.project={w.project!r} logs to Weights & Biases, which is not installed: "
      f"{INSTALL}, or set train.wandb.project=''."
    )


def enabled(w) -> bool:
  """Whether the train.wandb section `w` (None: a config without one) logs anything."""
  return bool(w is not None and w.project and w.mode != "disabled")


def _wandb():
  try:
    import wandb  # pylint: disable=g-import-not-at-top  (optional, and a second to import)
  except ImportError as e:
    raise UserError(f"train.wandb.project needs wandb ({e}): {INSTALL}.") from e
  return wandb


def resolve_mode(mode: str, base_url: str, workdir: str) -> str:
  """`mode`, except 'online' when W&B's server takes no connection within the network probe's
  5 s: then 'offline', said in one warning with the command that uploads the run later."""
  if mode != "online":
    return mode
  host = network.unreachable_host([base_url])
  if host is None:
    return mode
  runs = os.path.join(workdir, "wandb", "offline-run-*")
  print(
    f"warning: W&B's server {host} takes no connection: this run logs to W&B offline; "
    f"upload it later with `wandb sync {runs}`.",
    file=sys.stderr,
  )
  return "offline"


def kept_id(workdir: str) -> str:
  """The W&B id kept in `workdir`; '' when there is none."""
  try:
    with open(os.path.join(workdir, "wandb", ID_FILE)) as f:
      return f.read().strip()
  except FileNotFoundError:
    return ""


def run_id(workdir: str) -> str:
  """The W&B id of the run in `workdir`: the one kept there, else a new one, kept first."""
  kept = kept_id(workdir)
  if kept:
    return kept
  path = os.path.join(workdir, "wandb", ID_FILE)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  new = secrets.token_hex(4)
  with open(f"{path}.tmp", "w") as f:
    f.write(new + "\n")
  os.replace(f"{path}.tmp", path)  # Whole or not at all: a kill here leaves no half id.
  return new


class Tracker:
  """The W&B run of `config` in `workdir`, started at the first row; steps only move forward."""

  def __init__(self, config, workdir: str):
    self.config, self.workdir = config, workdir
    self.run = None
    self.held = -1  # The last step the W&B run held when this process started it.
    self.last = -1  # The last step sent to it.

  @property
  def started(self) -> bool:
    return self.run is not None

  def start(self, history: list[dict]) -> None:
    """Starts (or continues) the W&B run, then logs the rows of `history` (metrics.jsonl) after
    the last step it holds."""
    wandb, w = _wandb(), self.config.train.wandb
    wandb_id = run_id(self.workdir)
    mode = resolve_mode(w.mode, wandb.setup().settings.base_url, self.workdir)
    try:
      with open(os.path.join(self.workdir, "run.json")) as f:
        info = json.load(f)
    except (OSError, ValueError):
      info = {}
    try:
      self.run = wandb.init(
        project=w.project,
        entity=w.entity or None,
        name=w.name or os.path.basename(os.path.abspath(self.workdir)),
        group=w.group or None,
        tags=list(w.tags) or None,
        mode=mode,
        id=wandb_id,
        resume="allow",
        dir=self.workdir,
        config={**self.config.to_dict(), "run": info},
        reinit="create_new",  # Its own run, whatever else this process logs.
        settings=wandb.Settings(silent=True, console="off"),  # lm_jax's console stays its own.
      )
    except (wandb.Error, OSError) as e:
      raise UserError(
        f"W&B did not start run {wandb_id} ({e}): log in with `wandb login` (or set "
        "WANDB_API_KEY), set train.wandb.mode=offline, or set train.wandb.project=''."
      ) from e
    self.held = max(last_step(self.workdir, wandb_id), self.run.starting_step - 1)
    for row in history:
      self.log(row)

  def log(self, row: dict) -> None:
    """Logs `row` ({'step': ..., metrics}) if its step is past those the W&B run held and not
    before the last one sent; the rows of one step become one W&B row when the next comes."""
    step = row["step"]
    if step <= self.held or step < self.last:
      return
    self.run.log({k: v for k, v in row.items() if k != "step"}, step=step)
    self.last = step

  def finish(self) -> None:
    if self.run is not None:
      self.run.finish()
      self.run = None


# Reading a run back: W&B writes each process's records to WORKDIR/wandb/*run-*-ID*/run-ID.wandb,
# a LevelDB-style log of protobuf records (wandb 0.31 ships no Python reader for it).
_HEADER = struct.Struct("<4sHB")  # ':W&B', 0xBEE1, version 0.
_RECORD = struct.Struct("<IHB")  # crc32 of kind + data, length, kind (full, first, middle, last).
_BLOCK = 32768


def _records(path: str):
  """The complete records of the transaction log at `path`, as bytes; a tail cut short by a
  kill ends the log."""
  with open(path, "rb") as f:
    data = f.read()
  if len(data) < _HEADER.size or _HEADER.unpack_from(data)[:2] != (b":W&B", 0xBEE1):
    return
  pos, parts = _HEADER.size, []
  while pos + _RECORD.size <= len(data):
    if _BLOCK - pos % _BLOCK < _RECORD.size:  # A block's tail too short for a header: padding.
      pos += _BLOCK - pos % _BLOCK
      continue
    crc, length, kind = _RECORD.unpack_from(data, pos)
    chunk = data[pos + _RECORD.size : pos + _RECORD.size + length]
    if kind == 0 or len(chunk) < length or zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc:
      return
    pos += _RECORD.size + length
    if kind == 1:  # A whole record.
      parts = []
      yield chunk
    elif kind == 2:  # The first part of one; middle parts (3) and its last (4) follow.
      parts = [chunk]
    elif kind in (3, 4) and parts:
      parts.append(chunk)
      if kind == 4:
        yield b"".join(parts)
        parts = []
    else:  # The rest of a record whose start is not here.
      return


def _run_records(workdir: str, wandb_id: str):
  """The records of every process's transaction log of W&B run `wandb_id` in `workdir`."""
  from wandb.proto import wandb_internal_pb2  # pylint: disable=g-import-not-at-top

  pattern = os.path.join(workdir, "wandb", f"*run-*-{wandb_id}*", f"run-{wandb_id}.wandb")
  for path in sorted(glob.glob(pattern), key=os.path.getmtime):
    for data in _records(path):
      yield wandb_internal_pb2.Record.FromString(data)


def last_step(workdir: str, wandb_id: str) -> int:
  """The last step the W&B files in `workdir` hold of run `wandb_id`; -1 when none."""
  steps = (r.history.step.num for r in _run_records(workdir, wandb_id) if r.HasField("history"))
  return max(steps, default=-1)


def read_run(workdir: str, wandb_id: str | None = None) -> dict:
  """What this machine's W&B files hold of the run in `workdir` (id: the kept one): 'ids' (of
  each process's records), 'history' (one dict per W&B row, '_step' included) and 'config'."""
  found = {"ids": [], "history": [], "config": {}}
  for record in _run_records(workdir, wandb_id or kept_id(workdir) or "-"):
    kind = record.WhichOneof("record_type")
    if kind == "history":
      found["history"].append({_key(i): json.loads(i.value_json) for i in record.history.item})
    elif kind in ("run", "config"):
      if kind == "run":
        found["ids"].append(record.run.run_id)
      items = (record.run.config if kind == "run" else record.config).update
      found["config"].update({_key(i): json.loads(i.value_json) for i in items})
  return found


def _key(item) -> str:
  return item.key or ".".join(item.nested_key)
