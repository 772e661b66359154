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

Each family's keys are one table of `_Key` rows, read one way on import and the other on
export; what does not map key to key (rotations, layer kinds, refusals) stands beside it.
"""

import json
import os
from collections.abc import Callable
from typing import NamedTuple

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


def _no_export(m: dict, why: str):
  raise UserError(
    f"this {m['name']} model has no Hugging Face form: {why}; lm_jax exports the "
    f"architectures it imports ({', '.join(SUPPORTED)})."
  )


# The tables: each row one lm_jax key and the config.json key that holds it.


class _Key(NamedTuple):
  ours: str
  theirs: str
  default: object = None  # Where config.json leaves the key out; None: it may not.
  read: Callable = lambda x, h: x  # (config.json's value, config.json) -> ours.
  write: Callable = lambda x, m: x  # (ours, the model keys) -> config.json's value.


def _read(keys: tuple, h: dict) -> dict:
  """lm_jax keys from config.json `h`, by a table."""
  get = lambda k: h[k.theirs] if k.default is None else h.get(k.theirs, k.default)
  return {k.ours: k.read(get(k), h) for k in keys}


def _write(keys: tuple, m: dict) -> dict:
  """config.json keys from lm_jax model keys `m`, by a table."""
  return {k.theirs: k.write(m[k.ours], m) for k in keys}


_as_bool = lambda x, h: bool(x)
_no_dropout = lambda x, h: 0.0  # An imported model trains without dropout until a run sets one.
_off_is_none = lambda x, m: x or None  # lm_jax's 0 (no window, no cap) is transformers' None.
_width = lambda x, m: x or m["head_dim"] or m["d_model"] // m["num_heads"]  # 0: the head width.
_cap = lambda x, h: float(x or 0.0)  # A soft cap of None is none: 0.


def _head_dim(h: dict) -> int:
  """head_dim, 0 where it is hidden_size / num_attention_heads (lm_jax's default)."""
  D, H, K = h["hidden_size"], h["num_attention_heads"], h.get("head_dim")
  return 0 if not K or (D % H == 0 and K == D // H) else K


_GPT2 = (
  _Key("num_layers", "n_layer"),
  _Key("num_heads", "n_head"),
  _Key("d_model", "n_embd"),
  _Key("max_len", "n_positions"),
  _Key("norm_eps", "layer_norm_epsilon", 1e-5),
  *(_Key("dropout", k, 0.0, _no_dropout) for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop")),
)
_DECODER = (  # The keys Llama's and Gemma's configs share.
  _Key("num_layers", "num_hidden_layers"),
  _Key("num_heads", "num_attention_heads"),
  _Key("num_kv_heads", "num_key_value_heads", 0, lambda x, h: x or h["num_attention_heads"]),
  _Key("head_dim", "head_dim", 0, lambda x, h: _head_dim(h), _width),
  _Key("d_model", "hidden_size"),
  _Key("mlp_dim", "intermediate_size"),
  _Key("norm_eps", "rms_norm_eps", 1e-6),
  _Key("dropout", "attention_dropout", 0.0, _no_dropout),
)
_LLAMA = _DECODER + (
  _Key("max_len", "max_position_embeddings", 2048),
  _Key("tie_embeddings", "tie_word_embeddings", False, _as_bool),
)
_WINDOW = _Key("sliding_window", "sliding_window", 0, lambda x, h: x or 0, _off_is_none)
_ATTENTION_BIAS = _Key("attention_bias", "attention_bias", False, _as_bool)
_LLAMA_ARCHS = {  # The keys each architecture's config.json adds (Qwen's windows: below).
  "LlamaForCausalLM": (_ATTENTION_BIAS, _Key("mlp_bias", "mlp_bias", False, _as_bool)),
  "MistralForCausalLM": (_WINDOW,),
  "Qwen2ForCausalLM": (),  # qkv_bias, fixed by the architecture.
  "Qwen3ForCausalLM": (_ATTENTION_BIAS,),
}
_GEMMA = _DECODER + (
  _Key("max_len", "max_position_embeddings", 8192),
  _Key("tie_embeddings", "tie_word_embeddings", True, _as_bool),
  _Key("query_pre_attn_scalar", "query_pre_attn_scalar", 256, lambda x, h: int(x), _width),
  _Key("attn_softcap", "attn_logit_softcapping", 0.0, _cap, _off_is_none),
  _Key("final_softcap", "final_logit_softcapping", 0.0, _cap, _off_is_none),
  _WINDOW,
)
_ROPE_KEYS = (  # (ours, the key in config.json's rope dict, the types using it, ours where unused)
  ("rope_factor", "factor", ("linear", "llama3"), 1.0),
  ("rope_low_freq_factor", "low_freq_factor", ("llama3",), 1.0),
  ("rope_high_freq_factor", "high_freq_factor", ("llama3",), 4.0),
  ("rope_original_max_len", "original_max_position_embeddings", ("llama3",), 8192),
)
_KINDS = {"sliding_attention": "l", "full_attention": "g"}  # layer_types <-> layer_pattern.


# The special cases, each direction beside the other.


def _rope(h: dict, rope: dict | None, theta: float, refuse, types: tuple) -> dict:
  """lm_jax rope keys of one rotation, read as transformers 5 standardizes them."""
  rope = dict(rope or {})
  kind = rope.get("rope_type", rope.get("type", "default"))
  if kind not in types:
    refuse(f"RoPE type {kind!r}")
  partial = rope.get("partial_rotary_factor", h.get("partial_rotary_factor", 1.0))
  if partial not in (None, 1, 1.0):
    refuse(f"partial_rotary_factor={partial}")
  original = "original_max_position_embeddings"
  if kind == "llama3":  # Outside the dict, it takes priority; without either, the context.
    rope[original] = h.get(original) or rope.get(original) or h["max_position_embeddings"]
  keys = {ours: unused for ours, _, used, unused in _ROPE_KEYS if set(used) & set(types)}
  keys.update(rope_base=float(rope.get("rope_theta", theta)), rope_type=kind)
  for ours, theirs, used, unused in _ROPE_KEYS:
    if kind in used:
      if theirs not in rope:
        raise UserError(
          f"the config.json's RoPE settings of type {kind!r} lack {theirs!r}: save the model "
          "again with transformers, which fills them in."
        )
      keys[ours] = type(unused)(rope[theirs])
  return keys


def _rope_parameters(m: dict) -> dict:
  keys = [(ours, theirs) for ours, theirs, used, _ in _ROPE_KEYS if m["rope_type"] in used]
  return {"rope_type": m["rope_type"], "rope_theta": m["rope_base"], **{t: m[o] for o, t in keys}}


def _pattern(types: list, refuse) -> str:
  """The shortest layer_pattern that repeats into `layer_types`."""
  if set(types) - set(_KINDS):
    refuse(f"layer_types {sorted(set(types) - set(_KINDS))}")
  full = "".join(_KINDS[t] for t in types)
  period = next(p for p in range(1, len(full) + 1) if (full[:p] * len(full)).startswith(full))
  return full[:period]


def _layer_types(m: dict) -> list[str]:
  names = {letter: t for t, letter in _KINDS.items()}
  p = m["layer_pattern"] if m["sliding_window"] else "g"
  return [names[p[i % len(p)]] for i in range(m["num_layers"])]


def _qwen_windows(h: dict, refuse) -> dict:
  """Qwen's window covers only the layers `layer_types` (or max_window_layers) names, and only
  with use_sliding_window."""
  window = h.get("sliding_window") or 0
  if not window or not h.get("use_sliding_window", False):
    return {}
  n, first = h["num_hidden_layers"], h.get("max_window_layers", 28)
  types = h.get("layer_types") or ["full_attention"] * first + ["sliding_attention"] * (n - first)
  pattern = _pattern(types, refuse)
  return {"sliding_window": window, "layer_pattern": pattern} if "l" in pattern else {}


def _qwen_window_keys(m: dict) -> dict:
  window = {"use_sliding_window": bool(m["sliding_window"]), **_write((_WINDOW,), m)}
  return {**window, "max_window_layers": m["num_layers"], "layer_types": _layer_types(m)}


def _header(arch: str, m: dict) -> dict:
  model_type = next(t for t, a in _MODEL_TYPES.items() if a == arch)
  return {"architectures": [arch], "model_type": model_type, "vocab_size": m["vocab_size"]}


# Each family: config.json -> lm_jax model keys, then back.

_GELU = {"tanh": "gelu_new", "exact": "gelu"}  # lm_jax's gelu -> the activation_function written.
_GPT2_FIXED = {  # What lm_jax's gpt computes, and config.json may only confirm.
  "scale_attn_weights": True,
  "scale_attn_by_inverse_layer_idx": False,
  "add_cross_attention": False,
  "tie_word_embeddings": True,
}


def _gpt2_model(h: dict, refuse) -> dict:
  act = h.get("activation_function", "gelu_new")
  gelu = {**{v: k for k, v in _GELU.items()}, "gelu_pytorch_tanh": "tanh"}.get(act)
  if gelu is None:
    refuse(f"activation_function={act!r}")
  if h.get("n_inner") not in (None, 4 * h["n_embd"]):
    refuse(f"n_inner={h['n_inner']}")
  for key, ok in _GPT2_FIXED.items():
    if h.get(key, ok) != ok:
      refuse(f"{key}={h[key]}")
  return {"name": "gpt", **_read(_GPT2, h), "use_bias": True, "gelu": gelu}


def _gpt2_config(m: dict) -> dict:
  fixed = {"n_inner": None, "activation_function": _GELU[m["gelu"]], "tie_word_embeddings": True}
  return {**_header("GPT2LMHeadModel", m), **_write(_GPT2, m), **fixed}


def _llama_model(h: dict, arch: str, refuse) -> dict:
  if h.get("hidden_act", "silu") != "silu":
    refuse(f"hidden_act={h['hidden_act']!r}")
  if _head_dim(h) % 2 or not h.get("head_dim") and h["hidden_size"] % h["num_attention_heads"]:
    refuse(f"head_dim={h.get('head_dim')} with hidden_size={h['hidden_size']}")
  rope = h.get("rope_scaling") or h.get("rope_parameters")  # transformers 5's priority.
  model = {
    "name": "llama",
    **_read(_LLAMA, h),
    **_rope(h, rope, h.get("rope_theta", 10000.0), refuse, ("default", "linear", "llama3")),
    "attention_bias": False,
    "qkv_bias": arch == "Qwen2ForCausalLM",  # Qwen2 always has them, and no output bias.
    "mlp_bias": False,
    "qk_norm": arch == "Qwen3ForCausalLM",
    "sliding_window": 0,
    "layer_pattern": "l",
    **_read(_LLAMA_ARCHS[arch], h),
  }
  if arch == "MistralForCausalLM":  # Read as Llama's, though transformers' Mistral has none.
    model["attention_bias"] = bool(h.get("attention_bias", False))
  if arch.startswith("Qwen"):
    model.update(_qwen_windows(h, refuse))
  return model


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
    **_header(arch, m),
    **_write(_LLAMA, m),
    "rope_parameters": _rope_parameters(m),
    "rope_theta": m["rope_base"],  # transformers before 5 reads it here...
    "hidden_act": "silu",
    **_write(_LLAMA_ARCHS[arch], m),
  }
  if m["rope_type"] != "default":
    h["rope_scaling"] = h["rope_parameters"]  # ...and the scaling here.
  if arch.startswith("Qwen"):
    h.update(_qwen_window_keys(m))
  return h


def _gemma_model(h: dict, arch: str, refuse) -> dict:
  act = h.get("hidden_activation") or h.get("hidden_act", "gelu_pytorch_tanh")
  if act not in ("gelu_pytorch_tanh", "gelu_new"):
    refuse(f"hidden_activation={act!r}")
  for key in ("attention_bias", "use_bidirectional_attention"):
    if h.get(key):
      refuse(f"{key}={h[key]}")
  gemma3 = arch == "Gemma3ForCausalLM"
  rope, local = h.get("rope_scaling") or h.get("rope_parameters"), {"rope_base": 0.0}
  if gemma3:  # Global and local rotations, as Gemma3TextConfig standardizes them.
    nested = h.get("rope_parameters") or {}
    rope = {**(nested.get("full_attention") or {}), **(h.get("rope_scaling") or {})}
    local_theta = h.get("rope_local_base_freq", 1e4)
    local = _rope(h, nested.get("sliding_attention"), local_theta, refuse, ("default",))
  theta = h.get("rope_theta", 1e6 if gemma3 else 1e4)
  model = {
    "name": "gemma",
    **_read(_GEMMA, h),
    **_rope(h, rope, theta, refuse, ("default", "linear")),
    "rope_local_base": local["rope_base"],
    "qk_norm": gemma3,
  }
  if gemma3:  # Its attention reads no attn_logit_softcapping in transformers, whatever it says.
    model["attn_softcap"] = 0.0
  n = h["num_hidden_layers"]  # Without layer_types, the configs' own default pattern:
  period = h.get("sliding_window_pattern", 6) if gemma3 else 2
  default_types = ["sliding_attention" if (i + 1) % period else "full_attention" for i in range(n)]
  model["layer_pattern"] = _pattern(h.get("layer_types") or default_types, refuse)
  return model


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
    **_header("Gemma3ForCausalLM" if gemma3 else "Gemma2ForCausalLM", m),
    **_write(_GEMMA, m),
    "hidden_activation": "gelu_pytorch_tanh",
    "attention_bias": False,
    "layer_types": _layer_types(m),
  }
  if gemma3:
    local = {"rope_type": "default", "rope_theta": m["rope_local_base"]} if local_differs else rope
    h["rope_parameters"] = {"full_attention": rope, "sliding_attention": local}
  else:
    h.update(rope_parameters=rope, rope_theta=m["rope_base"])
  return h


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


def hf_config(m: dict, eos_id: int | None, dtype: str = "float32") -> dict:
  """The config.json of lm_jax model keys `m` (with vocab_size), for export."""
  config = {"llama": _llama_config, "gemma": _gemma_config}.get(m["name"], _gpt2_config)(m)
  return {**config, "bos_token_id": eos_id, "eos_token_id": eos_id, "dtype": dtype}
