"""configs/grpo.py on a small chat model: sampled, scored and updated each step, under jit,
pmap and sharded; a run stopped and resumed equals the unbroken one, rewards and losses bit for
bit."""

import json
import math
import os

import numpy as np
import pytest
from conftest import ROOT, make_text
from corpora import CONVERSATIONS
from helpers import hf
from helpers.runs import sigterm_at, train_losses
from helpers.trees import assert_trees_equal

from lm_jax import config as config_lib
from lm_jax import records, runs, train

WORDS = "zero one two three four five six seven eight nine".split()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  texts = [str(m) for m in CONVERSATIONS] + [make_text(2000, seed=0)]
  return hf.chat_model(tmp_path_factory.mktemp("model"), texts)


def write_prompts(path, n=40) -> str:
  rng = np.random.default_rng(0)
  with open(path, "w") as f:
    for _ in range(n):
      a, b = rng.integers(0, 5, 2)
      f.write(json.dumps({"prompt": f"What is {a} plus {b}?", "answer": WORDS[a + b]}) + "\n")
  return str(path)


def grpo_config(model_dir, prompts, **train_keys):
  config = config_lib.load(os.path.join(ROOT, "configs", f"grpo.py:{model_dir}"))
  config.data.text_files.train = prompts
  config.data.seq_len = 32
  config.optim.update(learning_rate=1e-3, warmup_steps=0)
  config.train.grpo.update(
    group_size=4, max_new_tokens=8, reward="helpers.rewards:correct,helpers.rewards:shorter"
  )
  config.train.update(num_steps=6, log_every=1, eval_every=3, checkpoint_every=3, batch_size=8)
  config.train.update({"parallel": "jit", **train_keys})
  return config


def test_a_grpo_run_stopped_and_resumed_equals_the_unbroken_one(model_dir, tmp_path, monkeypatch):
  prompts = write_prompts(tmp_path / "prompts.jsonl")
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  train.train_and_evaluate(grpo_config(model_dir, prompts), straight)
  with monkeypatch.context() as m:
    sigterm_at(m, 4)
    with pytest.raises(train.Preempted):
      train.train_and_evaluate(grpo_config(model_dir, prompts), resumed)
  train.train_and_evaluate(grpo_config(model_dir, prompts), resumed)
  keys = ("train_loss", "kl", "reward", "reward/helpers.rewards:shorter", "completion_length")
  rows = lambda w: [[r.get(k) for k in keys] for r in records.read_metrics(w) if "reward" in r]
  assert rows(resumed) == rows(straight) and len(rows(straight)) == 6
  assert_trees_equal(runs.load_run(resumed).state.params, runs.load_run(straight).state.params)
  logged = records.read_metrics(straight)[0]
  assert {"reward_std", "zero_variance_groups", "sample_tokens_per_sec"} <= logged.keys()
  assert [r["step"] for r in records.read_metrics(straight) if "val_reward" in r] == [3, 6]


@pytest.mark.parametrize("mode", ["pmap", "sharded"])
def test_grpo_samples_and_trains_under_every_layout(model_dir, tmp_path, mode):
  config = grpo_config(model_dir, write_prompts(tmp_path / "prompts.jsonl"), parallel=mode)
  config.mesh.update(data=4, fsdp=2)
  config.train.update(num_steps=2, eval_every=2, checkpoint_every=2)
  train.train_and_evaluate(config, str(tmp_path / "run"))
  losses = train_losses(str(tmp_path / "run"))
  assert [s for s, _ in losses] == [1, 2] and all(math.isfinite(v) for _, v in losses)
