"""configs/sft_hf.py: an imported chat model fine-tuned on conversations, weight on its replies."""

import json
import math
import os

import numpy as np
from conftest import ROOT
from corpora import CONVERSATIONS, write_chats
from helpers import hf

from lm_jax import config as config_lib
from lm_jax import evaluate, records, train
from lm_jax.data import batches, chat, tokenizers


def runs_of(targets, weights):
  """The maximal runs of targets with weight 1 and with weight 0."""
  out = {0: [], 1: []}
  for row, w in zip(targets, weights, strict=True):
    edges = np.flatnonzero(np.diff(w)) + 1
    for ids, ws in zip(np.split(row, edges), np.split(w, edges), strict=True):
      out[int(ws[0])].append(ids)
  return out


def test_sft_config_trains_on_the_assistants_replies_only(tmp_path, monkeypatch):
  rendered = [
    "".join(t for t, _ in chat.pieces(chat.ChatTemplate(hf.CHATML), m)) for m in CONVERSATIONS
  ]
  hf_dir = hf.chat_model(tmp_path / "model", rendered)
  base = config_lib.load(os.path.join(ROOT, f"configs/sft_hf.py:{hf_dir}"))
  config = config_lib.override(
    base,
    {
      "data.text_files.train": write_chats(tmp_path / "c.jsonl"),
      "data.seq_len": "32",
      "data.holdout_fraction": "0.1",
      "train.batch_size": "4",
      "train.num_steps": "4",
      "train.log_every": "1",
      "train.eval_every": "4",
      "train.checkpoint_every": "4",
      "train.parallel": "jit",
    },
  )
  seen = []
  real = batches.train_batch
  monkeypatch.setattr(
    batches, "train_batch", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1]
  )
  workdir = str(tmp_path / "run")
  _, final = train.train_and_evaluate(config, workdir)
  tok = tokenizers.load(os.path.join(workdir, "tokenizer.json"))
  replies = "".join(
    t["content"] + "<|im_end|>\n" for m in CONVERSATIONS for t in m if t["role"] == "assistant"
  )
  assert len(seen) == 4
  for batch in seen:
    runs = runs_of(batch["targets"], batch["weights"])
    assert runs[0] and runs[1]
    for ids in runs[1]:  # Weighted: pieces of the replies, never the prompts.
      text = tok.decode(ids)
      assert text in replies and "<|im_start|>" not in text and "What is" not in text
    for ids in runs[0]:
      assert "It is" not in tok.decode(ids)
  assert math.isfinite(final["loss"])
  run_json = json.loads(open(os.path.join(workdir, "run.json")).read())
  assert sorted(run_json["data_fingerprints"]) == ["train", "validation"]
  result = evaluate.evaluate_run(workdir, parallel_mode="jit")
  assert result["loss"] == final["loss"] and 0 < result["tokens"]
  logged = [r for r in records.read_metrics(workdir) if "val_loss" in r]
  assert logged[-1]["val_loss"] == final["loss"]
