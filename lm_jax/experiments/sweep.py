"""Seeded sweeps: every combination of config files, grid values and seeds as its own run.

Each run is `python train.py --config C --workdir ROOT/NAME --config.seed=S
--config.KEY=VALUE ...` in a subprocess, so a run of a sweep is an ordinary
run (config.json, run.json, checkpoints, metrics) that resumes like one. The
sweep writes ROOT/sweep.json listing its runs and their status, and each
run's console output to ROOT/NAME/train.log. The same sweep again skips
finished runs and resumes the others from their checkpoints. The runs share
the sweep's process group: SIGTERM or Ctrl-C to the sweep reaches every run
(the sweep forwards SIGTERM), which saves a checkpoint and stops. With
train.wandb.project set, the runs share a W&B group: the root's folder name,
unless train.wandb.group is set.
"""

import dataclasses
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from lm_jax import UserError, records
from lm_jax import config as config_lib

SWEEP_FILE = "sweep.json"
LOG_FILE = "train.log"
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]")


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a sweep: `config` (a spec) with `overrides` (seed included) in `workdir`;
  `group`: the W&B group its command sets ('' none)."""

  name: str
  config: str
  overrides: dict
  workdir: str
  group: str = ""


def parse_grid(items: list[str]) -> dict[str, list[str]]:
  """['KEY=V1,V2', ...] -> {'KEY': ['V1', 'V2'], ...}."""
  grid = {}
  for item in items:
    key, eq, values = item.partition("=")
    values = values.split(",")
    if not eq or not key or not all(values):
      raise UserError(f"--grid {item!r} is not KEY=V1,V2,...: e.g. --grid model.num_layers=2,4.")
    if key == "seed":
      raise UserError("--grid seed=... is what --seeds does: pass --seeds 0,1,2.")
    if key in grid or len(set(values)) < len(values):
      raise UserError(f"--grid {item!r} repeats a key or a value: give each once.")
    grid[key] = values
  return grid


def parse_seeds(text: str) -> list[int]:
  """'0,1,2' -> [0, 1, 2]."""
  try:
    seeds = [int(s) for s in text.split(",")]
  except ValueError as e:
    raise UserError(f"--seeds {text!r} is not a list of integers: e.g. --seeds 0,1,2.") from e
  if len(set(seeds)) < len(seeds):
    raise UserError(f"--seeds {text!r} repeats a seed: give each once.")
  return seeds


def _shortest_suffixes(keys: list[str]) -> dict[str, str]:
  """Each dotted key -> its shortest trailing part that no other key ends with."""
  out = {}
  for key in keys:
    parts = key.split(".")
    for n in range(1, len(parts) + 1):
      suffix = ".".join(parts[-n:])
      if not any(k != key and (k == suffix or k.endswith("." + suffix)) for k in keys):
        break
    out[key] = suffix
  return out


def _config_labels(specs: list[str]) -> dict[str, str]:
  """A config spec -> its file's stem (and preset); its whole path where stems clash."""
  stem = lambda s: (
    os.path.splitext(os.path.basename(s.partition(":")[0]))[0]
    + ("." + s.partition(":")[2] if ":" in s else "")
  )
  stems = [stem(s) for s in specs]
  return {s: stem(s) if stems.count(stem(s)) == 1 else s.replace(os.sep, "_") for s in specs}


def expand(
  specs: list[str],
  grid: dict[str, list[str]],
  seeds: list[int] | None,
  overrides: dict[str, str],
  root: str,
) -> list[Run]:
  """Every config x grid combination x seed, named by the config (if several), values and seed.

  Each run's config is built and checked here, so a key that a config lacks
  (the Llama model has no `use_bias`) or a value out of range is refused before
  anything starts. Without `seeds`, each config's own seed is used.
  """
  clash = sorted(set(grid) & set(overrides))
  if clash or "seed" in overrides:
    raise UserError(
      f"{', '.join(clash or ['seed'])} is both swept and fixed: "
      "drop it from --config.KEY=VALUE (seeds go in --seeds)."
    )
  if len(set(specs)) < len(specs):
    raise UserError(f"--config {','.join(specs)} names a config twice: give each once.")
  from lm_jax import checks  # pylint: disable=g-import-not-at-top  (JAX, only for sweeps)

  short = _shortest_suffixes(list(grid))
  labels = _config_labels(specs)
  runs = []
  for spec in specs:
    base = config_lib.load(spec)
    group = _group(base, overrides, root)
    for values in itertools.product(*grid.values()):
      for seed in seeds if seeds is not None else [base.seed]:
        swept = dict(zip(grid, values, strict=True))
        run_overrides = {**overrides, **swept, "seed": str(seed)}
        try:
          config = config_lib.override(base, run_overrides)
        except UserError as e:
          raise UserError(f"{spec} cannot take this sweep's keys: {e}") from e
        parts = ([labels[spec]] if len(specs) > 1 else []) + [
          f"{short[k]}={v}" for k, v in swept.items()
        ]
        name = _UNSAFE.sub("_", "-".join([*parts, f"seed={seed}"]))
        try:  # Every run's values, before any starts (the devices are the runs' own).
          checks.check_config(config)
        except UserError as e:
          raise UserError(f"run {name} of this sweep cannot start: {e}") from e
        runs.append(Run(name, spec, run_overrides, os.path.join(root, name), group))
  names = [r.name for r in runs]
  if len(set(names)) < len(names):
    dup = next(n for n in names if names.count(n) > 1)
    raise UserError(
      f"two runs would share the name {dup!r}: use values that differ in [A-Za-z0-9._+-]."
    )
  return runs


def _group(config, overrides: dict[str, str], root: str) -> str:
  """The W&B group of the sweep's runs of `config`: the root's folder name, where the config
  has a train.wandb section whose group neither it nor the sweep's overrides set."""
  w = config.train.get("wandb")
  if w is None or w.get("group") or "train.wandb.group" in overrides:
    return ""
  return os.path.basename(os.path.abspath(root))


def _read_json(path: str):
  with open(path) as f:
    return json.load(f)


def final_step(workdir: str) -> int | None:
  """The run's train.num_steps from its config.json; None when there is none."""
  try:
    return int(_read_json(os.path.join(workdir, "config.json"))["train"]["num_steps"])
  except (OSError, ValueError, KeyError, TypeError):
    return None


def is_finished(workdir: str) -> bool:
  """The final evaluation is in metrics.jsonl and the final checkpoint is complete.

  Orbax writes a checkpoint into a temporary directory and renames it to
  checkpoints/<step> when done, so that name exists only for a whole one.
  """
  last = final_step(workdir)
  if last is None or not os.path.isdir(os.path.join(workdir, "checkpoints", str(last))):
    return False
  return any(r.get("step") == last and "val_loss" in r for r in records.read_metrics(workdir))


@dataclasses.dataclass(frozen=True)
class Share:
  """What one concurrent run gets: CPU cores to pin it to (None: all) and environment variables."""

  cores: tuple | None = None
  env: tuple = ()


def visible_gpus() -> list[str]:
  """GPU ids of this host: CUDA_VISIBLE_DEVICES if set, else what nvidia-smi lists."""
  visible = os.environ.get("CUDA_VISIBLE_DEVICES")
  if visible is not None:
    return [g for g in visible.split(",") if g.strip()]
  if not shutil.which("nvidia-smi"):
    return []
  try:
    out = subprocess.run(
      ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
      capture_output=True,
      text=True,
      timeout=30,
      check=True,
    ).stdout
  except (OSError, subprocess.SubprocessError):
    return []
  return [line.strip() for line in out.splitlines() if line.strip()]


def device_shares(jobs: int, cores: list[int], gpus: list[str]) -> list[Share]:
  """Splits the host between `jobs` concurrent runs: GPUs if there are any, else CPU cores.

  One job takes the whole host. On a CPU each run is pinned to its cores and
  makes each of them a device (scripts/train.py counts the cores it may use).
  """
  if jobs < 1:
    raise UserError(f"--jobs {jobs}: run at least one at a time.")
  if jobs == 1:
    return [Share()]
  pool, what = (gpus, "GPUs") if gpus else (sorted(cores), "CPU cores")
  if jobs > len(pool):
    raise UserError(f"--jobs {jobs} exceeds the {len(pool)} {what} here: use --jobs {len(pool)}.")
  chunks = [tuple(pool[i * len(pool) // jobs : (i + 1) * len(pool) // jobs]) for i in range(jobs)]
  if gpus:
    return [Share(env=(("CUDA_VISIBLE_DEVICES", ",".join(c)),)) for c in chunks]
  return [Share(cores=c) for c in chunks]


def _child_env(share: Share) -> dict:
  env = dict(os.environ, PYTHONUNBUFFERED="1", **dict(share.env))
  if share.cores is not None:  # The run sets its own device count from the cores it gets.
    flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", ""))
    env["XLA_FLAGS"] = flags.strip()
  return env


def command(run: Run, train_script: str) -> list[str]:
  """The train.py command line of a run; the same command starts and resumes it."""
  flags = [f"--config.{k}={v}" for k, v in run.overrides.items()]
  flags += [f"--config.train.wandb.group={run.group}"] if run.group else []
  return [sys.executable, train_script, "--config", run.config, "--workdir", run.workdir, *flags]


def _last_line(path: str, offset: int) -> str:
  """The last non-empty line a run wrote to its log after `offset` (progress bars split on \\r)."""
  try:
    with open(path, "rb") as f:
      f.seek(offset)
      text = f.read().decode(errors="replace")
  except OSError:
    return ""
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  return lines[-1] if lines else ""


class _Records:
  """ROOT/sweep.json: the runs of every sweep into ROOT, by name, with their status."""

  def __init__(self, root: str, runs: list[Run]):
    self.path = os.path.join(root, SWEEP_FILE)
    self.entries = {}
    if os.path.exists(self.path):
      try:
        self.entries = {e["name"]: e for e in _read_json(self.path)["runs"]}
      except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{self.path} is not a sweep record ({e}): use another --root.") from e
    for run in runs:
      self.entries[run.name] = {
        "name": run.name,
        "workdir": os.path.relpath(run.workdir, root),
        "config": run.config,
        "overrides": run.overrides,
        "seed": int(run.overrides["seed"]),
        "status": "pending",
      }

  def set(self, name: str, **fields) -> None:
    self.entries[name].update(fields)
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      json.dump({"runs": list(self.entries.values())}, f, indent=2)
      f.write("\n")
    os.replace(tmp, self.path)


def run_sweep(runs: list[Run], root: str, train_script: str, jobs: int = 1, out=None) -> int:
  """Runs what is not finished yet, `jobs` at a time; returns the sweep's exit status.

  The status is the number of failed runs (at most 125), or 128 + the signal
  number when SIGTERM or SIGINT stopped the sweep. A failed run is reported
  with its workdir and the last line it printed; the others go on.
  """
  out = out or sys.stdout
  say = lambda text: print(text, file=out, flush=True)
  cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
  shares = device_shares(jobs, cores, visible_gpus() if jobs > 1 else [])
  if os.path.exists(root) and not os.path.isdir(root):
    raise UserError(f"--root {root} is a file, not a directory: pass a directory for the sweep.")
  os.makedirs(root, exist_ok=True)
  ledger = _Records(root, runs)
  todo = []
  for run in runs:
    if is_finished(run.workdir):
      say(f"skip {run.name}: finished")
      ledger.set(run.name, status="finished")
    else:
      todo.append(run)
      ledger.set(run.name, status="pending")
  counts = {"finished": len(runs) - len(todo), "failed": 0, "stopped": 0}
  received = []
  handler = lambda signum, frame: received.append(signum)
  previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
  running = {}  # Share index -> (run, process, log offset, start time).
  forwarded = set()
  try:
    while running or (todo and not received):
      for i in [i for i in range(len(shares)) if i not in running]:
        if not todo or received:
          break
        running[i] = _launch(todo.pop(0), shares[i], train_script, say, ledger)
      if received:
        for _, p, _, _ in running.values():
          if p.pid not in forwarded:  # Once: a second signal mid-save would cut the save short.
            p.send_signal(signal.SIGTERM)
            forwarded.add(p.pid)
      for i, (run, p, offset, start) in list(running.items()):
        if p.poll() is None:
          continue
        del running[i]
        status = _finish(run, p.returncode, offset, time.time() - start, bool(received), say)
        counts[status["status"]] += 1
        ledger.set(run.name, **status)
      time.sleep(0.05)
  finally:
    for s, h in previous.items():
      signal.signal(s, h)
  say(
    f"sweep {root}: {counts['finished']} finished, {counts['failed']} failed, "
    f"{counts['stopped']} stopped, {len(todo)} not started"
  )
  if received:
    return 128 + received[0]
  return min(counts["failed"], 125)


def _launch(run: Run, share: Share, train_script: str, say, ledger: _Records):
  os.makedirs(run.workdir, exist_ok=True)
  resuming = os.path.exists(os.path.join(run.workdir, "config.json"))
  log_path = os.path.join(run.workdir, LOG_FILE)
  with open(log_path, "ab") as log:
    offset = log.tell()
    p = subprocess.Popen(
      command(run, train_script),
      stdin=subprocess.DEVNULL,
      stdout=log,
      stderr=subprocess.STDOUT,
      env=_child_env(share),
      preexec_fn=(lambda: os.sched_setaffinity(0, share.cores)) if share.cores else None,
    )
  where = f" on cores {','.join(map(str, share.cores))}" if share.cores else ""
  where += "".join(f" with {k}={v}" for k, v in share.env)
  say(f"{'resume' if resuming else 'start'} {run.name}{where}")
  ledger.set(run.name, status="running")
  return run, p, offset, time.time()


def _finish(run: Run, returncode: int, offset: int, seconds: float, stopping: bool, say) -> dict:
  """The status of a run that exited, reported in one line."""
  if returncode == 0 and is_finished(run.workdir):
    final = [r["val_loss"] for r in records.read_metrics(run.workdir) if "val_loss" in r]
    say(f"done {run.name} in {seconds:.0f} s: val_loss {final[-1]:.4f}")
    return {"status": "finished"}
  if stopping:
    say(f"stopped {run.name}: the same command resumes it")
    return {"status": "stopped"}
  if returncode < 0:
    error = f"killed by {signal.Signals(-returncode).name}"
  else:
    error = _last_line(os.path.join(run.workdir, LOG_FILE), offset) or "no output"
    if returncode == 0:
      error = f"exited before its final step and checkpoint ({error})"
  say(f"FAILED {run.name} (exit status {returncode}), workdir {run.workdir}: {error}")
  return {"status": "failed", "exit_status": returncode, "error": error}
