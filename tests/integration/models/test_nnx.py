"""A model written in Flax NNX, in a file outside lm_jax, trains, samples and resumes exactly."""

import os

import pytest
from conftest import ROOT
from helpers.runs import kill_once, script, train_losses, write_config
from helpers.trees import assert_trees_equal

from lm_jax import checkpoint, runs

OUTSIDE = {"PYTHONPATH": os.path.join(ROOT, "tests")}  # Where helpers/nnx_gpt.py lies.


@pytest.mark.slow
def test_an_nnx_model_trains_samples_and_resumes_exactly_after_sigkill(config, tmp_path):
  config.model = {"name": "helpers.nnx_gpt:GPT", "d_model": 16, "max_len": 16, "dropout": 0.1}
  config.train.update(num_steps=30, log_every=1, eval_every=30, checkpoint_every=2)
  spec = write_config(config, tmp_path / "config.json")
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  r = script("train", "--config", spec, "--workdir", straight, env=OUTSIDE)
  assert r.returncode == 0, r.stderr[-2000:]
  for delay in (0.5, 0.1):  # Killed after its first saves, then soon after it resumed.
    kill_once(spec, killed, "checkpoints/*", delay, env=OUTSIDE)
  assert checkpoint.Checkpointer(killed, read_only=True).steps()
  r = script("train", "--workdir", killed, env=OUTSIDE)
  assert r.returncode == 0, r.stderr[-2000:]
  assert "resumed" in r.stderr
  assert train_losses(killed) == train_losses(straight)  # Dropout's draws included.
  assert_trees_equal(runs.load_run(killed).state.params, runs.load_run(straight).state.params)
  r = script("sample", "--workdir", killed, "--prompt", "The king", "--max_new_tokens", "8",
             env=OUTSIDE)  # fmt: skip
  assert r.returncode == 0, r.stderr[-2000:]
  assert r.stdout.startswith("The king") and len(r.stdout.strip()) > len("The king")
