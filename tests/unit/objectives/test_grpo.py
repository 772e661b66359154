"""GRPO's advantages and clipped objective against NumPy transcriptions; reward functions and
prompt records that cannot be used are refused naming the function, the file and the record."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lm_jax import UserError
from lm_jax.data import prompts, record_files
from lm_jax.objectives import grpo


def test_advantages_are_rewards_normalised_within_each_group():
  rewards = np.array([1.0, 0.0, 0.0, 2.0, 3.0, 3.0, 3.0, 3.0])
  got = grpo.advantages(rewards, 4)
  groups = rewards.reshape(2, 4)
  want = (groups - groups.mean(1, keepdims=True)) / (groups.std(1, ddof=1, keepdims=True) + 1e-4)
  np.testing.assert_allclose(got, want.reshape(-1))
  assert np.all(got[4:] == 0)  # A group that all scored the same teaches nothing.


def test_the_clipped_objective_equals_its_formula():
  rng = np.random.default_rng(0)
  logp, old = rng.normal(size=(2, 3, 5)) * 0.3
  a = rng.normal(size=(3, 1))
  got = grpo.clipped_objective(jnp.asarray(logp), jnp.asarray(old), a, 0.2)
  ratio = np.exp(logp - old)
  want = -np.minimum(ratio * a, np.clip(ratio, 0.8, 1.2) * a)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert np.any(np.abs(ratio - 1) > 0.2)  # Some ratios were clipped.


def test_the_loss_at_one_update_is_the_policy_gradient_plus_the_kl_penalty():
  """ratio = 1: the value is -A per token (plus the KL term), the gradient -A * dlogp."""
  N, L, V = 2, 3, 5
  logits = jnp.asarray(np.random.default_rng(1).normal(size=(N, L, V)), jnp.float32)
  ref = logits + 0.1
  state = type("S", (), {})()
  state.apply_fn = lambda variables, inputs, **kw: variables["params"]
  state.variables = lambda p: {"params": p}
  state.frozen, state.reference = None, ref
  targets = np.array([[1, 2, 3], [4, 0, 1]])
  batch = {
    "inputs": targets,
    "targets": targets,
    "weights": np.ones((N, L)),
    "advantages": np.array([0.5, -1.0]),
  }
  loss = grpo.GRPOLoss(0.2, 0.04, state.apply_fn)
  total, sums, _ = loss(state, logits, batch, None, train=False)
  logp = np.asarray(jax.nn.log_softmax(logits))[np.arange(N)[:, None], np.arange(L), targets]
  ref_logp = np.asarray(jax.nn.log_softmax(ref))[np.arange(N)[:, None], np.arange(L), targets]
  k3 = np.exp(ref_logp - logp) - (ref_logp - logp) - 1
  np.testing.assert_allclose(float(sums["kl"]), k3.sum(), rtol=1e-5)
  np.testing.assert_allclose(
    float(total), (-batch["advantages"][:, None] + 0.04 * k3).sum(), rtol=1e-5
  )


def rewards(*names, weights=()):
  return grpo.Rewards.of(
    ml_collections.ConfigDict({"reward": ",".join(names), "reward_weights": list(weights)})
  )


def test_several_reward_functions_add_up_by_weight():
  r = rewards("helpers.rewards:correct", "helpers.rewards:shorter", weights=[1.0, 0.5])
  found = r.score(["p", "p"], ["two", "seven"], [{"answer": "two"}, {"answer": "one"}])
  np.testing.assert_allclose(r.total(found), [1 - 0.5 * 3 / 50, 0 - 0.5 * 5 / 50])


@pytest.mark.parametrize(
  "name, message",
  [
    (
      "helpers.rewards:broken",
      r"reward function helpers.rewards:broken raised ValueError: no score",
    ),
    ("helpers.rewards:too_few", r"helpers.rewards:too_few returned .*, not 2 numbers"),
    ("helpers.rewards:words", r"helpers.rewards:words returned .*, not 2 numbers"),
  ],
)
def test_a_reward_function_that_fails_is_named(name, message):
  with pytest.raises(UserError, match=message):
    rewards(name).score(["p", "p"], ["a", "b"], [{}, {}])


def test_unknown_reward_functions_and_weights_are_refused():
  with pytest.raises(UserError, match=r"train.grpo.reward is empty"):
    rewards()
  with pytest.raises(UserError, match=r"cannot import reward module 'nowhere'"):
    rewards("nowhere:f")
  with pytest.raises(UserError, match=r"2 weights for 1 reward functions"):
    rewards("helpers.rewards:correct", weights=[1, 2])


class Letters:
  eos_id = 0
  chat_template = None

  def encode(self, text):
    return np.array([ord(ch) % 50 + 1 for ch in text])


def test_a_prompt_record_without_a_prompt_is_refused_naming_file_and_line(tmp_path):
  path = tmp_path / "prompts.jsonl"
  path.write_text(
    json.dumps({"prompt": "ok", "answer": "a"}) + "\n" + json.dumps({"question": "x"}) + "\n"
  )
  with pytest.raises(UserError, match=rf"{path} line 2 has no field 'prompt'"):
    prompts.encode(Letters(), record_files.records(str(path)), 8)


def test_prompts_keep_their_other_fields_and_drop_what_is_too_long(tmp_path):
  records = [
    (lambda: "r", {"prompt": "abc", "answer": "x"}),
    (lambda: "r", {"prompt": "a" * 20, "answer": "y"}),
  ]
  p = prompts.encode(Letters(), records, 8)
  assert (
    len(p) == 1 and p.dropped == 1 and p.fields == [{"answer": "x"}] and p.lengths.tolist() == [3]
  )
