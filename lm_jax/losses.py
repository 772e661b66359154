"""Next-token cross-entropy, shared by training and evaluation, PaLM's z-loss, and the loss a
language-modelling train step takes the mean of.

A step's loss is an object with `names` (the sums it returns; the first, 'train_loss', is the
loss itself), `count(batch)` (what the sums are divided by: target tokens here, pairs for
preference tuning) and `(state, params, batch, rng, train) -> (the sum to differentiate,
{name: sum}, the carry after the batch or None)`. Sums, not means, so that replicas and
microbatches add up to the one-device, one-batch result exactly.
"""

import dataclasses

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


def forward(state, params, batch, rng, train: bool):
  """(logits_BxLxV, carry): `state.apply_fn` on batch['inputs'] with `params` in place of the
  trained ones, with dropout when `train`; from batch['carry'] where it holds one."""
  kwargs = {"deterministic": not train, "rngs": {"dropout": rng} if train else None}
  variables = state.variables(params)
  if "carry" in batch:  # The carry is an input, not a parameter: no gradient crosses it.
    return state.apply_fn(variables, batch["inputs"], cache=batch["carry"], **kwargs)
  return state.apply_fn(variables, batch["inputs"], **kwargs), None


@dataclasses.dataclass(frozen=True)
class CrossEntropy:
  """The mean next-token cross-entropy over the weighted targets ('train_loss'), plus `z_loss`
  times the mean log(Z)^2 (z_loss_sum), reported apart as 'z_loss'.

  A batch holds 'inputs' and 'targets' (BxL) and may hold 'weights' (default 1); with a carry
  in the state (a recurrent model on contiguous streams), rows continue from it where
  batch['continues'] is 1 and start from zeros where it is 0.
  """

  z_loss: float = 0.0

  @property
  def names(self) -> tuple[str, ...]:
    return ("train_loss", "z_loss") if self.z_loss else ("train_loss",)

  def prepare(self, state, batch) -> dict:
    if "weights" not in batch:
      batch = {**batch, "weights": jnp.ones(batch["targets"].shape, jnp.float32)}
    if state.carry is not None:
      batch = {**batch, "carry": _continued(state.carry, batch["continues"])}
    return batch

  def count(self, batch):
    return batch["weights"].sum()

  def __call__(self, state, params, batch, rng, train: bool = True):
    logits, carry = forward(state, params, batch, rng, train)
    loss_sum, _ = cross_entropy_sums(logits, batch["targets"], batch["weights"])
    if not self.z_loss:
      return loss_sum, {"train_loss": loss_sum}, carry
    z_sum = self.z_loss * z_loss_sum(logits, batch["weights"])
    return loss_sum + z_sum, {"train_loss": loss_sum, "z_loss": z_sum}, carry


def _continued(carry, continues_B):
  """The carry where a row continues its stream, zeros where one starts."""
  keep = lambda x: x * continues_B.reshape(-1, *([1] * (x.ndim - 1))).astype(x.dtype)
  return jax.tree_util.tree_map(keep, carry)
