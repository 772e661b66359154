"""A run's train step compiled for a TPU slice this host lacks: memory, FLOPs, collectives.

With libtpu installed (`pip install -e .[tpu-compile]`), JAX compiles for a TPU topology
ahead of time on any host: `jax.experimental.topologies` gives the slice's compile-only
devices, `state.setup` lays the config's real step (model, optimizer, remat, mesh, batch)
out over them, and XLA's TPU compiler reports what one chip needs. Nothing runs and no
corpus is read: the vocabulary comes from the run's tokenizer, the Hugging Face tokenizer
the config names, or data.vocab_size. The only module that talks to libtpu.
"""

import contextlib
import importlib.util
import math
import os
import re
import tempfile
import time

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from lm_jax import UserError, parallel
from lm_jax.data import tokenizers

INSTALL = "pip install -e .[tpu-compile]"
KNOWN_FORMS = (
  "GENERATION:CHIPS with the chips along each axis, e.g. v5e:2x4, v5e:16x16, v6e:4x4 (two "
  "axes), v4:2x2x2, v5p:2x2x1, v5p:4x4x4 (three); v5e and v6e slices start at 2x2"
)
# High-bandwidth memory of one JAX device (a chip; a core on v2 and v3), from Google's Cloud
# TPU system architecture pages.
HBM_BYTES = {
  "TPU v2": 8 * 2**30,
  "TPU v3": 16 * 2**30,
  "TPU v4": 32 * 2**30,
  "TPU v5 lite": 16 * 2**30,  # v5e
  "TPU v5": 95 * 2**30,  # v5p
  "TPU v6 lite": 32 * 2**30,  # v6e (Trillium)
}
COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")


def available() -> bool:
  return importlib.util.find_spec("libtpu") is not None


@contextlib.contextmanager
def _quiet_stderr():
  """Drops what native code writes to stderr (libtpu's complaints about a missing TPU host);
  its failures still arrive as exceptions."""
  saved = os.dup(2)
  with tempfile.TemporaryFile() as sink:
    os.dup2(sink.fileno(), 2)
    try:
      yield
    finally:
      os.dup2(saved, 2)
      os.close(saved)


def topology_devices(name: str) -> list:
  """The compile-only devices of a TPU slice named like 'v5e:2x4'."""
  if not available():
    raise UserError(f"compiling for a TPU needs libtpu: {INSTALL}.")
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top

  if not re.fullmatch(r"v[0-9a-z]+:[0-9]+(x[0-9]+){1,2}", name):
    raise UserError(f"unknown TPU topology {name!r}: use {KNOWN_FORMS}.")
  # Compiling touches no chip: several checks (or tests) may load libtpu at once, which its
  # lockfile would otherwise refuse.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  try:
    with _quiet_stderr():
      return list(topologies.get_topology_desc(topology_name=name, platform="tpu").devices)
  except Exception as e:  # pylint: disable=broad-except  (libtpu's own error types)
    first = (str(e).strip().splitlines() or [""])[0][:200]
    if "lockfile" in first:  # One libtpu process at a time.
      raise UserError(
        "another process is using libtpu (it holds /tmp/libtpu_lockfile): run one compile "
        "check at a time, or wait for the other to finish."
      ) from e
    raise UserError(f"unknown TPU topology {name!r} ({first}): use {KNOWN_FORMS}.") from e


def vocabulary(config, workdir: str = ""):
  """(vocab_size, tokenizer or None, where it came from), without reading any corpus."""
  path = os.path.join(workdir, "tokenizer.json") if workdir else ""
  if path and os.path.exists(path):
    tokenizer = tokenizers.load(path)
    return tokenizer.vocab_size, tokenizer, path
  d = config.data
  if d.tokenizer == "hf" and d.dataset != "synthetic":
    tokenizer = tokenizers.train("hf", (), d)  # Reads data.hf_tokenizer; trains nothing.
    return tokenizer.vocab_size, tokenizer, f"data.hf_tokenizer ({d.hf_tokenizer})"
  if d.tokenizer == "byte" and d.dataset != "synthetic":
    tokenizer = tokenizers.train("byte", (), d)
    return tokenizer.vocab_size, tokenizer, "the byte tokenizer"
  return int(d.vocab_size), None, "data.vocab_size"


def collectives(hlo_text: str) -> dict:
  """How many of each collective the compiled HLO holds (async pairs counted once)."""
  return {
    op: len(re.findall(rf"\s{op}(?:-start)?\(", hlo_text))
    for op in COLLECTIVES
    if re.search(rf"\s{op}(?:-start)?\(", hlo_text)
  }


def all_gather_shapes(hlo_text: str) -> list[tuple]:
  """The array shapes each all-gather in the compiled HLO produces (and, async, takes)."""
  shapes = []
  for result in re.findall(r"=\s*(.+?)\s+all-gather(?:-start)?\(", hlo_text):
    for dims in re.findall(r"\w+\[([\d,]*)\]", result):
      shapes.append(tuple(int(d) for d in dims.split(",") if d))
  return shapes


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}  # XLA prints binary units.


def _bytes(text: str) -> int:
  number, unit = re.fullmatch(r"([\d.]+)\s*([KMGT]?)i?B?", text.strip()).groups()
  return int(float(number) * _UNITS[unit])


def _out_of_memory(message: str) -> dict | None:
  """What XLA's TPU compiler said when a step does not fit: {'temporaries', 'available'}."""
  if "RESOURCE_EXHAUSTED" not in message:
    return None
  size = r"([\d.]+\s*[KMGT]?i?B?)"
  for pattern in (
    rf"required for HLO temporaries \({size}\) exceeds available HBM \({size}\)",
    rf"Used {size} of {size} hbm",
  ):
    m = re.search(pattern, message)
    if m:
      return {"temporaries": _bytes(m.group(1)), "available": _bytes(m.group(2))}
  return {"temporaries": None, "available": None}


def _shard_bytes(tree) -> int:
  """Bytes of one device's shards of abstract arrays with shardings."""
  return sum(
    math.prod(x.sharding.shard_shape(x.shape)) * jnp.dtype(x.dtype).itemsize
    if jnp.issubdtype(x.dtype, jnp.number) or x.dtype == bool
    else math.prod(x.sharding.shard_shape(x.shape)) * 8  # A typed PRNG key: its key data.
    for x in jax.tree_util.tree_leaves(tree)
  )


def compile_step(config, topology: str, workdir: str = "") -> dict:
  """Compiles `config`'s train step for the TPU slice `topology`; what one chip needs.

  The step is laid out as train.parallel='sharded' over the slice with config.mesh
  (pmap's data parallelism is the mesh mesh.data=-1, mesh.fsdp=1), whatever the config's
  train.parallel, since that is how a TPU slice runs it compiled ahead of time.
  """
  # The trainer imports the data stack: only here.
  from lm_jax import checks, train  # pylint: disable=g-import-not-at-top
  from lm_jax import state as state_lib  # pylint: disable=g-import-not-at-top

  devices = topology_devices(topology)
  config = ml_collections.ConfigDict(config.to_dict())
  config.train.parallel = "sharded"
  vocab_size, tokenizer, vocab_source = vocabulary(config, workdir)
  checks.check_config(config)
  built = state_lib.setup(config, vocab_size, tokenizer, devices=devices)
  plan, c = built.plan, config.train
  state = state_lib.with_shardings(plan, built.abstract)
  rows = NamedSharding(plan.mesh, P(parallel.BATCH_AXES))
  tokens = jax.ShapeDtypeStruct((c.batch_size, config.data.seq_len), jnp.int32, sharding=rows)
  whole = NamedSharding(plan.mesh, P())
  rng = jax.ShapeDtypeStruct(built.rng.shape, built.rng.dtype, sharding=whole)
  batch = {"inputs": tokens, "targets": tokens}
  kind = devices[0].device_kind
  result = {
    "topology": topology,
    "chips": len(devices),
    "device_kind": kind,
    "mesh": dict(plan.mesh.shape),
    "vocab_size": vocab_size,
    "vocab_source": vocab_source,
    "parameters": int(sum(x.size for x in jax.tree_util.tree_leaves(state.params))),
    "hbm_bytes": HBM_BYTES.get(kind),
  }
  t = time.perf_counter()
  try:
    compiled = train.compile_step(built).lower(state, batch, rng).compile()
  except Exception as e:  # pylint: disable=broad-except  (XLA's runtime error type)
    oom = _out_of_memory(str(e))
    if oom is None:
      raise
    # XLA stops at the first shortfall: arguments (counted here) and what it reported.
    arguments = _shard_bytes((state, batch, rng))
    temporaries = oom["temporaries"]
    return {
      **result,
      "per_chip_bytes": {
        "arguments": arguments,
        "outputs": None,
        "temporaries": temporaries,
        "aliased": None,
        "total": None if temporaries is None else arguments + temporaries,
      },
      "xla_available_bytes": oom["available"],
      "fits": False,
      "flops_per_step": None,
      "collectives": None,
      "compile_seconds": round(time.perf_counter() - t, 1),
      "compile_error": str(e).strip().splitlines()[0][:300],
    }
  seconds = time.perf_counter() - t
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis() or {}
  cost = cost[0] if isinstance(cost, list) else cost
  per_chip = {
    "arguments": int(memory.argument_size_in_bytes),
    "outputs": int(memory.output_size_in_bytes),
    "temporaries": int(memory.temp_size_in_bytes),
    "aliased": int(memory.alias_size_in_bytes),  # Outputs in their donated argument's buffer.
  }
  per_chip["total"] = (
    per_chip["arguments"] + per_chip["outputs"] - per_chip["aliased"] + per_chip["temporaries"]
  )
  hbm = result["hbm_bytes"]
  return {
    **result,
    "per_chip_bytes": per_chip,
    "fits": None if hbm is None else per_chip["total"] <= hbm,
    # XLA counts one chip's program; the slice runs one per chip.
    "flops_per_step": float(cost.get("flops", 0.0)) * len(devices),
    "model_flops_per_step": built.flops_per_token * c.batch_size * config.data.seq_len,
    "collectives": collectives(compiled.as_text()),
    "compile_seconds": round(seconds, 1),
  }


def shortfall(result: dict) -> str:
  """The one sentence of a step that does not fit a chip."""
  gib = lambda b: f"{b / 2**30:.2f} GiB"
  need = result["per_chip_bytes"]["total"]
  have = result.get("xla_available_bytes") or result["hbm_bytes"]
  short = f" ({gib(need - have)} short)" if need is not None and have is not None else ""
  needs = f"needs {gib(need)}" if need is not None else "needs more than the memory"
  return (
    f"the step {needs} per chip and a {result['device_kind']} of {result['topology']} "
    f"holds {gib(have)}{short}: split the parameters over more chips (mesh.fsdp, "
    "mesh.tensor), recompute blocks (model.remat='block') or put fewer rows on each "
    "(train.batch_size, train.grad_accum_steps)."
  )
