"""Fixtures of several integration test files: a trained run, tiny Hugging Face models.

Built once per test process; the Hugging Face ones skip their tests where torch and
transformers are not installed (the helpers they use live in hf/test_weights.py).
"""

import pytest


@pytest.fixture(scope="session")
def hf_dirs(tmp_path_factory):
  """{arch: directory} of tiny random models saved with save_pretrained, and the tokenizer."""
  from integration.hf.test_weights import ARCHS, torch, train_tokenizer, transformers

  root = tmp_path_factory.mktemp("hf")
  fast = train_tokenizer(root / "tokenizer")
  dirs = {}
  for i, (arch, make_config) in enumerate(ARCHS.items()):
    torch.manual_seed(i)
    config = make_config(len(fast))
    config.update({"initializer_range": 0.3, "bos_token_id": 0, "eos_token_id": 0})
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # Norm scales and biases start at 1 and 0: move them too.
      for p in model.parameters():
        p.add_(0.1 * torch.randn_like(p))
    dirs[arch] = str(root / arch)
    model.save_pretrained(dirs[arch])
    fast.save_pretrained(dirs[arch])
  return dirs


@pytest.fixture(scope="session")
def ours(hf_dirs):
  """{arch: (model, params, tokenizer, jitted forward pass)}, imported once."""
  import jax
  from integration.hf.test_weights import imported

  out = {}
  for arch, hf_dir in hf_dirs.items():
    model, params, tokenizer = imported(hf_dir)
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
