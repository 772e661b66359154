"""Seeing where time and memory go: step traces, peak device memory, the compilation cache."""

import os
import sys

import jax

from lm_jax import UserError


def check_profile_steps(profile_steps) -> tuple[int, int] | None:
  """`train.profile_steps` as (first, last) step to trace, or None when empty."""
  steps = list(profile_steps or ()) if isinstance(profile_steps, list | tuple) else profile_steps
  if not steps:
    return None
  if (
    not isinstance(steps, list)
    or len(steps) != 2
    or not all(isinstance(s, int) for s in steps)
    or not 0 <= steps[0] <= steps[1]
  ):
    raise UserError(
      f"train.profile_steps={steps} must be [first, last] steps with 0 <= first <= last "
      "(e.g. [100, 110]), or [] for no trace."
    )
  return steps[0], steps[1]


class StepTracer:
  """A jax.profiler trace of steps [first, last] into `log_dir` (TensorBoard, Perfetto).

  Call `before(step)` ahead of each step's dispatch and `after(step, outputs)`
  once it is dispatched; the trace stops when step `last` has finished.
  """

  def __init__(self, log_dir: str, steps: tuple[int, int] | None):
    self.log_dir, self.steps, self.active = log_dir, steps, False

  def before(self, step: int) -> None:
    if self.steps and step == self.steps[0] and not self.active:
      os.makedirs(self.log_dir, exist_ok=True)
      jax.profiler.start_trace(self.log_dir)
      self.active = True

  def after(self, step: int, outputs) -> None:
    if self.active and step >= self.steps[1]:
      jax.block_until_ready(outputs)
      self.close()
      print(f"profile of steps {list(self.steps)} written to {self.log_dir}", file=sys.stderr)

  def close(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False


# Dense bf16 peak FLOP/s per chip, from the vendors' datasheets.
DATASHEET = {
  "H100": 989e12,
  "H200": 989e12,
  "A100": 312e12,
  "TPU v4": 275e12,
  "TPU v5 lite": 197e12,
  "TPU v5e": 197e12,
  "TPU v5p": 459e12,
  "TPU v5": 459e12,
}


def datasheet_peak_flops(device_kind: str) -> tuple[float, str] | None:
  """(bf16 peak FLOP/s of one such device, its name) from DATASHEET, or None if unknown."""
  for name, flops in DATASHEET.items():
    if name.lower() in device_kind.lower():
      return flops, name
  return None


def peak_memory_bytes() -> int | None:
  """The largest peak memory in use over this process's devices; None where the backend
  does not report it (CPU)."""
  peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in jax.local_devices()]
  peaks = [p for p in peaks if p is not None]
  return max(peaks) if peaks else None


def compilation_cache_options(config) -> dict:
  """jax.config options for JAX's persistent compilation cache, for scripts to set before
  compiling: every compiled program kept beside the token cache (data.cache_dir, default
  $XDG_CACHE_HOME/lm_jax) in jax_cache/, or in $JAX_COMPILATION_CACHE_DIR where that is set
  (JAX's own variable: one cache shared by runs with different token caches); none when
  train.compilation_cache is off."""
  if not config.train.get("compilation_cache", True):
    return {}
  path = os.environ.get("JAX_COMPILATION_CACHE_DIR")
  if not path:
    root = config.data.get("cache_dir") or os.path.join(
      os.environ.get("XDG_CACHE_HOME", "~/.cache"), "lm_jax"
    )
    path = os.path.join(root, "jax_cache")
  return {
    "jax_compilation_cache_dir": os.path.expanduser(path),
    "jax_persistent_cache_min_compile_time_secs": 0.0,
    "jax_persistent_cache_min_entry_size_bytes": 0,
  }
