"""Hugging Face model directories <-> lm_jax model configs, parameters and tokenizers.

The only module that knows Hugging Face's names: `config.json` keys, tensor
names in safetensors files, tokenizer files. Weights are read and written with
the `safetensors` package through NumPy (no torch). Two architectures map
exactly onto lm_jax models; anything else is refused, never converted
approximately:

  GPT2LMHeadModel   -> gpt    (Conv1D weights, biases, learned positions, tied head)
  LlamaForCausalLM  -> llama  (RMSNorm, RoPE, grouped-query attention, tied or not)

Imported parameters are float32, as lm_jax models keep them (bfloat16 and
float16 weights convert exactly); `model.dtype` sets the compute dtype.
"""

import contextlib
import dataclasses
import json
import os
import re
from collections.abc import Callable

import jax
import numpy as np
import safetensors
import safetensors.numpy

from lm_jax import UserError, tokenizers
from lm_jax.models import layers

SUPPORTED = {
  "GPT2LMHeadModel": "gpt2 with activation gelu_new or gelu, a 4 x n_embd MLP and a tied head",
  "LlamaForCausalLM": "llama with silu, head_dim = hidden_size / num_attention_heads and "
  "default RoPE (no rope_scaling)",
}
_MODEL_TYPES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}
_WEIGHTS, _INDEX = "model.safetensors", "model.safetensors.index.json"
# Tensors a checkpoint may hold that carry no parameters: masks, RoPE tables, a tied head.
_IGNORED = {
  "GPT2LMHeadModel": r"(transformer\.)?h\.\d+\.attn\.(masked_)?bias|lm_head\.weight",
  "LlamaForCausalLM": r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq|lm_head\.weight",
}


def _read_json(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


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
  return _read_json(path)


def _architecture(h: dict, where: str) -> str:
  arch = (h.get("architectures") or [_MODEL_TYPES.get(h.get("model_type"), h.get("model_type"))])[0]
  if arch not in SUPPORTED:
    raise UserError(
      f"{where} holds a {arch} model, which lm_jax does not import: it supports "
      f"{', '.join(SUPPORTED)}."
    )
  return arch


def _refuse(where: str, arch: str, option: str):
  raise UserError(
    f"{where} sets {option}, which lm_jax does not implement: it imports {SUPPORTED[arch]}."
  )


def _gpt2_model(h: dict, where: str) -> dict:
  refuse = lambda option: _refuse(where, "GPT2LMHeadModel", option)
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
  refuse = lambda option: _refuse(where, "LlamaForCausalLM", option)
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


def _describe(hf_dir: str) -> tuple[dict, str, dict]:
  """(config.json, architecture, the lm_jax model keys that define the function)."""
  h = read_config(hf_dir)
  arch = _architecture(h, hf_dir)
  model = {"GPT2LMHeadModel": _gpt2_model, "LlamaForCausalLM": _llama_model}[arch](h, hf_dir)
  return h, arch, model


def model_config(hf_dir: str) -> dict:
  """The lm_jax `config.model` section (every key) of the model in `hf_dir`."""
  return {**_describe(hf_dir)[2], "dtype": "float32", "remat": "none", "scan_layers": False}


# Parameters: one entry per lm_jax parameter, naming the Hugging Face tensors it comes from.


@dataclasses.dataclass(frozen=True)
class _Entry:
  ours: str  # 'block_0/attn/qkv/kernel'
  shape: tuple  # Its shape in lm_jax.
  theirs: tuple  # Hugging Face tensor names.
  load: Callable  # Their arrays -> ours.
  save: Callable  # Ours -> their arrays, in the order of `theirs`.


def _reshaped(ours, shape, theirs, their_shape=None):
  """A tensor with the same element order in both (GPT-2's Conv1D weights are in x out)."""
  their_shape = their_shape or shape
  return _Entry(
    ours, shape, (theirs,), lambda w: w.reshape(shape), lambda x: (x.reshape(their_shape),)
  )


def _linear(ours, shape, theirs, n_in):
  """A torch Linear weight (out x in) as a kernel (in..., out...) of `shape`."""
  return _Entry(
    ours, shape, (theirs,), lambda w: w.T.reshape(shape), lambda x: (x.reshape(n_in, -1).T,)
  )


def _stacked(ours, shape, theirs, axis, linear):
  """Several tensors stacked along `axis` (k and v; gate and up), transposed if `linear`."""
  part = shape[:axis] + shape[axis + 1 :]
  if linear:
    load_one, save_one = lambda w: w.T.reshape(part), lambda p: p.reshape(shape[0], -1).T
  else:
    load_one, save_one = lambda w: w.reshape(part), lambda p: p.reshape(-1)
  return _Entry(
    ours,
    shape,
    tuple(theirs),
    lambda *ws: np.stack([load_one(w) for w in ws], axis),
    lambda x: tuple(save_one(p) for p in np.moveaxis(x, axis, 0)),
  )


def _gpt2_entries(m: dict, prefix: str) -> list[_Entry]:
  D, H, V = m["d_model"], m["num_heads"], m["vocab_size"]
  K, t = D // H, prefix
  entries = [
    _reshaped("wte/embedding", (V, D), t + "wte.weight"),
    _reshaped("wpe/embedding", (m["max_len"], D), t + "wpe.weight"),
    _reshaped("ln_f/scale", (D,), t + "ln_f.weight"),
    _reshaped("ln_f/bias", (D,), t + "ln_f.bias"),
  ]
  for i in range(m["num_layers"]):
    b, h = f"block_{i}/", f"{t}h.{i}."
    for ln in ("ln_1", "ln_2"):
      entries += [
        _reshaped(b + ln + "/scale", (D,), h + ln + ".weight"),
        _reshaped(b + ln + "/bias", (D,), h + ln + ".bias"),
      ]
    entries += [
      _reshaped(b + "attn/qkv/kernel", (D, 3, H, K), h + "attn.c_attn.weight", (D, 3 * D)),
      _reshaped(b + "attn/qkv/bias", (3, H, K), h + "attn.c_attn.bias", (3 * D,)),
      _reshaped(b + "attn/proj/kernel", (H, K, D), h + "attn.c_proj.weight", (D, D)),
      _reshaped(b + "attn/proj/bias", (D,), h + "attn.c_proj.bias"),
      _reshaped(b + "mlp/fc/kernel", (D, 4 * D), h + "mlp.c_fc.weight"),
      _reshaped(b + "mlp/fc/bias", (4 * D,), h + "mlp.c_fc.bias"),
      _reshaped(b + "mlp/proj/kernel", (4 * D, D), h + "mlp.c_proj.weight"),
      _reshaped(b + "mlp/proj/bias", (D,), h + "mlp.c_proj.bias"),
    ]
  return entries


def _llama_entries(m: dict, prefix: str) -> list[_Entry]:
  del prefix
  D, H, G, F, V = m["d_model"], m["num_heads"], m["num_kv_heads"], m["mlp_dim"], m["vocab_size"]
  K = D // H
  kv, gate_up = ("k_proj", "v_proj"), ("gate_proj", "up_proj")
  entries = [
    _reshaped("embed/embedding", (V, D), "model.embed_tokens.weight"),
    _reshaped("norm/scale", (D,), "model.norm.weight"),
  ]
  if not m["tie_embeddings"]:
    entries.append(_linear("head/kernel", (D, V), "lm_head.weight", D))
  for i in range(m["num_layers"]):
    b, h = f"block_{i}/", f"model.layers.{i}."
    a, p = h + "self_attn.", h + "mlp."
    entries += [
      _reshaped(b + "attn_norm/scale", (D,), h + "input_layernorm.weight"),
      _reshaped(b + "mlp_norm/scale", (D,), h + "post_attention_layernorm.weight"),
      _linear(b + "attn/q/kernel", (D, H, K), a + "q_proj.weight", D),
      _stacked(b + "attn/kv/kernel", (D, 2, G, K), [a + n + ".weight" for n in kv], 1, True),
      _linear(b + "attn/o/kernel", (H, K, D), a + "o_proj.weight", H * K),
      _stacked(b + "mlp/gate_up/kernel", (D, 2, F), [p + n + ".weight" for n in gate_up], 1, True),
      _linear(b + "mlp/down/kernel", (F, D), p + "down_proj.weight", F),
    ]
    if m["attention_bias"]:
      entries += [
        _reshaped(b + "attn/q/bias", (H, K), a + "q_proj.bias", (D,)),
        _stacked(b + "attn/kv/bias", (2, G, K), [a + n + ".bias" for n in kv], 0, False),
        _reshaped(b + "attn/o/bias", (D,), a + "o_proj.bias"),
      ]
    if m["mlp_bias"]:
      entries += [
        _stacked(b + "mlp/gate_up/bias", (2, F), [p + n + ".bias" for n in gate_up], 0, False),
        _reshaped(b + "mlp/down/bias", (D,), p + "down_proj.bias"),
      ]
  return entries


_ENTRIES = {"gpt": _gpt2_entries, "llama": _llama_entries}


def _weight_files(hf_dir: str) -> dict[str, str]:
  """{tensor name: safetensors file} from model.safetensors or a sharded index."""
  index = os.path.join(hf_dir, _INDEX)
  if os.path.exists(index):
    return {k: os.path.join(hf_dir, v) for k, v in _read_json(index)["weight_map"].items()}
  path = os.path.join(hf_dir, _WEIGHTS)
  if os.path.exists(path):
    with safetensors.safe_open(path, framework="numpy") as f:
      return dict.fromkeys(f.keys(), path)
  if any(n.startswith("pytorch_model") and n.endswith(".bin") for n in os.listdir(hf_dir)):
    raise UserError(
      f"{hf_dir} holds PyTorch weights (pytorch_model.bin) but no safetensors: convert it "
      "once with transformers, `AutoModelForCausalLM.from_pretrained(DIR)"
      ".save_pretrained(NEW_DIR)`, and import NEW_DIR."
    )
  raise UserError(
    f"{hf_dir} holds no weights ({_WEIGHTS} or {_INDEX}): pass the directory "
    "save_pretrained wrote the model to."
  )


def _set(tree: dict, path: str, value) -> None:
  *parents, leaf = path.split("/")
  for p in parents:
    tree = tree.setdefault(p, {})
  tree[leaf] = value


def _get(tree: dict, path: str):
  for p in path.split("/"):
    tree = tree[p]
  return tree


def _check_same_model(hf_dir: str, model: dict, want: dict) -> None:
  """Refuses a config.model that would compute something else with these weights.

  Dropout may differ, and so may a Llama's max_len (a decode-cache limit only).
  """
  free = ("dropout", "max_len") if model["name"] == "llama" else ("dropout",)
  diff = [k for k, v in model.items() if k not in free and want.get(k) != v]
  if diff:
    pairs = ", ".join(f"{k}={model[k]!r} (config: {want.get(k)!r})" for k in diff)
    raise UserError(
      f"config.model differs from the model in {hf_dir}: {pairs}; set those keys as "
      "the model has them (scripts/import_hf.py writes such a config)."
    )


def load_params(hf_dir: str, model_cfg) -> dict:
  """The parameters of the model in `hf_dir` as a float32 NumPy tree for `model_cfg`.

  `model_cfg` is the run's config.model: it must describe this model (as
  `model_config` does); its scan_layers decides the layout. Tensors are read
  one at a time, so memory peaks near the model's float32 size.
  """
  h, arch, model = _describe(hf_dir)
  want = dict(model_cfg)
  _check_same_model(hf_dir, model, want)
  files = _weight_files(hf_dir)
  prefix = "transformer." if "transformer.wte.weight" in files else ""
  entries = _ENTRIES[model["name"]]({**model, "vocab_size": h["vocab_size"]}, prefix)
  needed = {n for e in entries for n in e.theirs}
  missing = sorted(needed - files.keys())
  if missing:
    raise UserError(
      f"{hf_dir} lacks tensors {missing[:5]} of a {arch}: it is incomplete or another "
      "architecture; save the model again with save_pretrained."
    )
  unknown = sorted(n for n in files.keys() - needed if not re.fullmatch(_IGNORED[arch], n))
  if unknown:
    _refuse(hf_dir, arch, f"tensors lm_jax has no place for ({', '.join(unknown[:5])})")
  params = {}
  with contextlib.ExitStack() as stack:
    opened = {}
    read = lambda n: _open(stack, opened, files[n]).get_tensor(n)
    for e in entries:
      arrays = [read(n) for n in e.theirs]
      if [a.size for a in arrays] != [int(np.prod(e.shape)) // len(arrays)] * len(arrays):
        raise UserError(
          f"{hf_dir}: tensor {e.theirs[0]} has shape {arrays[0].shape}, which does not fit "
          f"{e.ours} {e.shape} of the model its config.json describes: check vocab_size."
        )
      _set(params, e.ours, np.asarray(e.load(*arrays), np.float32))
  return layers.stack_blocks(params) if want.get("scan_layers") else params


def _open(stack, opened: dict, path: str):
  if path not in opened:
    opened[path] = stack.enter_context(safetensors.safe_open(path, framework="numpy"))
  return opened[path]


# Tokenizers.


def _token_id(tokenizer_json: dict, token) -> int | None:
  """The id of a token given as text (or {'content': text}) in a tokenizer.json."""
  token = token.get("content") if isinstance(token, dict) else token
  for added in tokenizer_json.get("added_tokens", []):
    if added["content"] == token:
      return added["id"]
  vocab = tokenizer_json.get("model", {}).get("vocab")
  return vocab.get(token) if isinstance(vocab, dict) else None


def _eos_id(tokenizer_json: dict, tokenizer_config: dict, h: dict) -> int | None:
  """End of text: tokenizer_config.json's eos_token, else config.json's eos_token_id."""
  if tokenizer_config.get("eos_token") is not None:
    eos = _token_id(tokenizer_json, tokenizer_config["eos_token"])
    if eos is not None:
      return eos
  eos = h.get("eos_token_id")
  return eos[0] if isinstance(eos, list) else eos


def load_tokenizer(path: str) -> tokenizers.HFTokenizer:
  """The tokenizer of a Hugging Face directory, sized to its model's vocabulary.

  `path` holds tokenizer.json (and config.json, tokenizer_config.json), or is
  a run that was saved with such a tokenizer.
  """
  tok_path = os.path.join(path, "tokenizer.json")
  if not os.path.exists(tok_path):
    raise UserError(
      f"no tokenizer.json in {path!r}: set data.hf_tokenizer to a Hugging Face model "
      "directory that holds one (save_pretrained of a fast tokenizer writes it)."
    )
  tokenizer_json = _read_json(tok_path)
  if tokenizer_json.get("kind") == "hf":  # A run's copy.
    return tokenizers.load(tok_path)
  if "kind" in tokenizer_json:
    raise UserError(
      f"{tok_path} is a run's {tokenizer_json['kind']} tokenizer, not a Hugging Face one: "
      "set data.hf_tokenizer to a Hugging Face model directory."
    )
  read = lambda name: (
    _read_json(os.path.join(path, name)) if os.path.exists(os.path.join(path, name)) else {}
  )
  h = read("config.json")
  eos = _eos_id(tokenizer_json, read("tokenizer_config.json"), h)
  return tokenizers.HFTokenizer(tokenizer_json, eos, h.get("vocab_size"))


def _save_tokenizer(tokenizer, out_dir: str, max_len: int) -> str | None:
  """Writes tokenizer.json and tokenizer_config.json; returns a note when it cannot."""
  if tokenizer.kind != "hf":
    return (
      f"the run's {tokenizer.kind} tokenizer has no Hugging Face form, so {out_dir} holds "
      "no tokenizer files: encode text as the run's WORKDIR/tokenizer.json does."
    )
  with open(os.path.join(out_dir, "tokenizer.json"), "w") as f:
    json.dump(tokenizer.tokenizer, f, ensure_ascii=False)
  tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_len}
  if tokenizer.eos_id is not None:
    tokenizer_config["eos_token"] = tokenizer.token(tokenizer.eos_id)
  _write_json(os.path.join(out_dir, "tokenizer_config.json"), tokenizer_config)
  return None


# Export.


def _write_json(path: str, d: dict) -> None:
  with open(path, "w") as f:
    json.dump(d, f, indent=2)
    f.write("\n")


def _hf_config(m: dict, eos_id: int | None) -> dict:
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


def save_model(out_dir: str, model, params, tokenizer) -> list[str]:
  """Writes `model` (a gpt or llama module) with `params` as a Hugging Face directory.

  config.json, model.safetensors (float32) and, for an hf tokenizer, its
  files; `AutoModelForCausalLM.from_pretrained(out_dir)` loads it. Returns
  notes on what was left out. GPT biases the model does without are written
  as zeros, which computes the same.
  """
  fields = getattr(model, "__dataclass_fields__", {})
  m = {k: getattr(model, k) for k in fields if k not in ("parent", "name")}
  m["name"] = {"GPT": "gpt", "Llama": "llama"}.get(type(model).__name__)
  if m["name"] is None:
    raise UserError(
      f"a {type(model).__name__} model has no Hugging Face form: export gpt or llama runs."
    )
  if m["name"] == "llama":
    m["mlp_dim"] = model.hidden_dim
  for name in ("config.json", _WEIGHTS):
    if os.path.exists(os.path.join(out_dir, name)):
      raise UserError(f"{out_dir} already holds a {name}: pass a new --out directory.")
  os.makedirs(out_dir, exist_ok=True)
  params = layers.unstack_blocks(jax.device_get(params))
  tensors = {}
  for e in _ENTRIES[m["name"]](m, "transformer."):
    try:
      x = np.asarray(_get(params, e.ours), np.float32)
    except KeyError:  # A GPT without biases: Hugging Face's GPT-2 always has them.
      if not e.ours.endswith("bias"):
        raise
      x = np.zeros(e.shape, np.float32)
    tensors.update({n: np.ascontiguousarray(a) for n, a in zip(e.theirs, e.save(x))})
  safetensors.numpy.save_file(tensors, os.path.join(out_dir, _WEIGHTS), metadata={"format": "pt"})
  note = _save_tokenizer(tokenizer, out_dir, m["max_len"])
  _write_json(os.path.join(out_dir, "config.json"), _hf_config(m, tokenizer.eos_id))
  return [note] if note else []
