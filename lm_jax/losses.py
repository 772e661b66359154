"""Next-token cross-entropy, shared by training and evaluation, and PaLM's z-loss."""

import jax
import jax.numpy as jnp


@jax.custom_vjp
def token_cross_entropy(logits_NxV, targets_N):
  """-log softmax(logits)[target] per row, float32; as optax's softmax cross-entropy.

  The backward pass is written out, softmax - one_hot(target) in one pass over the logits,
  instead of autodiff's scatter of the target's cotangent into a zeroed copy of the logits
  followed by the log-softmax's own backward: at a word model's 14k-33k vocabulary, these
  passes over the logits are most of the loss's time (docs/benchmarks.md).
  """
  return _cross_entropy_fwd(logits_NxV, targets_N)[0]


def _cross_entropy_fwd(logits_NxV, targets_N):
  log_z_N = jax.nn.logsumexp(logits_NxV, axis=-1)  # As optax computes it, to the bit.
  target_N = jnp.take_along_axis(logits_NxV, targets_N[:, None], axis=-1)[:, 0]
  return log_z_N - target_N, (logits_NxV, log_z_N, targets_N)


def _cross_entropy_bwd(residuals, g_N):
  logits_NxV, log_z_N, targets_N = residuals
  target_NxV = jnp.arange(logits_NxV.shape[-1])[None, :] == targets_N[:, None]
  probs_NxV = jnp.exp(logits_NxV - log_z_N[:, None])
  return (probs_NxV - target_NxV) * g_N[:, None], None


token_cross_entropy.defvjp(_cross_entropy_fwd, _cross_entropy_bwd)


def cross_entropy_sums(logits_BxLxV, targets_BxL, weights_BxL=None):
  """Returns (sum of weighted token losses, sum of weights), both float32.

  Weights are 1 for tokens that count and 0 for padding; sums rather than
  means let callers combine batches and devices exactly.
  """
  V = logits_BxLxV.shape[-1]
  losses_N = token_cross_entropy(
    logits_BxLxV.astype(jnp.float32).reshape(-1, V), targets_BxL.reshape(-1)
  )
  losses_BxL = losses_N.reshape(targets_BxL.shape)
  if weights_BxL is None:
    weights_BxL = jnp.ones_like(losses_BxL)
  weights_BxL = weights_BxL.astype(jnp.float32)
  return jnp.sum(losses_BxL * weights_BxL), jnp.sum(weights_BxL)


def z_loss_sum(logits_BxLxV, weights_BxL):
  """Sum over weighted tokens of log(Z)^2, Z the softmax's partition function (PaLM's
  auxiliary loss, which keeps log Z near 0); float32."""
  log_z_BxL = jax.nn.logsumexp(logits_BxLxV.astype(jnp.float32), axis=-1)
  return jnp.sum(jnp.square(log_z_BxL) * weights_BxL.astype(jnp.float32))
