"""Hugging Face interop against `transformers` itself: tiny random models, exact parity."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import make_text

from lm_jax import UserError, models, sample
from lm_jax.data import hf_tokenizer, tokenizers
from lm_jax.hf import architectures, weights

INSTALL = (
  "the Hugging Face parity tests need torch and transformers: pip install torch==2.13.0 "
  "--index-url https://download.pytorch.org/whl/cpu && pip install transformers==5.23.0"
)
torch = pytest.importorskip("torch", reason=INSTALL)
transformers = pytest.importorskip("transformers", reason=INSTALL)
hf_tokenizers = pytest.importorskip("tokenizers", reason=INSTALL)

EOT = "<|endoftext|>"
TEXT = "The king said: « héllo — ✓ »\n  tabs\tand  spaces, 1234 times.\n"
# The vocabulary sizes of the models: GPT-2's is padded past the tokenizer's ids.
ARCHS = {
  "gpt2": lambda v: transformers.GPT2Config(
    vocab_size=v + 4, n_positions=64, n_embd=32, n_layer=2, n_head=4
  ),
  "llama_gqa": lambda v: transformers.LlamaConfig(
    vocab_size=v,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    tie_word_embeddings=False,
    rope_theta=500.0,
  ),
  "llama_tied": lambda v: transformers.LlamaConfig(
    vocab_size=v,
    hidden_size=32,
    intermediate_size=40,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=64,
    tie_word_embeddings=True,
    attention_bias=True,
    mlp_bias=True,
    rms_norm_eps=1e-5,
  ),
}


def train_tokenizer(path):
  """A byte-level BPE like GPT-2's, trained on a small corpus, saved as Hugging Face does."""
  tok = hf_tokenizers.Tokenizer(hf_tokenizers.models.BPE())
  tok.pre_tokenizer = hf_tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = hf_tokenizers.decoders.ByteLevel()
  trainer = hf_tokenizers.trainers.BpeTrainer(
    vocab_size=300,
    special_tokens=[EOT],
    initial_alphabet=hf_tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  tok.train_from_iterator([make_text(2000, seed=5)], trainer)
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOT, bos_token=EOT)
  fast.save_pretrained(path)
  return fast


def reference(hf_dir):
  model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
  return model.eval()


def imported(hf_dir, **model_overrides):
  """(model, params, tokenizer) as lm_jax imports them."""
  config = ml_collections.ConfigDict({**architectures.model_config(hf_dir), **model_overrides})
  tokenizer = hf_tokenizer.load_tokenizer(hf_dir)
  return (
    models.build_model(config, tokenizer.vocab_size),
    weights.load_params(hf_dir, config),
    tokenizer,
  )


def hf_logits(model, ids):
  with torch.no_grad():
    return model(torch.tensor(np.asarray(ids), dtype=torch.long)).logits.numpy()


def tokens(tokenizer, n=24):
  return tokenizer.encode(make_text(200, seed=9))[None, :n]


@pytest.mark.parametrize("arch", list(ARCHS))
def test_logits_equal_transformers(hf_dirs, ours, arch):
  _, params, tokenizer, forward = ours[arch]
  ids = tokens(tokenizer)
  logits = forward(params, ids)
  theirs = hf_logits(reference(hf_dirs[arch]), ids)
  assert logits.shape == theirs.shape
  assert np.abs(theirs).max() > 1.0  # Logits far from uniform: the test can tell models apart.
  np.testing.assert_allclose(logits, theirs, atol=1e-4, rtol=0)


def test_scanned_import_equals_unrolled(hf_dirs, ours):
  _, params, tokenizer, forward = ours["llama_gqa"]
  scanned, stacked, _ = imported(hf_dirs["llama_gqa"], scan_layers=True)
  ids = tokens(tokenizer)
  assert "blocks" in stacked and "block_0" not in stacked
  np.testing.assert_allclose(
    jax.jit(scanned.apply)({"params": stacked}, ids), forward(params, ids), atol=1e-5, rtol=1e-5
  )


@pytest.mark.parametrize("arch", list(ARCHS))
def test_greedy_generation_equals_transformers(hf_dirs, ours, arch):
  model, params, tokenizer, _ = ours[arch]
  prompt = tokens(tokenizer, 6)
  reference_model = reference(hf_dirs[arch])
  reference_model.generation_config.eos_token_id = None  # 20 tokens, whatever they are.
  reference_model.generation_config.pad_token_id = 0
  with torch.no_grad():
    out = reference_model.generate(
      torch.tensor(np.asarray(prompt)), max_new_tokens=20, do_sample=False
    )
  [ours] = sample.generate(
    model, params, list(prompt), jax.random.key(0), max_new_tokens=20, temperature=0.0
  )
  np.testing.assert_array_equal(ours, out[0, prompt.shape[1] :].numpy())


@pytest.mark.parametrize("arch", list(ARCHS))
def test_cached_decoding_equals_full_forward(ours, arch):
  model, params, tokenizer, forward = ours[arch]
  ids = tokens(tokenizer, 12)
  step_fn = jax.jit(lambda t, c: model.apply({"params": params}, t, cache=c))
  logits, cache = step_fn(ids[:, :5], model.init_cache(1, 12))
  pieces = [logits]
  for t in range(5, 12):
    logits, cache = step_fn(ids[:, t : t + 1], cache)
    pieces.append(logits)
  full = forward(params, ids)
  np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_export_loads_in_transformers_and_imports_back_exactly(ours, arch, tmp_path):
  model, params, tokenizer, forward = ours[arch]
  out = str(tmp_path / "export")
  assert weights.save_model(out, model, params, tokenizer) == []
  ids = tokens(tokenizer)
  np.testing.assert_allclose(
    hf_logits(reference(out), ids), forward(params, ids), atol=1e-4, rtol=0
  )
  auto = transformers.AutoTokenizer.from_pretrained(out)
  assert auto(TEXT, add_special_tokens=False)["input_ids"] == tokenizer.encode(TEXT).tolist()
  again = weights.load_params(out, architectures.model_config(out))
  jax.tree_util.tree_map(np.testing.assert_array_equal, again, params)


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


def write(path, name, content):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, name), "w") as f:
    f.write(json.dumps(content) if isinstance(content, dict) else content)


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
