"""Properties every registered model must have, parametrized over the registry."""

import math

import jax
import jax.flatten_util
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from lm_jax import UserError, losses, models

V = 23
# Small hyperparameters per model; a model missing here is built with its defaults.
SMALL = {
    "gpt": dict(num_layers=2, num_heads=2, d_model=16, max_len=16),
    "lstm": dict(embed_size=16, hidden_size=16, num_layers=2),
}


def build(name):
  return models.build_model(ml_collections.ConfigDict({"name": name, **SMALL.get(name, {})}), V)


def init(model, length=12, batch=3):
  tokens = jax.random.randint(jax.random.key(1), (batch, length), 0, V)
  params = model.init(jax.random.key(0), tokens)["params"]
  return params, tokens


def loss_of(model, params, tokens):
  logits = model.apply({"params": params}, tokens[:, :-1])
  loss_sum, n = losses.cross_entropy_sums(logits, tokens[:, 1:])
  return loss_sum / n


@pytest.mark.parametrize("name", sorted(models.REGISTRY))
def test_output_shape_and_dtype(name):
  model = build(name)
  params, tokens = init(model)
  logits = model.apply({"params": params}, tokens)
  assert logits.shape == (3, 12, V)
  assert logits.dtype == jnp.float32


@pytest.mark.parametrize("name", sorted(models.REGISTRY))
def test_causal(name):
  model = build(name)
  params, tokens = init(model)
  t = 5
  changed = tokens.at[:, t + 1:].set((tokens[:, t + 1:] + 7) % V)
  a = model.apply({"params": params}, tokens)
  b = model.apply({"params": params}, changed)
  np.testing.assert_array_equal(a[:, :t + 1], b[:, :t + 1])
  assert not np.allclose(a[:, t + 1:], b[:, t + 1:])


@pytest.mark.parametrize("name", sorted(models.REGISTRY))
def test_initial_loss_near_log_vocab(name):
  model = build(name)
  params, tokens = init(model, length=16, batch=8)
  assert abs(float(loss_of(model, params, tokens)) - math.log(V)) < 0.1 * math.log(V)


@pytest.mark.parametrize("name", sorted(models.REGISTRY))
def test_gradient_matches_finite_difference(name):
  model = build(name)
  params, tokens = init(model)
  loss, grads = jax.value_and_grad(lambda p: loss_of(model, p, tokens))(params)
  flat, unflatten = jax.flatten_util.ravel_pytree(params)
  g = jax.flatten_util.ravel_pytree(grads)[0]
  i = int(jnp.argmax(jnp.abs(g)))
  eps = 1e-2
  f = lambda d: float(loss_of(model, unflatten(flat.at[i].add(d)), tokens))
  numeric = (f(eps) - f(-eps)) / (2 * eps)
  assert abs(numeric - float(g[i])) < 0.02 * abs(float(g[i])) + 1e-4


@pytest.mark.parametrize("name", sorted(models.REGISTRY))
def test_overfits_one_batch(name):
  model = build(name)
  params, tokens = init(model, length=16, batch=4)
  tx = optax.adam(1e-2)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state):
    loss, grads = jax.value_and_grad(lambda p: loss_of(model, p, tokens))(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  first = None
  for _ in range(40):
    params, opt_state, loss = step(params, opt_state)
    first = first if first is not None else float(loss)
  assert float(loss) < 0.5 * first


def test_unknown_model_is_refused():
  with pytest.raises(UserError, match="unknown model 'nope'"):
    models.build_model(ml_collections.ConfigDict({"name": "nope"}), V)


def test_unknown_hyperparameter_is_refused():
  with pytest.raises(UserError, match="no hyperparameter"):
    models.build_model(ml_collections.ConfigDict({"name": "gpt", "depth": 3}), V)
