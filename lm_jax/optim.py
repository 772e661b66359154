"""config.optim -> (optax transformation, learning-rate schedule)."""

import jax
import optax

from lm_jax import UserError


def schedule(optim_config, num_steps: int) -> optax.Schedule:
  """Linear warmup to `learning_rate`, then cosine decay to `min_learning_rate`."""
  c = optim_config
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0 if c.warmup_steps else c.learning_rate,
      peak_value=c.learning_rate,
      warmup_steps=c.warmup_steps,
      decay_steps=max(num_steps, c.warmup_steps + 1),
      end_value=c.min_learning_rate)


def decay_mask(params):
  """True for matrices (Dense, attention and LSTM kernels) that weight decay shrinks.

  Biases, norm scales and embeddings (ndim < 2 or under an Embed module) are
  left alone.
  """
  def is_matrix(path, x):
    names = [getattr(k, "key", "") for k in path]
    return x.ndim >= 2 and "embedding" not in names
  return jax.tree_util.tree_map_with_path(is_matrix, params)


def make_optimizer(optim_config, num_steps: int):
  """Builds the optimizer named by `optim_config.name` ('adam' or 'adamw')."""
  c = optim_config
  lr = schedule(c, num_steps)
  if c.name == "adam":
    opt = optax.adam(lr, b1=c.b1, b2=c.b2, eps=c.eps)
  elif c.name == "adamw":
    opt = optax.adamw(lr, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay,
                      mask=decay_mask)
  else:
    raise UserError(f"unknown optimizer {c.name!r}: set optim.name to 'adam' or 'adamw'.")
  if c.grad_clip > 0:
    opt = optax.chain(optax.clip_by_global_norm(c.grad_clip), opt)
  return opt, lr
