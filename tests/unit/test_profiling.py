"""Traces of chosen steps, the compilation cache's options and the CPU's bfloat16 flags."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from lm_jax import UserError, parallel, profiling, records, train


def test_profile_steps_write_a_trace(config, tmp_path):
  config.train.profile_steps = [2, 3]
  train.train_and_evaluate(config, str(tmp_path / "run"))
  assert glob.glob(str(tmp_path / "run" / "profile" / "**" / "*.xplane.pb"), recursive=True)
  rows = [r for r in records.read_metrics(str(tmp_path / "run")) if "train_loss" in r]
  assert rows and all("peak_memory_bytes" not in r for r in rows)  # The CPU reports none.


@pytest.mark.parametrize("steps", [[5], [3, 2], [-1, 2], [1, 2, 3]])
def test_bad_profile_steps_are_refused(steps):
  with pytest.raises(UserError, match="train.profile_steps"):
    profiling.check_profile_steps(steps)


def test_compilation_cache_lies_beside_the_token_cache(config, token_cache):
  options = profiling.compilation_cache_options(config)
  assert options["jax_compilation_cache_dir"] == str(token_cache / "jax_cache")
  config.train.compilation_cache = False
  assert profiling.compilation_cache_options(config) == {}


@pytest.mark.parametrize(
  "dtype, cpu_flags, expected",
  [
    ("bfloat16", "fpu avx512f amx_bf16 amx_tile", True),
    ("bfloat16", "fpu avx512f avx512_bf16", True),
    ("bfloat16", "fpu avx2", False),
    ("float32", "fpu avx512f amx_bf16", False),
    ("auto", "fpu avx512f amx_bf16", False),
  ],
)
def test_bf16_flags_only_for_bf16_on_cpus_with_bf16_units(
  config, tmp_path, monkeypatch, dtype, cpu_flags, expected
):
  cpuinfo = tmp_path / "cpuinfo"
  cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {cpu_flags}\n")
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_onednn=false")  # A user's own value wins.
  monkeypatch.setattr(parallel, "CPU_BF16_FLAGS_COMPILE_MODELS", True)
  config.model.dtype = dtype
  parallel.prepare_cpu_backend(config, str(cpuinfo))
  flags = os.environ["XLA_FLAGS"].split()
  assert ("--xla_disable_hlo_passes=float-normalization-bf16" in flags) == expected
  assert "--xla_cpu_use_onednn=true" not in flags


BF16_LOSS = """
import json, sys, jax, jax.numpy as jnp, ml_collections
from lm_jax import losses, models
model = models.build_model(ml_collections.ConfigDict(dict(
  name="gpt", num_layers=1, num_heads=2, d_model=32, max_len=16, dtype="bfloat16")), 23)
tokens = jax.random.randint(jax.random.key(1), (4, 16), 0, 23)
params = model.init(jax.random.key(0), tokens)["params"]
def loss(p):
  s, n = losses.cross_entropy_sums(model.apply({"params": p}, tokens[:, :-1]), tokens[:, 1:])
  return s / n
value, grads = jax.jit(jax.value_and_grad(loss))(params)
norm = float(jnp.sqrt(sum((g.astype(jnp.float32) ** 2).sum() for g in jax.tree.leaves(grads))))
print(json.dumps([float(value), norm]))
"""


@pytest.mark.skipif(not parallel.cpu_has_bf16(), reason="this CPU has no bfloat16 units")
def test_cpu_bf16_flags_are_used_exactly_when_they_compile_a_model():
  env = {**os.environ, "XLA_FLAGS": " ".join(parallel.CPU_BF16_FLAGS), "PYTHONPATH": ROOT}
  run = lambda e: subprocess.run(
    [sys.executable, "-c", BF16_LOSS], env=e, capture_output=True, text=True, timeout=300
  )
  fast = run(env)
  assert (fast.returncode == 0) == parallel.CPU_BF16_FLAGS_COMPILE_MODELS, fast.stderr[-2000:]
  if fast.returncode == 0:
    plain = run({**env, "XLA_FLAGS": ""})
    assert plain.returncode == 0, plain.stderr[-2000:]
    np.testing.assert_allclose(json.loads(fast.stdout), json.loads(plain.stdout), rtol=2e-2)
