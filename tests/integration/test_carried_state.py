"""Truncated backpropagation through time: data.order='sequential' carries an LSTM's state from
step to step, equal to one pass over the joined windows, in every layout, and resumes exactly."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import launch_train, launch_two_processes
from helpers import states
from helpers.trees import assert_trees_close, assert_trees_equal

from lm_jax import config as config_lib
from lm_jax import data, models, optim, records, runs, train
from lm_jax.data import batches


def small_lstm(**kwargs):
  c = config_lib.ml_collections.ConfigDict(
    dict(name="lstm", embed_size=8, hidden_size=12, num_layers=2, dropout=0.0, **kwargs)
  )
  return models.build_model(c, 23)


def test_carried_windows_equal_one_pass():
  model = small_lstm()
  tokens_BxL = jax.random.randint(jax.random.key(0), (3, 30), 0, 23)
  params = model.init(jax.random.key(1), tokens_BxL[:, :5])
  whole, final = model.apply(params, tokens_BxL, cache=model.init_carry(3))
  carry, parts = model.init_carry(3), []
  for start in range(0, 30, 7):  # Windows of 7, the last of 2.
    logits, carry = model.apply(params, tokens_BxL[:, start : start + 7], cache=carry)
    parts.append(logits)
  np.testing.assert_allclose(jnp.concatenate(parts, axis=1), whole, atol=1e-5, rtol=1e-5)
  assert_trees_close(carry, final, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("grad_accum_steps", [1, 2])
def test_train_step_continues_the_streams(grad_accum_steps):
  """Three steps at learning rate 0: the carry and the third step's loss are those of one
  pass over each stream's three windows; gradients stop at the step boundary."""
  model, B, L = small_lstm(), 4, 5
  tokens = np.asarray(jax.random.randint(jax.random.key(2), (B * 20,), 0, 23))
  c = config_lib.load("configs/word_lstm.py").optim
  c.update(learning_rate=0.0, min_learning_rate=0.0, schedule="constant", grad_clip=0.0)
  tx, _ = optim.make_optimizer(c, 10)
  params = model.init(jax.random.key(3), jnp.zeros((1, L), jnp.int32))["params"]
  state = states.train_state(model, tx=tx, params=params, carry=model.init_carry(B))
  step = jax.jit(
    lambda s, b: train.train_step(s, b, jax.random.key(0), grad_accum_steps=grad_accum_steps)
  )
  for s in range(3):
    state, metrics = step(state, batches.sequential_batch(tokens, s, B, L))
  streams_BxN = tokens.reshape(B, 20)
  logits, final = model.apply(
    {"params": params}, jnp.asarray(streams_BxN[:, : 3 * L]), cache=model.init_carry(B)
  )
  assert_trees_close(state.carry, final, atol=1e-5, rtol=1e-5)
  targets = streams_BxN[:, 2 * L + 1 : 3 * L + 1]
  log_probs = jax.nn.log_softmax(logits[:, 2 * L :])
  want = -np.take_along_axis(np.asarray(log_probs), targets[..., None], -1).mean()
  np.testing.assert_allclose(metrics["train_loss"], want, rtol=1e-5)
  # Gradients stop at the step boundary: the third step's gradient is that of its window's
  # loss with the carry held fixed, not backpropagated through the earlier windows.
  third = jnp.asarray(streams_BxN[:, 2 * L : 3 * L])
  _, carry2 = model.apply(
    {"params": params}, jnp.asarray(streams_BxN[:, : 2 * L]), cache=model.init_carry(B)
  )
  loss = lambda logits: (
    train.losses.cross_entropy_sums(logits, jnp.asarray(targets))[0] / targets.size
  )
  truncated = jax.grad(lambda p: loss(model.apply({"params": p}, third, cache=carry2)[0]))(params)
  full = jax.grad(
    lambda p: loss(
      model.apply({"params": p}, jnp.asarray(streams_BxN[:, : 3 * L]), cache=model.init_carry(B))[
        0
      ][:, 2 * L :]
    )
  )(params)
  norm = lambda g: float(optax.tree.norm(g))
  np.testing.assert_allclose(metrics["grad_norm"], norm(truncated), rtol=1e-4)
  assert abs(norm(full) - norm(truncated)) > 1e-3 * norm(truncated)


def word_config(config):
  """configs/word_lstm.py, shrunk to the test corpus: 8 streams, sequential, carried eval."""
  c = config_lib.load("configs/word_lstm.py")
  c.data.text_files.update(config.data.text_files)
  c.model.update(embed_size=16, hidden_size=16)
  c.data.update(seq_len=16, vocab_size=40)
  c.train.update(
    batch_size=8,
    eval_batch_size=8,
    num_epochs=0,
    num_steps=12,
    eval_every=4,
    checkpoint_every=4,
    log_every=1,
    parallel="pmap",
  )
  c.optim.learning_rate = 2.0
  return c


def test_resume_mid_epoch_with_carried_state_is_bit_exact(config, tmp_path):
  c = word_config(config)
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  tokens = data.prepare(c.data, "", is_writer=False)[1]["train"]
  per_epoch = batches.steps_per_epoch(tokens, 8, 16, "sequential")
  end = per_epoch + 3  # The straight run wraps around...
  c.train.update(num_steps=end, eval_every=4, checkpoint_every=per_epoch // 2)
  train.train_and_evaluate(c, straight)
  c.train.num_steps = per_epoch // 2  # ...the other stops mid-epoch (a constant schedule).
  train.train_and_evaluate(c, resumed)
  c.train.num_steps = end
  train.train_and_evaluate(c, resumed)
  keep = lambda w: [
    {k: v for k, v in r.items() if k in ("step", "train_loss", "val_loss", "learning_rate")}
    for r in records.read_metrics(w)
  ]
  assert keep(resumed) == keep(straight)
  a, b = runs.load_run(straight)[3], runs.load_run(resumed)[3]
  assert a.carry is not None
  assert_trees_equal(a, b)


def test_carry_follows_its_rows_in_every_layout(config, tmp_path):
  c = word_config(config)
  c.train.update(num_steps=6, eval_every=6, checkpoint_every=6)
  c.model.dropout = 0.0  # pmap draws each device's dropout masks from its own key.
  c.mesh.update(data=2, fsdp=4)
  found = {}
  for mode in ("jit", "pmap", "sharded"):
    c.train.parallel = mode
    state, ev = train.train_and_evaluate(c, str(tmp_path / mode))
    found[mode] = (state, ev)
  for mode in ("pmap", "sharded"):
    assert_trees_close(found["jit"][0], found[mode][0], err_msg=mode, atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(found["jit"][1]["loss"], found[mode][1]["loss"], rtol=1e-5)
  assert found["jit"][0].carry["layers"][0][0].shape == (8, 16)  # Global rows.


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["pmap", "sharded"])
def test_two_processes_carry_their_own_rows(config, tmp_path, mode):
  """Each process holds the carry of its rows; the checkpoint they write together is one run's."""
  c = word_config(config)
  c.train.update(num_steps=6, eval_every=3, checkpoint_every=3, parallel=mode)
  c.mesh.update(data=2, fsdp=2)
  path = tmp_path / "config.json"
  path.write_text(json.dumps(c.to_dict()))
  procs = [launch_train(str(path), str(tmp_path / "one"), 4)]
  procs += launch_two_processes(str(path), str(tmp_path / "two"))
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
  one, two = (records.read_metrics(str(tmp_path / d)) for d in ("one", "two"))
  for key in ("train_loss", "val_loss"):
    np.testing.assert_allclose(
      [r[key] for r in two if key in r], [r[key] for r in one if key in r], rtol=1e-5
    )
  a, b = runs.load_run(str(tmp_path / "one"))[3], runs.load_run(str(tmp_path / "two"))[3]
  assert_trees_close(a, b, atol=1e-5, rtol=1e-5)
