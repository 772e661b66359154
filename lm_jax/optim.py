"""config.optim -> (optax transformation, learning-rate schedule)."""

import functools

import jax
import jax.numpy as jnp
import optax

from lm_jax import UserError
from lm_jax import config as config_lib

NAMES = ("adam", "adamw")


def check_config(optim_config) -> None:
  """Refuses optimizer settings of the wrong type or range, before anything runs."""
  c, key = optim_config, lambda k: f"optim.{k}"
  config_lib.check_choice(key("name"), c.name, NAMES)
  config_lib.check_number(key("learning_rate"), c.learning_rate, 0, above=True)
  config_lib.check_number(key("min_learning_rate"), c.min_learning_rate, 0, c.learning_rate)
  config_lib.check_int(key("warmup_steps"), c.warmup_steps, 0)
  for k in ("b1", "b2"):
    config_lib.check_number(key(k), c[k], 0, 1, below=True)
  config_lib.check_number(key("eps"), c.eps, 0, above=True)
  config_lib.check_number(key("weight_decay"), c.weight_decay, 0)
  config_lib.check_bool(key("decay_embeddings"), c.decay_embeddings)
  config_lib.check_number(key("grad_clip"), c.grad_clip, 0)


def schedule(optim_config, num_steps: int) -> optax.Schedule:
  """Linear warmup to `learning_rate`, then cosine decay to `min_learning_rate`."""
  c = optim_config
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0 if c.warmup_steps else c.learning_rate,
    peak_value=c.learning_rate,
    warmup_steps=c.warmup_steps,
    decay_steps=max(num_steps, c.warmup_steps + 1),
    end_value=c.min_learning_rate,
  )


def decay_mask(params, decay_embeddings: bool):
  """True for the parameters weight decay shrinks: weight matrices.

  Flax names them `kernel` (Dense, attention, LSTM gates); biases and norm
  scales never decay, embedding tables only when `decay_embeddings` (nanoGPT
  decays them). By name, not rank: stacked layers (scan_layers) make every
  parameter one rank higher. Other names (plugin models): matrices decay.
  """

  def decays(path, x):
    name = getattr(path[-1], "key", "")
    if name in ("kernel", "embedding"):
      return name == "kernel" or decay_embeddings
    return name not in ("bias", "scale") and x.ndim >= 2

  return jax.tree_util.tree_map_with_path(decays, params)


STATE_DTYPES = ("float32", "bfloat16")


def in_dtype(inner: optax.GradientTransformation, name: str) -> optax.GradientTransformation:
  """`inner` working in dtype `name` (optim.state_dtype) whatever the parameters' dtype: its
  state, and the gradients and parameters it sees; optax.apply_updates casts each result back
  to its parameter's dtype."""
  if name not in STATE_DTYPES:
    raise UserError(f"unknown optim.state_dtype {name!r}: use one of {list(STATE_DTYPES)}.")
  dtype = jnp.dtype(name)
  floating = lambda x: jnp.issubdtype(x.dtype, jnp.floating)
  cast = lambda tree: jax.tree_util.tree_map(lambda x: x.astype(dtype) if floating(x) else x, tree)

  def update(updates, state, params=None):
    return inner.update(cast(updates), state, None if params is None else cast(params))

  return optax.GradientTransformation(lambda params: inner.init(cast(params)), update)


def make_optimizer(optim_config, num_steps: int):
  """Builds the optimizer named by `optim_config.name` ('adam' or 'adamw')."""
  c = optim_config
  lr = schedule(c, num_steps)
  if c.name == "adam":
    opt = optax.adam(lr, b1=c.b1, b2=c.b2, eps=c.eps)
  elif c.name == "adamw":
    opt = optax.adamw(
      lr,
      b1=c.b1,
      b2=c.b2,
      eps=c.eps,
      weight_decay=c.weight_decay,
      mask=functools.partial(decay_mask, decay_embeddings=c.decay_embeddings),
    )
  else:
    raise UserError(f"unknown optimizer {c.name!r}: set optim.name to 'adam' or 'adamw'.")
  if c.grad_clip > 0:
    opt = optax.chain(optax.clip_by_global_norm(c.grad_clip), opt)
  return in_dtype(opt, c.get("state_dtype", "float32")), lr
