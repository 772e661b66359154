"""Fixtures of several integration test files: a trained run, tiny Hugging Face models.

Built once per test process; the Hugging Face ones skip their tests where torch and
transformers are not installed (their builders live in tests/helpers/hf.py).
"""

import pytest


@pytest.fixture(scope="session")
def hf_dirs(tmp_path_factory):
  """{arch: directory} of a tiny random model of each of helpers.hf.ARCHS, saved with
  save_pretrained with its tokenizer (helpers.hf.fast_tokenizer())."""
  from helpers import hf

  root = tmp_path_factory.mktemp("hf")
  fast = hf.fast_tokenizer()
  return {arch: hf.save_model(arch, root / arch, fast, seed=i) for i, arch in enumerate(hf.ARCHS)}


@pytest.fixture(scope="session")
def ours(hf_dirs):
  """{arch: (model, params, tokenizer, jitted forward pass)} of hf_dirs as lm_jax imports
  them, imported once."""
  import jax
  from helpers import hf

  out = {}
  for arch, hf_dir in hf_dirs.items():
    model, params, tokenizer = hf.imported(hf_dir)
    out[arch] = (model, params, tokenizer, jax.jit(lambda p, t, m=model: m.apply({"params": p}, t)))
  return out


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, request):
  """A tiny model trained 40 steps on a local corpus: what evaluation and the scripts read."""
  import conftest  # The function-scoped fixtures, rebuilt for a session-wide run.

  from lm_jax import train

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
