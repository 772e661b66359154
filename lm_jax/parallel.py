"""Everything that differs between a jit, a pmap and a sharded run, in one place.

  jit      one device; the step sees the whole batch.
  pmap     one replica per local device (jax.pmap); the batch is split on its
           first axis and gradients are summed over the `batch` axis by the
           step itself. Across hosts, each process feeds its own devices.
  sharded  jax.jit over a Mesh with axes ('data', 'fsdp', 'tensor'): the batch
           is split over 'data' and 'fsdp'; each parameter and its optimizer
           state is split over 'tensor' as Megatron-LM splits layers (by heads,
           MLP width and vocabulary) and over 'fsdp' along its largest remaining
           divisible dimension (FSDP / ZeRO-3), by the rules of
           lm_jax/placement.py; XLA inserts the collectives. What MaxText and
           the Flax examples use.

The step functions take `axis_name`: the pmap axis under pmap, else None.
A `Plan` places state and batches for its mode and brings them back as
global arrays (what Orbax saves), so checkpoints move between all three.
"""

import dataclasses
import functools

import jax
import numpy as np
from flax import jax_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lm_jax import UserError, placement
from lm_jax import config as config_lib

AXIS = "batch"
MODES = ("auto", "jit", "pmap", "sharded")
MESH_AXES = ("data", "fsdp", "tensor")  # Tensor innermost: its groups are neighbouring devices.
BATCH_AXES = ("data", "fsdp")  # The batch is split over these; 'tensor' sees whole rows.
# State subtrees holding a row per batch row (a recurrent model's carry): split over the
# devices with the batch's rows in every mode, never replicated or split FSDP-wise.
ROW_KEYS = ("carry",)


def _holds_rows(path) -> bool:
  first = path[0] if path else None
  return getattr(first, "key", getattr(first, "name", None)) in ROW_KEYS


def check_config(train_config, mesh_config) -> None:
  """Refuses a train.parallel, batch size or config.mesh of the wrong type or range; whether
  they fit the devices, `make_plan` says."""
  c = train_config
  config_lib.check_choice("train.parallel", c.parallel, MODES)
  config_lib.check_int("train.batch_size", c.batch_size, 1)
  config_lib.check_int("train.eval_batch_size", c.eval_batch_size, 0)
  for axis in MESH_AXES:
    config_lib.check_int(f"mesh.{axis}", mesh_config.get(axis, 1), -1)


def batch_sizes(train_config) -> dict:
  """The batches a training run's plan splits, by the keys that set them."""
  c = train_config
  return {
    "train.batch_size": c.batch_size,
    "train.eval_batch_size": c.eval_batch_size or c.batch_size,
  }


def make_mesh(mesh_config, devices=None) -> Mesh:
  """A ('data', 'fsdp', 'tensor') mesh over `devices` (default all); one size may be -1."""
  devices = np.asarray(devices if devices is not None else jax.devices())
  sizes = [int(mesh_config.get(a, 1)) for a in MESH_AXES]
  named = lambda sizes: " x ".join(f"mesh.{a}={s}" for a, s in zip(MESH_AXES, sizes, strict=True))
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise UserError(
      f"{named(sizes)} is invalid: give positive sizes, at most one of them -1 "
      "(fills the remaining devices)."
    )
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if devices.size % known:
      raise UserError(
        f"{named(sizes)} does not cover the {devices.size} devices: the other sizes make "
        f"{known}, which does not divide {devices.size}; pick sizes whose product does."
      )
    sizes[sizes.index(-1)] = devices.size // known
  if int(np.prod(sizes)) != devices.size:
    raise UserError(
      f"{named(sizes)} makes {int(np.prod(sizes))} and does not cover the {devices.size} "
      "devices: set mesh.data x mesh.fsdp x mesh.tensor to the device count (one may be -1)."
    )
  return Mesh(devices.reshape(sizes), MESH_AXES)


@dataclasses.dataclass(frozen=True)
class Plan:
  """How a run lays state and batches over devices; see the module docstring."""

  mode: str
  mesh: Mesh | None = None
  reason: str = "set in the config"  # Why this mode (train.parallel='auto' chooses).

  @property
  def num_replicas(self) -> int:
    """Devices the batch is split over, in all processes (a tensor group counts once)."""
    if self.mode == "sharded":
      return self.mesh.shape["data"] * self.mesh.shape["fsdp"]
    return {"jit": 1, "pmap": jax.device_count()}[self.mode]

  def check_batch(self, batch_size: int, what: str = "train.batch_size") -> None:
    n = self.num_replicas
    if batch_size % n:
      over = "mesh.data x mesh.fsdp" if self.mode == "sharded" else "devices"
      raise UserError(
        f"{what}={batch_size} is not divisible by the {n} {over} of a "
        f"{self.mode} run: use a multiple of {n}, or train.parallel='jit'."
      )

  def rows(self, batch_size: int) -> slice:
    """This process's rows of a global batch."""
    if self.mode == "jit":
      return slice(None)
    per = batch_size // jax.process_count()
    return slice(jax.process_index() * per, (jax.process_index() + 1) * per)

  # State.

  def state_shardings(self, abstract_tree):
    """Shardings of the global (checkpointed) arrays of a state tree (ROW_KEYS: by rows)."""
    if self.mode == "jit":
      device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
      return jax.tree_util.tree_map(lambda _: device, abstract_tree)
    if self.mode == "pmap":
      mesh = Mesh(np.asarray(jax.devices()), ("all",))
      return jax.tree_util.tree_map_with_path(
        lambda path, _: NamedSharding(mesh, P("all") if _holds_rows(path) else P()), abstract_tree
      )
    fsdp, tensor = self.mesh.shape["fsdp"], self.mesh.shape["tensor"]
    spec = lambda path, x: placement.spec(placement.path_str(path), x.shape, fsdp, tensor)
    return jax.tree_util.tree_map_with_path(
      lambda path, x: NamedSharding(
        self.mesh, P(BATCH_AXES) if _holds_rows(path) else spec(path, x)
      ),
      abstract_tree,
    )

  def init(self, fn, abstract, *args):
    """Runs `fn(*args) -> state` (`abstract`: its shapes) into the step's layout; sharded
    states never exist whole."""
    if self.mode == "pmap":
      return self.put(jax.jit(fn)(*args))
    return jax.jit(fn, out_shardings=self.state_shardings(abstract))(*args)

  def place(self, tree):
    """Host or global arrays -> global arrays in the checkpoint layout."""

    def one(x, s):
      if isinstance(x, jax.Array) and x.sharding == s:
        return x
      if isinstance(x, jax.Array) and (s.is_fully_addressable or not x.is_fully_addressable):
        return jax.device_put(x, s)  # Resharding a global array, or within this process.
      x = np.asarray(x)  # A whole local value (the same on every process) -> global.
      return jax.make_array_from_callback(x.shape, s, lambda i: x[i])

    return jax.tree_util.tree_map(one, tree, self.state_shardings(tree))

  def put(self, tree):
    """Host or global arrays -> the layout the compiled step takes."""
    if self.mode != "pmap":
      return self.place(tree)

    def one(path, x):
      if _holds_rows(path):  # This process's rows, a block per local device.
        rows = self._local_rows(x)
        blocks = rows.reshape(jax.local_device_count(), -1, *rows.shape[1:])
        local = Mesh(np.asarray(jax.local_devices()), ("local",))
        return jax.device_put(blocks, NamedSharding(local, P("local")))
      return jax_utils.replicate(x.addressable_data(0) if isinstance(x, jax.Array) else x)

    return jax.tree_util.tree_map_with_path(one, tree)

  def _local_rows(self, x) -> np.ndarray:
    """This process's rows of a global array or of a whole host value."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      shards = {s.index[0].start or 0: s.data for s in x.addressable_shards}
      return np.concatenate([np.asarray(shards[k]) for k in sorted(shards)])
    return np.asarray(x)[self.rows(x.shape[0])]

  def get(self, tree):
    """The step's layout -> global arrays (what Orbax saves); pmap keeps one replica, and
    joins the devices' rows of ROW_KEYS subtrees."""
    if self.mode != "pmap":
      return tree

    def one(path, x, s):
      if _holds_rows(path):
        shape = (jax.device_count() * x.shape[1], *x.shape[2:])
        shards = [a.data.reshape(a.data.shape[1:]) for a in x.addressable_shards]
        return jax.make_array_from_single_device_arrays(shape, s, shards)
      shards = [a.data[0] for a in x.addressable_shards]
      return jax.make_array_from_single_device_arrays(x.shape[1:], s, shards)

    return jax.tree_util.tree_map_with_path(one, tree, self.state_shardings(tree))

  # Batches and metrics.

  def shard(self, batch: dict):
    """This process's rows of a global batch -> the step's batch layout."""
    if self.mode == "pmap":
      n = jax.local_device_count()
      return jax.tree_util.tree_map(lambda x: x.reshape(n, -1, *x.shape[1:]), batch)
    if self.mode == "sharded":
      sharding = NamedSharding(self.mesh, P(BATCH_AXES))
      return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(sharding, x), batch
      )
    return batch

  def host_rows(self, x) -> np.ndarray:
    """This process's rows of a step's per-row output (pmap: [devices, rows, ...]), as numpy."""
    if self.mode == "pmap":
      x = np.asarray(jax.device_get(x))
      return x.reshape(-1, *x.shape[2:])
    return self._local_rows(x) if self.mode == "sharded" else np.asarray(x)

  def to_host(self, tree):
    """Replicated step outputs (metrics, sums) -> numpy on every process."""
    if self.mode == "pmap":
      tree = jax.tree_util.tree_map(lambda x: x.addressable_data(0).reshape(x.shape[1:]), tree)
    return jax.device_get(tree)

  # Compilation.

  def compile_step(self, step_fn, in_axes=(0, 0, None), donate: bool = True, state=None):
    """Jits or pmaps `step_fn(state, batch, ..., axis_name=...)`.

    The state (first argument) is donated when `donate`. Under pmap, `in_axes`
    says which arguments are split over devices (0) and which are broadcast
    (None): by default the rng is broadcast and the step folds in the device
    index itself. Sharded, a step returning (state, metrics) for `state` (an
    abstract one will do) keeps the state's shardings step after step.
    """
    donate = (0,) if donate else ()
    if self.mode == "pmap":
      return jax.pmap(
        functools.partial(step_fn, axis_name=AXIS),
        axis_name=AXIS,
        in_axes=in_axes,
        donate_argnums=donate,
      )
    out_shardings = None
    if self.mode == "sharded" and state is not None:
      out_shardings = (self.state_shardings(state), NamedSharding(self.mesh, P()))
    return jax.jit(
      functools.partial(step_fn, axis_name=None), donate_argnums=donate, out_shardings=out_shardings
    )


# On a CPU whose cores the scripts made devices, pmap runs one replica per core, while a
# one-device jit leaves XLA to spread each op over the cores itself. Small steps favour pmap
# (XLA's threading does not pay on small ops); large ones favour jit (no per-replica dispatch
# and gradient all-reduce). The crossover, in training FLOPs per core per step, was measured
# with scripts/benchmark.py: docs/benchmarks.md ("One device or one per core").
CPU_JIT_MIN_FLOPS_PER_DEVICE = 6e9


def resolve_mode(
  parallel: str, flops_per_step: float | None = None, platform: str | None = None, devices=None
) -> tuple[str, str]:
  """train.parallel -> (mode, reason); only 'auto' chooses.

  'auto' is 'jit' on one device. With several, accelerators take 'pmap'; a CPU
  takes 'jit' when the step's training FLOPs per device (`flops_per_step` over
  the device count) reach CPU_JIT_MIN_FLOPS_PER_DEVICE, else 'pmap'. Without
  `flops_per_step`, or with several processes, a CPU takes 'pmap'.
  """
  if parallel not in MODES:
    raise UserError(f"train.parallel={parallel!r}: use one of {list(MODES)}.")
  if parallel != "auto":
    return parallel, "set in the config"
  n = devices if devices is not None else jax.device_count()
  platform = platform or jax.devices()[0].platform
  if n == 1:
    return "jit", "one device"
  if platform != "cpu" or not flops_per_step or jax.process_count() > 1:
    return "pmap", f"{n} {platform} devices"
  per_device = flops_per_step / n
  limit = CPU_JIT_MIN_FLOPS_PER_DEVICE
  if per_device >= limit:
    return "jit", (
      f"{per_device / 1e9:.1f} GFLOP per core per step >= {limit / 1e9:g}: XLA's own "
      "threads over one CPU device beat a replica per core"
    )
  return (
    "pmap",
    f"{per_device / 1e9:.1f} GFLOP per core per step < {limit / 1e9:g}: a replica per core",
  )


def make_plan(
  parallel: str,
  mesh_config=None,
  flops_per_step: float | None = None,
  devices=None,
  batch_sizes: dict | None = None,
) -> Plan:
  """A plan for a train.parallel mode ('auto' as resolve_mode decides) that splits each of
  `batch_sizes` ({what: rows}, named in a refusal) over its replicas.

  `devices` (default: all of JAX's) are what a sharded plan's mesh covers: the compile-only
  devices of a TPU topology lay a run out for a slice this host does not have.
  """
  n = len(devices) if devices is not None else None
  platform = devices[0].platform if devices is not None else None
  parallel, reason = resolve_mode(parallel, flops_per_step, platform, n)
  if parallel == "jit" and jax.process_count() > 1:
    raise UserError(
      "train.parallel='jit' runs on one device, but this run has "
      f"{jax.process_count()} processes: use 'pmap' or 'sharded'."
    )
  mesh_config = mesh_config if mesh_config is not None else {"data": -1, "fsdp": 1}
  mesh = make_mesh(mesh_config, devices) if parallel == "sharded" else None
  plan = Plan(parallel, mesh, reason)
  for what, rows in (batch_sizes or {}).items():
    plan.check_batch(rows, what)
  return plan


def training_plan(config) -> Plan | None:
  """The plan of an explicit train.parallel, made before any data is read, so that a batch or
  mesh the devices cannot take is refused at once; None for 'auto', which the model decides."""
  c = config.train
  if c.parallel == "auto":
    return None
  return make_plan(c.parallel, config.mesh, batch_sizes=batch_sizes(c))


def any_process(flag: bool) -> bool:
  """True on every process when `flag` is true on any of them; every process must call it."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  return bool(np.max(multihost_utils.process_allgather(np.int32(flag))))


def psum(x, axis_name):
  """Sums over replicas under pmap; the identity under jit (and sharded jit)."""
  return x if axis_name is None else jax.lax.psum(x, axis_name)
