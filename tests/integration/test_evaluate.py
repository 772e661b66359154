"""Evaluation and the sample/evaluate scripts on a trained run."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from lm_jax import UserError, evaluate, train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, request):
  import conftest  # The function-scoped fixtures, rebuilt for a module-wide run.

  tmp = tmp_path_factory.mktemp("eval")
  config = conftest.tiny.get_config()
  config.data.dataset = "text"
  for i, split in enumerate(("train", "validation", "test")):
    path = tmp / f"{split}.txt"
    path.write_text(conftest.make_text(4000 if split == "train" else 300, seed=i))
    config.data.text_files[split] = str(path)
  config.model.update(d_model=16, max_len=32)
  config.data.seq_len = 16
  config.train.update(batch_size=8, num_steps=40, eval_every=40, parallel="jit")
  config.optim.learning_rate = 3e-3
  workdir = tmp / "run"
  train.train_and_evaluate(config, str(workdir))
  return workdir


def script(name, *args):
  return subprocess.run(
    [sys.executable, f"scripts/{name}.py", *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )


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


def test_sample_script(run_dir):
  args = [
    "--workdir",
    str(run_dir),
    "--prompt",
    "The king",
    "--max_new_tokens",
    "20",
    "--temperature",
    "0.8",
    "--top_k",
    "5",
    "--top_p",
    "0.95",
    "--num_samples",
    "2",
  ]
  a, b = script("sample", *args), script("sample", *args)
  assert a.returncode == 0, a.stderr[-2000:]
  assert a.stdout == b.stdout
  samples = a.stdout.rstrip("\n").split("\n---\n")
  assert len(samples) == 2 and all(s.startswith("The king") and len(s) == 28 for s in samples)
  assert "tokens/s" in a.stderr and "tokens/s" not in a.stdout
  greedy = script(
    "sample",
    "--workdir",
    str(run_dir),
    "--prompt",
    "",
    "--temperature",
    "0",
    "--max_new_tokens",
    "10",
  )
  top1 = script(
    "sample",
    "--workdir",
    str(run_dir),
    "--prompt",
    "",
    "--top_k",
    "1",
    "--max_new_tokens",
    "10",
    "--seed",
    "5",
  )
  assert greedy.stdout == top1.stdout and greedy.stdout.startswith("\n")


def test_sample_script_refuses_unknown_characters(run_dir):
  r = script("sample", "--workdir", str(run_dir), "--prompt", "Zebra ~", "--max_new_tokens", "5")
  assert r.returncode == 1
  assert r.stderr.strip().splitlines()[-1].startswith("error: the text holds characters")
  assert "'Z~'" in r.stderr


def test_evaluate_script_prints_json_alone(run_dir):
  r = script("evaluate", "--workdir", str(run_dir), "--split", "test", "--parallel", "jit")
  assert r.returncode == 0, r.stderr[-2000:]
  result = json.loads(r.stdout)
  assert set(result) == {"split", "step", "loss", "perplexity", "bits_per_byte", "tokens", "bytes"}


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
