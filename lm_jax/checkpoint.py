"""Orbax checkpoints of a run: WORKDIR/checkpoints/<step>/{state, meta}.

The only module that calls Orbax. `state` holds the TrainState's arrays and
the PRNG key; `meta` (JSON) holds what the data pipeline needs to produce the
next batch. Saves are asynchronous; Orbax writes into a temporary directory
and renames it when complete, so a run killed mid-save never leaves a step
that looks finished.
"""

import os
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from lm_jax import UserError, console

_HANDLERS = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
# What a damaged checkpoint raises on restore (storage errors arrive as ValueError).
_DAMAGED = (ValueError, FileNotFoundError, KeyError, OSError)


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


class Checkpointer:
  """Saves and restores {'state': pytree, 'meta': dict} by step.

  `read_only` opens a run's checkpoints for sampling or evaluation without
  touching them, even while the run is still training.
  """

  def __init__(self, workdir: str, keep: int = 3, keep_best: bool = False, read_only: bool = False):
    console.quiet_package("absl", "orbax")  # It logs errors for damage this class reports.
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
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=_HANDLERS)

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state, meta: dict, metrics: dict | None = None) -> None:
    """Starts an asynchronous save of `state` (global arrays) at `step`."""
    self.manager.save(
      step,
      args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
      metrics=metrics,
      force=True,
    )

  def check_fits(self, step: int, target) -> None:
    """Refuses a checkpoint whose tree or shapes differ from `target`'s."""
    saved = _shapes(self.manager.item_metadata(step).state.tree)
    wanted = _shapes(target)
    diff = {
      k: (saved.get(k), wanted.get(k))
      for k in saved.keys() | wanted.keys()
      if saved.get(k) != wanted.get(k)
    }
    if diff:
      keys = sorted(k for k in diff if not k.startswith("opt_state/")) or sorted(diff)
      lines = "\n".join(f"  {k}: checkpoint {diff[k][0]}, config {diff[k][1]}" for k in keys[:20])
      if len(keys) > 20:
        lines += f"\n  ... and {len(keys) - 20} more"
      raise UserError(
        f"checkpoint {step} in {self.directory} does not fit the model of this "
        f"config (path: checkpoint vs config shape, dtype):\n{lines}\n"
        "Use the config the run was trained with, or a new --workdir."
      )

  def restore(self, target, step: int | None = None):
    """Restores (step, state, meta) onto `target`'s shapes and shardings.

    Without `step`, takes the newest checkpoint that reads back; a damaged one
    is reported by step and skipped. Returns None when there is none.
    """
    steps = [step] if step is not None else self.steps()[::-1]
    for s in steps:
      try:
        self.check_fits(s, target)
        abstract = jax.tree_util.tree_map(
          lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), target
        )
        r = self.manager.restore(
          s,
          args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
          ),
        )
        return s, r.state, r.meta
      except _DAMAGED as e:
        if step is not None:
          raise UserError(f"checkpoint {s} in {self.directory} is unreadable ({e}).") from e
        print(
          f"warning: checkpoint {s} in {self.directory} is unreadable "
          f"({str(e).splitlines()[0][:200]}); trying an older one.",
          file=sys.stderr,
        )
    return None

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
