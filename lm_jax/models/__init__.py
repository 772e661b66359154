"""Model registry: `config.model.name` -> Flax module.

A name is either a key of `REGISTRY` or `'package.module:ClassName'`, any importable Flax
module: Linen, or NNX through models/from_nnx.py. Every model is built as
`Class(vocab_size=V, **kwargs)` from the keys of `config.model` other than `name`, and called
as `model.apply({'params': params}, tokens_BxL, deterministic=..., rngs=...)` returning
logits_BxLxV.

Shape letters in tensor names:
  B batch, L sequence length, S key/value length, V vocabulary, N flattened
  batch x length (B * L rows), D model width, E embedding width, H heads,
  G key/value heads, R query heads per key/value head (H = G * R), K head
  width, F MLP hidden width, C LSTM hidden (cell) width; in sampling, P prompt
  length and T total length (prompt and new tokens). A digit is a literal size
  (4C: the four LSTM gates side by side).
"""

import inspect

import flax.linen as nn
import jax

from lm_jax import UserError
from lm_jax import config as config_lib
from lm_jax.models import from_nnx

REGISTRY = {
  "gemma": "lm_jax.models.gemma:Gemma",
  "gpt": "lm_jax.models.gpt:GPT",
  "llama": "lm_jax.models.llama:Llama",
  "lstm": "lm_jax.models.lstm:LSTM",
}


def get_model_class(name: str) -> type[nn.Module]:
  """Resolves a registry name or 'package.module:ClassName' to a class."""
  what = "a Flax module"
  cls = config_lib.import_object(name, REGISTRY, "model", "model.name", what)
  if not (inspect.isclass(cls) and issubclass(cls, nn.Module) or from_nnx.is_nnx(cls)):
    raise UserError(
      f"{REGISTRY.get(name, name)!r} does not name a Flax module class (Linen or NNX)."
    )
  return cls


def build_model(model_config, vocab_size: int, eod_ids: tuple = ()) -> nn.Module:
  """Builds `Class(vocab_size=V, **kwargs)` from `config.model`.

  `eod_ids` (from `document_ids`): tokens at which the model's attention and positions
  restart, passed as its `eod_ids` field; models without one cannot mask documents.
  """
  kwargs = dict(model_config)
  cls = get_model_class(kwargs.pop("name"))
  if from_nnx.is_nnx(cls):
    types = {k: p.annotation for k, p in from_nnx.fields(cls).items()}
  else:
    types = {f.name: f.type for f in getattr(cls, "__dataclass_fields__", {}).values()}
  fields = set(types)
  if eod_ids:
    if "eod_ids" not in fields:
      raise UserError(
        f"model {cls.__name__} cannot keep attention inside documents: set "
        "data.document_masking=False."
      )
    kwargs["eod_ids"] = tuple(int(i) for i in eod_ids)
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    valid = sorted(fields - {"parent", "name", "vocab_size", "eod_ids"})
    raise UserError(
      f"model {cls.__name__} has no hyperparameter(s) {unknown}; "
      f"its fields are {valid}: remove the key from config.model."
    )
  for key, value in kwargs.items():  # Types as the module's fields declare them.
    check = _TYPE_CHECKS.get(types[key])
    if check is not None:
      check(f"model.{key}", value)
  if from_nnx.is_nnx(cls):
    return from_nnx.wrap(cls, vocab_size, kwargs)
  return cls(vocab_size=vocab_size, **kwargs)


def has_carry(model: nn.Module) -> bool:
  """A recurrent model: it defines `init_carry(batch_size)`, and `model.apply(v, tokens_BxL,
  cache=carry)` returns (logits_BxLxV, the carry after the last token). Training can carry
  it across steps (data.order='sequential') and evaluation across windows (eval.carry)."""
  return callable(getattr(model, "init_carry", None))


_TYPE_CHECKS = {
  int: config_lib.check_int,
  float: config_lib.check_number,
  bool: config_lib.check_bool,
  str: config_lib.check_str,
}
_TYPE_CHECKS.update({t.__name__: check for t, check in list(_TYPE_CHECKS.items())})  # Postponed.


def check_config(model_config) -> None:
  """Refuses config.model values of the wrong type or range before any data is read: types
  from the module's field annotations, ranges from its `check()` (every registered model has
  one; a Decoder's runs the shared checks before its family's)."""
  model = build_model(model_config, vocab_size=1)  # The tokenizer gives the real one later.
  if hasattr(model, "check"):
    model.check()


def document_ids(data_config, tokenizer) -> tuple:
  """The tokenizer's end-of-document ids when data.document_masking is on, else ()."""
  if not data_config.get("document_masking", False):
    return ()
  if len(tokenizer.eod_ids) == 0:
    raise UserError(
      "data.document_masking=True needs an end-of-document token, and the "
      f"{tokenizer.kind!r} tokenizer has none: set data.document_masking=False."
    )
  return tuple(int(i) for i in tokenizer.eod_ids)


def resolve_auto(model: nn.Module, device=None) -> tuple[nn.Module, dict]:
  """Settles a decoder's 'auto' dtype and attention for `device` (default JAX's first).

  Returns the model with concrete values and what was chosen and why (for
  run.json); explicit values pass through or are refused as unsupported.
  """
  from lm_jax.models import decoder, layers  # pylint: disable=g-import-not-at-top

  if not isinstance(model, decoder.Decoder):
    return model, {}
  dtype = layers.compute_dtype(model.dtype, device.platform if device is not None else None)
  choice, reason = layers.resolve_attention(
    model.attention,
    dtype,
    model.dropout,
    model.head_width,
    device,
    softcap=model.score_softcap,
    documents=bool(model.eod_ids),
  )
  info = {"compute_dtype": dtype.name, "attention": choice, "attention_reason": reason}
  return model.clone(dtype=dtype.name, attention=choice), info


def flops_per_token(model: nn.Module, params, seq_len: int, frozen=None) -> float:
  """Training FLOPs per token (forward and backward).

  A model may define `flops_per_token(params, seq_len)`; otherwise 6 per parameter (2
  forward, 4 backward). With `frozen` (a LoRA run: the model's parameters, never trained;
  `params` its adapters) a frozen weight skips its gradient, 2 of its 6 FLOPs.
  """
  count = lambda p, n: (
    float(model.flops_per_token(p, n))
    if hasattr(model, "flops_per_token")
    else 6.0 * sum(x.size for x in jax.tree_util.tree_leaves(p))
  )
  if frozen is None:
    return count(params, seq_len)
  adapters = sum(x.size for x in jax.tree_util.tree_leaves(params))
  return count(frozen, seq_len) - count(frozen, 0) / 3 + 6.0 * adapters
