"""LoRA: low-rank adapters on the Dense and DenseGeneral kernels of any model; the rest is frozen.

A kernel W that `train.lora.targets` names (regexes over parameter paths such as
'block_0/attn/qkv/kernel'; scanned models stack their layers under 'blocks/') computes

  y = x W + (alpha / rank) * dropout(x) A B,   A: inputs x rank,  B: rank x outputs

where a DenseGeneral's inputs are the axes it contracts and its outputs its features, so a
fused projection (GPT's qkv, Llama's kv and gate_up) gets one A shared by its parts. A starts
normal with variance 1 / inputs and B at zero: training starts from the model itself.

Nothing in the models changes: the adapters are added from outside by intercepting the Dense
and DenseGeneral calls of `model.apply` (flax.linen.intercept_methods), and live beside each
kernel as its module's parameters 'lora_a' and 'lora_b' (nn.scan stacks them with the layers).
A LoRA run's TrainState trains the adapters alone (`params`, the optimizer state, the
gradients) and reads the model's own parameters as `frozen`.
"""

import dataclasses
import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from lm_jax import UserError
from lm_jax.models import from_nnx

NAMES = ("lora_a", "lora_b")


@dataclasses.dataclass(frozen=True)
class Settings:
  """train.lora, checked: which kernels get adapters, their rank, scale and input dropout."""

  rank: int
  alpha: float
  targets: tuple[str, ...]
  dropout: float

  @property
  def scale(self) -> float:
    return self.alpha / self.rank

  def targeted(self, kernel_path: str) -> bool:
    return any(re.fullmatch(t, kernel_path) for t in self.targets)


def settings(lora_config) -> Settings | None:
  """The settings of `train.lora`; None when LoRA is off (rank 0, or a config without it)."""
  if lora_config is None or not lora_config.get("rank"):
    return None
  c = lora_config
  if not isinstance(c.rank, int) or c.rank < 0:
    raise UserError(
      f"train.lora.rank={c.rank!r}: use a positive integer, or 0 to train everything."
    )
  if not c.alpha > 0:
    raise UserError(
      f"train.lora.alpha={c.alpha!r}: use a positive number (the scale is alpha/rank)."
    )
  if not 0 <= c.dropout < 1:
    raise UserError(f"train.lora.dropout={c.dropout!r}: use a probability in [0, 1).")
  targets = (c.targets,) if isinstance(c.targets, str) else tuple(c.targets)
  if not targets:
    raise UserError(
      "train.lora.targets is empty: name the kernels to adapt, e.g. '.*attn/.*/kernel'."
    )
  for t in targets:
    try:
      re.compile(t)
    except re.error as e:
      raise UserError(
        f"train.lora.targets holds {t!r}, which is no regular expression ({e})."
      ) from e
  return Settings(c.rank, float(c.alpha), targets, float(c.dropout))


def _path(module: nn.Module) -> str:
  return "/".join(module.path) + "/kernel"


def _axes(module: nn.Module, ndim: int) -> tuple[int, ...]:
  """The input axes a Dense or DenseGeneral contracts."""
  if isinstance(module, nn.Dense):
    return (ndim - 1,)
  if module.batch_dims:
    raise UserError(
      f"{_path(module)} is a DenseGeneral with batch_dims, which LoRA does not adapt: "
      "leave it out of train.lora.targets."
    )
  axis = module.axis if isinstance(module.axis, (tuple, list)) else (module.axis,)
  return tuple(a % ndim for a in axis)


def _delta(module: nn.Module, x, s: Settings, deterministic: bool):
  """(alpha / rank) * dropout(x) A B, in the module's compute dtype; creates A and B at init."""
  axes = _axes(module, x.ndim)
  features = module.features if isinstance(module.features, (tuple, list)) else (module.features,)
  inputs = tuple(x.shape[a] for a in axes)
  std = 1.0 / math.sqrt(math.prod(inputs))
  a = module.param("lora_a", nn.initializers.normal(std), (*inputs, s.rank), module.param_dtype)
  b = module.param("lora_b", nn.initializers.zeros, (s.rank, *features), module.param_dtype)
  if s.dropout and not deterministic:
    keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - s.dropout, x.shape)
    x = jnp.where(keep, x / (1.0 - s.dropout), 0.0).astype(x.dtype)
  dtype = module.dtype or jnp.result_type(x.dtype, a.dtype)
  h = jax.lax.dot_general(
    x.astype(dtype), a.astype(dtype), ((axes, tuple(range(len(axes)))), ((), ()))
  )
  out = jax.lax.dot_general(h, b.astype(dtype), (((h.ndim - 1,), (0,)), ((), ())))
  return out * jnp.asarray(s.scale, dtype)


def _interceptor(s: Settings, deterministic: bool, adapted: list | None = None):
  """Adds the adapter to the output of each targeted Dense / DenseGeneral call."""

  def intercept(next_fun, args, kwargs, context):
    y = next_fun(*args, **kwargs)
    module = context.module
    if (
      context.method_name != "__call__"
      or not isinstance(module, (nn.Dense, nn.DenseGeneral))
      or not s.targeted(_path(module))
    ):
      return y
    if adapted is not None:
      adapted.append(_path(module))
    return y + _delta(module, args[0], s, deterministic).astype(y.dtype)

  return intercept


def split(tree: dict) -> tuple[dict, dict]:
  """A parameter tree -> (the model's own parameters, the adapters), by leaf name."""
  flat = traverse_util.flatten_dict(tree)
  own = {k: v for k, v in flat.items() if k[-1] not in NAMES}
  adapters = {k: v for k, v in flat.items() if k[-1] in NAMES}
  return traverse_util.unflatten_dict(own), traverse_util.unflatten_dict(adapters)


def join(frozen: dict, adapters: dict) -> dict:
  """The inverse of `split`: one tree, each module's adapters beside its kernel."""
  return traverse_util.unflatten_dict(
    {**traverse_util.flatten_dict(frozen), **traverse_util.flatten_dict(adapters)}
  )


def _check_targets(s: Settings, params: dict, adapted: list[str]) -> None:
  """Every pattern names kernels, and only kernels LoRA adapts."""
  paths = ["/".join(k) for k in traverse_util.flatten_dict(params) if k[-1] not in NAMES]
  kernels = sorted(set(adapted))
  listing = ", ".join(kernels[:6]) + (f" and {len(kernels) - 6} more" if len(kernels) > 6 else "")
  for t in s.targets:
    matched = [p for p in paths if re.fullmatch(t, p)]
    if not matched:
      kernels = [p for p in paths if p.endswith("/kernel")][:8]
      raise UserError(
        f"train.lora.targets pattern {t!r} matches no parameter of this model: patterns are "
        f"matched against whole paths such as {', '.join(kernels)}."
      )
    stray = [p for p in matched if p not in adapted]
    if stray:
      raise UserError(
        f"train.lora.targets pattern {t!r} matches {stray[0]}, which is not the kernel of a "
        f"Dense or DenseGeneral layer: narrow the pattern (adapted kernels: {listing or 'none'})."
      )


def init(model: nn.Module, s: Settings, rng, seq_len: int) -> tuple[dict, dict]:
  """(the model's parameters as model.init makes them, adapters with B = 0), for `rng`."""
  if isinstance(model, from_nnx.FromNNX):
    raise UserError(
      f"train.lora adapts Linen Dense layers, and {model.nnx_class.__name__} is an NNX module "
      "whose nnx.Linear calls it cannot reach: set train.lora.rank=0."
    )
  tokens = jnp.zeros((1, seq_len), jnp.int32)
  adapted = []
  with nn.intercept_methods(_interceptor(s, True, adapted)):
    abstract = jax.eval_shape(model.init, rng, tokens)["params"]
  _check_targets(s, abstract, adapted)

  def make():
    frozen = model.init(rng, tokens)["params"]  # As without LoRA (scan draws keys otherwise).
    with nn.intercept_methods(_interceptor(s, True)):
      adapters = split(model.init(jax.random.fold_in(rng, 1), tokens)["params"])[1]
    return frozen, adapters  # XLA drops the second init's unused model parameters.

  return jax.jit(make)()


def apply_fn(model: nn.Module, s: Settings):
  """`model.apply` for {'params': adapters, 'frozen': the model's parameters}, adapted."""

  def apply(variables, *args, deterministic: bool = True, rngs=None, **kwargs):
    params = join(variables["frozen"], variables["params"])
    with nn.intercept_methods(_interceptor(s, deterministic)):
      return model.apply(
        {"params": params}, *args, deterministic=deterministic, rngs=rngs, **kwargs
      )

  return apply


def _merged_kernel(w, a, b, scale: float):
  """W + scale * A B; A and B may carry leading axes (stacked layers) that W has too."""
  lead = a.ndim + b.ndim - 2 - w.ndim
  a_IxR = a.reshape(*a.shape[:lead], -1, a.shape[-1])
  b_RxO = b.reshape(*b.shape[: lead + 1], -1)
  return w + scale * jnp.matmul(a_IxR, b_RxO).reshape(w.shape)


def merge(frozen: dict, adapters: dict, s: Settings) -> dict:
  """The model's parameters with each adapter folded into its kernel: the adapted model."""
  flat = dict(traverse_util.flatten_dict(frozen))
  ab = traverse_util.flatten_dict(adapters)
  for key in {k[:-1] for k in ab}:
    w = flat[(*key, "kernel")]
    flat[(*key, "kernel")] = _merged_kernel(w, ab[(*key, "lora_a")], ab[(*key, "lora_b")], s.scale)
  return traverse_util.unflatten_dict(flat)
