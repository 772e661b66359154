"""The tokenizer a training run trains, saves and records."""

import json

from lm_jax import data, train
from lm_jax.data import tokenizers


def test_training_reads_the_configured_tokenizer(config, tmp_path):
  config.data.update(tokenizer="sentencepiece", vocab_size=320)
  train.train_and_evaluate(config, str(tmp_path))
  tok = tokenizers.load(str(tmp_path / "tokenizer.json"))
  assert tok.kind == "sentencepiece" and tok.vocab_size == 320
  recorded = json.loads((tmp_path / "run.json").read_text())["data_fingerprints"]
  prepared = data.prepare_cache(config.data)  # What scripts/prepare_data.py prints.
  assert recorded == {split: p["fingerprint"] for split, p in prepared.items()}
  assert len(set(recorded.values())) == 3
