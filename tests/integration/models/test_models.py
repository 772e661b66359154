"""Properties every registered model must have, parametrized over the registry."""

import math

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers.models import (
  NAMES,
  REGISTERED,
  V,
  build,
  forward,
  init,
  loss_of,
  value_and_grad,
  where,
)
from helpers.trees import assert_trees_close

from lm_jax import UserError
from lm_jax.models import decoder, layers


@pytest.mark.parametrize("name", NAMES)
def test_output_shape_and_dtype(name):
  model = build(name)
  params, tokens = init(model)
  logits = forward(model, params, tokens)
  assert logits.shape == (3, 12, V)
  assert logits.dtype == jnp.float32


@pytest.mark.parametrize("name", NAMES)
def test_causal(name):
  """Changing the tokens after position t changes no logit at or before t, for every t."""
  model = build(name)
  params, tokens = init(model, batch=1)
  L = tokens.shape[1]
  later_LxL = jnp.arange(L)[None, :] > jnp.arange(L)[:, None]  # Row t: the positions after t.
  changed_LxL = jnp.where(later_LxL, (tokens + 7) % V, tokens)
  # One batch: row 0 as it is, row t + 1 changed after t (rows of one batch compute alike).
  logits = forward(model, params, jnp.concatenate([tokens, changed_LxL]))
  for t in range(L):
    np.testing.assert_array_equal(logits[t + 1, : t + 1], logits[0, : t + 1])
    if t + 1 < L:
      assert not np.allclose(logits[t + 1, t + 1 :], logits[0, t + 1 :])


@pytest.mark.parametrize("name", REGISTERED)
def test_initial_loss_near_log_vocab(name):
  model = build(name)
  params, tokens = init(model, length=16, batch=8)
  loss = jax.jit(lambda p: loss_of(model, p, tokens))(params)
  assert abs(float(loss) - math.log(V)) < 0.1 * math.log(V)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_finite_difference(name):
  model = build(name)
  params, tokens = init(model)
  loss, grads = value_and_grad(model, params, tokens)
  flat, unflatten = jax.flatten_util.ravel_pytree(params)
  g = jax.flatten_util.ravel_pytree(grads)[0]
  i = int(jnp.argmax(jnp.abs(g)))
  eps = 1e-2
  shifted = jax.jit(lambda d: loss_of(model, unflatten(flat.at[i].add(d)), tokens))
  f = lambda d: float(shifted(d))
  numeric = (f(eps) - f(-eps)) / (2 * eps)
  assert abs(numeric - float(g[i])) < 0.02 * abs(float(g[i])) + 1e-4


@pytest.mark.parametrize("name", REGISTERED)
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


SCANNED = where("scan_layers", "remat")
FUSED = [n for n in where("attention") if not getattr(build(n), "score_softcap", 0.0)]


@pytest.mark.parametrize("name", where("dtype", "param_dtype"))
def test_bfloat16_keeps_float32_params_and_logits(name):
  model = build(name)
  params, tokens = init(model)
  bf16 = build(name, dtype="bfloat16")
  bf16_params = jax.eval_shape(bf16.init, jax.random.key(0), tokens)["params"]
  assert {x.dtype for x in jax.tree_util.tree_leaves(bf16_params)} == {jnp.dtype(jnp.float32)}
  expected, logits = forward(model, params, tokens), forward(bf16, params, tokens)
  assert logits.dtype == jnp.float32
  assert not np.array_equal(logits, expected)  # The blocks did compute in bfloat16.
  np.testing.assert_allclose(logits, expected, atol=0.05 * float(jnp.abs(expected).max()))


@pytest.mark.parametrize("name", where("remat"))
@pytest.mark.parametrize("remat", ["block", "dots"])
def test_remat_keeps_loss_and_gradients(name, remat):
  model = build(name)
  params, tokens = init(model)
  loss, grads = value_and_grad(model, params, tokens)
  remat_model = build(name, remat=remat)
  jaxpr = str(jax.make_jaxpr(lambda p: value_and_grad(remat_model, p, tokens))(params))
  assert "remat" in jaxpr or "checkpoint" in jaxpr
  remat_loss, remat_grads = value_and_grad(remat_model, params, tokens)
  np.testing.assert_allclose(remat_loss, loss, rtol=1e-6)
  assert_trees_close(remat_grads, grads, rtol=1e-4, atol=1e-7)


def test_unknown_remat_is_refused():
  model = build("gpt", remat="full")
  with pytest.raises(
    UserError, match="model.remat='full' is not one of \\['none', 'block', 'dots'\\]"
  ):
    init(model)


@pytest.mark.parametrize("name", SCANNED)
def test_scanned_layers_equal_unrolled_ones(name):
  model = build(name)
  params, tokens = init(model)
  scanned = build(name, scan_layers=True, remat="block")
  stacked = layers.stack_blocks(params)
  scanned_init = jax.eval_shape(scanned.init, jax.random.key(0), tokens)["params"]
  shapes = lambda tree: jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), tree)
  assert shapes(scanned_init) == shapes(stacked)
  np.testing.assert_allclose(
    forward(scanned, stacked, tokens), forward(model, params, tokens), rtol=1e-5, atol=1e-6
  )
  loss, grads = value_and_grad(model, params, tokens)
  scanned_loss, scanned_grads = value_and_grad(scanned, stacked, tokens)
  np.testing.assert_allclose(scanned_loss, loss, rtol=1e-6)
  assert_trees_close(scanned_grads, layers.stack_blocks(grads), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name", where("scan_layers", "init_cache"))
def test_scanned_cached_decoding_equals_full_forward(name):
  model = build(name, scan_layers=True)
  params, tokens = init(model)
  cache = model.init_cache(3, 12)
  if isinstance(model, decoder.Decoder):  # Grouped-query: only G heads cached.
    k_shape = (model.num_layers, 3, model.kv_heads, 12, model.head_width)
    assert cache["layers"]["k"].shape == k_shape
  step_fn = jax.jit(lambda t, c: model.apply({"params": params}, t, cache=c))
  logits, cache = step_fn(tokens[:, :5], cache)  # Prefill, then one token at a time.
  pieces = [logits]
  for t in range(5, 12):
    logits, cache = step_fn(tokens[:, t : t + 1], cache)
    pieces.append(logits)
  full = forward(model, params, tokens)
  np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full, atol=1e-5, rtol=1e-5)


# Fused attention against the einsum reference: fp32 to rounding, bf16 to bf16's 8 bits.
ATTENTION_TOLERANCE = {"float32": dict(rtol=1e-5, atol=1e-6), "bfloat16": dict(rtol=0, atol=2e-2)}


def scaled(tree):
  """Each leaf over the largest magnitude in the tree, so bf16 tolerances are relative."""
  top = max(float(jnp.abs(x).max()) for x in jax.tree_util.tree_leaves(tree))
  return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32) / top, tree)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name", FUSED)
def test_xla_attention_equals_reference(name, dtype):
  reference = build(name, dtype=dtype, attention="reference", num_layers=1)
  fused = reference.clone(attention="xla")
  params, tokens = init(reference)
  tol = ATTENTION_TOLERANCE[dtype]
  loss, grads = value_and_grad(reference, params, tokens)
  fused_loss, fused_grads = value_and_grad(fused, params, tokens)
  np.testing.assert_allclose(fused_loss, loss, rtol=tol["atol"])
  assert_trees_close(scaled(fused_grads), scaled(grads), **tol)

  def decode(model):  # Prefill 5 tokens (explicit mask), then one at a time (lengths).
    step_fn = jax.jit(lambda t, c: model.apply({"params": params}, t, cache=c))
    logits, cache = step_fn(tokens[:, :5], model.init_cache(3, 12))
    pieces = [logits]
    for t in range(5, 12):
      logits, cache = step_fn(tokens[:, t : t + 1], cache)
      pieces.append(logits)
    return jnp.concatenate(pieces, axis=1)

  full = forward(reference, params, tokens)
  np.testing.assert_allclose(*scaled((decode(fused), full)), **tol)
