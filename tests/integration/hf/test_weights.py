"""Hugging Face weights read and written: layouts, dtypes, shardings, refusals, native models.

Against `transformers` itself, on the tiny models of integration/conftest.py (helpers.hf.ARCHS).
"""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from helpers.hf import INSTALL, hf_logits, imported, reference, token_ids, write

from lm_jax import UserError, models, train
from lm_jax.data import tokenizers
from lm_jax.hf import architectures, weights

torch = pytest.importorskip("torch", reason=INSTALL)
transformers = pytest.importorskip("transformers", reason=INSTALL)
from safetensors import safe_open  # noqa: E402  (installed with transformers)


def test_sharded_and_older_layouts_import_the_same(hf_dirs, ours, tmp_path):
  from safetensors.numpy import load_file, save_file

  sharded = str(tmp_path / "sharded")
  reference(hf_dirs["llama_gqa"]).save_pretrained(sharded, max_shard_size="40KB")
  assert os.path.exists(os.path.join(sharded, "model.safetensors.index.json"))
  params = weights.load_params(sharded, architectures.model_config(sharded))
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, ours["llama_gqa"][1])
  # GPT-2 as first published: no 'transformer.' prefix, attention masks stored as tensors.
  old = str(tmp_path / "old")
  tensors = load_file(os.path.join(hf_dirs["gpt2"], "model.safetensors"))
  tensors = {k.removeprefix("transformer."): v for k, v in tensors.items()}
  tensors["h.0.attn.bias"] = np.tril(np.ones((1, 1, 64, 64), np.float32))
  write(old, "config.json", open(os.path.join(hf_dirs["gpt2"], "config.json")).read())
  save_file(tensors, os.path.join(old, "model.safetensors"), metadata={"format": "pt"})
  params = weights.load_params(old, architectures.model_config(old))
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, ours["gpt2"][1])


def safetensors_dtypes(hf_dir):
  with safe_open(os.path.join(hf_dir, "model.safetensors"), framework="numpy") as f:
    return {f.get_slice(n).get_dtype() for n in f.keys()}


def test_bfloat16_checkpoint_stays_bfloat16_in_and_out(hf_dirs, ours, tmp_path):
  bf16_dir = str(tmp_path / "bf16")
  reference(hf_dirs["llama3"], "bfloat16").save_pretrained(bf16_dir)
  transformers.AutoTokenizer.from_pretrained(hf_dirs["llama3"]).save_pretrained(bf16_dir)
  assert safetensors_dtypes(bf16_dir) == {"BF16"}
  model, params, tokenizer = imported(bf16_dir, param_dtype="bfloat16")
  assert {x.dtype for x in jax.tree_util.tree_leaves(params)} == {jnp.dtype(jnp.bfloat16)}
  as_float32 = weights.load_params(bf16_dir, architectures.model_config(bf16_dir))
  jax.tree_util.tree_map(  # bfloat16 -> float32 is exact, so both hold the same numbers.
    lambda a, b: np.testing.assert_array_equal(np.asarray(a, np.float32), b), params, as_float32
  )
  # Computing in float32 from bfloat16 parameters is the bfloat16 checkpoint, upcast.
  ids = token_ids(tokenizer)
  upcast = reference(bf16_dir, "float32")
  logits = jax.jit(model.apply)({"params": params}, ids)
  np.testing.assert_allclose(logits, hf_logits(upcast, ids), atol=1e-4, rtol=0)
  out = str(tmp_path / "export")  # The run's dtype by default...
  weights.save_model(out, model, params, tokenizer)
  assert safetensors_dtypes(out) == {"BF16"}
  assert architectures.read_config(out)["dtype"] == "bfloat16"
  assert next(reference(out, "auto").parameters()).dtype == torch.bfloat16
  again = weights.load_params(out, architectures.model_config(out) | {"param_dtype": "bfloat16"})
  jax.tree_util.tree_map(np.testing.assert_array_equal, again, params)
  wide = str(tmp_path / "float32")  # ...or the one asked for.
  weights.save_model(wide, model, params, tokenizer, dtype="float32")
  assert safetensors_dtypes(wide) == {"F32"}
  jax.tree_util.tree_map(
    np.testing.assert_array_equal,
    weights.load_params(wide, architectures.model_config(wide)),
    as_float32,
  )


def test_sharded_fine_tuning_starts_from_bfloat16_weights_with_float32_moments(
  hf_dirs, ours, config, tmp_path
):
  """train.init_from reads each tensor onto its devices (fsdp), in the run's param_dtype."""
  path = hf_dirs["qwen3"]
  config.model = ml_collections.ConfigDict(
    architectures.model_config(path) | {"param_dtype": "bfloat16"}
  )
  config.data.update(tokenizer="hf", hf_tokenizer=path, seq_len=16)
  config.optim.update(learning_rate=0.0, min_learning_rate=0.0, warmup_steps=0)
  config.train.update(
    init_from=path, num_steps=1, eval_every=1, checkpoint_every=1, parallel="sharded"
  )
  config.mesh.update(data=-1, fsdp=2)
  state, _ = train.train_and_evaluate(config, str(tmp_path / "run"))
  want = jax.tree_util.tree_map(lambda x: np.asarray(x, jnp.bfloat16), ours["qwen3"][1])
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(state.params), want)
  assert {x.dtype for x in jax.tree_util.tree_leaves(state.params)} == {jnp.dtype(jnp.bfloat16)}
  moments = [x for x in jax.tree_util.tree_leaves(state.opt_state) if x.ndim]
  assert moments and {x.dtype for x in moments} == {jnp.dtype(jnp.float32)}


def test_weights_go_to_their_shardings_as_read(hf_dirs, ours):
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:4]), ("fsdp",))
  split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("fsdp"))
  config = architectures.model_config(hf_dirs["llama3"])
  shardings = jax.tree_util.tree_map(lambda _: split, ours["llama3"][1])
  params = weights.load_params(hf_dirs["llama3"], config, shardings)
  assert {x.sharding for x in jax.tree_util.tree_leaves(params)} == {split}
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, ours["llama3"][1])


NATIVE = {  # Models as lm_jax trains them: no biases, exact GELU, SwiGLU width from the rule.
  "gpt": dict(name="gpt", num_layers=2, num_heads=2, d_model=16, max_len=16, use_bias=False),
  "llama": dict(
    name="llama",
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    d_model=16,
    max_len=16,
    tie_embeddings=True,
    scan_layers=True,
  ),
}


@pytest.mark.parametrize("name", list(NATIVE))
def test_native_models_export_with_a_note_for_their_tokenizer(name, tmp_path):
  model = models.build_model(ml_collections.ConfigDict(NATIVE[name]), 257)
  ids = np.arange(12)[None] * 7 % 257
  init = jax.jit(model.init)(jax.random.key(0), ids)["params"]
  params = jax.tree_util.tree_map(lambda x: np.asarray(x) + 0.1, init)  # No zeros left.
  out = str(tmp_path / "export")
  [note] = weights.save_model(out, model, params, tokenizers.ByteTokenizer())
  assert "byte tokenizer has no Hugging Face form" in note
  np.testing.assert_allclose(
    hf_logits(reference(out), ids), jax.jit(model.apply)({"params": params}, ids), atol=1e-4, rtol=0
  )


def test_bad_directories_are_refused(hf_dirs, tmp_path):
  with pytest.raises(UserError, match="no directory at"):
    architectures.model_config(str(tmp_path / "nowhere"))
  gpt2_config = json.load(open(os.path.join(hf_dirs["gpt2"], "config.json")))
  bare = str(tmp_path / "bare")
  write(bare, "config.json", gpt2_config)
  model_config = architectures.model_config(bare)
  with pytest.raises(UserError, match="holds no weights"):
    weights.load_params(bare, model_config)
  write(bare, "pytorch_model.bin", "")
  with pytest.raises(UserError, match="convert it once with transformers"):
    weights.load_params(bare, model_config)
  write(str(tmp_path / "bert"), "config.json", {"architectures": ["BertForMaskedLM"]})
  with pytest.raises(UserError, match="BertForMaskedLM .* supports GPT2LMHeadModel"):
    architectures.model_config(str(tmp_path / "bert"))
  llama = json.load(open(os.path.join(hf_dirs["llama_gqa"], "config.json")))
  llama["rope_parameters"] = {"rope_type": "yarn", "factor": 8.0, "rope_theta": 5e5}
  write(str(tmp_path / "yarn"), "config.json", llama)
  with pytest.raises(UserError, match="RoPE type 'yarn'.* it imports llama with silu"):
    architectures.model_config(str(tmp_path / "yarn"))
