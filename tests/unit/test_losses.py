"""The cross-entropy's written-out gradient against autodiff of optax's; the z-loss."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lm_jax import losses


def test_cross_entropy_and_its_gradient_match_optax():
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  logits = 3 * jax.random.normal(k1, (2, 5, 37))
  targets = jax.random.randint(k2, (2, 5), 0, 37)
  weights = (jax.random.uniform(k3, (2, 5)) > 0.3).astype(jnp.float32)

  def reference(x):
    return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(x, targets) * weights)

  ours = lambda x: losses.cross_entropy_sums(x, targets, weights)[0]
  np.testing.assert_array_equal(jax.jit(ours)(logits), jax.jit(reference)(logits))
  np.testing.assert_allclose(jax.grad(ours)(logits), jax.grad(reference)(logits), atol=1e-6)
  assert float(losses.cross_entropy_sums(logits, targets, weights)[1]) == float(weights.sum())


def test_z_loss_is_the_mean_squared_log_partition_function():
  logits = jax.random.normal(jax.random.key(1), (3, 4, 11))
  weights = jnp.ones((3, 4)).at[0, 0].set(0.0)
  log_z = np.log(np.exp(np.asarray(logits, np.float64)).sum(-1))
  want = (log_z**2 * np.asarray(weights)).sum()
  np.testing.assert_allclose(losses.z_loss_sum(logits, weights), want, rtol=1e-5)
