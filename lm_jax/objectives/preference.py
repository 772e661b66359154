"""Preference tuning: DPO's loss on pairs of responses, against the frozen starting model.

train.objective='dpo' reads preference pairs (lm_jax/data/preferences.py). A response's
log-probability is the sum over its tokens of log p(token | what precedes it); with the
policy's (the parameters that train) and the reference's (the starting model, frozen: under
LoRA the model with its adapters off, else a copy kept in the state) for the chosen (c) and
rejected (r) response, train.dpo.loss is

  sigmoid  -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))              DPO
  ipo      ((pi_c - ref_c) / n_c - (pi_r - ref_r) / n_r - 1 / (2 * beta))^2     IPO, per token
  simpo    -log sigmoid(beta * (pi_c / n_c - pi_r / n_r) - gamma)               SimPO, no reference

(n: the response's tokens), averaged over the pairs, as TRL computes them. The implicit reward
of a response is beta * (pi - ref) (SimPO: beta * pi / n); 'dpo_accuracy' is the share of
pairs whose chosen reward is the higher, 'dpo_margin' the mean difference, 'logps_chosen' and
'logps_rejected' the policy's mean log-probabilities. The reference's log-probabilities are
computed in the same step, on the same batch: nothing precomputed to keep in step with the data.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lm_jax import config as config_lib
from lm_jax import losses, parallel
from lm_jax.data import preferences, sources

LOSSES = ("sigmoid", "ipo", "simpo")


@dataclasses.dataclass(frozen=True)
class DPOLoss:
  """The train step's loss on a batch of pairs: 'inputs', 'targets', 'weights' [B, 2, L] and
  'pairs' [B] (1 for a pair, 0 for padding); see the module docstring."""

  beta: float
  kind: str = "sigmoid"
  gamma: float = 0.0  # SimPO's target margin.
  reference_apply: Callable | None = None  # The model's own apply (not LoRA's).

  names = ("train_loss", "dpo_accuracy", "dpo_margin", "logps_chosen", "logps_rejected")

  def prepare(self, state, batch) -> dict:
    del state
    return batch

  def count(self, batch):
    return batch["pairs"].sum()

  def logps(self, apply, variables, batch, rng, train: bool):
    """Each response's summed log-probability and its token count: two [B, 2] arrays."""
    B, _, L = batch["inputs"].shape
    flat = lambda x: x.reshape(2 * B, L)
    kwargs = {"deterministic": not train, "rngs": {"dropout": rng} if train else None}
    logits = apply(variables, flat(batch["inputs"]), **kwargs)
    V = logits.shape[-1]
    nll = losses.token_cross_entropy(
      logits.astype(jnp.float32).reshape(-1, V), flat(batch["targets"]).reshape(-1)
    )
    weights = flat(batch["weights"]).astype(jnp.float32)
    logp = -(nll.reshape(2 * B, L) * weights).sum(-1)
    return logp.reshape(B, 2), weights.sum(-1).reshape(B, 2)

  def __call__(self, state, params, batch, rng, train: bool = True):
    pi, n = self.logps(state.apply_fn, state.variables(params), batch, rng, train)
    n = jnp.maximum(n, 1.0)
    if self.kind == "simpo":
      chosen, rejected = self.beta * pi[:, 0] / n[:, 0], self.beta * pi[:, 1] / n[:, 1]
      per_pair = -jax.nn.log_sigmoid(chosen - rejected - self.gamma)
    else:
      reference = state.frozen if state.frozen is not None else state.reference
      variables = {"params": jax.lax.stop_gradient(reference)}
      ref, _ = self.logps(self.reference_apply, variables, batch, None, False)
      ratio = pi - ref
      chosen, rejected = self.beta * ratio[:, 0], self.beta * ratio[:, 1]
      if self.kind == "ipo":
        delta = ratio[:, 0] / n[:, 0] - ratio[:, 1] / n[:, 1]
        per_pair = jnp.square(delta - 1.0 / (2.0 * self.beta))
      else:
        per_pair = -jax.nn.log_sigmoid(chosen - rejected)
    mask = batch["pairs"].astype(jnp.float32)
    total = jnp.sum(per_pair * mask)
    sums = {
      "train_loss": total,
      "dpo_accuracy": jnp.sum((chosen > rejected) * mask),
      "dpo_margin": jnp.sum((chosen - rejected) * mask),
      "logps_chosen": jnp.sum(pi[:, 0] * mask),
      "logps_rejected": jnp.sum(pi[:, 1] * mask),
    }
    return total, sums, None


def eval_step(state, batch, axis_name=None, *, loss: DPOLoss):
  """The loss's sums and pair count on `batch` (no dropout), summed over replicas."""
  _, sums, _ = loss(state, state.params, batch, None, train=False)
  return parallel.psum({**sums, "count": loss.count(batch)}, axis_name)


class Preference:
  """train.objective='dpo': random pairs each step (a seeded permutation per epoch), the loss
  of train.dpo, evaluation over every validation pair."""

  def __init__(self, config, workdir: str):
    self.config = config
    self.tokenizer, self.pairs = preferences.prepare(config.data, workdir)

  @staticmethod
  def check_config(config) -> None:
    d = config.train.dpo
    config_lib.check_choice("train.dpo.loss", d.loss, LOSSES)
    config_lib.check_number("train.dpo.beta", d.beta, 0, above=True)
    config_lib.check_number("train.dpo.simpo_gamma", d.simpo_gamma)
    sources.check_format(config.data, "dpo")

  @staticmethod
  def needs_reference(config) -> bool:
    return config.train.dpo.loss != "simpo"

  @staticmethod
  def loss_of(setup) -> DPOLoss:
    d = setup.config.train.dpo
    return DPOLoss(float(d.beta), d.loss, float(d.simpo_gamma), setup.model.apply)

  def fingerprints(self) -> dict:
    return {split: p.fingerprint for split, p in self.pairs.items()}

  def steps_per_epoch(self, config) -> int:
    return max(len(self.pairs["train"]) // config.train.batch_size, 1)

  def bind(self, setup) -> "Preference":
    self.config, self.plan = setup.config, setup.plan
    self.loss = self.loss_of(setup)
    step = lambda state, batch, axis_name=None: eval_step(state, batch, axis_name, loss=self.loss)
    self.eval_step = setup.plan.compile_step(step, in_axes=(0, 0), donate=False)
    return self

  def describe(self) -> str:
    n = len(self.pairs["validation"])
    return f"preference pairs: every one of the {n} validation pairs, train.dpo's loss"

  @staticmethod
  def _rows(pairs: preferences.Pairs, index, mask) -> dict:
    t = pairs.tokens[index]
    w = pairs.weights[index]
    return {"inputs": t[..., :-1], "targets": t[..., 1:], "weights": w, "pairs": mask}

  def batch(self, step: int) -> dict:
    c, train = self.config.train, self.pairs["train"]
    at = step * c.batch_size + np.arange(c.batch_size)
    epochs, within = np.divmod(at, len(train))
    order = {
      e: np.random.default_rng([self.config.seed, e]).permutation(len(train)) for e in set(epochs)
    }
    index = np.array([order[e][i] for e, i in zip(epochs, within, strict=True)])
    rows = self.plan.rows(c.batch_size)
    return self._rows(train, index[rows], np.ones(len(index[rows]), np.float32))

  def evaluate(self, state) -> dict:
    c, pairs = self.config.train, self.pairs["validation"]
    size = c.eval_batch_size or c.batch_size
    totals = {}
    for start in range(0, len(pairs), size):
      index = np.arange(start, start + size)
      mask = (index < len(pairs)).astype(np.float32)
      batch = self._rows(pairs, np.minimum(index, len(pairs) - 1), mask)
      rows = self.plan.rows(size)
      sums = self.plan.to_host(
        self.eval_step(state, self.plan.shard({k: v[rows] for k, v in batch.items()}))
      )
      for k, v in sums.items():
        totals[k] = totals.get(k, 0.0) + float(v)
    count = totals.pop("count")
    metrics = {k: v / count for k, v in totals.items()}
    return {"loss": metrics.pop("train_loss"), **metrics, "pairs": int(count)}

  @staticmethod
  def logged(metrics: dict) -> dict:
    return {f"val_{k}": v for k, v in metrics.items() if k != "pairs"}
