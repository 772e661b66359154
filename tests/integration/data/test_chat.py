"""scripts/sample.py --chat on a run whose tokenizer has a chat template, and on one without."""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from conftest import ROOT, make_text
from helpers import hf

from lm_jax import train

HERE = os.path.dirname(os.path.abspath(__file__))


class Scripted(nn.Module):
  """A plugin model ('test_chat:Scripted') whose next token follows `script` ('a:b,c:d'): after
  a it says b with certainty, after anything unscripted token `default`."""

  vocab_size: int
  script: str = ""
  default: int = 0

  @nn.compact
  def __call__(self, tokens_BxL, deterministic: bool = True):
    table_V = jnp.full((self.vocab_size,), self.default, jnp.int32)
    for pair in filter(None, self.script.split(",")):
      a, b = map(int, pair.split(":"))
      table_V = table_V.at[a].set(b)
    unused = self.param("unused", nn.initializers.zeros, ())  # Something to train.
    return jax.nn.one_hot(table_V[tokens_BxL], self.vocab_size) * 50.0 + unused


def chat_tokenizer(path):
  tok = hf.byte_level_bpe([make_text(500, seed=1)], ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
  hf.save_tokenizer(tok, path, eos_token="<|endoftext|>", chat_template=hf.CHATML)
  return tok


def sample_chat(workdir, *args):
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "tests"), HERE])}
  return subprocess.run(
    [sys.executable, "scripts/sample.py", "--workdir", workdir, "--chat", *args],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_chat_formats_the_conversation_and_stops_at_the_end_of_turn(config, tmp_path, monkeypatch):
  tok = chat_tokenizer(str(tmp_path / "tok"))
  ids = lambda text: tok.encode(text).ids
  prompt_end = ids("<|im_start|>assistant\n")[-1]
  (h,), (i,), (end,), (x,) = ids("H"), ids("i"), ids("<|im_end|>"), ids("x")
  monkeypatch.syspath_prepend(HERE)
  config.model = ml_collections.ConfigDict(
    # After the generation prompt: 'H', 'i', then <|im_end|>, then 'x' for ever.
    {"name": "test_chat:Scripted", "script": f"{prompt_end}:{h},{h}:{i},{i}:{end}", "default": x}
  )
  config.data.update(tokenizer="hf", hf_tokenizer=str(tmp_path / "tok"))
  config.train.update(num_steps=1, eval_every=1)
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)

  r = sample_chat(workdir, "--prompt", "Hello", "--temperature", "0", "--max_new_tokens", "9")
  assert r.returncode == 0, r.stderr[-2000:]
  assert r.stdout == "Hi\n"  # The reply alone, without <|im_end|> and what follows it.
  conversation = tmp_path / "conversation.json"
  conversation.write_text(json.dumps([{"role": "user", "content": "Hello"}] * 2))
  r = sample_chat(workdir, "--messages", str(conversation), "--temperature", "0")
  assert r.returncode == 0 and r.stdout == "Hi\n", r.stderr[-2000:]

  # The run's tokenizer without its template: one sentence, no traceback.
  with open(os.path.join(workdir, "tokenizer.json")) as f:
    copy = json.load(f)
  del copy["chat_template"]
  with open(os.path.join(workdir, "tokenizer.json"), "w") as f:
    json.dump(copy, f)
  r = sample_chat(workdir, "--prompt", "Hello")
  assert r.returncode == 1 and "Traceback" not in r.stderr
  assert r.stderr.strip().splitlines()[-1] == (
    "error: this run's hf tokenizer has no chat template (a Hugging Face chat model's "
    "tokenizer_config.json chat_template), so --chat cannot format a conversation: sample a "
    "chat model's run, or leave out --chat to continue plain text."
  )
