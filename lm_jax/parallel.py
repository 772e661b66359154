"""The few lines that differ between a jitted and a pmapped run.

The step functions take `axis_name`: None under `jit` (one device), the pmap
axis under `pmap` (one replica per local device, batch split on axis 0).
Everything else in the trainer is the same for both.
"""

import functools

import jax
import numpy as np
from flax import jax_utils

from lm_jax import UserError

AXIS = "batch"
MODES = ("auto", "jit", "pmap")


def resolve_mode(parallel: str) -> str:
  """'auto' -> 'pmap' when more than one local device is present, else 'jit'."""
  if parallel not in MODES:
    raise UserError(f"train.parallel={parallel!r}: use one of {list(MODES)}.")
  if parallel == "auto":
    return "pmap" if jax.local_device_count() > 1 else "jit"
  return parallel


def num_replicas(mode: str) -> int:
  return jax.local_device_count() if mode == "pmap" else 1


def check_batch(batch_size: int, mode: str, what: str = "train.batch_size") -> None:
  n = num_replicas(mode)
  if batch_size % n:
    raise UserError(f"{what}={batch_size} is not divisible by the {n} devices of a "
                    f"{mode} run: use a multiple of {n}, or train.parallel='jit'.")


def compile_step(step_fn, mode: str, in_axes=(0, 0, None), donate: bool = True):
  """Jits or pmaps `step_fn(state, batch, ..., axis_name=...)`.

  The state (first argument) is donated when `donate`. Under pmap, `in_axes`
  says which arguments are split over devices (0) and which are broadcast
  (None): by default the rng is broadcast and the step folds in the device
  index itself.
  """
  donate = (0,) if donate else ()
  if mode == "pmap":
    return jax.pmap(functools.partial(step_fn, axis_name=AXIS), axis_name=AXIS,
                    in_axes=in_axes, donate_argnums=donate)
  return jax.jit(functools.partial(step_fn, axis_name=None), donate_argnums=donate)


def replicate(tree, mode: str):
  """Puts host/global state on the devices of the run."""
  return jax_utils.replicate(tree) if mode == "pmap" else jax.device_put(tree)


def unreplicate(tree, mode: str):
  """Brings per-device replicated state back to one copy."""
  return jax_utils.unreplicate(tree) if mode == "pmap" else tree


def shard(batch: dict[str, np.ndarray], mode: str):
  """Splits the leading batch axis over local devices under pmap."""
  if mode != "pmap":
    return batch
  n = jax.local_device_count()
  return jax.tree_util.tree_map(lambda x: x.reshape(n, -1, *x.shape[1:]), batch)


def psum(x, axis_name):
  """Sums over replicas under pmap; the identity under jit."""
  return x if axis_name is None else jax.lax.psum(x, axis_name)
