"""A process's JAX backend, set before it starts: several hosts joined, a CPU's cores as devices.

Only `cli.start_backend` calls these, before anything touches a device: XLA reads its flags
and the device count once, when the backend starts.
"""

import os

import jax

from lm_jax import UserError, parallel


def initialize_distributed(
  coordinator_address: str | None, num_processes: int | None, process_id: int | None, auto: bool
) -> None:
  """Joins the other processes of a multi-host run, before anything touches a device.

  Either all three of address, count and index, or `auto` (JAX reads the
  cluster's own environment: TPU pod, SLURM, Open MPI), or none (one process).
  """
  explicit = (coordinator_address, num_processes, process_id)
  if not auto and all(x is None for x in explicit):
    return
  if any(x is None for x in explicit) and not all(x is None for x in explicit):
    raise UserError(
      "pass all of --coordinator_address, --num_processes and --process_id, "
      "or none of them (with --distributed on a TPU pod or SLURM)."
    )
  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU hosts; no-op elsewhere.
  jax.distributed.initialize(coordinator_address, num_processes, process_id)


# XLA:CPU rewrites bfloat16 dots to float32 unless told otherwise; these flags keep them in
# bfloat16 on oneDNN (AMX / AVX512-BF16 units). They stay off while the installed jaxlib aborts
# compiling the models under them (tests/integration/test_parallel.py checks which is the case;
# what aborts and the figures: docs/benchmarks.md, "On a CPU: fused attention and bfloat16").
CPU_BF16_FLAGS_COMPILE_MODELS = False
CPU_BF16_FLAGS = (
  "--xla_disable_hlo_passes=float-normalization-bf16",
  "--xla_cpu_use_onednn=true",
  "--xla_cpu_experimental_onednn_fusion_type=dot",
)


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
  """True on CPUs with bfloat16 matrix units (AMX-BF16 or AVX512-BF16)."""
  try:
    with open(cpuinfo) as f:
      flags = {w for line in f if line.startswith("flags") for w in line.split()}
  except OSError:
    return False
  return bool(flags & {"amx_bf16", "avx512_bf16"})


def prepare_cpu_backend(config, cpuinfo: str = "/proc/cpuinfo") -> None:
  """Sets XLA_FLAGS for a CPU before JAX starts its backend; accelerators are unaffected.

  Each core becomes a device when the run would use them (cpu_cores_as_devices),
  and with model.dtype='bfloat16' on a CPU that has bfloat16 units, XLA keeps
  the dots in bfloat16 (CPU_BF16_FLAGS), once the installed jaxlib compiles
  the models with them (CPU_BF16_FLAGS_COMPILE_MODELS).
  """
  c = config.train
  parallel.check_config(c, config.mesh)
  cpu_cores_as_devices(c.parallel, c.batch_size, c.eval_batch_size or c.batch_size)
  bf16 = config.model.get("dtype") == "bfloat16"
  if bf16 and CPU_BF16_FLAGS_COMPILE_MODELS and cpu_has_bf16(cpuinfo):
    flags = os.environ.get("XLA_FLAGS", "").split()
    names = {f.split("=")[0] for f in flags}
    flags += [f for f in CPU_BF16_FLAGS if f.split("=")[0] not in names]
    os.environ["XLA_FLAGS"] = " ".join(flags)


def cpu_cores_as_devices(mode: str, *batch_sizes: int) -> None:
  """On a CPU, makes each core a JAX device so that pmap runs one replica per core.

  Only for runs that would use them ('auto', 'pmap', 'sharded'): extra host
  devices slow a one-device jit. Picks the most cores that divide every batch
  size. Must run before JAX starts its backend; accelerators are unaffected.
  """
  flags = os.environ.get("XLA_FLAGS", "")
  if mode == "jit" or "xla_force_host_platform_device_count" in flags:
    return
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  n = max(d for d in range(1, (cores or 1) + 1) if all(b % d == 0 for b in batch_sizes))
  if n > 1:
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()
