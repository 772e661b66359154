"""Test set-up: 8 simulated CPU devices, small corpora."""

import os
import socket
import subprocess
import sys

# Compiling is most of a tiny model's test: the CPU backend's code generation at level 0
# compiles it about 40% faster (the programs run slower, which tiny models do not feel). The
# scripts the tests start inherit both flags; tests that set XLA_FLAGS add FAST_COMPILE.
FAST_COMPILE = "--xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count=8 {FAST_COMPILE}"
)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from lm_jax import console  # noqa: E402  (imports no JAX)

console.skip_absent_tpu()  # With libtpu installed (compile checks), the CPU without its noise.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # Where scripts/ lies.

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from configs import tiny  # noqa: E402
from lm_jax import models  # noqa: E402

# LM_JAX_TEST_MODELS='name=package.module:Class,...' registers models for this test process, so
# a test can show that a newly registered model gets every property test (test_plugins.py).
for _entry in filter(None, os.environ.get("LM_JAX_TEST_MODELS", "").split(",")):
  _name, _target = _entry.split("=")
  models.REGISTRY[_name] = _target

# A TFDS manual dir holding tiny-shakespeare's input.txt; tests that need it skip without it.
MANUAL_DIR = os.environ.get("LM_JAX_MANUAL_DIR", "")
if not os.path.isfile(os.path.join(MANUAL_DIR, "input.txt")):
  MANUAL_DIR = ""

WORDS = (
  "the king and queen of some far land went down to see a red fox run over "
  "green hills while old men sang songs by night"
).split()


def make_text(num_words: int, seed: int) -> str:
  """Seeded pseudo-sentences: enough structure for a model to learn quickly."""
  rng = np.random.default_rng(seed)
  lines = []
  for _ in range(num_words // 8):
    start = rng.integers(len(WORDS) - 8)
    lines.append(" ".join(WORDS[start : start + 8]).capitalize() + ".")
  return "\n".join(lines) + "\n"


def launch_train(config_path: str, workdir: str, devices: int, *flags: str):
  """scripts/train.py started in its own process with `devices` simulated CPU devices."""
  env = {
    **os.environ,
    "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}",
  }
  return subprocess.Popen(
    [sys.executable, "scripts/train.py", "--config", config_path, "--workdir", workdir, *flags],
    cwd=ROOT,
    env=env,
    text=True,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
  )


def launch_two_processes(config_path: str, workdir: str, devices: int = 2) -> list:
  """One run as two local processes (hosts) that join on a free port."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  address = f"--coordinator_address=127.0.0.1:{port}"
  return [
    launch_train(config_path, workdir, devices, address, "--num_processes=2", f"--process_id={i}")
    for i in range(2)
  ]


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  """One persistent compilation cache per test process and the scripts it starts: tests that
  compile the same program (the same tiny model, step and layout) compile it once."""
  import jax  # pylint: disable=g-import-not-at-top

  path = str(tmp_path_factory.mktemp("jax_cache"))
  os.environ["JAX_COMPILATION_CACHE_DIR"] = path  # Scripts' runs use it (profiling.py).
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(autouse=True)
def token_cache(tmp_path, monkeypatch):
  """Each test gets its own empty token cache; nothing is written under ~."""
  path = tmp_path / "cache"
  monkeypatch.setenv("XDG_CACHE_HOME", str(path))
  return path / "lm_jax"


@pytest.fixture
def corpus(tmp_path):
  """Writes train/validation/test text files; returns their paths by split."""
  paths = {}
  for i, split in enumerate(("train", "validation", "test")):
    paths[split] = str(tmp_path / f"{split}.txt")
    with open(paths[split], "w") as f:
      f.write(make_text(4000 if split == "train" else 400, seed=i))
  return paths


@pytest.fixture
def config(corpus):
  """The tiny config on the local corpus, shortened for tests."""
  c = tiny.get_config()
  c.data.dataset = "text"
  c.data.text_files.update(corpus)
  c.model.update(d_model=16, max_len=16)
  c.data.seq_len = 16
  c.train.update(batch_size=8, num_steps=6, log_every=2, eval_every=6, parallel="jit")
  return c


@pytest.fixture
def mixed(config, tmp_path):
  """The tiny config on two local sources; 'b' has characters that 'a' lacks."""
  b_text = make_text(3000, 7).upper() + "0123456789é\n"
  for split, text in (("train", b_text), ("validation", b_text[-3000:])):
    (tmp_path / f"b_{split}.txt").write_text(text, encoding="utf-8")
  config.data.mixture = {
    "a": {"weight": 0.7, "dataset": "text"},  # data.text_files: the corpus fixture.
    "b": {
      "weight": 0.3,
      "dataset": "text",
      "text_files": {
        "train": str(tmp_path / "b_train.txt"),
        "validation": str(tmp_path / "b_validation.txt"),
      },
    },
  }
  config.data.update(dataset="tiny_shakespeare", tokenizer="char")  # Sources set their own.
  config.train.update(num_steps=8, log_every=1, eval_every=4, checkpoint_every=4)
  config.model.dropout = 0.1
  return config


@pytest.fixture(scope="module")
def text_path(tmp_path_factory):
  """A corpus file of 40 documents (blank-line separated) for the token cache's tests."""
  path = tmp_path_factory.mktemp("corpus") / "train.txt"
  path.write_text("\n\n".join(make_text(400, i) + "naïve 日本" for i in range(40)))
  return str(path)


@pytest.fixture
def small_chunks(monkeypatch):
  from lm_jax.data import chunks

  monkeypatch.setattr(chunks, "CHUNK_CHARS", 2000)  # Many chunks from a small text.


@pytest.fixture
def runs(config, tmp_path):
  """Three seeds of a GPT and of a Llama, and one unfinished Llama run."""
  from helpers.experiments import GPT, LLAMA, make_run

  from lm_jax import config as config_lib

  llama = config_lib.ml_collections.ConfigDict(config.to_dict())
  llama.model = config_lib.load(os.path.join(ROOT, "configs", "shakespeare_char_llama.py")).model
  llama.model.update(num_layers=1, num_heads=2, num_kv_heads=1, d_model=16, max_len=16)
  for seed, (g, m) in enumerate(zip(GPT, LLAMA, strict=True)):
    make_run(tmp_path / f"gpt{seed}", config, seed, g)
    make_run(tmp_path / f"llama{seed}", llama, seed, m)
  make_run(tmp_path / "llama_cut", llama, 9, 1.7, last_step=2)
  return tmp_path, config, llama
