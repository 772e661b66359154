"""jit, pmap and sharded runs agree: one step function, three layouts, several hosts."""

import functools
import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, launch_train, launch_two_processes
from helpers import states
from helpers.trees import assert_trees_close

from lm_jax import UserError, backend, models, parallel, records, runs, train
from lm_jax import state as state_lib


@pytest.fixture
def sharded(config):
  config.mesh.update(data=2, fsdp=4)
  config.train.update(num_steps=4, log_every=1, eval_every=4)
  return config


def test_jit_pmap_and_sharded_train_alike(sharded, tmp_path):
  results = {}
  for mode in ("jit", "pmap", "sharded"):
    sharded.train.parallel = mode
    state, ev = train.train_and_evaluate(sharded, str(tmp_path / mode))
    losses = [
      r["train_loss"] for r in records.read_metrics(str(tmp_path / mode)) if "train_loss" in r
    ]
    results[mode] = (state.params, ev["loss"], losses)
  for mode in ("pmap", "sharded"):
    assert_trees_close(results[mode][0], results["jit"][0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(results[mode][1], results["jit"][1], rtol=1e-5)
    np.testing.assert_allclose(results[mode][2], results["jit"][2], rtol=1e-5)


def test_sharded_state_is_split_over_fsdp(sharded):
  sharded.train.parallel = "sharded"
  s = state_lib.setup(sharded, 40)
  state = s.plan.init(s.create, s.abstract)
  spec = lambda x: tuple(x.sharding.spec)
  assert spec(state.params["wte"]["embedding"]) == ("fsdp", None)  # 40 x 16: 40 splits.
  assert spec(state.params["block_0"]["mlp"]["fc"]["kernel"]) == (None, "fsdp")  # 16 x 64.
  mu = state.opt_state[1][0].mu  # clip, then adamw's first moment: split like its params.
  assert spec(mu["block_0"]["mlp"]["fc"]["kernel"]) == (None, "fsdp")
  assert spec(state.step) == ()
  shard = state.params["block_0"]["mlp"]["fc"]["kernel"].addressable_shards[0]
  assert shard.data.shape == (16, 16)  # Each device holds a quarter.


def test_auto_may_take_jit_on_cores_made_devices(config, tmp_path, monkeypatch):
  monkeypatch.setattr(parallel, "CPU_JIT_MIN_FLOPS_PER_DEVICE", 1.0)  # Any model is "wide".
  config.train.update(parallel="auto", num_steps=2, eval_every=2, log_every=1)
  assert jax.device_count() == 8
  train.train_and_evaluate(config, str(tmp_path))
  info = json.loads((tmp_path / "run.json").read_text())
  assert info["parallel"] == "jit" and "GFLOP per core" in info["parallel_reason"]
  assert info["device_count"] == 8


def test_grad_accumulation_equals_one_big_batch(config):
  config.model.dropout = 0.0
  state = states.train_state(models.build_model(config.model, 30), config)
  tokens = jax.random.randint(jax.random.key(1), (8, 17), 0, 30)
  weights = jnp.ones((8, 16)).at[5:, 9:].set(0.0)  # Unequal token counts per microbatch.
  batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "weights": weights}
  outs = {
    n: jax.jit(functools.partial(train.train_step, grad_accum_steps=n))(
      state, batch, jax.random.key(2)
    )
    for n in (1, 4)
  }
  assert_trees_close(outs[4][0].params, outs[1][0].params, atol=1e-6, rtol=0)
  np.testing.assert_allclose(outs[4][1]["train_loss"], outs[1][1]["train_loss"], rtol=1e-6)
  np.testing.assert_allclose(outs[4][1]["grad_norm"], outs[1][1]["grad_norm"], rtol=1e-5)


def test_grad_accum_must_divide_the_device_batch(config, tmp_path):
  config.train.update(parallel="pmap", grad_accum_steps=3)  # 8 rows over 8 devices: 1 each.
  with pytest.raises(UserError, match="grad_accum_steps=3 does not divide the 1 rows"):
    train.train_and_evaluate(config, str(tmp_path))


def finish(proc):
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["pmap", "sharded"])
def test_two_hosts_train_like_one(sharded, tmp_path, mode):
  sharded.mesh.update(data=2, fsdp=2)
  sharded.train.update(parallel=mode, num_steps=6, checkpoint_every=3, eval_every=3)
  config_path = str(tmp_path / "config.json")
  with open(config_path, "w") as f:
    json.dump(sharded.to_dict(), f)
  finish(launch_train(config_path, str(tmp_path / "one"), 4))
  for p in launch_two_processes(config_path, str(tmp_path / "two")):
    finish(p)
  one, two = (records.read_metrics(str(tmp_path / d)) for d in ("one", "two"))
  assert [r["step"] for r in two] == [r["step"] for r in one]  # Written once, by process 0.
  for key in ("train_loss", "val_loss"):
    np.testing.assert_allclose(
      [r[key] for r in two if key in r], [r[key] for r in one if key in r], rtol=1e-5
    )
  # The checkpoint both processes wrote together restores on one process, equal to the other's.
  assert_trees_close(
    runs.load_run(str(tmp_path / "two"))[3].params,
    runs.load_run(str(tmp_path / "one"))[3].params,
    atol=1e-5,
    rtol=0,
  )


def logged_steps(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  return len(records.read_metrics(workdir)) if os.path.exists(path) else 0


@pytest.mark.slow
def test_sigterm_to_one_process_stops_all_at_one_step_and_resumes_exactly(config, tmp_path):
  config.train.update(
    parallel="pmap", num_steps=40, log_every=1, eval_every=40, checkpoint_every=1000
  )  # Each signal lands a few steps after its run starts, long before step 40.
  config_path = str(tmp_path / "config.json")
  with open(config_path, "w") as f:
    json.dump(config.to_dict(), f)
  straight, stopped = str(tmp_path / "straight"), str(tmp_path / "stopped")
  for p in launch_two_processes(config_path, straight):
    finish(p)
  for target in (1, 0):  # SIGTERM to one process only, then to the other.
    logged = logged_steps(stopped)
    procs = launch_two_processes(config_path, stopped)
    deadline = time.time() + 300
    while logged_steps(stopped) < logged + 3:
      assert time.time() < deadline and procs[0].poll() is None, procs[0].stderr.read()[-3000:]
      time.sleep(0.05)
    procs[target].send_signal(signal.SIGTERM)
    outs = [p.communicate(timeout=120) for p in procs]  # Both stop (a hang fails here).
    assert [p.returncode for p in procs] == [128 + signal.SIGTERM] * 2, [o[1][-2000:] for o in outs]
    saved = [re.findall(r"saved a checkpoint at step (\d+)", err) for _, err in outs]
    assert saved[0] == saved[1] and len(saved[0]) == 1, saved
    assert int(saved[0][0]) < config.train.num_steps
  for p in launch_two_processes(config_path, stopped):
    finish(p)
  losses = lambda w: [
    (r["step"], r["train_loss"]) for r in records.read_metrics(w) if "train_loss" in r
  ]
  assert losses(stopped) == losses(straight)  # Bit for bit.


BF16_LOSS = """
import json, sys, jax, jax.numpy as jnp, ml_collections
from lm_jax import losses, models
model = models.build_model(ml_collections.ConfigDict(dict(
  name="gpt", num_layers=1, num_heads=2, d_model=32, max_len=16, dtype="bfloat16")), 23)
tokens = jax.random.randint(jax.random.key(1), (4, 16), 0, 23)
params = model.init(jax.random.key(0), tokens)["params"]
def loss(p):
  s, n = losses.cross_entropy_sums(model.apply({"params": p}, tokens[:, :-1]), tokens[:, 1:])
  return s / n
value, grads = jax.jit(jax.value_and_grad(loss))(params)
norm = float(jnp.sqrt(sum((g.astype(jnp.float32) ** 2).sum() for g in jax.tree.leaves(grads))))
print(json.dumps([float(value), norm]))
"""


@pytest.mark.skipif(not backend.cpu_has_bf16(), reason="this CPU has no bfloat16 units")
def test_cpu_bf16_flags_are_used_exactly_when_they_compile_a_model():
  env = {**os.environ, "XLA_FLAGS": " ".join(backend.CPU_BF16_FLAGS), "PYTHONPATH": ROOT}
  run = lambda e: subprocess.run(
    [sys.executable, "-c", BF16_LOSS], env=e, capture_output=True, text=True, timeout=300
  )
  fast = run(env)
  assert (fast.returncode == 0) == backend.CPU_BF16_FLAGS_COMPILE_MODELS, fast.stderr[-2000:]
  if fast.returncode == 0:
    plain = run({**env, "XLA_FLAGS": ""})
    assert plain.returncode == 0, plain.stderr[-2000:]
    np.testing.assert_allclose(json.loads(fast.stdout), json.loads(plain.stdout), rtol=2e-2)
