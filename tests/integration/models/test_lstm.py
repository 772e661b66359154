"""The LSTM's recurrence: its hand-written gradient equals autodiff through the scan."""

import functools

import jax
import jax.numpy as jnp
import numpy as np


def test_lstm_recurrence_gradient_equals_autodiff():
  from lm_jax.models import lstm

  k = jax.random.split(jax.random.key(0), 6)
  L, B, E, H = 7, 3, 5, 8
  args = (
    jax.random.normal(k[0], (L, B, E)),
    jax.random.normal(k[1], (E, 4 * H)) * 0.3,
    jax.random.normal(k[2], (4 * H,)) * 0.3,
    jax.random.normal(k[3], (H, 4 * H)) * 0.3,
    (jax.random.normal(k[4], (B, H)), jax.random.normal(k[5], (B, H))),
  )

  def loss(f, *a):
    h, (c_last, h_last) = f(*a)
    return (h * jnp.arange(H)).sum() + ((2 * c_last + 3 * h_last).sum() ** 2) / 10

  plain = lambda *a: lstm._forward(*a)[0]  # Autodiff through the scan.
  fast = jax.grad(functools.partial(loss, lstm.recurrence), argnums=range(5))(*args)
  slow = jax.grad(functools.partial(loss, plain), argnums=range(5))(*args)
  for x, y in zip(jax.tree_util.tree_leaves(fast), jax.tree_util.tree_leaves(slow), strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)
