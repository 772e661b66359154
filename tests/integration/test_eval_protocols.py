"""Evaluation protocols against brute force: the state carried through contiguous streams
(an LSTM), and strided sliding windows (a GPT, Hugging Face's perplexity-guide loop)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import states

from lm_jax import UserError, evaluate, models, parallel, train
from lm_jax import config as config_lib
from lm_jax.data import streams

TOKENS = np.asarray(jax.random.randint(jax.random.key(0), (403,), 0, 23))


def build(name, **kwargs):
  base = {
    "lstm": dict(embed_size=8, hidden_size=12, num_layers=2),
    "gpt": dict(num_layers=2, num_heads=2, d_model=16, max_len=12, use_bias=False),
  }
  model = models.build_model(
    config_lib.ml_collections.ConfigDict({"name": name, **base[name], **kwargs}), 23
  )
  return model, states.train_state(model)


def nll(model, params, inputs_BxL, targets_BxL, **kwargs):
  out = model.apply({"params": params}, jnp.asarray(inputs_BxL), **kwargs)
  logits = out[0] if isinstance(out, tuple) else out
  log_probs = np.asarray(jax.nn.log_softmax(logits), np.float64)
  return -np.take_along_axis(log_probs, np.asarray(targets_BxL)[..., None], -1)[..., 0]


@pytest.mark.parametrize("mode,batch_size", [("jit", 4), ("pmap", 8)])
def test_carried_evaluation_equals_one_pass_per_stream(mode, batch_size):
  model, state = build("lstm")
  how = evaluate.protocol(
    config_lib.ml_collections.ConfigDict({"eval": {"carry": True}, "data": {"seq_len": 7}}), model
  )
  plan = parallel.make_plan(mode)
  m = evaluate.evaluate(
    how.compile(plan), plan.put(state), streams.Mixture.single(TOKENS), 7, batch_size, plan, how
  )
  n = len(TOKENS) // batch_size
  streams_BxN = TOKENS[: batch_size * n].reshape(batch_size, n)  # PyTorch's batchify.
  want = nll(
    model, state.params, streams_BxN[:, :-1], streams_BxN[:, 1:], cache=model.init_carry(batch_size)
  )
  assert m["tokens"] == want.size == batch_size * (n - 1)
  np.testing.assert_allclose(m["loss"], want.mean(), rtol=1e-5)


@pytest.mark.parametrize("stride", [3, 10])
def test_strided_evaluation_equals_the_sliding_window_loop(stride):
  model, state = build("gpt")
  L = 10
  how = evaluate.protocol(
    config_lib.ml_collections.ConfigDict({"eval": {"stride": stride}, "data": {"seq_len": L}}),
    model,
  )
  plan = parallel.make_plan("jit")
  m = evaluate.evaluate(
    how.compile(plan), plan.put(state), streams.Mixture.single(TOKENS), L, 5, plan, how
  )
  # Hugging Face's perplexity guide, with windows of L + 1 tokens (L predictions each).
  total, count, prev_end = 0.0, 0, 0
  for begin in range(0, len(TOKENS), stride):
    end = min(begin + L + 1, len(TOKENS))
    trg_len = end - prev_end  # Score only the tokens no earlier window scored.
    window = TOKENS[begin:end]
    losses = nll(model, state.params, window[None, :-1], window[None, 1:])[0]
    scored = losses[-min(trg_len, len(losses)) :]
    total, count = total + scored.sum(), count + len(scored)
    prev_end = end
    if end == len(TOKENS):
      break
  assert m["tokens"] == count == len(TOKENS) - 1
  np.testing.assert_allclose(m["loss"], total / count, rtol=1e-5)


def test_protocols_are_refused_where_they_do_not_apply():
  gpt, _ = build("gpt")
  lstm, _ = build("lstm")
  c = lambda **e: config_lib.ml_collections.ConfigDict({"eval": e, "data": {"seq_len": 8}})
  with pytest.raises(UserError, match="needs a recurrent model"):
    evaluate.protocol(c(carry=True), gpt)
  with pytest.raises(UserError, match="exclude each other"):
    evaluate.protocol(c(carry=True, stride=4), lstm)
  with pytest.raises(UserError, match=r"eval.stride=9 is not in \[1, data.seq_len=8\]"):
    evaluate.protocol(c(stride=9), gpt)


def test_the_protocol_is_recorded_beside_the_figures(config, tmp_path):
  config.eval.stride = 4
  workdir = tmp_path / "run"
  train.train_and_evaluate(config, str(workdir))
  info = json.loads((workdir / "run.json").read_text())
  assert info["eval_protocol"].startswith("strided: windows of 16 tokens every 4")
  result = evaluate.evaluate_run(str(workdir), "test")
  assert result["protocol"] == info["eval_protocol"]
  assert json.loads((workdir / f"eval_test_{result['step']}.json").read_text())["protocol"]
