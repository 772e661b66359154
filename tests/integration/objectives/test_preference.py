"""configs/dpo.py on a small chat model: ln 2 at the first step, a frozen reference that stays
the starting model (LoRA's base with its adapters off, or a copy), an exact resume, and the
loss TRL's DPOTrainer computes on the same batch."""

import math
import os

import jax
import numpy as np
import pytest
from conftest import ROOT, make_text
from corpora import CONVERSATIONS
from helpers import hf
from helpers.data import pair, write_pairs
from helpers.runs import sigterm_at, train_losses
from helpers.trees import assert_trees_equal

from lm_jax import config as config_lib
from lm_jax import records, runs, train
from lm_jax.data import hf_tokenizer, preferences
from lm_jax.objectives import preference

LN_2 = float(np.float32(math.log(2)))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  texts = [str(m) for m in CONVERSATIONS] + [make_text(2000, seed=0)]
  return hf.chat_model(tmp_path_factory.mktemp("model"), texts)


def dpo_config(model_dir, pairs, **train):
  config = config_lib.load(os.path.join(ROOT, "configs", f"dpo.py:{model_dir}"))
  config.data.text_files.train = pairs
  config.data.seq_len = 48
  config.optim.update(learning_rate=1e-3, warmup_steps=0)
  config.train.update(
    num_steps=8, log_every=1, eval_every=4, checkpoint_every=4, batch_size=8, parallel="jit"
  )
  config.train.update(train)
  return config


@pytest.mark.parametrize("lora", [0, 4])
def test_dpo_starts_at_ln_2_and_prefers_the_chosen_replies(model_dir, tmp_path, lora):
  config = dpo_config(model_dir, write_pairs(tmp_path / "pairs.jsonl", chat=True))
  config.train.lora.rank = lora
  workdir = str(tmp_path / "run")
  _, final = train.train_and_evaluate(config, workdir)
  losses = train_losses(workdir)
  assert losses[0] == (1, LN_2)  # The policy is its reference: exactly ln 2.
  assert losses[-1][1] < LN_2
  logged = records.read_metrics(workdir)
  assert {"dpo_accuracy", "dpo_margin", "logps_chosen", "logps_rejected"} <= logged[0].keys()
  assert [r["step"] for r in logged if "val_dpo_accuracy" in r] == [4, 8]
  assert final["dpo_accuracy"] > 0.5 and final["loss"] < LN_2
  state = runs.load_run(workdir, merge=False).state
  saved = state.frozen if lora else _reference(workdir, state)
  _, params, _ = hf.imported(model_dir)
  assert_trees_equal(saved, params)  # The reference is the starting model, bit for bit.


def _reference(workdir, state):
  """The reference a full DPO run saved once, as its trainer restores it."""
  config = config_lib.load(os.path.join(workdir, "config.json"))
  tokenizer = hf_tokenizer.load_tokenizer(config.data.hf_tokenizer)
  from lm_jax import checkpoint
  from lm_jax import state as state_lib

  s = state_lib.setup(config, tokenizer.vocab_size, tokenizer, reference=True)
  ckpt = checkpoint.Checkpointer(workdir, read_only=True)
  try:
    return ckpt.restore_once("reference", state_lib.with_shardings(s.plan, s.abstract.reference))
  finally:
    ckpt.close()


def test_lora_reference_is_the_base_with_its_adapters_off(model_dir, tmp_path):
  """What the loss takes as the reference's log-probabilities under LoRA equals the starting
  model's, computed by itself, on the validation pairs, after training moved the adapters."""
  config = dpo_config(model_dir, write_pairs(tmp_path / "pairs.jsonl"))
  config.train.lora.rank = 4
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  run = runs.load_run(workdir, merge=False)
  model, params, tokenizer = hf.imported(model_dir)
  pairs = preferences.encode(tokenizer, [(lambda: "r", pair(i, False)) for i in range(6)], 48)
  batch = {"inputs": pairs.tokens[..., :-1], "targets": pairs.tokens[..., 1:]}
  batch["weights"] = pairs.weights
  loss = preference.DPOLoss(0.1, reference_apply=run.model.apply)
  used = loss.logps(run.model.apply, {"params": run.state.frozen}, batch, None, False)[0]
  base = loss.logps(model.apply, {"params": params}, batch, None, False)[0]
  np.testing.assert_array_equal(used, base)
  adapted = loss.logps(run.state.apply_fn, run.state.variables(run.state.params), batch, None, 0)
  assert not np.allclose(adapted[0], base)  # The adapters did move the policy.


def test_a_dpo_run_stopped_and_resumed_equals_the_unbroken_one(model_dir, tmp_path, monkeypatch):
  pairs = write_pairs(tmp_path / "pairs.jsonl")
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  train.train_and_evaluate(dpo_config(model_dir, pairs), straight)
  with monkeypatch.context() as m:
    sigterm_at(m, 5)
    with pytest.raises(train.Preempted):
      train.train_and_evaluate(dpo_config(model_dir, pairs), resumed)
  train.train_and_evaluate(dpo_config(model_dir, pairs), resumed)
  assert train_losses(resumed) == train_losses(straight)
  assert_trees_equal(runs.load_run(resumed).state.params, runs.load_run(straight).state.params)


@pytest.mark.parametrize("chat", [False, True])
def test_dpo_loss_equals_trls(tmp_path, chat):
  trl = pytest.importorskip("trl", reason="pip install trl==1.16.0 (a test-only reference)")
  torch = pytest.importorskip("torch", reason=hf.INSTALL)
  import datasets

  tok = hf.byte_level_bpe(special_tokens=(hf.EOT, "<|im_start|>", "<|im_end|>"))
  fast = hf.fast_tokenizer(tok)
  fast.chat_template = hf.CHATML
  policy, ref = (hf.save_model("gpt2", tmp_path / n, fast, seed=s) for n, s in (("p", 1), ("r", 2)))
  records = [pair(i, chat) for i in range(6)]
  if chat:  # TRL's conversational form: the reply as the assistant's message.
    records = [
      {
        "prompt": r["messages"],
        **{k: [{"role": "assistant", "content": r[k]}] for k in ("chosen", "rejected")},
      }
      for r in records
    ]
  args = trl.DPOConfig(  # float32 throughout (TRL's default autocasts to bfloat16).
    output_dir=str(tmp_path / "trl"), beta=0.1, max_length=None, report_to=[], bf16=False
  )
  trainer = trl.DPOTrainer(
    model=hf.reference(policy),
    ref_model=hf.reference(ref),
    args=args,
    train_dataset=datasets.Dataset.from_list(records),
    processing_class=fast,
  )
  batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(records))])
  trainer.model.eval()
  with torch.no_grad():
    theirs = float(trainer.compute_loss(trainer.model, batch))

  model, params, tokenizer = hf.imported(policy)
  _, ref_params, _ = hf.imported(ref)
  if chat:
    records = [pair(i, chat) for i in range(6)]
  pairs = preferences.encode(tokenizer, [(lambda: "r", r) for r in records], 64)
  assert pairs.dropped == 0
  ours_batch = {
    "inputs": pairs.tokens[..., :-1],
    "targets": pairs.tokens[..., 1:],
    "weights": pairs.weights,
    "pairs": np.ones(len(records), np.float32),
  }
  state = type("S", (), {})()
  state.apply_fn, state.frozen, state.reference = model.apply, None, ref_params
  state.variables = lambda p: {"params": p}
  loss = preference.DPOLoss(0.1, reference_apply=model.apply)
  total, _, _ = jax.jit(lambda p: loss(state, p, ours_batch, None, train=False))(params)
  assert abs(float(total) / len(records) - theirs) < 1e-5, (float(total) / len(records), theirs)
