"""Layers: exact GELU, the attention choice and its refusals, the scanned layout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from integration.models.test_models import build, init

from lm_jax import UserError
from lm_jax.models import layers


def test_gelu_equals_jax_exact_gelu():
  from lm_jax.models import layers

  x = jnp.linspace(-8, 8, 1001)
  np.testing.assert_allclose(layers.gelu(x), jax.nn.gelu(x, approximate=False), atol=1e-6)
  grad = lambda f: jax.vmap(jax.grad(f))(x)
  np.testing.assert_allclose(
    grad(layers.gelu), grad(lambda v: jax.nn.gelu(v, approximate=False)), atol=1e-6
  )


def test_attention_choices_and_refusals():
  from types import SimpleNamespace

  from lm_jax.models import layers

  cpu = SimpleNamespace(platform="cpu", device_kind="cpu")
  h100 = SimpleNamespace(platform="gpu", device_kind="NVIDIA H100", compute_capability="9.0")
  tpu = SimpleNamespace(platform="tpu", device_kind="TPU v5 lite")
  bf16, fp32 = jnp.bfloat16, jnp.float32
  assert layers.resolve_attention("auto", bf16, 0.0, 64, h100)[0] == "cudnn"
  assert layers.resolve_attention("auto", fp32, 0.0, 64, h100)[0] == "xla"  # cuDNN: 16 bits only.
  assert layers.resolve_attention("auto", bf16, 0.0, 64, tpu)[0] == "xla"
  # CPU: by head width, the GPT-cpu recipe's 32 on one side, the baby GPT's 64 on the other.
  choice, reason = layers.resolve_attention("auto", fp32, 0.0, 32, cpu)
  assert choice == "reference" and "32 < 64" in reason
  choice, reason = layers.resolve_attention("auto", fp32, 0.0, 64, cpu)
  assert choice == "xla" and "64 >= 64" in reason
  assert layers.resolve_attention("auto", fp32, 0.1, 64, cpu)[0] == "reference"  # Dropout.
  choice, reason = layers.resolve_attention("auto", bf16, 0.1, 64, h100)
  assert choice == "reference" and "dropout" in reason
  assert layers.resolve_attention("xla", fp32, 0.0, 64, cpu)[0] == "xla"
  with pytest.raises(UserError, match="needs an NVIDIA GPU"):
    layers.resolve_attention("cudnn", bf16, 0.0, 64, cpu)
  with pytest.raises(UserError, match="not float32"):
    layers.resolve_attention("cudnn", fp32, 0.0, 64, h100)
  with pytest.raises(UserError, match="model.dropout=0.1"):
    layers.resolve_attention("xla", fp32, 0.1, 64, cpu)
  with pytest.raises(UserError, match="model.dropout"):
    init(build("gpt", attention="cudnn", dropout=0.1))
  assert layers.compute_dtype("auto", "cpu") == fp32
  assert layers.compute_dtype("auto", "gpu") == layers.compute_dtype("auto", "tpu") == bf16


def test_scanned_layout_round_trips():
  params = {"wte": np.ones(2), "block_0": {"w": np.zeros(3)}, "block_1": {"w": np.ones(3)}}
  stacked = layers.stack_blocks(params)
  assert stacked["blocks"]["w"].shape == (2, 3)
  jax.tree_util.tree_map(np.testing.assert_array_equal, layers.unstack_blocks(stacked), params)
