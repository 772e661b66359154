"""Measures training and generation speed of a config on synthetic tokens.

  lm-jax benchmark --config configs/shakespeare_char_gpt_cpu.py --steps 20

Prints one JSON object: compile_sec, step_sec (median), tokens_per_sec,
trained_params, frozen_params (train.lora's base) and opt_state_bytes,
flops_per_token (the model's formula) and xla_flops_per_token (XLA's cost
analysis of the compiled step), model_flops_per_sec, mfu (against
--peak_flops, else a datasheet value for known accelerators, else a matmul
measured here), peak_memory_bytes where the backend reports it,
stop_check_sec (the per-step agreement on stopping; nothing for one
process), and generation tokens/s with and without the decode cache at batch
1 and 16. Several processes: add --coordinator_address, --num_processes and
--process_id as for `lm-jax train`; each prints its own object.
"""

import json
import statistics
import time
from collections.abc import Sequence

from absl import flags

from lm_jax import cli
from lm_jax import config as config_lib
from lm_jax.data import batches, streams

flags.DEFINE_string("config", None, "Config file: path.py[:arg] or path.json.", required=True)
flags.DEFINE_integer("steps", 20, "Timed training steps (after 2 warm-up steps).", lower_bound=1)
flags.DEFINE_integer("vocab_size", 65, "Vocabulary of the synthetic tokens.", lower_bound=2)
flags.DEFINE_float(
  "peak_flops", 0.0, "Peak FLOP/s for MFU (default: datasheet or measured).", lower_bound=0
)
flags.DEFINE_integer(
  "gen_tokens", 256, "New tokens per generation benchmark (0: skip).", lower_bound=0
)
flags.DEFINE_list("gen_batches", ["1", "16"], "Batch sizes for the generation benchmark.")
flags.register_validator(
  "gen_batches", lambda bs: all(b.isdigit() and int(b) > 0 for b in bs), "give sizes >= 1: 1,16."
)
flags.DEFINE_string("profile", None, "Write a jax.profiler trace of the timed steps to DIR.")
cli.define_backend_flags()
FLAGS = flags.FLAGS


def main(argv, overrides):
  del argv
  config = config_lib.override(config_lib.load(FLAGS.config), overrides)
  cli.start_backend(config)  # As `lm-jax train` does.
  result = benchmark(
    config,
    steps=FLAGS.steps,
    vocab_size=FLAGS.vocab_size,
    peak=FLAGS.peak_flops,
    gen_tokens=FLAGS.gen_tokens,
    gen_batches=[int(b) for b in FLAGS.gen_batches],
    profile=FLAGS.profile,
  )
  print(json.dumps({"config": FLAGS.config, **result}))


def peak_flops(peak: float = 0.0) -> tuple[float, str]:
  """(FLOP/s, source): `peak` if given, else the device's datasheet value, else a measured
  fp32 matmul."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from lm_jax import profiling  # pylint: disable=g-import-not-at-top

  if peak:
    return peak, "flag"
  known = profiling.datasheet_peak_flops(jax.devices()[0].device_kind)
  if known:
    return known[0] * jax.local_device_count(), f"datasheet {known[1]}"
  n = 2048
  a = jnp.ones((n, n), jnp.float32)
  dot = jax.jit(lambda x: x @ x)
  dot(a).block_until_ready()
  times = []
  for _ in range(5):
    t = time.perf_counter()
    dot(a).block_until_ready()
    times.append(time.perf_counter() - t)
  return 2 * n**3 / min(times), f"measured {n}x{n} fp32 matmul"


def benchmark(
  config,
  steps: int = 20,
  vocab_size: int = 65,
  peak: float = 0.0,
  gen_tokens: int = 256,
  gen_batches: Sequence[int] = (1, 16),
  profile: str | None = None,
) -> dict:
  """The speeds, FLOPs and sizes of the module docstring, for `config` on random tokens of
  `vocab_size`; `peak` FLOP/s for MFU (0: datasheet or measured); `gen_tokens` 0 skips the
  generation benchmark; `profile` a directory for a trace of the timed steps."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from lm_jax import checks, data, parallel, profiling, sample, train
  from lm_jax import state as state_lib  # pylint: disable=g-import-not-at-top

  c, seq_len, V = config.train, config.data.seq_len, vocab_size
  checks.check_config(config)
  built = state_lib.setup(config, V)  # The model, optimizer and layout that training builds.
  model, plan, rng, flops_per_token = built.model, built.plan, built.rng, built.flops_per_token
  mode = built.resolved["parallel"]
  tokens = streams.Mixture.single(data.synthetic_tokens("random", V, 1_000_000, seed=0))
  rows = plan.rows(c.batch_size)
  batch = lambda step: plan.shard(
    batches.train_batch(tokens, 0, step, c.batch_size, seq_len, rows, config.data.order)
  )

  state = plan.init(built.create, built.abstract)
  step_fn = train.compile_step(built)
  t = time.perf_counter()
  compiled = step_fn.lower(state, batch(0), rng).compile() if mode != "pmap" else None
  if compiled is None:  # pmap: compile by running once.
    state, m = step_fn(state, batch(0), rng)
    jax.block_until_ready(m)
  compile_sec = time.perf_counter() - t
  run_step = compiled or step_fn
  cost = (compiled.cost_analysis() or {}) if compiled is not None else {}
  if isinstance(cost, list):
    cost = cost[0] if cost else {}
  for s in range(2):
    state, m = run_step(state, batch(s), rng)
  jax.block_until_ready(m)
  # As in training: a background thread prepares batches; the step waits only if it falls behind.
  prefetcher = batches.Prefetcher(batch, range(steps), config.data.prefetch)
  times = []
  tracer = profiling.StepTracer(profile, (0, steps - 1) if profile else None)
  t_loop = t0 = time.perf_counter()
  for i, b in enumerate(prefetcher):
    tracer.before(i)
    state, m = run_step(state, b, rng)
    jax.block_until_ready(m)
    tracer.after(i, m)
    times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
  tracer.close()
  input_sec_share = prefetcher.wait_sec / (time.perf_counter() - t_loop)
  step_sec = statistics.median(times)
  tokens_per_step = c.batch_size * seq_len
  peak, peak_source = peak_flops(peak)
  abstract, leaves = built.abstract, jax.tree_util.tree_leaves
  size = lambda tree: sum(x.size for x in leaves(tree))
  result = {
    "mode": mode,
    "devices": jax.local_device_count(),
    "device_kind": jax.devices()[0].device_kind,
    **built.resolved,
    "compilation_cache": bool(profiling.compilation_cache_options(config)),
    "compile_sec": compile_sec,
    "step_sec": step_sec,
    "tokens_per_sec": tokens_per_step / step_sec,
    "input_sec_share": input_sec_share,
    "flops_per_token": flops_per_token,
    "xla_flops_per_token": cost.get("flops", 0.0) / tokens_per_step if cost else None,
    "model_flops_per_sec": flops_per_token * tokens_per_step / step_sec,
    "peak_flops": peak,
    "peak_source": peak_source,
    # What trains (train.lora: the adapters) and the optimizer state it keeps, per replica.
    "trained_params": size(abstract.params),
    "frozen_params": size(abstract.frozen),
    "opt_state_bytes": sum(x.size * x.dtype.itemsize for x in leaves(abstract.opt_state)),
  }
  result["mfu"] = result["model_flops_per_sec"] / peak
  result["peak_memory_bytes"] = profiling.peak_memory_bytes()
  # What the training loop adds per step so that all processes stop at the same step.
  stop_checks = []
  for _ in range(50):
    t = time.perf_counter()
    parallel.any_process(False)
    stop_checks.append(time.perf_counter() - t)
  result["stop_check_sec"] = statistics.median(stop_checks)

  if gen_tokens:
    gen_model = (
      model.clone(max_len=max(getattr(model, "max_len", 0), gen_tokens + 1))
      if hasattr(model, "max_len")
      else model
    )
    params = jax.jit(gen_model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
    for b in gen_batches:
      for cached in (True, False):
        go = lambda b=b, cached=cached: sample.generate(
          gen_model,
          params,
          [np.array([1])] * b,
          rng,
          max_new_tokens=gen_tokens,
          temperature=1.0,
          use_cache=cached,
        )
        go()
        t = time.perf_counter()
        go()
        key = f"gen_tokens_per_sec_b{b}_{'cached' if cached else 'uncached'}"
        result[key] = b * gen_tokens / (time.perf_counter() - t)
  return result


def run(argv: list[str] | None = None) -> None:
  cli.run_with_overrides(main, argv)
