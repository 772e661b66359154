"""Next-token cross-entropy, shared by training and evaluation, and PaLM's z-loss."""

import jax
import jax.numpy as jnp
import optax


def cross_entropy_sums(logits_BxLxV, targets_BxL, weights_BxL=None):
  """Returns (sum of weighted token losses, sum of weights), both float32.

  Weights are 1 for tokens that count and 0 for padding; sums rather than
  means let callers combine batches and devices exactly.
  """
  losses_BxL = optax.softmax_cross_entropy_with_integer_labels(
    logits_BxLxV.astype(jnp.float32), targets_BxL
  )
  if weights_BxL is None:
    weights_BxL = jnp.ones_like(losses_BxL)
  weights_BxL = weights_BxL.astype(jnp.float32)
  return jnp.sum(losses_BxL * weights_BxL), jnp.sum(weights_BxL)


def z_loss_sum(logits_BxLxV, weights_BxL):
  """Sum over weighted tokens of log(Z)^2, Z the softmax's partition function (PaLM's
  auxiliary loss, which keeps log Z near 0); float32."""
  log_z_BxL = jax.nn.logsumexp(logits_BxLxV.astype(jnp.float32), axis=-1)
  return jnp.sum(jnp.square(log_z_BxL) * weights_BxL.astype(jnp.float32))
