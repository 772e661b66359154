"""A config checked before anything runs: each key's type and range, refused with the fix.

The keys the training loop reads are checked here; each other part checks its own keys where
it reads them (config.data in the data package, config.model in the model, config.optim in
optim.py, train.parallel and config.mesh in parallel.py, train.wandb in tracking.py), and
`check_config` calls them all. Nothing here reads data, compiles, or starts a backend.
"""

from lm_jax import UserError, data, models, objectives, optim, parallel, profiling, runs, tracking
from lm_jax import config as config_lib
from lm_jax.data import batches


def check_config(config) -> None:
  """Refuses a config training cannot use, before anything is read, tokenized or compiled.

  Whether the batch splits over the devices and the mesh covers them, parallel.make_plan says.
  """
  try:
    _check(config)
  except (AttributeError, KeyError) as e:  # ConfigDict's words for a key it lacks...
    missing = e if isinstance(e, KeyError) else (e.args[0] if e.args else None)
    if not isinstance(missing, KeyError):  # ...and not a bug elsewhere.
      raise
    key = str(missing.args[0] if missing.args else missing).strip("'\"")
    raise UserError(
      f"the config has no key {key!r} that training reads: start it from "
      "configs/shakespeare_char_gpt_cpu.py, where every key has a comment, and change what differs."
    ) from e


def _check(config) -> None:
  c, d = config.train, config.data
  epochs = c.get("num_epochs", 0)
  config_lib.check_int("train.num_epochs", epochs, 0)
  for key in ("num_steps", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
    config_lib.check_int(
      f"train.{key}", c[key], 0 if epochs and key in config_lib.EPOCH_KEYS else 1
    )
  config_lib.check_int("train.grad_accum_steps", c.grad_accum_steps, 1)
  config_lib.check_bool("train.keep_best", c.keep_best)
  config_lib.check_bool("train.compilation_cache", c.get("compilation_cache", True))
  config_lib.check_str("train.init_from", c.get("init_from", ""))
  config_lib.check_str("train.eval_tasks", c.get("eval_tasks", ""))  # The harness's keys.
  config_lib.check_int("train.eval_tasks_every", c.get("eval_tasks_every", 1), 1)
  config_lib.check_int("train.eval_tasks_limit", c.get("eval_tasks_limit", 0), 0)
  config_lib.check_str("train.eval_tasks_include_path", c.get("eval_tasks_include_path", ""))
  config_lib.check_int("seed", config.seed, 0, 2**63 - 1)
  config_lib.check_int("data.seq_len", d.seq_len, 1)
  config_lib.check_int("data.prefetch", d.prefetch, 1)
  config_lib.check_choice("data.order", d.order, batches.ORDERS)
  e = config.get("eval") or {}
  config_lib.check_bool("eval.carry", e.get("carry", False))
  config_lib.check_int("eval.stride", e.get("stride", 0), 0)
  profiling.check_profile_steps(c.get("profile_steps"))
  tracking.check_config(c.get("wandb"))
  objectives.check_config(config)
  parallel.check_config(c, config.mesh)
  data.check_config(config.data)
  models.check_config(config.model)
  optim.check_config(config.optim)
  if c.get("init_from"):
    runs.check_source(c.init_from, "train.init_from")
