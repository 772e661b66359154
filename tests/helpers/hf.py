"""Tiny Hugging Face tokenizers and models, built here with `tokenizers` and `transformers`.

Nothing downloads. `ARCHS` is every architecture the tests check lm_jax against `transformers`
with, each sized so that its options bite; `save_model` writes one as `save_pretrained` does.
torch and transformers are imported when a function needs them: where they are missing, the
test calling it is skipped with the command that installs them.
"""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tokenizers as hf_tokenizers  # The `tokenizers` package, not lm_jax.data.tokenizers.
from conftest import make_text

from lm_jax import models
from lm_jax.data import hf_tokenizer
from lm_jax.hf import architectures, weights

INSTALL = (
  "the Hugging Face tests need torch and transformers: pip install torch==2.13.0 "
  "--index-url https://download.pytorch.org/whl/cpu && pip install transformers==5.23.0"
)
EOT = "<|endoftext|>"
TEXT = "The king said: « héllo — ✓ »\n  tabs\tand  spaces, 1234 times.\n"


def byte_level_bpe(texts=None, special_tokens=(EOT,), vocab_size=300) -> hf_tokenizers.Tokenizer:
  """A byte-level BPE like GPT-2's, trained on `texts` (by default make_text(2000, seed=5)),
  its special tokens first (ids 0, 1, ...)."""
  tok = hf_tokenizers.Tokenizer(hf_tokenizers.models.BPE())
  tok.pre_tokenizer = hf_tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = hf_tokenizers.decoders.ByteLevel()
  trainer = hf_tokenizers.trainers.BpeTrainer(
    vocab_size=vocab_size,
    special_tokens=list(special_tokens),
    initial_alphabet=hf_tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  tok.train_from_iterator([make_text(2000, seed=5)] if texts is None else texts, trainer)
  return tok


def save_tokenizer(tok: hf_tokenizers.Tokenizer, path, **tokenizer_config) -> str:
  """`tok` as a Hugging Face tokenizer directory: tokenizer.json, and tokenizer_config.json
  holding `tokenizer_config` (eos_token, chat_template, ...)."""
  os.makedirs(path, exist_ok=True)
  tok.save(os.path.join(path, "tokenizer.json"))
  write(path, "tokenizer_config.json", tokenizer_config)
  return str(path)


def fast_tokenizer(tok: hf_tokenizers.Tokenizer | None = None):
  """`tok` (by default byte_level_bpe()) as transformers' tokenizer, end of text its eos and bos."""
  transformers = pytest.importorskip("transformers", reason=INSTALL)
  tok = byte_level_bpe() if tok is None else tok
  return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOT, bos_token=EOT)


@dataclasses.dataclass(frozen=True)
class Arch:
  """A tiny model of one architecture: transformers' config class and the options it is given."""

  config_class: str
  model_class: str  # What its config.json names in 'architectures'.
  options: dict
  vocab_padding: int = 0  # Ids past the tokenizer's (GPT-2's vocabulary is padded).

  def config(self, vocab_size: int):
    transformers = pytest.importorskip("transformers", reason=INSTALL)
    config_class = getattr(transformers, self.config_class)
    return config_class(vocab_size=vocab_size + self.vocab_padding, **self.options)


_LAYERS = dict(
  hidden_size=32,
  intermediate_size=48,
  num_hidden_layers=3,
  num_attention_heads=4,
  num_key_value_heads=2,
  max_position_embeddings=64,
)
# Sized so that every option bites on the tests' 40-token inputs and 30-token generations:
# longer than Llama 3's original context and than the sliding windows, soft caps below the
# scores they cap, head widths other than hidden_size / heads, mixed local and global layers.
ARCHS = {
  "gpt2": Arch(
    "GPT2Config",
    "GPT2LMHeadModel",
    dict(n_positions=64, n_embd=32, n_layer=2, n_head=4),
    vocab_padding=4,
  ),
  "llama_gqa": Arch(
    "LlamaConfig",
    "LlamaForCausalLM",
    dict(_LAYERS, num_hidden_layers=2, tie_word_embeddings=False, rope_theta=500.0),
  ),
  "llama_tied": Arch(
    "LlamaConfig",
    "LlamaForCausalLM",
    dict(
      _LAYERS,
      intermediate_size=40,
      num_hidden_layers=2,
      num_key_value_heads=4,
      tie_word_embeddings=True,
      attention_bias=True,
      mlp_bias=True,
      rms_norm_eps=1e-5,
    ),
  ),
  "llama3": Arch(
    "LlamaConfig",
    "LlamaForCausalLM",
    dict(
      _LAYERS,
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
  ),
  "qwen2": Arch(
    "Qwen2Config", "Qwen2ForCausalLM", dict(_LAYERS, tie_word_embeddings=True, rope_theta=500.0)
  ),
  "qwen3": Arch(  # Layer 0 global, 1 and 2 local.
    "Qwen3Config",
    "Qwen3ForCausalLM",
    dict(_LAYERS, head_dim=12, use_sliding_window=True, sliding_window=6, max_window_layers=1),
  ),
  "mistral": Arch("MistralConfig", "MistralForCausalLM", dict(_LAYERS, sliding_window=6)),
  "gemma2": Arch(  # Layers local, global, local.
    "Gemma2Config",
    "Gemma2ForCausalLM",
    dict(
      _LAYERS,
      head_dim=16,
      query_pre_attn_scalar=12,
      attn_logit_softcapping=5.0,
      final_logit_softcapping=8.0,
      sliding_window=5,
    ),
  ),
  "gemma3": Arch(  # Layers local, local, global.
    "Gemma3TextConfig",
    "Gemma3ForCausalLM",
    dict(
      _LAYERS,
      head_dim=16,
      query_pre_attn_scalar=16,
      sliding_window=5,
      sliding_window_pattern=3,
      rope_parameters={
        "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 50.0},
      },
    ),
  ),
}


def save_model(arch: str, path, fast, seed: int) -> str:
  """A random model of ARCHS[arch] for the tokenizer `fast`, saved with it by save_pretrained.

  Its weights are drawn from `seed`, wide (initializer_range 0.3), and norm scales and biases
  moved off their initial 1 and 0, so that logits lie far from uniform and tell models apart.
  """
  torch = pytest.importorskip("torch", reason=INSTALL)
  transformers = pytest.importorskip("transformers", reason=INSTALL)
  torch.manual_seed(seed)
  config = ARCHS[arch].config(len(fast))
  config.update({"initializer_range": 0.3, "bos_token_id": 0, "eos_token_id": 0})
  model = transformers.AutoModelForCausalLM.from_config(config)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn_like(p))
  model.save_pretrained(str(path))
  fast.save_pretrained(str(path))
  return str(path)


def reference(hf_dir, dtype="float32"):
  """The model in `hf_dir` as transformers loads it, eager attention (dtype: torch's name)."""
  torch = pytest.importorskip("torch", reason=INSTALL)
  transformers = pytest.importorskip("transformers", reason=INSTALL)
  dtype = dtype if dtype == "auto" else getattr(torch, dtype)
  return transformers.AutoModelForCausalLM.from_pretrained(
    hf_dir, dtype=dtype, attn_implementation="eager"
  ).eval()


def hf_logits(model, ids) -> np.ndarray:
  """A transformers model's logits for `ids`, in float32."""
  torch = pytest.importorskip("torch", reason=INSTALL)
  with torch.no_grad():
    return model(torch.tensor(np.asarray(ids), dtype=torch.long)).logits.float().numpy()


def token_ids(tokenizer, n=40) -> np.ndarray:
  """The first `n` ids of a fixed text (make_text(400, seed=9)) in `tokenizer`, as a batch of 1."""
  ids = tokenizer.encode(make_text(400, seed=9))[None, :n]
  assert ids.shape[1] == n
  return ids


def imported(hf_dir, **model_overrides):
  """(model, params, tokenizer) as lm_jax imports them."""
  config = ml_collections.ConfigDict({**architectures.model_config(hf_dir), **model_overrides})
  tokenizer = hf_tokenizer.load_tokenizer(hf_dir)
  return (
    models.build_model(config, tokenizer.vocab_size),
    weights.load_params(hf_dir, config),
    tokenizer,
  )


def write(path, name, content) -> None:
  """The file `name` in folder `path` (made if missing): `content` as JSON if a dict, else as is."""
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, name), "w") as f:
    f.write(json.dumps(content) if isinstance(content, dict) else content)


CHATML = (
  "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
  "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def chat_model(folder, corpus: list[str]) -> str:
  """A tiny random GPT with a byte-level BPE and a ChatML template, as Hugging Face saves one."""
  tok = byte_level_bpe(corpus, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], vocab_size=400)
  tokenizer = hf_tokenizer.HFTokenizer(json.loads(tok.to_str()), eos_id=0)
  m = ml_collections.ConfigDict(
    {
      "name": "gpt",
      "num_layers": 1,
      "num_heads": 2,
      "d_model": 32,
      "max_len": 64,
      "use_bias": False,
    }
  )
  model = models.build_model(m, tokenizer.vocab_size)
  params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32), deterministic=True)["params"]
  weights.save_model(str(folder), model, params, tokenizer)
  path = os.path.join(folder, "tokenizer_config.json")
  with open(path) as f:
    tokenizer_config = json.load(f)
  with open(path, "w") as f:
    json.dump({**tokenizer_config, "chat_template": CHATML}, f)
  return str(folder)
