"""Model options researchers also train from scratch: windows, parameter dtype."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.models import V, build, init, where


@pytest.mark.parametrize("name", ["gemma", "llama"])
def test_one_local_layer_sees_exactly_its_window(name):
  """One local layer: the logits at t move with tokens t-3..t and with no earlier one."""
  model = build(name, num_layers=1, sliding_window=4, layer_pattern="l")
  params, tokens = init(model, length=12, batch=1)
  t = 9
  apply = jax.jit(lambda x: model.apply({"params": params}, x)[0, t])
  logits = lambda x: np.asarray(apply(x))
  base = logits(tokens)
  for s in range(t + 1):
    moved = not np.allclose(logits(tokens.at[0, s].set((tokens[0, s] + 5) % V)), base)
    assert moved == (s > t - 4), s


@pytest.mark.parametrize("name", where("param_dtype"))
def test_bfloat16_parameters_are_the_rounded_float32_model(name):
  model = build(name)
  params, tokens = init(model)
  bf16 = build(name, param_dtype="bfloat16")
  shapes = jax.eval_shape(bf16.init, jax.random.key(0), tokens)["params"]
  assert {x.dtype for x in jax.tree_util.tree_leaves(shapes)} == {jnp.dtype(jnp.bfloat16)}
  rounded = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), params)
  logits = jax.jit(bf16.apply)({"params": rounded}, tokens)
  assert logits.dtype == jnp.float32  # Computed in model.dtype (float32) from bf16 weights.
  widened = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), rounded)
  np.testing.assert_allclose(
    logits, jax.jit(model.apply)({"params": widened}, tokens), atol=1e-5, rtol=1e-5
  )
