"""Layout choices: FSDP specs, the auto mode, meshes, the CPU's bfloat16 flags."""

import os

import jax
import jax.numpy as jnp
import pytest

from lm_jax import UserError, backend, models, parallel, placement
from lm_jax import config as config_lib


def test_fsdp_splits_the_largest_divisible_dim():
  fsdp = lambda shape, n: placement.spec("", shape, n, 1)  # A path no rule names.
  assert fsdp((6, 8), 4) == jax.sharding.PartitionSpec(None, "fsdp")
  assert fsdp((12, 8), 4) == jax.sharding.PartitionSpec("fsdp", None)
  assert fsdp((3, 5), 4) == jax.sharding.PartitionSpec()
  assert fsdp((12, 8), 1) == jax.sharding.PartitionSpec()


def step_flops(config_path: str, batch_size=None, seq_len=None, **model) -> float:
  """A config's training FLOPs per step, from abstract parameters (nothing is run)."""
  config = config_lib.load(config_path)
  config.model.update(model)
  m = models.build_model(config.model, 65)
  init = lambda: m.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  params = jax.eval_shape(init)["params"]
  seq_len = seq_len or config.data.seq_len
  tokens = (batch_size or config.train.batch_size) * seq_len
  return models.flops_per_token(m, params, seq_len) * tokens


def test_auto_layout_follows_the_model_size_on_cpu_only():
  baby = dict(num_layers=6, num_heads=6, d_model=384, max_len=128)
  gpt_cpu = step_flops("configs/shakespeare_char_gpt_cpu.py")
  lstm = step_flops("configs/shakespeare_char_lstm.py")
  wide = step_flops("configs/shakespeare_char_gpt_cpu.py", 8, 128, **baby)
  # The measured sides of the crossover (README, Benchmark): pmap for the recipes, jit wider.
  assert parallel.resolve_mode("auto", gpt_cpu, "cpu", 2)[0] == "pmap"
  assert parallel.resolve_mode("auto", lstm, "cpu", 2)[0] == "pmap"
  mode, reason = parallel.resolve_mode("auto", wide, "cpu", 2)
  assert mode == "jit" and "GFLOP per core" in reason
  assert parallel.resolve_mode("auto", wide, "gpu", 2)[0] == "pmap"  # Accelerators: pmap.
  assert parallel.resolve_mode("auto", wide, "cpu", 1)[0] == "jit"
  assert parallel.resolve_mode("auto", None, "cpu", 2)[0] == "pmap"  # FLOPs unknown.
  assert parallel.resolve_mode("pmap", wide, "cpu", 2) == ("pmap", "set in the config")
  with pytest.raises(UserError, match="use one of"):
    parallel.resolve_mode("spmd", wide, "cpu", 2)


@pytest.mark.parametrize(
  "mesh, match",
  [
    ({"data": 3, "fsdp": -1}, "does not cover the 8"),
    ({"data": -1, "fsdp": -1}, "at most one of them -1"),
  ],
)
def test_bad_mesh_is_explained(mesh, match):
  with pytest.raises(UserError, match=match):
    parallel.make_plan("sharded", mesh)


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
  monkeypatch.setattr(backend, "CPU_BF16_FLAGS_COMPILE_MODELS", True)
  config.model.dtype = dtype
  backend.prepare_cpu_backend(config, str(cpuinfo))
  flags = os.environ["XLA_FLAGS"].split()
  assert ("--xla_disable_hlo_passes=float-normalization-bf16" in flags) == expected
  assert "--xla_cpu_use_onednn=true" not in flags
