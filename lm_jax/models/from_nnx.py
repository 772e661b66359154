"""A Flax NNX model as the pure function lm_jax trains: an `nnx.Module` class behind Linen's API.

`model.name=package.module:Class` may name an `nnx.Module` whose constructor takes
`vocab_size`, the other keys of `config.model` and `rngs`, and which is called as
`model(tokens_BxL)` returning logits_BxLxV, with `deterministic=` where its signature has it
(dropout), and `cache=` where the class also defines `init_cache(batch_size, length)`
(decoding then returns `(logits_BxLxV, cache)`, as a Linen model's). Flax's bridge
(nnx.bridge.ToLinen) splits it into a parameter pytree and a pure apply function at the edge,
so the train step, pmap and sharding, checkpoints, sampling and evaluation see what they see
of a Linen model; the module is built from its class on every call, and what it draws at
construction is dropped once its parameters are set.
"""

import inspect

import flax.linen as nn
import jax
from flax import nnx
from flax.core import FrozenDict
from flax.nnx import bridge


def is_nnx(cls) -> bool:
  return inspect.isclass(cls) and issubclass(cls, nnx.Module)


def fields(cls) -> dict[str, inspect.Parameter]:
  """The constructor's keyword arguments config.model may set (all but `rngs`)."""
  params = inspect.signature(cls.__init__).parameters
  return {k: p for k, p in params.items() if k not in ("self", "rngs")}


class FromNNX(bridge.ToLinen):
  """`nnx_class(**kwargs, rngs=...)` as a Linen module called like lm_jax's own models."""

  def init(self, rngs, *args, **kwargs):
    """Parameters as an NNX module draws them: one key also seeds its other streams (dropout)."""
    if not isinstance(rngs, dict):
      rngs = {"params": rngs, "default": jax.random.fold_in(rngs, 1)}
    return super().init(rngs, *args, **kwargs)

  @property
  def max_len(self):
    """The context, where the class takes a `max_len` (sampling keeps prompts inside it)."""
    default = getattr(fields(self.nnx_class).get("max_len"), "default", None)
    return self.kwargs.get("max_len", None if default is inspect.Parameter.empty else default)

  def __call__(self, tokens_BxL, deterministic: bool = True, cache=None):
    takes = inspect.signature(self.nnx_class.__call__).parameters
    kwargs = {"deterministic": deterministic} if "deterministic" in takes else {}
    if cache is not None:
      kwargs["cache"] = cache
    return super().__call__(tokens_BxL, **kwargs)


class FromNNXWithCache(FromNNX):
  """A FromNNX whose class decodes with a cache of its own (`init_cache`)."""

  def init_cache(self, batch_size: int, length: int):
    shape = nnx.eval_shape(lambda: self.nnx_class(**self.kwargs, rngs=nnx.Rngs(0)))
    return shape.init_cache(batch_size, length)


def wrap(cls, vocab_size: int, kwargs: dict) -> nn.Module:
  """The Linen module of NNX class `cls` with `vocab_size` and `kwargs`."""
  wrapper = FromNNXWithCache if callable(getattr(cls, "init_cache", None)) else FromNNX
  frozen = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}  # Hashable.
  return wrapper(cls, kwargs=FrozenDict({"vocab_size": vocab_size, **frozen}))
