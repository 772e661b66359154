"""Small models for the property tests, named after the registry itself.

`NAMES` is every registered model (lm_jax.models.REGISTRY, plus any a test process registers
through LM_JAX_TEST_MODELS, see tests/conftest.py) and the variants below: a registered model
gets the property tests without a line here, built with its defaults where SMALL has no entry.
"""

import dataclasses

import jax
import ml_collections

from lm_jax import losses, models

V = 23
_LLAMA = dict(num_layers=2, num_heads=4, num_kv_heads=2, d_model=16, max_len=16)
_GEMMA = dict(_LLAMA, num_layers=3, head_dim=6, sliding_window=4)
# Small hyperparameters per model; a model missing here is built with its defaults. Variants
# (a 'name' of their own) are registered models with options, windows shorter than the inputs.
SMALL = {
  "gpt": dict(num_layers=2, num_heads=2, d_model=16, max_len=16),
  "llama": _LLAMA,
  "lstm": dict(embed_size=16, hidden_size=16, num_layers=2),
  "gemma": dict(_GEMMA, query_pre_attn_scalar=10, attn_softcap=3.0, final_softcap=4.0),
  "gemma3": dict(
    _GEMMA,
    name="gemma",
    qk_norm=True,
    layer_pattern="llg",
    rope_local_base=100.0,
    rope_type="linear",
    rope_factor=2.0,
    attn_softcap=0.0,
    final_softcap=0.0,
  ),
  "llama3": dict(
    _LLAMA, name="llama", rope_type="llama3", rope_factor=8.0, rope_original_max_len=4
  ),
  "mistral": dict(_LLAMA, name="llama", sliding_window=4),
  "qwen2": dict(
    _LLAMA, name="llama", qkv_bias=True, tie_embeddings=True, sliding_window=4, layer_pattern="gl"
  ),
  "qwen3": dict(_LLAMA, name="llama", qk_norm=True, head_dim=6),
}
REGISTERED = sorted(models.REGISTRY)
NAMES = sorted(set(REGISTERED) | set(SMALL))  # With the variants: what options must not break.


def build(name, **overrides):
  config = {"name": name, **SMALL.get(name, {}), **overrides}
  return models.build_model(ml_collections.ConfigDict(config), V)


def has(name: str, *fields: str) -> bool:
  """Whether model `name` has all these hyperparameters (or, for a method, attributes)."""
  model = build(name)
  known = {f.name for f in dataclasses.fields(model)}
  return all(f in known or callable(getattr(model, f, None)) for f in fields)


def where(*fields: str) -> list[str]:
  """The models of NAMES that have `fields`: the options a property test needs."""
  return [n for n in NAMES if has(n, *fields)]


def init(model, length=12, batch=3):
  tokens = jax.random.randint(jax.random.key(1), (batch, length), 0, V)
  params = jax.jit(model.init)(jax.random.key(0), tokens)["params"]  # Compiled: seconds faster.
  return params, tokens


def forward(model, params, tokens):
  """model.apply compiled (op by op, a small model runs several times slower)."""
  return jax.jit(lambda p, t: model.apply({"params": p}, t))(params, tokens)


def loss_of(model, params, tokens):
  logits = model.apply({"params": params}, tokens[:, :-1])
  loss_sum, n = losses.cross_entropy_sums(logits, tokens[:, 1:])
  return loss_sum / n


def value_and_grad(model, params, tokens):
  return jax.jit(jax.value_and_grad(lambda p: loss_of(model, p, tokens)))(params)
