"""Test set-up: 8 simulated CPU devices, small corpora."""

import os

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from lm_jax import console  # noqa: E402  (imports no JAX)

console.skip_absent_tpu()  # With libtpu installed (compile checks), the CPU without its noise.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # Where scripts/ lies.

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from configs import tiny  # noqa: E402

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


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  """One persistent compilation cache per test process: tests that compile the same program
  (the same tiny model, step and layout) compile it once."""
  import jax  # pylint: disable=g-import-not-at-top

  jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
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
