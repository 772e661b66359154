"""The Hugging Face tokenizer against `transformers` itself."""

import json
import os

import numpy as np
import pytest
from helpers.hf import EOT, INSTALL, TEXT, write

from lm_jax import UserError
from lm_jax.data import hf_tokenizer

transformers = pytest.importorskip("transformers", reason=INSTALL)


def test_tokenizer_matches_transformers_and_round_trips(hf_dirs):
  tokenizer = hf_tokenizer.load_tokenizer(hf_dirs["gpt2"])
  auto = transformers.AutoTokenizer.from_pretrained(hf_dirs["gpt2"])
  assert tokenizer.vocab_size == len(auto) + 4  # The model's, padded.
  assert tokenizer.eos_id == auto.eos_token_id == 0
  ids = tokenizer.encode(TEXT)
  assert ids.tolist() == auto(TEXT, add_special_tokens=False)["input_ids"]
  assert tokenizer.decode(ids) == TEXT
  two = np.concatenate([ids, tokenizer.eod_ids, ids])
  assert tokenizer.decode(two) == TEXT + EOT + TEXT
  assert tokenizer.num_bytes(two) == 2 * len(TEXT.encode()) + 1
  [a, b] = tokenizer.encode_batch([TEXT, "x"])
  assert a.tolist() == ids.tolist() and b.tolist() == tokenizer.encode("x").tolist()


def test_tokenizer_larger_than_the_model_vocabulary_is_refused(hf_dirs, tmp_path):
  small = str(tmp_path / "small")
  config = json.load(open(os.path.join(hf_dirs["llama_gqa"], "config.json")))
  write(small, "config.json", {**config, "vocab_size": 100})
  write(small, "tokenizer.json", open(os.path.join(hf_dirs["llama_gqa"], "tokenizer.json")).read())
  with pytest.raises(
    UserError, match="the tokenizer has 300 ids but the model's vocabulary holds 100"
  ):
    hf_tokenizer.load_tokenizer(small)
