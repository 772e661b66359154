"""LoRA runs: adapters alone train, the model stays frozen, every layout and a resume agree."""

import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import ROOT
from helpers import runs as runs_lib
from helpers import states
from helpers.runs import train_losses
from helpers.trees import assert_trees_close

from lm_jax import checkpoint, evaluate, lora, models, optim, runs, sample, train
from lm_jax import state as state_lib


def lora_config(config, **lora):
  config.train.lora.update(rank=4, alpha=8.0, **lora)
  config.optim.update(learning_rate=1e-2, warmup_steps=0)  # Adapters start at zero: move them.
  return config


def assert_same(a, b):
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(a), jax.device_get(b))


def test_only_the_adapters_train_and_the_run_samples_and_evaluates(config, tmp_path):
  base = str(tmp_path / "base")
  config.train.update(num_steps=1, eval_every=1)
  train.train_and_evaluate(config, base)  # A full run to start from (train.init_from).
  config = lora_config(config)
  config.train.update(init_from=base, num_steps=6, log_every=1, eval_every=6)
  workdir = str(tmp_path / "lora")
  _, ev = train.train_and_evaluate(config, workdir)

  state = runs.load_run(workdir, merge=False)[3]
  assert_same(state.frozen, runs.load_run(base)[3].params)  # Bit for bit, after 6 steps.
  adapters = jax.tree_util.tree_leaves_with_path(state.params)
  assert {str(p[-1].key) for p, _ in adapters} == set(lora.NAMES)
  # The optimizer state and the checkpoint hold the adapters, nothing of the model.
  mu = state.opt_state[1][0].mu  # clip, then adamw's first moment.
  assert jax.tree_util.tree_structure(mu) == jax.tree_util.tree_structure(state.params)
  saved = checkpoint.Checkpointer(workdir, read_only=True).manager.item_metadata(6).state.tree
  assert jax.tree_util.tree_structure(saved["params"]) == jax.tree_util.tree_structure(mu)
  losses = [loss for _, loss in train_losses(workdir)]
  assert losses[-1] < losses[0]

  # Evaluation and sampling see the adapted model: the base plus the adapters, merged.
  _, model, tokenizer, merged, *_ = runs.load_run(workdir)
  assert_same(
    merged.params, lora.merge(state.frozen, state.params, lora.settings(config.train.lora))
  )
  np.testing.assert_allclose(evaluate.evaluate_run(workdir)["loss"], ev["loss"], rtol=1e-6)
  prompt = [tokenizer.encode("The king")]
  [ids] = sample.generate(model, merged.params, prompt, jax.random.key(0), max_new_tokens=5)
  assert len(ids) == 5


def test_adapters_start_at_zero_so_the_model_is_unchanged(config):
  config = lora_config(config)
  config.model.scan_layers = True  # Scanned: the layers' keys are drawn inside nn.scan.
  model = models.build_model(config.model, 30)
  create, _ = state_lib.state_factory(config, model, optim.make_optimizer(config.optim, 6)[0])
  state = jax.jit(create)()
  config.train.lora.rank = 0
  plain = states.train_state(model, config, state.tx)
  assert_same(state.frozen, plain.params)  # The same initial model as without LoRA.
  tokens = np.arange(32).reshape(2, 16) % 30
  adapted = jax.jit(state.apply_fn)(state.variables(state.params), tokens)
  assert_same(adapted, jax.jit(model.apply)({"params": state.frozen}, tokens))


def test_jit_pmap_and_sharded_train_lora_alike(config, tmp_path):
  config = lora_config(config)
  config.mesh.update(data=2, fsdp=4)
  config.train.update(num_steps=2, log_every=1, eval_every=2)
  results = {}
  for mode in ("jit", "pmap", "sharded"):
    config.train.parallel = mode
    state, ev = train.train_and_evaluate(config, str(tmp_path / mode))
    results[mode] = (state.params, ev["loss"], [x for _, x in train_losses(str(tmp_path / mode))])
  for mode in ("pmap", "sharded"):
    assert_trees_close(results[mode][0], results["jit"][0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(results[mode][1], results["jit"][1], rtol=1e-5)
    np.testing.assert_allclose(results[mode][2], results["jit"][2], rtol=1e-5)
  frozen = runs.load_run(str(tmp_path / "sharded"), merge=False)[3].frozen
  assert_same(frozen, runs.load_run(str(tmp_path / "jit"), merge=False)[3].frozen)


@pytest.mark.slow  # Three processes: killed while saving the frozen model, then mid-run.
def test_sigkill_at_any_moment_resumes_lora_to_the_same_result(config, tmp_path):
  config = lora_config(config, dropout=0.2)  # The resumed run draws the same adapter dropout.
  config.train.update(num_steps=16, log_every=1, eval_every=8, checkpoint_every=2)
  straight = str(tmp_path / "straight")
  train.train_and_evaluate(config, straight)
  spec = tmp_path / "config.json"
  spec.write_text(config.to_json_best_effort())
  killed = str(tmp_path / "killed")
  runs_lib.kill_once(str(spec), killed, "frozen*", 0.0)
  runs_lib.kill_once(str(spec), killed, "checkpoints/*", 0.3)
  r = subprocess.run(
    [sys.executable, "scripts/train.py", "--workdir", killed],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert r.returncode == 0, r.stderr[-2000:]
  assert train_losses(killed) == train_losses(straight)
  a, b = runs.load_run(killed, merge=False)[3], runs.load_run(straight, merge=False)[3]
  assert_same((a.params, a.opt_state, a.frozen), (b.params, b.opt_state, b.frozen))
