"""Orbax checkpoints of a run: WORKDIR/checkpoints/<step>/{state, meta}.

The only module that calls Orbax. `state` holds the TrainState's arrays and
the PRNG key; `meta` (JSON) holds what the data pipeline needs to produce the
next batch. Saves are asynchronous; Orbax writes into a temporary directory
and renames it when complete, so a run killed mid-save never leaves a step
that looks finished.
"""

import glob
import os
import shutil
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from lm_jax import UserError, console, parallel

# Trees a run writes once, beside its checkpoints (Checkpointer.save_once), as messages name them.
ONCE = {"frozen": "frozen parameters", "reference": "reference model's parameters"}


def _error_line(e: BaseException) -> str:
  """'Type: first line' of the error a failure started from (Orbax wraps TensorStore's)."""
  while e.__cause__ is not None:
    e = e.__cause__
  line = (str(e).strip().splitlines() or [""])[0].split(" [tensorstore_spec=")[0]
  return f"{type(e).__name__}: {line[:240]}"


def _val_loss(metrics):
  return metrics["val_loss"]


def _path_str(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _shapes(tree) -> dict[str, tuple]:
  """{'params/wte/embedding': (shape, dtype)} for arrays, abstract arrays or Orbax metadata."""
  out = {}
  for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if isinstance(v, (int, float)):
      v = np.asarray(v)
    if jax.dtypes.issubdtype(getattr(v, "dtype", None), jax.dtypes.prng_key):
      v = jax.eval_shape(jax.random.key_data, v)  # Typed keys are stored as their key data.
    if hasattr(v, "shape"):
      out[_path_str(path)] = (tuple(v.shape), str(v.dtype))
  return out


def mismatch(have_tree, want_tree, have_label: str) -> str | None:
  """Lines naming each path whose shape or dtype differ ('path: LABEL (shape, dtype), config
  (shape, dtype)'), optimizer paths only when nothing else differs; None when the trees fit."""
  have, want = _shapes(have_tree), _shapes(want_tree)
  keys = sorted(k for k in have.keys() | want.keys() if have.get(k) != want.get(k))
  if not keys:
    return None
  keys = [k for k in keys if not k.startswith("opt_state/")] or keys
  lines = "\n".join(f"  {k}: {have_label} {have.get(k)}, config {want.get(k)}" for k in keys[:20])
  return lines + (f"\n  ... and {len(keys) - 20} more" if len(keys) > 20 else "")


class Checkpointer:
  """Saves and restores {'state': pytree, 'meta': dict} by step.

  `read_only` opens a run's checkpoints for sampling or evaluation without
  touching them, even while the run is still training.
  """

  def __init__(self, workdir: str, keep: int = 3, keep_best: bool = False, read_only: bool = False):
    console.quiet_package("absl", "orbax")  # It logs errors for damage this class reports.
    console.quiet_abandoned_reads()
    self.read_only = read_only
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    policies = [pp.LatestN(n=keep)]
    if keep_best:
      policies.append(pp.BestN(get_metric_fn=_val_loss, reverse=True, n=1))
    options = ocp.CheckpointManagerOptions(
      preservation_policy=pp.AnyPreservationPolicy(policies),
      best_fn=_val_loss if keep_best else None,
      best_mode="min",
      enable_async_checkpointing=True,
      cleanup_tmp_directories=not read_only,
      create=not read_only,
      read_only=read_only,
    )
    # Made here, not at import: a handler starts JAX's backend, which must wait for the
    # multi-host set-up and the CPU device count (cli.start_backend).
    handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state, meta: dict, metrics: dict | None = None) -> None:
    """Starts an asynchronous save of `state` (global arrays) at `step`."""
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    try:
      self.manager.save(step, args=args, metrics=metrics, force=True)
    except Exception as e:  # pylint: disable=broad-except  (includes the previous save's error)
      raise self._save_failed(step, e) from e

  def check_fits(self, step: int, target) -> None:
    """Refuses a checkpoint whose tree or shapes differ from `target`'s."""
    try:
      stored = self.manager.item_metadata(step).state
    except KeyError:  # A step directory without a state item.
      stored = None
    if stored is None:
      raise FileNotFoundError(f"no readable metadata in {self.directory}/{step}/state")
    lines = mismatch(stored.tree, target, "checkpoint")
    if lines:
      raise UserError(
        f"checkpoint {step} in {self.directory} does not fit the model of this "
        f"config (path: checkpoint vs config shape, dtype):\n{lines}\n"
        "Use the config the run was trained with, or a new --workdir."
      )

  def _restore_step(self, step: int, target):
    self.check_fits(step, target)
    abstract = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), target
    )
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
    r = self.manager.restore(step, args=args)
    return r.state, r.meta

  def restore(self, target, step: int | None = None):
    """Restores (step, state, meta) onto `target`'s shapes and shardings.

    Without `step`, the newest checkpoint that restores. A step that fails while
    an older step of the same run restores, with the same code and config, is
    damaged, whatever the error (a cut-short write, a disk that lost a file):
    it is skipped with a warning naming it and its error, and a trainer moves it
    aside (`<step>.damaged`, never deleted) so that it can save that step again.
    When no step restores, the cause is not one step's files (a config that does
    not fit: its own message; an Orbax that reads none; every step damaged): a
    UserError lists each step tried, and nothing on disk changes. Returns None
    when there is no checkpoint. All processes take the same step.
    """
    steps = self.steps()
    if step is not None and step not in steps:
      raise UserError(
        f"{self.directory} holds no checkpoint {step} (it holds steps "
        f"{', '.join(map(str, steps)) or 'none'}): pass one of them, or no step for the newest."
      )
    failed = []
    for s in [step] if step is not None else steps[::-1]:
      try:
        state, meta = self._restore_step(s, target)
        error = None
      except Exception as e:  # pylint: disable=broad-except  (the rule above sorts them)
        error = e
      if parallel.any_process(error is not None):
        failed.append((s, error or RuntimeError("it failed to restore on another process")))
        continue
      if failed:
        self._skip(failed, s)
      return s, state, meta
    if failed:
      raise self._refusal(failed)
    return None

  def _skip(self, failed, good: int) -> None:
    """Warns of the damaged steps newer than `good`; a trainer moves them aside."""
    names = ", ".join(str(s) for s, _ in failed)
    lines = "\n".join(f"  step {s}: {_error_line(e)}" for s, e in failed)
    then = (
      f"using step {good}; nothing moved (read-only)"
      if self.read_only
      else (f"resuming from step {good}")
    )
    print(
      f"warning: checkpoint {names} in {self.directory} is damaged: it fails to restore while "
      f"step {good} restores; {then}:\n{lines}",
      file=sys.stderr,
    )
    if not self.read_only:
      self._set_aside([s for s, _ in failed])

  def _refusal(self, failed) -> UserError:
    misfit = next((e for _, e in failed if isinstance(e, UserError)), None)
    if misfit is not None:  # The config, not the files: its own message.
      return misfit
    tried = "\n".join(f"  step {s}: {_error_line(e)}" for s, e in failed)
    return UserError(
      f"no checkpoint in {self.directory} could be restored:\n{tried}\n"
      "Nothing in the run's directory was changed: fix the cause (a damaged or unreachable "
      "disk, a changed Orbax version) and run the same command again, or pass a new --workdir."
    )

  def _set_aside(self, steps: list[int]) -> None:
    """Renames damaged step directories to `<step>.damaged` (process 0), never deletes them."""
    if jax.process_index() == 0:
      for s in steps:
        src = os.path.join(self.directory, str(s))
        dst, n = f"{src}.damaged", 1
        while os.path.exists(dst):
          dst, n = f"{src}.damaged.{n}", n + 1
        os.rename(src, dst)
        print(f"warning: moved damaged checkpoint {s} aside to {dst}", file=sys.stderr)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

      multihost_utils.sync_global_devices("lm_jax_checkpoints_set_aside")
    self.manager.reload()

  def _save_failed(self, step: int | None, e: Exception) -> UserError:
    what = f"checkpoint {step}" if step is not None else "a checkpoint"
    return UserError(
      f"could not write {what} to {self.directory} ({_error_line(e)}): "
      "free disk space or fix its permissions, then run the same command to resume from "
      "the last checkpoint written, which is intact."
    )

  # Parameters a run reads but never trains, written once when it starts: WORKDIR/frozen (a
  # LoRA run's model), WORKDIR/reference (the starting model preference tuning compares with).

  def _once_path(self, name: str) -> str:
    assert name in ONCE, name
    return os.path.join(os.path.dirname(self.directory), name)

  def save_once(self, name: str, tree) -> None:
    """Writes WORKDIR/`name` (global arrays), replacing any earlier copy; returns once written.

    Orbax writes into a temporary directory and renames it, so a run killed mid-write leaves
    either no copy or a whole one; a run that restarts before its first checkpoint writes it
    again.
    """
    path = self._once_path(name)
    if jax.process_index() == 0:  # What a write killed midway left: Orbax's temporary copies.
      for stale in glob.glob(f"{glob.escape(path)}.orbax-checkpoint-tmp*"):
        shutil.rmtree(stale, ignore_errors=True)
    with ocp.StandardCheckpointer() as ckptr:
      try:
        ckptr.save(path, tree, force=True)
        ckptr.wait_until_finished()
      except Exception as e:  # pylint: disable=broad-except  (disk full, permissions)
        raise UserError(
          f"could not write the {ONCE[name]} to {path} ({_error_line(e)}): free disk "
          "space or fix its permissions, then run the same command."
        ) from e

  def restore_once(self, name: str, target):
    """Reads WORKDIR/`name` onto `target`'s shapes and shardings (abstract arrays)."""
    path, what = self._once_path(name), ONCE[name]
    if not os.path.isdir(path):
      raise UserError(
        f"{path} is missing: this run reads the {what} it saved there when it started, and "
        "cannot go on without them; start the run again in a new --workdir."
      )
    with ocp.StandardCheckpointer() as ckptr:
      lines = mismatch(ckptr.metadata(path).item_metadata.tree, target, "saved")
      if lines:
        raise UserError(
          f"the {what} in {path} do not fit the model of this config (path: saved vs config "
          f"shape, dtype):\n{lines}\nUse the config the run was trained with."
        )
      try:
        return ckptr.restore(path, target)
      except Exception as e:  # pylint: disable=broad-except  (damage: reported, nothing changed)
        raise UserError(
          f"could not read the {what} in {path} ({_error_line(e)}): the copy is damaged; "
          "start the run again in a new --workdir."
        ) from e

  def close(self) -> None:
    """Waits for the last save, then closes; a save that failed stops the run with its cause."""
    try:
      self.manager.close()
    except Exception as e:  # pylint: disable=broad-except  (any failed write ends here)
      raise self._save_failed(None, e) from e
