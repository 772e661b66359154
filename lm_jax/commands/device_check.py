"""Checks a GPU, TPU or CPU host in minutes; prints one JSON object.

  lm-jax device-check                 # GPT-2 small on accelerators, tiny on CPU
  lm-jax device-check --size tiny     # tiny sizes anywhere (seconds)

Fields: `devices` (what JAX found); `parallel` (the same few train steps of a
tiny GPT under jit, pmap and sharded, with the largest loss difference from
jit); `attention` (what model.attention=auto chose for the training model and
why, and the largest logit difference of each fused implementation from the
einsum reference); `train` (bf16 training tokens/s, MFU against the
datasheet peak of a known accelerator, peak device memory where reported);
`generate` (cached sampling tokens/s); `ok` (every equality within tolerance).
"""

import json
import time

from absl import flags

from lm_jax import cli
from lm_jax.data import batches, streams

flags.DEFINE_enum("size", "auto", ["auto", "tiny", "gpt2_small"], "auto: tiny on a CPU.")
flags.DEFINE_integer(
  "steps", 0, "Timed training steps (0: 10 on accelerators, 3 on CPU).", lower_bound=0
)
FLAGS = flags.FLAGS

# Largest differences accepted: train losses across parallel modes (fp32), and fused
# attention's logits from the reference's, relative to the largest logit (fp32, bf16).
TOLERANCE = {"parallel": 1e-4, "float32": 1e-4, "bfloat16": 3e-2}


def main(argv):
  del argv
  print(json.dumps(check(FLAGS.size, FLAGS.steps)))


def base_config(size: str):
  from configs import gpt2_small, tiny  # pylint: disable=g-import-not-at-top

  if size == "gpt2_small":
    config = gpt2_small.get_config()
    config.train.update(batch_size=8, grad_accum_steps=1)  # Per device, set in check().
  else:
    config = tiny.get_config()
    config.model.update(num_layers=2, num_heads=4, d_model=64, max_len=64)
    config.data.seq_len = 64
    config.train.batch_size = 4
  config.data.update(dataset="synthetic", vocab_size=32768 if size == "gpt2_small" else 256)
  config.train.compilation_cache = False
  return config


def check(size: str = "auto", steps: int = 0) -> dict:
  """The fields of the module docstring; `size` auto is tiny on a CPU, `steps` 0 the default."""
  from lm_jax import backend  # pylint: disable=g-import-not-at-top

  probe = base_config("tiny")
  probe.train.parallel = "pmap"
  backend.prepare_cpu_backend(probe)  # Each CPU core a device, so pmap and sharded split.
  import jax  # pylint: disable=g-import-not-at-top

  t0 = time.perf_counter()
  platform = jax.default_backend()
  if size == "auto":
    size = "tiny" if platform == "cpu" else "gpt2_small"
  result = {
    "devices": {
      "platform": platform,
      "device_kind": jax.devices()[0].device_kind,
      "count": jax.device_count(),
      "process_count": jax.process_count(),
    },
    "size": size,
  }
  result["parallel"] = parallel_equality()
  result["attention"] = attention_check(base_config(size))
  result["train"], model, params = train_speed(base_config(size), steps)
  result["generate"] = generation_speed(model, params)
  result["ok"] = result["parallel"]["ok"] and result["attention"]["ok"]
  result["elapsed_sec"] = time.perf_counter() - t0
  return result


def _steps(config, mode: str, num_steps: int):
  """(losses, seconds per step after the first two, model, state) of `mode` on synthetic tokens."""

  from lm_jax import checks, data, train  # pylint: disable=g-import-not-at-top
  from lm_jax import state as state_lib  # pylint: disable=g-import-not-at-top

  c = config.train
  config.train.parallel = mode
  checks.check_config(config)
  built = state_lib.setup(config, config.data.vocab_size)
  plan, rng, model = built.plan, built.rng, built.model
  state = plan.init(built.create, built.abstract)
  step_fn = train.compile_step(built)  # The step training runs.
  tokens = streams.Mixture.single(
    data.synthetic_tokens("random", config.data.vocab_size, 200_000, seed=0)
  )
  rows, seq_len = plan.rows(c.batch_size), config.data.seq_len
  batch = lambda s: plan.shard(
    batches.train_batch(tokens, 0, s, c.batch_size, seq_len, rows, "random_windows")
  )
  losses, times = [], []
  for s in range(num_steps):
    t = time.perf_counter()
    state, metrics = step_fn(state, batch(s), rng)
    losses.append(float(plan.to_host(metrics)["train_loss"]))
    times.append(time.perf_counter() - t)
  sec = sorted(times[2:])[len(times[2:]) // 2] if len(times) > 2 else times[-1]
  return losses, sec, model, plan.get(state)


def parallel_equality() -> dict:
  """A tiny fp32 GPT: the same 3 steps under jit, pmap and sharded."""
  import jax  # pylint: disable=g-import-not-at-top

  config = base_config("tiny")
  config.model.dtype = "float32"
  config.train.batch_size = 2 * jax.device_count()
  losses = {mode: _steps(config, mode, 3)[0] for mode in ("jit", "pmap", "sharded")}
  diff = max(
    abs(a - b) for m in ("pmap", "sharded") for a, b in zip(losses[m], losses["jit"], strict=True)
  )
  return {"losses": losses, "max_abs_diff": diff, "ok": diff <= TOLERANCE["parallel"]}


def attention_check(config) -> dict:
  """What 'auto' chose for this model, and each fused implementation against the reference."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from lm_jax import models  # pylint: disable=g-import-not-at-top

  config.model.dtype = "bfloat16" if jax.default_backend() != "cpu" else "auto"
  model, resolved = models.resolve_auto(models.build_model(config.model, config.data.vocab_size))
  tokens = jax.random.randint(jax.random.key(1), (2, config.data.seq_len), 0, 256)
  params = jax.jit(model.init)(jax.random.key(0), tokens)["params"]
  logits = lambda impl: jax.jit(model.clone(attention=impl).apply)({"params": params}, tokens)
  reference = logits("reference")
  scale = float(jnp.abs(reference).max())
  tolerance = TOLERANCE[resolved["compute_dtype"]]
  out = {**resolved, "max_abs_logit": scale, "max_abs_diff": {}, "ok": True}
  for impl in sorted({resolved["attention"], "xla"} - {"reference"}):
    diff = float(jnp.abs(logits(impl) - reference).max())
    out["max_abs_diff"][impl] = diff
    out["ok"] = out["ok"] and diff <= tolerance * scale
  return out


def train_speed(config, steps: int = 0):
  """bf16 training tokens/s, MFU and peak memory; jit on one device, sharded over several;
  `steps` timed steps (0: 10 on accelerators, 3 on CPU)."""
  import jax  # pylint: disable=g-import-not-at-top

  from lm_jax import models, profiling  # pylint: disable=g-import-not-at-top

  config.model.dtype = "bfloat16"
  config.train.batch_size *= jax.device_count()
  mode = "jit" if jax.device_count() == 1 else "sharded"
  steps = steps or (3 if jax.default_backend() == "cpu" else 10)
  losses, sec, model, state = _steps(config, mode, steps + 2)
  tokens_per_sec = config.train.batch_size * config.data.seq_len / sec
  flops = models.flops_per_token(model, state.params, config.data.seq_len)
  known = profiling.datasheet_peak_flops(jax.devices()[0].device_kind)
  out = {
    "mode": mode,
    "batch_size": config.train.batch_size,
    "seq_len": config.data.seq_len,
    "parameters": sum(x.size for x in jax.tree_util.tree_leaves(state.params)),
    "attention": model.attention,
    "tokens_per_sec": tokens_per_sec,
    "flops_per_token": flops,
    "mfu": flops * tokens_per_sec / (known[0] * jax.device_count()) if known else None,
    "peak_source": f"datasheet {known[1]}" if known else None,
    "peak_memory_bytes": profiling.peak_memory_bytes(),
    "final_loss": losses[-1],
  }
  return out, model, state.params


def generation_speed(model, params) -> dict:
  """Cached sampling of 48 new tokens at batch 8 (timed on the second call)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from lm_jax import sample  # pylint: disable=g-import-not-at-top

  batch, new = 8, 48
  go = lambda: sample.generate(
    model, params, [np.array([1])] * batch, jax.random.key(0), max_new_tokens=new
  )
  jax.block_until_ready(go())
  t = time.perf_counter()
  jax.block_until_ready(go())
  return {
    "batch": batch,
    "new_tokens": new,
    "tokens_per_sec": batch * new / (time.perf_counter() - t),
  }


def run(argv: list[str] | None = None) -> None:
  cli.run(main, argv)
