"""Hugging Face models as runs: imported at step 0, fine-tuned from, refused when different."""

import os

import jax
import ml_collections
import numpy as np
import pytest
from conftest import ROOT

from lm_jax import UserError, runs, sample, train
from lm_jax import config as config_lib
from lm_jax.hf import architectures
from lm_jax.hf import runs as hf_runs
from lm_jax.models import layers


def small_config(config):
  """The conftest config on its local corpus, sized for these models."""
  config.data.update(tokenizer="hf", seq_len=16)
  config.train.update(num_steps=1, eval_every=1, checkpoint_every=1)
  return config


def test_imported_run_loads_samples_and_evaluates(hf_dirs, ours, config, tmp_path):
  from lm_jax import evaluate

  workdir = str(tmp_path / "run")
  hf_runs.import_hf(hf_dirs["gpt2"], workdir, small_config(config))
  _, model, tokenizer, state, step, _ = runs.load_run(workdir)
  params = ours["gpt2"][1]
  assert step == 0 and tokenizer.kind == "hf" and tokenizer.eos_id == 0
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(state.params), params)
  [new] = sample.generate(
    model,
    state.params,
    [tokenizer.encode("The")],
    jax.random.key(0),
    max_new_tokens=5,
    eos_id=tokenizer.eos_id,
  )
  assert len(new) <= 5
  result = evaluate.evaluate_run(workdir)
  assert result["step"] == 0 and 0 < result["bits_per_byte"] < 20
  with pytest.raises(UserError, match="already holds a run"):
    hf_runs.import_hf(hf_dirs["gpt2"], workdir, config)
  scanned = jax.eval_shape(lambda: layers.stack_blocks(params))  # Runs start from runs too.
  again = runs.initial_params(workdir, model_config=None, abstract_params=scanned)
  jax.tree_util.tree_map(np.testing.assert_array_equal, again, layers.stack_blocks(params))


def test_init_from_starts_from_those_parameters(hf_dirs, ours, config, tmp_path):
  """configs/finetune_hf.py, as shipped, on an imported model (the local corpus, one step)."""
  path = hf_dirs["llama_tied"]
  shipped = config_lib.load(os.path.join(ROOT, "configs", f"finetune_hf.py:{path}"))
  assert shipped.train.init_from == shipped.data.hf_tokenizer == path
  shipped.data.update(config.data.to_dict() | {"tokenizer": "hf", "hf_tokenizer": path})
  shipped.data.seq_len = 16
  shipped.optim.update(learning_rate=0.0, min_learning_rate=0.0)  # Params stay as loaded.
  shipped.train.update(
    batch_size=8, num_steps=1, eval_every=1, checkpoint_every=1, log_every=1, parallel="jit"
  )
  state, _ = train.train_and_evaluate(shipped, str(tmp_path / "finetune"))
  params = ours["llama_tied"][1]
  assert int(state.step) == 1
  jax.tree_util.tree_map(np.testing.assert_array_equal, state.params, params)


def test_init_from_refuses_a_different_model(hf_dirs, config, tmp_path):
  config = small_config(config)
  config.model = ml_collections.ConfigDict(architectures.model_config(hf_dirs["llama_tied"]))
  config.model.rope_base = 500.0
  config.data.hf_tokenizer = config.train.init_from = hf_dirs["llama_tied"]
  with pytest.raises(UserError, match=r"differs from the model in .*rope_base=10000.0"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
