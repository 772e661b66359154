"""Llama 3, Qwen2, Qwen3, Mistral, Gemma 2 and Gemma 3 against `transformers` itself.

Tiny random models built by transformers, sized so that every option bites: inputs longer than
Llama 3's original context and than the sliding windows, generation past the windows, soft caps
below the scores they cap, head widths other than hidden_size / heads, mixed local and global
layers. Exact parity in float32; bfloat16 weights kept as they are.
"""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import make_text

from lm_jax import UserError, models, sample, train
from lm_jax.data import hf_tokenizer
from lm_jax.hf import architectures, weights

INSTALL = (
  "the Hugging Face parity tests need torch and transformers: pip install torch==2.13.0 "
  "--index-url https://download.pytorch.org/whl/cpu && pip install transformers==5.23.0"
)
torch = pytest.importorskip("torch", reason=INSTALL)
transformers = pytest.importorskip("transformers", reason=INSTALL)
hf_tokenizers = pytest.importorskip("tokenizers", reason=INSTALL)
from safetensors import safe_open  # noqa: E402  (installed with transformers)

EOT = "<|endoftext|>"
LENGTH, PROMPT, NEW = 40, 8, 30  # Longer than every window and Llama 3's original context.
COMMON = dict(
  hidden_size=32,
  intermediate_size=48,
  num_hidden_layers=3,
  num_attention_heads=4,
  num_key_value_heads=2,
  max_position_embeddings=64,
)
ARCHS = {
  "llama3": lambda: transformers.LlamaConfig(
    **COMMON,
    tie_word_embeddings=False,
    rope_parameters={
      "rope_type": "llama3",
      "rope_theta": 10000.0,
      "factor": 8.0,
      "low_freq_factor": 1.0,
      "high_freq_factor": 4.0,
      "original_max_position_embeddings": 16,
    },
  ),
  "qwen2": lambda: transformers.Qwen2Config(**COMMON, tie_word_embeddings=True, rope_theta=500.0),
  "qwen3": lambda: transformers.Qwen3Config(  # Layer 0 global, 1 and 2 local.
    **COMMON, head_dim=12, use_sliding_window=True, sliding_window=6, max_window_layers=1
  ),
  "mistral": lambda: transformers.MistralConfig(**COMMON, sliding_window=6),
  "gemma2": lambda: transformers.Gemma2Config(  # Layers local, global, local.
    **COMMON,
    head_dim=16,
    query_pre_attn_scalar=12,
    attn_logit_softcapping=5.0,
    final_logit_softcapping=8.0,
    sliding_window=5,
  ),
  "gemma3": lambda: transformers.Gemma3TextConfig(  # Layers local, local, global.
    **COMMON,
    head_dim=16,
    query_pre_attn_scalar=16,
    sliding_window=5,
    sliding_window_pattern=3,
    rope_parameters={
      "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000.0},
      "sliding_attention": {"rope_type": "default", "rope_theta": 50.0},
    },
  ),
}
HF_NAMES = {
  "llama3": "LlamaForCausalLM",
  "qwen2": "Qwen2ForCausalLM",
  "qwen3": "Qwen3ForCausalLM",
  "mistral": "MistralForCausalLM",
  "gemma2": "Gemma2ForCausalLM",
  "gemma3": "Gemma3ForCausalLM",
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


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
  """{arch: directory} of tiny random models saved with save_pretrained, with the tokenizer."""
  root = tmp_path_factory.mktemp("archs")
  fast = train_tokenizer(root / "tokenizer")
  dirs = {}
  for i, (arch, make_config) in enumerate(ARCHS.items()):
    torch.manual_seed(i)
    config = make_config()
    config.update(
      {"vocab_size": len(fast), "initializer_range": 0.3, "bos_token_id": 0, "eos_token_id": 0}
    )
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # Norm scales start at 1 or 0: move them too.
      for p in model.parameters():
        p.add_(0.1 * torch.randn_like(p))
    dirs[arch] = str(root / arch)
    model.save_pretrained(dirs[arch])
    fast.save_pretrained(dirs[arch])
  return dirs


def reference(hf_dir, dtype=torch.float32):
  return transformers.AutoModelForCausalLM.from_pretrained(
    hf_dir, dtype=dtype, attn_implementation="eager"
  ).eval()


def imported(hf_dir, **model_overrides):
  """(model, params, tokenizer) as lm_jax imports them."""
  config = ml_collections.ConfigDict({**architectures.model_config(hf_dir), **model_overrides})
  tokenizer = hf_tokenizer.load_tokenizer(hf_dir)
  return (
    models.build_model(config, tokenizer.vocab_size),
    weights.load_params(hf_dir, config),
    tokenizer,
  )


@pytest.fixture(scope="module")
def ours(hf_dirs):
  """{arch: (model, params, tokenizer, jitted forward pass)}, imported once."""
  out = {}
  for arch, hf_dir in hf_dirs.items():
    model, params, tokenizer = imported(hf_dir)
    out[arch] = (model, params, tokenizer, jax.jit(lambda p, t, m=model: m.apply({"params": p}, t)))
  return out


def hf_logits(model, ids):
  with torch.no_grad():
    return model(torch.tensor(np.asarray(ids), dtype=torch.long)).logits.float().numpy()


def tokens(tokenizer, n=LENGTH):
  ids = tokenizer.encode(make_text(400, seed=9))[None, :n]
  assert ids.shape[1] == n
  return ids


@pytest.mark.parametrize("arch", list(ARCHS))
def test_logits_equal_transformers(hf_dirs, ours, arch):
  _, params, tokenizer, forward = ours[arch]
  ids = tokens(tokenizer)
  theirs = hf_logits(reference(hf_dirs[arch]), ids)
  assert np.abs(theirs).max() > 1.0  # Far from uniform: the test can tell models apart.
  np.testing.assert_allclose(forward(params, ids), theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_greedy_generation_equals_transformers(hf_dirs, ours, arch):
  model, params, tokenizer, _ = ours[arch]
  prompt = tokens(tokenizer, PROMPT)
  reference_model = reference(hf_dirs[arch])
  reference_model.generation_config.eos_token_id = None  # NEW tokens, whatever they are.
  reference_model.generation_config.pad_token_id = 0
  with torch.no_grad():
    out = reference_model.generate(torch.tensor(prompt), max_new_tokens=NEW, do_sample=False)
  [new] = sample.generate(
    model, params, list(prompt), jax.random.key(0), max_new_tokens=NEW, temperature=0.0
  )
  np.testing.assert_array_equal(new, out[0, PROMPT:].numpy())


@pytest.mark.parametrize("arch", list(ARCHS))
def test_cached_decoding_equals_full_forward(ours, arch):
  model, params, tokenizer, forward = ours[arch]
  ids = tokens(tokenizer)
  step_fn = jax.jit(lambda t, c: model.apply({"params": params}, t, cache=c))
  logits, cache = step_fn(ids[:, :5], model.init_cache(1, LENGTH))
  pieces = [logits]
  for t in range(5, LENGTH):  # Past every window.
    logits, cache = step_fn(ids[:, t : t + 1], cache)
    pieces.append(logits)
  # Two programs that sum in different orders: equal to float32 rounding, which the code
  # generation's choices (fused multiply-adds or not) move by a few ulps of the largest logit.
  np.testing.assert_allclose(
    jnp.concatenate(pieces, axis=1), forward(params, ids), atol=3e-5, rtol=1e-5
  )


@pytest.mark.parametrize("arch", list(ARCHS))
def test_export_loads_in_transformers_and_imports_back_exactly(hf_dirs, ours, arch, tmp_path):
  model, params, tokenizer, forward = ours[arch]
  out = str(tmp_path / "export")
  assert weights.save_model(out, model, params, tokenizer) == []
  assert architectures.read_config(out)["architectures"] == [HF_NAMES[arch]]
  ids = tokens(tokenizer)
  np.testing.assert_allclose(
    hf_logits(reference(out), ids), forward(params, ids), atol=1e-4, rtol=0
  )
  assert architectures.model_config(out) == architectures.model_config(hf_dirs[arch])
  again = weights.load_params(out, architectures.model_config(out))
  jax.tree_util.tree_map(np.testing.assert_array_equal, again, params)


@pytest.mark.parametrize("arch", ["qwen3", "gemma3"])
def test_scanned_import_equals_unrolled(hf_dirs, ours, arch):
  """Mixed local and global layers (and Gemma 3's two rotations) as one scan."""
  _, params, tokenizer, forward = ours[arch]
  scanned, stacked, _ = imported(hf_dirs[arch], scan_layers=True)
  assert "blocks" in stacked and "block_0" not in stacked
  ids = tokens(tokenizer)
  np.testing.assert_allclose(
    jax.jit(scanned.apply)({"params": stacked}, ids), forward(params, ids), atol=1e-5, rtol=1e-5
  )


def safetensors_dtypes(hf_dir):
  with safe_open(os.path.join(hf_dir, "model.safetensors"), framework="numpy") as f:
    return {f.get_slice(n).get_dtype() for n in f.keys()}


def test_bfloat16_checkpoint_stays_bfloat16_in_and_out(hf_dirs, ours, tmp_path):
  bf16_dir = str(tmp_path / "bf16")
  reference(hf_dirs["llama3"], torch.bfloat16).save_pretrained(bf16_dir)
  transformers.AutoTokenizer.from_pretrained(hf_dirs["llama3"]).save_pretrained(bf16_dir)
  assert safetensors_dtypes(bf16_dir) == {"BF16"}
  model, params, tokenizer = imported(bf16_dir, param_dtype="bfloat16")
  assert {x.dtype for x in jax.tree_util.tree_leaves(params)} == {jnp.dtype(jnp.bfloat16)}
  as_float32 = weights.load_params(bf16_dir, architectures.model_config(bf16_dir))
  jax.tree_util.tree_map(  # bfloat16 -> float32 is exact, so both hold the same numbers.
    lambda a, b: np.testing.assert_array_equal(np.asarray(a, np.float32), b), params, as_float32
  )
  # Computing in float32 from bfloat16 parameters is the bfloat16 checkpoint, upcast.
  ids = tokens(tokenizer)
  upcast = reference(bf16_dir, torch.float32)
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


def rewritten(hf_dir, tmp_path, name, change):
  """A copy of hf_dir's config.json (alone) changed by `change(dict)`."""
  h = json.load(open(os.path.join(hf_dir, "config.json")))
  change(h)
  os.makedirs(tmp_path / name)
  with open(tmp_path / name / "config.json", "w") as f:
    json.dump(h, f)
  return str(tmp_path / name)


def test_configs_as_earlier_transformers_wrote_them_read_the_same(hf_dirs, tmp_path):
  def llama_4x(h):  # rope_theta beside rope_scaling, no rope_parameters.
    rope = h.pop("rope_parameters")
    h["rope_theta"] = rope.pop("rope_theta")
    h["rope_scaling"] = rope

  def gemma3_4x(h):
    rope = h.pop("rope_parameters")
    h["rope_theta"] = rope["full_attention"]["rope_theta"]
    h["rope_local_base_freq"] = rope["sliding_attention"]["rope_theta"]
    h["rope_scaling"] = {"rope_type": "linear", "factor": rope["full_attention"]["factor"]}
    del h["layer_types"]
    h.pop("sliding_window_pattern", None)  # Without either: five local layers, then a global one.
    h["num_hidden_layers"] = 6

  def qwen2_4x(h):  # Qwen2.5 as published: a window named but not used.
    h.update(sliding_window=32768, use_sliding_window=False, max_window_layers=21)
    del h["layer_types"], h["architectures"]

  for arch, change in (("llama3", llama_4x), ("gemma3", gemma3_4x), ("qwen2", qwen2_4x)):
    old = architectures.model_config(rewritten(hf_dirs[arch], tmp_path, arch, change))
    new = architectures.model_config(hf_dirs[arch])
    if arch == "gemma3":
      assert (old["num_layers"], old["layer_pattern"]) == (6, "lllllg")
      old.update(num_layers=3, layer_pattern="llg")
    assert old == new


def test_other_rope_types_and_architectures_are_refused_by_name(hf_dirs, tmp_path):
  for kind in ("dynamic", "yarn", "longrope"):
    path = rewritten(
      hf_dirs["llama3"], tmp_path, kind, lambda h, k=kind: h["rope_parameters"].update(rope_type=k)
    )
    with pytest.raises(UserError, match=f"RoPE type '{kind}'.* RoPE default, linear or llama3"):
      architectures.model_config(path)
  path = rewritten(
    hf_dirs["llama3"], tmp_path, "short", lambda h: h["rope_parameters"].pop("low_freq_factor")
  )
  with pytest.raises(UserError, match="of type 'llama3' lack 'low_freq_factor'"):
    architectures.model_config(path)
  path = rewritten(
    hf_dirs["qwen3"], tmp_path, "partial", lambda h: h.update(partial_rotary_factor=0.5)
  )
  with pytest.raises(UserError, match="partial_rotary_factor=0.5"):
    architectures.model_config(path)
  path = rewritten(
    hf_dirs["gemma2"], tmp_path, "bidirectional", lambda h: h.update(use_bidirectional_attention=1)
  )
  with pytest.raises(UserError, match="use_bidirectional_attention"):
    architectures.model_config(path)
  path = rewritten(
    hf_dirs["gemma3"],
    tmp_path,
    "vision",
    lambda h: h.update(architectures=["Gemma3ForConditionalGeneration"]),
  )
  with pytest.raises(UserError, match="Gemma3ForConditionalGeneration .* supports GPT2LMHead"):
    architectures.model_config(path)


@pytest.mark.parametrize(
  "name, options, why",
  [
    ("llama", dict(qk_norm=True, mlp_bias=True), "Qwen3"),
    ("llama", dict(sliding_window=4, layer_pattern="lg"), "local and global layers"),
    ("llama", dict(sliding_window=4, attention_bias=True), "Mistral"),
    ("gemma", dict(qk_norm=True), "Gemma 3 .* caps no attention scores"),
    ("gemma", dict(rope_local_base=100.0), "Gemma 2 has one rotation"),
  ],
)
def test_models_without_a_hugging_face_form_are_refused_on_export(name, options, why, tmp_path):
  from lm_jax.data import tokenizers

  model = models.build_model(ml_collections.ConfigDict({"name": name, **options}), 257)
  params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"]
  with pytest.raises(UserError, match=f"no Hugging Face form: {why}"):
    weights.save_model(str(tmp_path / "out"), model, params, tokenizers.ByteTokenizer())
  assert not os.path.exists(tmp_path / "out")
