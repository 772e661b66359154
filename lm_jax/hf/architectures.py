"""Hugging Face `config.json` <-> lm_jax `config.model`: the architectures lm_jax imports exactly.

Each architecture maps onto an lm_jax model with options; anything else is refused, never
converted approximately:

  GPT2LMHeadModel     -> gpt    (Conv1D weights, biases, learned positions, tied head)
  LlamaForCausalLM    -> llama  (RMSNorm, RoPE default, linear or llama3, grouped-query attention)
  MistralForCausalLM  -> llama  with sliding_window over every layer
  Qwen2ForCausalLM    -> llama  with qkv_bias (and sliding layers where use_sliding_window)
  Qwen3ForCausalLM    -> llama  with qk_norm and its own head_dim
  Gemma2ForCausalLM   -> gemma  (local and global layers, soft caps)
  Gemma3ForCausalLM   -> gemma  with qk_norm and rope_local_base (Gemma 3's text model)

Models of other names that declare one of these (SmolLM, TinyLlama, DeepSeek-R1-Distill-Qwen:
LlamaForCausalLM or Qwen2ForCausalLM) import as that one.
"""

import json
import os

from lm_jax import UserError

_ROPE = "RoPE default, linear or llama3"
SUPPORTED = {
  "GPT2LMHeadModel": "gpt2 with activation gelu_new or gelu, a 4 x n_embd MLP and a tied head",
  "LlamaForCausalLM": f"llama with silu and {_ROPE}",
  "MistralForCausalLM": f"mistral with silu, {_ROPE} and a sliding window or none",
  "Qwen2ForCausalLM": f"qwen2 with silu and {_ROPE}",
  "Qwen3ForCausalLM": f"qwen3 with silu and {_ROPE}",
  "Gemma2ForCausalLM": "gemma2 with gelu_pytorch_tanh, causal attention and RoPE default or linear",
  "Gemma3ForCausalLM": "gemma3_text with gelu_pytorch_tanh, causal attention, RoPE default or "
  "linear on global layers and default on local ones",
}
_MODEL_TYPES = {
  "gpt2": "GPT2LMHeadModel",
  "llama": "LlamaForCausalLM",
  "mistral": "MistralForCausalLM",
  "qwen2": "Qwen2ForCausalLM",
  "qwen3": "Qwen3ForCausalLM",
  "gemma2": "Gemma2ForCausalLM",
  "gemma3_text": "Gemma3ForCausalLM",
}
_ROPE_DEFAULTS = {  # Llama's rope keys where the type leaves them unused.
  "rope_factor": 1.0,
  "rope_low_freq_factor": 1.0,
  "rope_high_freq_factor": 4.0,
  "rope_original_max_len": 8192,
}


def read_json(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except ValueError as e:
    raise UserError(f"{path} is not JSON ({e}): is the directory whole?") from e


def read_config(hf_dir: str) -> dict:
  """The `config.json` of a local Hugging Face model directory."""
  if not os.path.isdir(hf_dir):
    raise UserError(
      f"no directory at {hf_dir}: pass a local Hugging Face model directory "
      "(config.json and model.safetensors, as save_pretrained writes them)."
    )
  path = os.path.join(hf_dir, "config.json")
  if not os.path.exists(path):
    raise UserError(
      f"{hf_dir} holds no config.json: pass a Hugging Face model directory, "
      "as save_pretrained writes it."
    )
  if os.path.isdir(os.path.join(hf_dir, "checkpoints")):
    raise UserError(
      f"{hf_dir} is an lm_jax training run, not a Hugging Face model directory: use it as it "
      "is (--workdir, train.init_from), or export it first with scripts/export_hf.py."
    )
  return read_json(path)


def _architecture(h: dict, where: str) -> str:
  arch = (h.get("architectures") or [_MODEL_TYPES.get(h.get("model_type"), h.get("model_type"))])[0]
  if arch not in SUPPORTED:
    raise UserError(
      f"{where} holds a {arch} model, which lm_jax does not import: it supports "
      f"{', '.join(SUPPORTED)}."
    )
  return arch


def refuse_option(where: str, arch: str, option: str):
  raise UserError(
    f"{where} sets {option}, which lm_jax does not implement: it imports {SUPPORTED[arch]}."
  )


def _gpt2_model(h: dict, refuse) -> dict:
  act = h.get("activation_function", "gelu_new")
  gelu = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "exact"}.get(act)
  if gelu is None:
    refuse(f"activation_function={act!r}")
  if h.get("n_inner") not in (None, 4 * h["n_embd"]):
    refuse(f"n_inner={h['n_inner']}")
  for key, ok in (
    ("scale_attn_weights", True),
    ("scale_attn_by_inverse_layer_idx", False),
    ("add_cross_attention", False),
    ("tie_word_embeddings", True),
  ):
    if h.get(key, ok) != ok:
      refuse(f"{key}={h[key]}")
  return {
    "name": "gpt",
    "num_layers": h["n_layer"],
    "num_heads": h["n_head"],
    "d_model": h["n_embd"],
    "max_len": h["n_positions"],
    "dropout": 0.0,
    "use_bias": True,
    "gelu": gelu,
    "norm_eps": h.get("layer_norm_epsilon", 1e-5),
  }


def _rope(h: dict, rope: dict | None, theta: float, refuse, types=("default", "linear", "llama3")):
  """lm_jax rope keys of one rotation, read as transformers 5 standardizes them."""
  rope = rope or {}
  kind = rope.get("rope_type", rope.get("type", "default"))
  if kind not in types:
    refuse(f"RoPE type {kind!r}")
  partial = rope.get("partial_rotary_factor", h.get("partial_rotary_factor", 1.0))
  if partial not in (None, 1, 1.0):
    refuse(f"partial_rotary_factor={partial}")

  def get(key):
    if key not in rope:
      raise UserError(
        f"the config.json's RoPE settings of type {kind!r} lack {key!r}: save the model "
        "again with transformers, which fills them in."
      )
    return float(rope[key])

  keys = {"rope_base": float(rope.get("rope_theta", theta)), "rope_type": kind}
  if kind != "default":
    keys["rope_factor"] = get("factor")
  if kind == "llama3":
    keys["rope_low_freq_factor"] = get("low_freq_factor")
    keys["rope_high_freq_factor"] = get("high_freq_factor")
    original = h.get("original_max_position_embeddings")  # Outside the dict, it takes priority.
    original = original or rope.get("original_max_position_embeddings")
    keys["rope_original_max_len"] = int(original or h["max_position_embeddings"])
  return keys


def _pattern(types: list, refuse) -> str:
  """The shortest layer_pattern that repeats into `layer_types`."""
  kinds = {"sliding_attention": "l", "full_attention": "g"}
  if set(types) - set(kinds):
    refuse(f"layer_types {sorted(set(types) - set(kinds))}")
  full = "".join(kinds[t] for t in types)
  period = next(
    p for p in range(1, len(full) + 1) if all(c == full[i % p] for i, c in enumerate(full))
  )
  return full[:period]


def _head_dim(h: dict) -> int:
  """head_dim, 0 where it is hidden_size / num_attention_heads (lm_jax's default)."""
  D, H, K = h["hidden_size"], h["num_attention_heads"], h.get("head_dim")
  return 0 if not K or (D % H == 0 and K == D // H) else K


def _windows(h: dict, arch: str, refuse) -> dict:
  """sliding_window and layer_pattern: Mistral's window covers every layer; Qwen's only the
  layers `layer_types` (or max_window_layers) names, and only with use_sliding_window."""
  window = h.get("sliding_window") or 0
  if arch == "MistralForCausalLM":
    return {"sliding_window": window, "layer_pattern": "l"}
  if arch == "LlamaForCausalLM" or not window or not h.get("use_sliding_window", False):
    return {"sliding_window": 0, "layer_pattern": "l"}
  n, first = h["num_hidden_layers"], h.get("max_window_layers", 28)
  types = h.get("layer_types") or ["full_attention"] * first + ["sliding_attention"] * (n - first)
  pattern = _pattern(types, refuse)
  if "l" not in pattern:
    return {"sliding_window": 0, "layer_pattern": "l"}
  return {"sliding_window": window, "layer_pattern": "l" if pattern == "l" else pattern}


def _llama_model(h: dict, arch: str, refuse) -> dict:
  if h.get("hidden_act", "silu") != "silu":
    refuse(f"hidden_act={h['hidden_act']!r}")
  if _head_dim(h) % 2 or not h.get("head_dim") and h["hidden_size"] % h["num_attention_heads"]:
    refuse(f"head_dim={h.get('head_dim')} with hidden_size={h['hidden_size']}")
  rope = h.get("rope_scaling") or h.get("rope_parameters")  # transformers 5's priority.
  qwen2, qwen3 = arch == "Qwen2ForCausalLM", arch == "Qwen3ForCausalLM"
  return {
    "name": "llama",
    "num_layers": h["num_hidden_layers"],
    "num_heads": h["num_attention_heads"],
    "num_kv_heads": h.get("num_key_value_heads") or h["num_attention_heads"],
    "head_dim": _head_dim(h),
    "d_model": h["hidden_size"],
    "max_len": h.get("max_position_embeddings", 2048),
    "mlp_dim": h["intermediate_size"],
    "dropout": 0.0,
    "tie_embeddings": bool(h.get("tie_word_embeddings", False)),
    **_ROPE_DEFAULTS,
    **_rope(h, rope, h.get("rope_theta", 10000.0), refuse),
    "norm_eps": h.get("rms_norm_eps", 1e-6),
    "attention_bias": bool(h.get("attention_bias", False)) and not qwen2,
    "qkv_bias": qwen2,  # Qwen2 always has them, and no output bias.
    "mlp_bias": bool(h.get("mlp_bias", False)) and arch == "LlamaForCausalLM",
    "qk_norm": qwen3,
    **_windows(h, arch, refuse),
  }


def _gemma_model(h: dict, arch: str, refuse) -> dict:
  act = h.get("hidden_activation") or h.get("hidden_act", "gelu_pytorch_tanh")
  if act not in ("gelu_pytorch_tanh", "gelu_new"):
    refuse(f"hidden_activation={act!r}")
  for key in ("attention_bias", "use_bidirectional_attention"):
    if h.get(key):
      refuse(f"{key}={h[key]}")
  gemma3 = arch == "Gemma3ForCausalLM"
  rope, local = h.get("rope_scaling") or h.get("rope_parameters"), None
  if gemma3:  # Global and local rotations, as Gemma3TextConfig standardizes them.
    nested = h.get("rope_parameters") or {}
    rope = {**(nested.get("full_attention") or {}), **(h.get("rope_scaling") or {})}
    local_theta = h.get("rope_local_base_freq", 1e4)
    local = _rope(h, nested.get("sliding_attention"), local_theta, refuse, ("default",))
  theta = h.get("rope_theta", 1e6 if gemma3 else 1e4)
  global_rope = _rope(h, rope, theta, refuse, ("default", "linear"))
  window = h.get("sliding_window") or 0
  n = h["num_hidden_layers"]  # Without layer_types, the configs' own default pattern:
  period = h.get("sliding_window_pattern", 6) if gemma3 else 2
  default_types = ["sliding_attention" if (i + 1) % period else "full_attention" for i in range(n)]
  return {
    "name": "gemma",
    "num_layers": n,
    "num_heads": h["num_attention_heads"],
    "num_kv_heads": h.get("num_key_value_heads") or h["num_attention_heads"],
    "head_dim": _head_dim(h),
    "d_model": h["hidden_size"],
    "max_len": h.get("max_position_embeddings", 8192),
    "mlp_dim": h["intermediate_size"],
    "dropout": 0.0,
    "tie_embeddings": bool(h.get("tie_word_embeddings", True)),
    "rope_factor": 1.0,
    **global_rope,
    "rope_local_base": local["rope_base"] if local else 0.0,
    "norm_eps": h.get("rms_norm_eps", 1e-6),
    "query_pre_attn_scalar": int(h.get("query_pre_attn_scalar", 256)),
    # Gemma 3's attention reads no attn_logit_softcapping in transformers, whatever it says.
    "attn_softcap": 0.0 if gemma3 else float(h.get("attn_logit_softcapping") or 0.0),
    "final_softcap": float(h.get("final_logit_softcapping") or 0.0),
    "qk_norm": gemma3,
    "sliding_window": window,
    "layer_pattern": _pattern(h.get("layer_types") or default_types, refuse),
  }


def describe(hf_dir: str) -> tuple[dict, str, dict]:
  """(config.json, architecture, the lm_jax model keys that define the function)."""
  h = read_config(hf_dir)
  arch = _architecture(h, hf_dir)
  refuse = lambda option: refuse_option(hf_dir, arch, option)
  if arch == "GPT2LMHeadModel":
    return h, arch, _gpt2_model(h, refuse)
  if arch.startswith("Gemma"):
    return h, arch, _gemma_model(h, arch, refuse)
  return h, arch, _llama_model(h, arch, refuse)


def model_config(hf_dir: str) -> dict:
  """The lm_jax `config.model` section (every key) of the model in `hf_dir`."""
  return {
    **describe(hf_dir)[2],
    "dtype": "float32",
    "param_dtype": "float32",
    "remat": "none",
    "scan_layers": False,
  }


# Export: lm_jax model keys -> the config.json of the architecture that computes the same.


def _rope_parameters(m: dict, prefix: str = "rope_") -> dict:
  rope = {"rope_type": m[prefix + "type"], "rope_theta": m[prefix + "base"]}
  if rope["rope_type"] != "default":
    rope["factor"] = m[prefix + "factor"]
  if rope["rope_type"] == "llama3":
    rope.update(
      low_freq_factor=m["rope_low_freq_factor"],
      high_freq_factor=m["rope_high_freq_factor"],
      original_max_position_embeddings=m["rope_original_max_len"],
    )
  return rope


def _layer_types(m: dict) -> list[str]:
  kinds = {"l": "sliding_attention", "g": "full_attention"}
  if not m["sliding_window"]:
    return [kinds["g"]] * m["num_layers"]
  p = m["layer_pattern"]
  return [kinds[p[i % len(p)]] for i in range(m["num_layers"])]


def _no_export(m: dict, why: str):
  raise UserError(
    f"this {m['name']} model has no Hugging Face form: {why}; lm_jax exports the "
    f"architectures it imports ({', '.join(SUPPORTED)})."
  )


def _llama_arch(m: dict) -> str:
  """The Hugging Face architecture computing what these llama options do, or a refusal."""
  types = set(_layer_types(m))
  if m["qk_norm"]:
    if m["qkv_bias"] and not m["attention_bias"] or m["mlp_bias"]:
      _no_export(m, "Qwen3 (qk_norm) has biases on all four attention projections or none")
    return "Qwen3ForCausalLM"
  if m["qkv_bias"] and not m["attention_bias"]:
    if m["mlp_bias"]:
      _no_export(m, "Qwen2 (qkv_bias) has no MLP biases")
    return "Qwen2ForCausalLM"
  if "sliding_attention" in types:
    if types != {"sliding_attention"}:
      _no_export(m, "local and global layers without qkv_bias or qk_norm match no architecture")
    if m["attention_bias"] or m["mlp_bias"]:
      _no_export(m, "Mistral (a sliding window) has no biases")
    return "MistralForCausalLM"
  return "LlamaForCausalLM"


def _llama_config(m: dict) -> dict:
  arch = _llama_arch(m)
  h = {
    "architectures": [arch],
    "model_type": {v: k for k, v in _MODEL_TYPES.items()}[arch],
    "vocab_size": m["vocab_size"],
    "hidden_size": m["d_model"],
    "intermediate_size": m["mlp_dim"],
    "num_hidden_layers": m["num_layers"],
    "num_attention_heads": m["num_heads"],
    "num_key_value_heads": m["num_kv_heads"],
    "head_dim": m["head_dim"] or m["d_model"] // m["num_heads"],
    "max_position_embeddings": m["max_len"],
    "rms_norm_eps": m["norm_eps"],
    "rope_parameters": _rope_parameters(m),
    "rope_theta": m["rope_base"],  # transformers before 5 reads it here...
    "hidden_act": "silu",
    "tie_word_embeddings": m["tie_embeddings"],
    "attention_dropout": m["dropout"],
  }
  if m["rope_type"] != "default":
    h["rope_scaling"] = h["rope_parameters"]  # ...and the scaling here.
  if arch in ("LlamaForCausalLM", "Qwen3ForCausalLM"):
    h["attention_bias"] = m["attention_bias"]
  if arch == "LlamaForCausalLM":
    h["mlp_bias"] = m["mlp_bias"]
  if arch == "MistralForCausalLM":
    h["sliding_window"] = m["sliding_window"] or None
  if arch.startswith("Qwen"):
    h.update(
      use_sliding_window=bool(m["sliding_window"]),
      sliding_window=m["sliding_window"] or None,
      max_window_layers=m["num_layers"],
      layer_types=_layer_types(m),
    )
  return h


def _gemma_config(m: dict) -> dict:
  local_differs = m["rope_local_base"] and (
    m["rope_local_base"] != m["rope_base"] or m["rope_type"] != "default"
  )
  if m["qk_norm"] and m["attn_softcap"]:
    _no_export(m, "Gemma 3 (qk_norm) caps no attention scores (set attn_softcap=0)")
  if not m["qk_norm"] and local_differs:
    _no_export(m, "Gemma 2 has one rotation for every layer (a rope_local_base needs qk_norm)")
  if local_differs and not m["sliding_window"]:
    _no_export(m, "a rope_local_base needs local layers (a sliding_window)")
  gemma3 = m["qk_norm"]
  rope = _rope_parameters(m)
  h = {
    "architectures": ["Gemma3ForCausalLM" if gemma3 else "Gemma2ForCausalLM"],
    "model_type": "gemma3_text" if gemma3 else "gemma2",
    "vocab_size": m["vocab_size"],
    "hidden_size": m["d_model"],
    "intermediate_size": m["mlp_dim"],
    "num_hidden_layers": m["num_layers"],
    "num_attention_heads": m["num_heads"],
    "num_key_value_heads": m["num_kv_heads"],
    "head_dim": m["head_dim"] or m["d_model"] // m["num_heads"],
    "max_position_embeddings": m["max_len"],
    "rms_norm_eps": m["norm_eps"],
    "hidden_activation": "gelu_pytorch_tanh",
    "tie_word_embeddings": m["tie_embeddings"],
    "attention_bias": False,
    "attention_dropout": m["dropout"],
    "query_pre_attn_scalar": m["query_pre_attn_scalar"]
    or m["head_dim"]
    or m["d_model"] // m["num_heads"],
    "attn_logit_softcapping": m["attn_softcap"] or None,
    "final_logit_softcapping": m["final_softcap"] or None,
    "sliding_window": m["sliding_window"] or None,
    "layer_types": _layer_types(m),
  }
  if gemma3:
    local = {"rope_type": "default", "rope_theta": m["rope_local_base"]} if local_differs else rope
    h["rope_parameters"] = {"full_attention": rope, "sliding_attention": local}
  else:
    h.update(rope_parameters=rope, rope_theta=m["rope_base"])
  return h


def hf_config(m: dict, eos_id: int | None, dtype: str = "float32") -> dict:
  """The config.json of lm_jax model keys `m` (with vocab_size), for export."""
  ids = {"bos_token_id": eos_id, "eos_token_id": eos_id, "dtype": dtype}
  if m["name"] == "llama":
    return {**_llama_config(m), **ids}
  if m["name"] == "gemma":
    return {**_gemma_config(m), **ids}
  return {
    "architectures": ["GPT2LMHeadModel"],
    "model_type": "gpt2",
    "vocab_size": m["vocab_size"],
    "n_positions": m["max_len"],
    "n_embd": m["d_model"],
    "n_layer": m["num_layers"],
    "n_head": m["num_heads"],
    "n_inner": None,
    "activation_function": {"tanh": "gelu_new", "exact": "gelu"}[m["gelu"]],
    "layer_norm_epsilon": m["norm_eps"],
    "resid_pdrop": m["dropout"],
    "embd_pdrop": m["dropout"],
    "attn_pdrop": m["dropout"],
    "tie_word_embeddings": True,
    **ids,
  }
