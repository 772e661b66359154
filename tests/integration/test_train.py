"""The train step and loop: parallel equivalence, plugins, records, bad input."""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import MANUAL_DIR, ROOT

from lm_jax import UserError, models, optim, records, train
from lm_jax import config as config_lib


class Bigram(nn.Module):
  """A plugin model named as 'integration.test_train:Bigram': next token from this token only."""

  vocab_size: int
  width: int = 8

  @nn.compact
  def __call__(self, tokens_BxL, deterministic: bool = True):
    return nn.Dense(self.vocab_size)(nn.Embed(self.vocab_size, self.width)(tokens_BxL))


def params_close(a, b, atol):
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(x, y, atol=atol, rtol=0)


@pytest.mark.parametrize("model", ["gpt", "lstm"])
def test_pmap_equals_jit(config, tmp_path, model):
  if model == "lstm":
    config.model = config_lib.load("configs/shakespeare_char_lstm.py").model
    config.model.update(embed_size=16, hidden_size=16)
  assert jax.local_device_count() == 8
  results = {}
  for mode in ("jit", "pmap"):
    config.train.parallel = mode
    state, ev = train.train_and_evaluate(config, str(tmp_path / mode))
    results[mode] = (state, ev, records.read_metrics(str(tmp_path / mode)))
  (s1, e1, m1), (s8, e8, m8) = results["jit"], results["pmap"]
  params_close(s1.params, s8.params, atol=2e-6)
  np.testing.assert_allclose(e1["loss"], e8["loss"], rtol=1e-5)
  losses1 = [r["train_loss"] for r in m1 if "train_loss" in r]
  losses8 = [r["train_loss"] for r in m8 if "train_loss" in r]
  np.testing.assert_allclose(losses1, losses8, rtol=1e-5)
  assert e1["tokens"] == sum(1 for _ in open(config.data.text_files.validation).read()) - 1


def test_loss_falls_and_records_are_written(config, tmp_path):
  config.train.update(num_steps=60, log_every=10, eval_every=30)
  config.optim.learning_rate = 3e-3
  workdir = str(tmp_path / "run")
  _, ev = train.train_and_evaluate(config, workdir)
  rows = records.read_metrics(workdir)
  train_rows = [r for r in rows if "train_loss" in r]
  assert [r["step"] for r in train_rows] == list(range(10, 61, 10))
  assert {"train_loss", "learning_rate", "tokens_per_sec", "elapsed_sec"} <= set(train_rows[0])
  assert [r["step"] for r in rows if "val_loss" in r] == [30, 60]
  assert train_rows[-1]["train_loss"] < train_rows[0]["train_loss"] - 0.5
  assert ev["loss"] < train_rows[0]["train_loss"] - 0.5
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f) == config.to_dict()


def test_plugin_model_by_module_path(config, tmp_path):
  config.model = config_lib.ml_collections.ConfigDict(
    {"name": "integration.test_train:Bigram", "width": 4}
  )
  state, _ = train.train_and_evaluate(config, str(tmp_path))
  assert state.params["Dense_0"]["kernel"].shape[0] == 4


def test_indivisible_batch_is_refused(config, tmp_path):
  config.train.update(parallel="pmap", batch_size=12)
  with pytest.raises(UserError, match="not divisible by the 8 devices"):
    train.train_and_evaluate(config, str(tmp_path))


def test_unknown_config_key_is_refused(config):
  with pytest.raises(
    UserError, match=r"unknown config key 'model.depth'; valid keys: .*model.num_layers"
  ):
    config_lib.override(config, {"model.depth": "3"})


def test_overrides_keep_types(config):
  c = config_lib.override(
    config,
    {
      "model.num_layers": "3",
      "optim.learning_rate": "0.1",
      "model.use_bias": "true",
      "data.tokenizer": "char",
    },
  )
  assert (c.model.num_layers, c.optim.learning_rate, c.model.use_bias) == (3, 0.1, True)
  with pytest.raises(UserError, match="not a valid int"):
    config_lib.override(config, {"model.num_layers": "four"})


def run_script(*args):
  return subprocess.run(
    [sys.executable, "scripts/train.py", *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_script_refuses_unknown_key_in_one_line(tmp_path):
  r = run_script(
    "--config", "configs/tiny.py", "--workdir", str(tmp_path), "--config.model.depth=2"
  )
  assert r.returncode == 1
  assert r.stderr.strip().splitlines()[-1].startswith("error: unknown config key 'model.depth'")
  assert "Traceback" not in r.stderr


@pytest.mark.skipif(not MANUAL_DIR, reason="set LM_JAX_MANUAL_DIR to tiny-shakespeare's folder")
@pytest.mark.slow
def test_script_trains_tiny_shakespeare(tmp_path):
  workdir = tmp_path / "run"
  r = run_script(
    "--config",
    "configs/tiny.py",
    "--workdir",
    str(workdir),
    f"--config.data.manual_dir={MANUAL_DIR}",
    f"--config.data.data_dir={tmp_path / 'tfds'}",
    "--config.train.num_steps=40",
    "--config.train.eval_every=20",
  )
  assert r.returncode == 0, r.stderr[-3000:]
  rows = records.read_metrics(str(workdir))
  evals = [r["val_loss"] for r in rows if "val_loss" in r]
  assert len(evals) == 2 and evals[1] < evals[0]
  with open(workdir / "tokenizer.json") as f:
    assert len(json.load(f)["chars"]) == 65


@pytest.mark.parametrize("scan_layers", [False, True])
def test_weight_decay_shrinks_weight_matrices_only(scan_layers):
  model = models.build_model(
    config_lib.ml_collections.ConfigDict(
      dict(
        name="gpt",
        num_layers=2,
        num_heads=2,
        d_model=8,
        max_len=8,
        use_bias=True,
        scan_layers=scan_layers,
      )
    ),
    11,
  )
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))
  for decay_embeddings in (False, True):
    mask = optim.decay_mask(params["params"], decay_embeddings)
    names = {jax.tree_util.keystr(p): m for p, m in jax.tree_util.tree_leaves_with_path(mask)}
    assert all(
      m == (k.endswith("['kernel']") or (decay_embeddings and "embedding" in k))
      for k, m in names.items()
    ), names


def test_script_makes_each_cpu_core_a_device(config, tmp_path):
  config.train.update(parallel="auto", num_steps=2, eval_every=2, log_every=1)
  spec = tmp_path / "config.json"
  spec.write_text(json.dumps(config.to_dict()))
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  r = subprocess.run(
    [sys.executable, "scripts/train.py", "--config", str(spec), "--workdir", str(tmp_path / "run")],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert r.returncode == 0, r.stderr[-2000:]
  cores = len(os.sched_getaffinity(0))
  expected = max(d for d in range(1, cores + 1) if 8 % d == 0)  # Batch 8 splits evenly.
  info = json.loads((tmp_path / "run" / "run.json").read_text())
  assert info["device_count"] == expected
  if expected > 1:  # A tiny model: auto keeps a replica per core (parallel.resolve_mode).
    assert info["parallel"] == "pmap" and "GFLOP per core" in info["parallel_reason"]
  # The script turned on JAX's compilation cache beside the token cache.
  assert os.listdir(os.path.join(os.environ["XDG_CACHE_HOME"], "lm_jax", "jax_cache"))
