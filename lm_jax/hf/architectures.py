"""Hugging Face `config.json` <-> lm_jax `config.model`: the architectures lm_jax imports exactly.

Two architectures map exactly onto lm_jax models; anything else is refused, never converted
approximately:

  GPT2LMHeadModel   -> gpt    (Conv1D weights, biases, learned positions, tied head)
  LlamaForCausalLM  -> llama  (RMSNorm, RoPE, grouped-query attention, tied or not)
"""

import json
import os

from lm_jax import UserError

SUPPORTED = {
  "GPT2LMHeadModel": "gpt2 with activation gelu_new or gelu, a 4 x n_embd MLP and a tied head",
  "LlamaForCausalLM": "llama with silu, head_dim = hidden_size / num_attention_heads and "
  "default RoPE (no rope_scaling)",
}


_MODEL_TYPES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}


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


def _gpt2_model(h: dict, where: str) -> dict:
  refuse = lambda option: refuse_option(where, "GPT2LMHeadModel", option)
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


def _rope_base(h: dict, refuse) -> float:
  """rope_theta, from transformers 5's rope_parameters or earlier versions' keys."""
  ropes = [r for r in (h.get("rope_parameters"), h.get("rope_scaling")) if r]
  for rope in ropes:
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default":
      refuse(f"RoPE type {kind!r}")
  thetas = [r["rope_theta"] for r in ropes if "rope_theta" in r]
  return float(thetas[0] if thetas else h.get("rope_theta", 10000.0))


def _llama_model(h: dict, where: str) -> dict:
  refuse = lambda option: refuse_option(where, "LlamaForCausalLM", option)
  D, H = h["hidden_size"], h["num_attention_heads"]
  if h.get("hidden_act", "silu") != "silu":
    refuse(f"hidden_act={h['hidden_act']!r}")
  if D % H or h.get("head_dim") not in (None, D // H):
    refuse(f"head_dim={h.get('head_dim')} with hidden_size={D} and {H} heads")
  return {
    "name": "llama",
    "num_layers": h["num_hidden_layers"],
    "num_heads": H,
    "num_kv_heads": h.get("num_key_value_heads") or H,
    "d_model": D,
    "max_len": h.get("max_position_embeddings", 2048),
    "mlp_dim": h["intermediate_size"],
    "dropout": 0.0,
    "tie_embeddings": bool(h.get("tie_word_embeddings", False)),
    "rope_base": _rope_base(h, refuse),
    "norm_eps": h.get("rms_norm_eps", 1e-6),
    "attention_bias": bool(h.get("attention_bias", False)),
    "mlp_bias": bool(h.get("mlp_bias", False)),
  }


def describe(hf_dir: str) -> tuple[dict, str, dict]:
  """(config.json, architecture, the lm_jax model keys that define the function)."""
  h = read_config(hf_dir)
  arch = _architecture(h, hf_dir)
  model = {"GPT2LMHeadModel": _gpt2_model, "LlamaForCausalLM": _llama_model}[arch](h, hf_dir)
  return h, arch, model


def model_config(hf_dir: str) -> dict:
  """The lm_jax `config.model` section (every key) of the model in `hf_dir`."""
  return {**describe(hf_dir)[2], "dtype": "float32", "remat": "none", "scan_layers": False}


def hf_config(m: dict, eos_id: int | None) -> dict:
  """The config.json of lm_jax model keys `m` (with vocab_size), for export."""
  ids = {"bos_token_id": eos_id, "eos_token_id": eos_id, "dtype": "float32"}
  if m["name"] == "gpt":
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
  rope = {"rope_type": "default", "rope_theta": m["rope_base"]}
  return {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": m["vocab_size"],
    "hidden_size": m["d_model"],
    "intermediate_size": m["mlp_dim"],
    "num_hidden_layers": m["num_layers"],
    "num_attention_heads": m["num_heads"],
    "num_key_value_heads": m["num_kv_heads"],
    "head_dim": m["d_model"] // m["num_heads"],
    "max_position_embeddings": m["max_len"],
    "rms_norm_eps": m["norm_eps"],
    "rope_parameters": rope,
    "rope_theta": m["rope_base"],  # transformers before 5 reads it here.
    "hidden_act": "silu",
    "tie_word_embeddings": m["tie_embeddings"],
    "attention_bias": m["attention_bias"],
    "mlp_bias": m["mlp_bias"],
    "attention_dropout": m["dropout"],
    **ids,
  }
