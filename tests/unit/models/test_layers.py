"""Layers: exact GELU, the attention choice and its refusals, the scanned layout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.models import build, init

from lm_jax import UserError, models
from lm_jax.data import tokenizers
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


EOD = 0


def test_an_end_of_document_token_opens_the_next_document():
  tokens = jnp.array([[5, EOD, 3, 4, EOD, 7], [EOD, 1, 2, 3, 4, 5]])
  starts = layers.document_starts(tokens, (EOD,))
  np.testing.assert_array_equal(starts, [[0, 1, 1, 1, 4, 4], [0, 0, 0, 0, 0, 0]])
  # Several end-of-document ids; a window continued from a cache keeps its open document.
  np.testing.assert_array_equal(layers.document_starts(jnp.array([[2, 9, 3]]), (9, 3)), [[0, 1, 2]])
  more = layers.document_starts(tokens[:, 3:], (EOD,), pos=3, start_B=starts[:, 2])
  np.testing.assert_array_equal(more, starts[:, 3:])


def test_a_query_sees_its_own_document_up_to_itself():
  starts = layers.document_starts(jnp.array([[5, EOD, 3, 4]]), (EOD,))
  seen = np.asarray(layers.causal_mask(4, 4, 0, starts_BxL=starts))[0]
  np.testing.assert_array_equal(seen, [[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 1, 1, 1]])
  # Decoding one query at position 3 over a cache of 6 positions.
  one = np.asarray(layers.causal_mask(1, 6, 3, starts_BxL=starts[:, 3:]))[0]
  np.testing.assert_array_equal(one, [[0, 1, 1, 1, 0, 0]])


def test_cudnn_is_refused_with_document_masking_and_auto_avoids_it():
  with pytest.raises(UserError, match="passes cuDNN no segments"):
    layers.resolve_attention("cudnn", jnp.bfloat16, 0.0, 64, documents=True)
  choice, _ = layers.resolve_attention("auto", jnp.float32, 0.0, 64, documents=True)
  assert choice in ("xla", "reference")
  assert layers.resolve_attention("xla", jnp.float32, 0.0, 64, documents=True)[0] == "xla"


def test_document_masking_needs_an_end_of_document_token_and_a_model_that_masks():
  on = {"document_masking": True}
  assert models.document_ids({}, tokenizers.ByteTokenizer()) == ()
  assert models.document_ids(on, tokenizers.ByteTokenizer()) == (256,)
  with pytest.raises(UserError, match="the 'ids' tokenizer has none"):
    models.document_ids(on, tokenizers.IdsTokenizer(10))
  with pytest.raises(UserError, match="LSTM cannot keep attention inside documents"):
    models.build_model({"name": "lstm"}, 10, (0,))
  assert models.build_model({"name": "llama"}, 10, (0,)).eod_ids == (0,)
