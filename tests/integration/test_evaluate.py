"""Evaluation on a trained run: exact over the split, whatever the batch or devices."""

import json
import math

import numpy as np
import pytest

from lm_jax import UserError, evaluate, train


def test_evaluation_is_exact_over_the_split(run_dir):
  r = evaluate.evaluate_run(str(run_dir), "test", parallel_mode="jit")
  text = (run_dir.parent / "test.txt").read_text()
  assert r["tokens"] == len(text) - 1 and r["bytes"] == len(text[1:].encode())
  assert r["step"] == 40
  assert math.isclose(r["perplexity"], math.exp(r["loss"]))
  assert math.isclose(r["bits_per_byte"], r["loss"] * r["tokens"] / math.log(2) / r["bytes"])
  assert json.loads((run_dir / "eval_test_40.json").read_text()) == r


def test_evaluation_does_not_depend_on_batch_or_devices(run_dir):
  results = [
    evaluate.evaluate_run(str(run_dir), "validation", batch_size=b, parallel_mode=m)
    for m, b in (("jit", 8), ("jit", 3), ("pmap", 8), ("pmap", 16))
  ]
  for r in results[1:]:
    np.testing.assert_allclose(r["loss"], results[0]["loss"], rtol=1e-6)
    assert r["tokens"] == results[0]["tokens"]


def test_missing_run_or_checkpoint_is_a_clear_error(run_dir, tmp_path):
  with pytest.raises(UserError, match="holds no training run"):
    evaluate.evaluate_run(str(tmp_path))
  for name in ("config.json", "tokenizer.json"):
    (tmp_path / name).write_text((run_dir / name).read_text())
  with pytest.raises(UserError, match=f"{tmp_path} holds no checkpoint"):
    evaluate.evaluate_run(str(tmp_path))


def test_word_model_reports_per_word_perplexity(tmp_path):
  import conftest

  config = conftest.tiny.get_config()
  text = "".join(f"{conftest.make_text(80, seed=i)}\n" for i in range(3))
  (tmp_path / "t.txt").write_text(text)
  config.data.update(dataset="text", tokenizer="word", documents="line", vocab_size=20, seq_len=8)
  config.data.text_files.update(train=str(tmp_path / "t.txt"), validation=str(tmp_path / "t.txt"))
  config.model.update(d_model=16, max_len=8)
  config.train.update(batch_size=4, num_steps=2, eval_every=2, parallel="jit")
  train.train_and_evaluate(config, str(tmp_path / "run"))
  r = evaluate.evaluate_run(str(tmp_path / "run"), "validation", parallel_mode="jit")
  lines = text.splitlines()
  assert r["tokens"] == sum(len(line.split()) for line in lines) + len(lines) - 1 - 1
  assert r["word_perplexity"] == r["perplexity"] and r["bits_per_byte"] is None
  assert "not comparable" in r["note"]
