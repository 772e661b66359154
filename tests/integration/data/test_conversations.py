"""configs/sft_hf.py: an imported chat model fine-tuned on conversations, weight on its replies."""

import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from conftest import ROOT
from corpora import CONVERSATIONS, write_chats

from lm_jax import config as config_lib
from lm_jax import evaluate, models, records, train
from lm_jax.data import batches, chat, hf_tokenizer, tokenizers
from lm_jax.hf import weights

CHATML = (
  "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
  "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def chat_model(folder, corpus: list[str]) -> str:
  """A tiny random GPT with a byte-level BPE and a ChatML template, as Hugging Face saves one."""
  from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
  from tokenizers import models as bpe

  tok = Tokenizer(bpe.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
  trainer = trainers.BpeTrainer(
    vocab_size=400,
    special_tokens=specials,
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  tok.train_from_iterator(corpus, trainer)
  tokenizer = hf_tokenizer.HFTokenizer(json.loads(tok.to_str()), eos_id=0)
  m = ml_collections.ConfigDict(
    {
      "name": "gpt",
      "num_layers": 1,
      "num_heads": 2,
      "d_model": 32,
      "max_len": 64,
      "use_bias": False,
    }
  )
  model = models.build_model(m, tokenizer.vocab_size)
  params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32), deterministic=True)["params"]
  weights.save_model(str(folder), model, params, tokenizer)
  path = os.path.join(folder, "tokenizer_config.json")
  with open(path) as f:
    tokenizer_config = json.load(f)
  with open(path, "w") as f:
    json.dump({**tokenizer_config, "chat_template": CHATML}, f)
  return str(folder)


def runs_of(targets, weights):
  """The maximal runs of targets with weight 1 and with weight 0."""
  out = {0: [], 1: []}
  for row, w in zip(targets, weights):
    edges = np.flatnonzero(np.diff(w)) + 1
    for ids, ws in zip(np.split(row, edges), np.split(w, edges)):
      out[int(ws[0])].append(ids)
  return out


def test_sft_config_trains_on_the_assistants_replies_only(tmp_path, monkeypatch):
  rendered = [
    "".join(t for t, _ in chat.pieces(chat.ChatTemplate(CHATML), m)) for m in CONVERSATIONS
  ]
  hf_dir = chat_model(tmp_path / "model", rendered)
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
