"""config.optim -> (optax transformation, learning-rate schedule), and the plateau rule.

Optimizers (`optim.name`): a key of `OPTIMIZERS` or 'package.module:function', any importable
`function(learning_rate, optim_config) -> optax.GradientTransformation` (the same plugin form
as models). `learning_rate` is a schedule (step -> float); lm_jax adds gradient clipping
(`optim.grad_clip`) in front of whichever optimizer it builds.

Schedules (`optim.schedule`): every one starts with `warmup_steps` of linear warmup from 0.
'plateau' is the one with state: a factor the train step multiplies the updates by, divided by
`plateau_factor` whenever a validation loss does not improve on the best so far (PyTorch's
word_language_model rule). It lives in the TrainState (`schedule_state`) and its checkpoint.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lm_jax import UserError
from lm_jax import config as config_lib


def check_config(optim_config) -> None:
  """Refuses optimizer settings of the wrong type or range, before anything runs."""
  c, key = optim_config, lambda k: f"optim.{k}"
  config_lib.check_str(key("name"), c.name)
  if c.name not in OPTIMIZERS and ":" not in c.name:
    get_optimizer(c.name)  # Refuses it, naming the registry and the plugin form.
  config_lib.check_choice(key("schedule"), c.get("schedule", "cosine"), SCHEDULES)
  config_lib.check_choice(key("state_dtype"), c.get("state_dtype", "float32"), STATE_DTYPES)
  config_lib.check_number(key("learning_rate"), c.learning_rate, 0)  # 0: parameters stay.
  decays = c.get("schedule", "cosine") in ("cosine", "linear", "wsd")  # To min_learning_rate.
  config_lib.check_number(
    key("min_learning_rate"), c.min_learning_rate, 0, c.learning_rate if decays else None
  )
  config_lib.check_int(key("warmup_steps"), c.warmup_steps, 0)
  for k in ("b1", "b2"):
    config_lib.check_number(key(k), c[k], 0, 1, below=True)
  config_lib.check_number(key("eps"), c.eps, 0, above=True)
  config_lib.check_number(key("weight_decay"), c.weight_decay, 0)
  config_lib.check_bool(key("decay_embeddings"), c.decay_embeddings)
  config_lib.check_number(key("grad_clip"), c.grad_clip, 0)
  ranges = {
    "decay_fraction": (0, 1),
    "momentum": (0, 1),
    "muon_beta": (0, 1),
    "adam_learning_rate": (0, None),
    "z_loss": (0, None),
  }
  for k, (low, high) in ranges.items():
    if k in c:
      config_lib.check_number(key(k), c[k], low, high)
  if "plateau_factor" in c:
    config_lib.check_number(key("plateau_factor"), c.plateau_factor, 1, above=True)
  if "muon_ns_steps" in c:
    config_lib.check_int(key("muon_ns_steps"), c.muon_ns_steps, 1)
  if "nesterov" in c:
    config_lib.check_bool(key("nesterov"), c.nesterov)


SCHEDULES = ("cosine", "linear", "constant", "wsd", "plateau")


def schedule(optim_config, num_steps: int, peak: float | None = None) -> optax.Schedule:
  """The learning rate by step; `peak` (default optim.learning_rate) scales it, min included."""
  c = optim_config
  kind = c.get("schedule", "cosine")
  peak = c.learning_rate if peak is None else peak
  end = c.min_learning_rate * (peak / c.learning_rate if c.learning_rate else 1.0)
  warmup = c.warmup_steps
  if kind == "cosine":
    return optax.warmup_cosine_decay_schedule(
      init_value=0.0 if warmup else peak,
      peak_value=peak,
      warmup_steps=warmup,
      decay_steps=max(num_steps, warmup + 1),
      end_value=end,
    )
  if kind not in SCHEDULES:
    raise UserError(f"unknown optim.schedule {kind!r}: use one of {list(SCHEDULES)}.")
  if kind == "linear":
    after = optax.linear_schedule(peak, end, max(num_steps - warmup, 1))
  elif kind == "wsd":
    fraction = c.get("decay_fraction", 0.2)
    if not 0.0 <= fraction <= 1.0:
      raise UserError(f"optim.decay_fraction={fraction} is not in [0, 1]: e.g. 0.2.")
    decay = round(fraction * num_steps)
    stable = max(num_steps - decay - warmup, 0)
    after = optax.join_schedules(
      [optax.constant_schedule(peak), optax.linear_schedule(peak, end, max(decay, 1))], [stable]
    )
  else:  # constant, plateau (its factor is applied by the train step)
    after = optax.constant_schedule(peak)
  if not warmup:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


# Stateful schedules.


def schedule_state(optim_config):
  """The initial state of a stateful schedule (plateau), else None.

  {'lr_scale': the factor on every update, 'best_loss': the lowest validation loss so far}.
  """
  if optim_config.get("schedule", "cosine") != "plateau":
    return None
  return {"lr_scale": jnp.ones((), jnp.float32), "best_loss": jnp.full((), jnp.inf, jnp.float32)}


def after_validation(optim_config, state, val_loss: float):
  """The schedule state once a validation loss is known (host arrays); None stays None.

  Plateau: a loss below the best becomes the best; any other divides lr_scale by
  optim.plateau_factor.
  """
  if state is None:
    return None
  scale, best = np.float32(state["lr_scale"]), np.float32(state["best_loss"])
  if val_loss < best:
    best = np.float32(val_loss)
  else:
    scale = np.float32(scale / optim_config.plateau_factor)
  return {"lr_scale": scale, "best_loss": best}


# Which parameters are what.


def _names(path) -> list[str]:
  return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]


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


HEADS = ("head", "lm_head")  # Output layers' module names: AdamW under Muon, like embeddings.
# Attention output projections read heads x head width, (H, K, D) kernels; other kernels read
# their first axis (Dense (D, F), DenseGeneral (D, H, K), LSTM gates (E, 4C)).
OUTPUT_PROJECTIONS = (("attn", "proj"), ("attn", "o"))


def matrix_axes(path, shape) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
  """(input axes, output axes) of a hidden weight matrix, None for any other parameter.

  What Muon orthogonalizes: kernels (names ending in 'kernel') outside the head. Axes
  before the input axes (the layer axis of scan_layers' stacked blocks) are batch axes.
  """
  names = _names(path)
  if not names[-1].endswith("kernel") or any(n in HEADS for n in names):
    return None
  stacked = 1 if names[0] == "blocks" else 0
  num_in = 2 if tuple(names[-3:-1]) in OUTPUT_PROJECTIONS else 1
  if len(shape) - stacked < num_in + 1:
    return None
  inputs = tuple(range(stacked, stacked + num_in))
  return inputs, tuple(range(stacked + num_in, len(shape)))


# Muon.


def newton_schulz(x_MxN, steps: int):
  """An approximately orthogonal matrix U V^T from X = U S V^T: Muon's quintic iteration.

  Coefficients (3.4445, -4.7750, 2.0315) from modded-nanogpt (also Optax's default); X is
  scaled to unit Frobenius norm first, and wide rather than tall while iterating.
  """
  a, b, c = 3.4445, -4.7750, 2.0315
  tall = x_MxN.shape[0] > x_MxN.shape[1]
  x = x_MxN.T if tall else x_MxN
  x = x / (jnp.linalg.norm(x) + 1e-7)
  for _ in range(steps):
    gram = x @ x.T
    x = a * x + (b * gram + c * gram @ gram) @ x
  return x.T if tall else x


def orthogonalize(x, axes, steps: int):
  """`newton_schulz` of each matrix (input axes x output axes) of `x`, times
  sqrt(max(1, fan_out / fan_in)) (Muon's width scaling)."""
  inputs, outputs = axes
  batch = tuple(a for a in range(x.ndim) if a not in inputs + outputs)
  order = batch + inputs + outputs
  fan_in = math.prod(x.shape[a] for a in inputs)
  fan_out = math.prod(x.shape[a] for a in outputs)
  flat = x.transpose(order).reshape(-1, fan_in, fan_out)
  flat = jax.vmap(functools.partial(newton_schulz, steps=steps))(flat)
  flat = flat * math.sqrt(max(1.0, fan_out / fan_in))
  shaped = flat.reshape(tuple(x.shape[a] for a in order))
  return shaped.transpose(np.argsort(order))


def scale_by_muon(beta: float, steps: int, nesterov: bool = True):
  """Muon's direction for hidden matrices: momentum, then orthogonalized.

  As modded-nanogpt: m = beta m + (1 - beta) g; the update is
  orthogonalize(beta m + (1 - beta) g) with Nesterov, orthogonalize(m) without. (Optax's
  scale_by_muon bias-corrects both terms of its Nesterov sum, which changes their balance in
  the first ~1 / (1 - beta) steps.)
  """

  def init(params):
    return {"mu": jax.tree_util.tree_map(jnp.zeros_like, params)}

  def update(grads, state, params=None):
    del params
    mu = jax.tree_util.tree_map(lambda m, g: beta * m + (1 - beta) * g, state["mu"], grads)
    direction = (
      jax.tree_util.tree_map(lambda m, g: beta * m + (1 - beta) * g, mu, grads) if nesterov else mu
    )
    ortho = lambda path, d: orthogonalize(d, matrix_axes(path, d.shape), steps)
    return jax.tree_util.tree_map_with_path(ortho, direction), {"mu": mu}

  return optax.GradientTransformation(init, update)


def muon_labels(params):
  """'muon' for hidden weight matrices, 'adamw' for embeddings, head, norms and biases."""
  label = lambda path, x: "adamw" if matrix_axes(path, x.shape) is None else "muon"
  return jax.tree_util.tree_map_with_path(label, params)


# The optimizers: (learning_rate schedule, optim config) -> GradientTransformation.


def _mask(c):
  return functools.partial(decay_mask, decay_embeddings=c.decay_embeddings)


def adam(lr, c):
  return optax.adam(lr, b1=c.b1, b2=c.b2, eps=c.eps)


def adamw(lr, c):
  return optax.adamw(lr, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay, mask=_mask(c))


def sgd(lr, c):
  """W - lr * g (with momentum 0, bit for bit); weight decay is added to the gradient, as in
  torch.optim.SGD."""
  momentum = c.get("momentum", 0.0)
  opt = optax.sgd(lr, momentum=momentum or None, nesterov=c.get("nesterov", False))
  if c.weight_decay:
    opt = optax.chain(optax.add_decayed_weights(c.weight_decay, _mask(c)), opt)
  return opt


def lion(lr, c):
  return optax.lion(lr, b1=c.b1, b2=c.b2, weight_decay=c.weight_decay, mask=_mask(c))


def adafactor(lr, c):
  """Factored second moments (no momentum), block-RMS clipping at 1, decoupled weight decay."""
  return optax.chain(
    optax.scale_by_factored_rms(epsilon=1e-30),
    optax.clip_by_block_rms(1.0),
    optax.add_decayed_weights(c.weight_decay, _mask(c)),
    optax.scale_by_learning_rate(lr),
  )


def muon(lr, c):
  """Muon on hidden weight matrices (`matrix_axes`), AdamW on everything else.

  optim.learning_rate is Muon's; optim.adam_learning_rate (0: the same) AdamW's, on the same
  schedule. Weight decay: optim.weight_decay on both, decoupled and scaled by the learning
  rate (Muon's matrices all decay; AdamW's by decay_mask).
  """
  adam_peak = c.get("adam_learning_rate", 0.0) or c.learning_rate
  adam_lr = lambda step: lr(step) * (adam_peak / c.learning_rate)
  return optax.partition(
    {
      "muon": optax.chain(
        scale_by_muon(c.get("muon_beta", 0.95), c.get("muon_ns_steps", 5), nesterov=True),
        optax.add_decayed_weights(c.weight_decay),
        optax.scale_by_learning_rate(lr),
      ),
      "adamw": adamw(adam_lr, c),
    },
    muon_labels,
  )


OPTIMIZERS = {
  "sgd": sgd,
  "adam": adam,
  "adamw": adamw,
  "lion": lion,
  "adafactor": adafactor,
  "muon": muon,
}


def get_optimizer(name: str):
  """A registry name or 'package.module:function' -> the optimizer function."""
  what = "a function(learning_rate, optim_config)"
  fn = config_lib.import_object(name, OPTIMIZERS, "optimizer", "optim.name", what)
  if not callable(fn):
    raise UserError(f"{name!r} does not name a function: check optim.name.")
  return fn


def make_optimizer(optim_config, num_steps: int):
  """The optimizer `optim_config.name` names, behind global-norm clipping; and its schedule."""
  c = optim_config
  lr = schedule(c, num_steps)
  opt = get_optimizer(c.name)(lr, c)
  if not isinstance(opt, optax.GradientTransformation):
    raise UserError(
      f"optim.name={c.name!r} returned {type(opt).__name__}, not an "
      "optax.GradientTransformation: return one from the function."
    )
  if c.grad_clip > 0:
    opt = optax.chain(optax.clip_by_global_norm(c.grad_clip), opt)
  return in_dtype(opt, c.get("state_dtype", "float32")), lr
