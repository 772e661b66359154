"""Hugging Face weights (safetensors) <-> lm_jax parameters, tensor by tensor.

Tensor names in safetensors files are known here alone; weights are read and written with the
`safetensors` package through NumPy (no torch); lm_jax/hf/architectures.py maps the configs.

Imported parameters take the run's `model.param_dtype` (float32 by default: bfloat16 and
float16 weights convert exactly; bfloat16 keeps a bfloat16 checkpoint as it is and rounds a
float32 one to nearest); `model.dtype` sets the compute dtype. Export writes the parameters'
dtype, or the one asked for.
"""

import dataclasses
import json
import os
import re
from collections.abc import Callable

import jax
import numpy as np
import safetensors
import safetensors.numpy

from lm_jax import UserError, models
from lm_jax.data import hf_tokenizer
from lm_jax.hf import architectures
from lm_jax.models import layers

_WEIGHTS, _INDEX = "model.safetensors", "model.safetensors.index.json"
# Tensors a checkpoint may hold that carry no parameters: masks, RoPE tables, a tied head.
_ROTARY_OR_HEAD = r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq|lm_head\.weight"
_IGNORED = {
  "gpt": r"(transformer\.)?h\.\d+\.attn\.(masked_)?bias|lm_head\.weight",
  "llama": _ROTARY_OR_HEAD,
  "gemma": _ROTARY_OR_HEAD,
}


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


def _attention_entries(m: dict, b: str, a: str) -> list[_Entry]:
  """Block `b`'s attention from Hugging Face's `a` + q_proj, k_proj, ... (Llama, Qwen, Gemma)."""
  D, H, G = m["d_model"], m["num_heads"], m["num_kv_heads"]
  K = m["head_dim"] or D // H
  kv = ("k_proj", "v_proj")
  entries = [
    _linear(b + "attn/q/kernel", (D, H, K), a + "q_proj.weight", D),
    _stacked(b + "attn/kv/kernel", (D, 2, G, K), [a + n + ".weight" for n in kv], 1, True),
    _linear(b + "attn/o/kernel", (H, K, D), a + "o_proj.weight", H * K),
  ]
  if m.get("qkv_bias") or m.get("attention_bias"):
    entries += [
      _reshaped(b + "attn/q/bias", (H, K), a + "q_proj.bias", (H * K,)),
      _stacked(b + "attn/kv/bias", (2, G, K), [a + n + ".bias" for n in kv], 0, False),
    ]
  if m.get("attention_bias"):
    entries.append(_reshaped(b + "attn/o/bias", (D,), a + "o_proj.bias"))
  if m["qk_norm"]:
    entries += [
      _reshaped(b + "attn/q_norm/scale", (K,), a + "q_norm.weight"),
      _reshaped(b + "attn/k_norm/scale", (K,), a + "k_norm.weight"),
    ]
  return entries


def _mlp_entries(m: dict, b: str, p: str, bias: bool) -> list[_Entry]:
  D, F = m["d_model"], m["mlp_dim"]
  gate_up = ("gate_proj", "up_proj")
  entries = [
    _stacked(b + "mlp/gate_up/kernel", (D, 2, F), [p + n + ".weight" for n in gate_up], 1, True),
    _linear(b + "mlp/down/kernel", (F, D), p + "down_proj.weight", F),
  ]
  if bias:
    entries += [
      _stacked(b + "mlp/gate_up/bias", (2, F), [p + n + ".bias" for n in gate_up], 0, False),
      _reshaped(b + "mlp/down/bias", (D,), p + "down_proj.bias"),
    ]
  return entries


# Each block's norms: lm_jax's name <- Hugging Face's. Llama's post_attention_layernorm is the
# MLP's input norm; Gemma's normalizes attention's output, and its pre_feedforward_layernorm is
# the MLP's input norm.
_NORMS = {
  "llama": {"attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm"},
  "gemma": {
    "attn_norm": "input_layernorm",
    "attn_post_norm": "post_attention_layernorm",
    "mlp_norm": "pre_feedforward_layernorm",
    "mlp_post_norm": "post_feedforward_layernorm",
  },
}


def _decoder_entries(m: dict, prefix: str) -> list[_Entry]:
  """Llama's and Gemma's: embedding, blocks, final norm, and an untied head."""
  del prefix
  D, V = m["d_model"], m["vocab_size"]
  entries = [
    _reshaped("embed/embedding", (V, D), "model.embed_tokens.weight"),
    _reshaped("norm/scale", (D,), "model.norm.weight"),
  ]
  if not m["tie_embeddings"]:
    entries.append(_linear("head/kernel", (D, V), "lm_head.weight", D))
  for i in range(m["num_layers"]):
    b, h = f"block_{i}/", f"model.layers.{i}."
    entries += [
      _reshaped(b + ours + "/scale", (D,), h + theirs + ".weight")
      for ours, theirs in _NORMS[m["name"]].items()
    ]
    entries += _attention_entries(m, b, h + "self_attn.")
    entries += _mlp_entries(m, b, h + "mlp.", m.get("mlp_bias", False))
  return entries


_ENTRIES = {"gpt": _gpt2_entries, "llama": _decoder_entries, "gemma": _decoder_entries}


def _weight_files(hf_dir: str) -> dict[str, str]:
  """{tensor name: safetensors file} from model.safetensors or a sharded index."""
  index = os.path.join(hf_dir, _INDEX)
  if os.path.exists(index):
    return {
      k: os.path.join(hf_dir, v) for k, v in architectures.read_json(index)["weight_map"].items()
    }
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

  Dropout may differ, and so may max_len (a decode-cache limit only) for rotary models;
  a key the config lacks counts as the model's default.
  """
  free = ("dropout",) if model["name"] == "gpt" else ("dropout", "max_len")
  fields = models.get_model_class(model["name"]).__dataclass_fields__
  have = lambda k: want.get(k, getattr(fields.get(k), "default", None))
  diff = [k for k, v in model.items() if k not in free and have(k) != v]
  if diff:
    pairs = ", ".join(f"{k}={model[k]!r} (config: {have(k)!r})" for k in diff)
    raise UserError(
      f"config.model differs from the model in {hf_dir}: {pairs}; set those keys as "
      "the model has them (scripts/import_hf.py writes such a config)."
    )


def _read(files: dict, name: str) -> np.ndarray:
  """One tensor, its file opened for it alone: safetensors maps the whole file, and the pages
  a read touched count as the process's memory until the mapping closes."""
  with safetensors.safe_open(files[name], framework="numpy") as f:
    return f.get_tensor(name)


def _load_entry(hf_dir: str, files: dict, e: _Entry, dtype) -> np.ndarray:
  arrays = [_read(files, n) for n in e.theirs]
  if [a.size for a in arrays] != [int(np.prod(e.shape)) // len(arrays)] * len(arrays):
    raise UserError(
      f"{hf_dir}: tensor {e.theirs[0]} has shape {arrays[0].shape}, which does not fit "
      f"{e.ours} {e.shape} of the model its config.json describes: check vocab_size."
    )
  return np.asarray(e.load(*arrays), dtype)


def _leaves(entries: list[_Entry], scanned: bool) -> list[tuple[str, list[_Entry]]]:
  """(parameter path, the entries filling it), largest first: one entry each, or scanned, the
  same entry of every block stacked into 'blocks/...'."""
  leaves = {}
  for e in entries:
    path = re.sub(r"^block_\d+/", "blocks/", e.ours) if scanned else e.ours
    leaves.setdefault(path, []).append(e)
  return sorted(leaves.items(), key=lambda kv: -len(kv[1]) * int(np.prod(kv[1][0].shape)))


def load_params(hf_dir: str, model_cfg, shardings=None) -> dict:
  """The parameters of the model in `hf_dir` for `model_cfg`, read one tensor at a time.

  `model_cfg` is the run's config.model: it must describe this model (as
  `model_config` does); its param_dtype sets the dtype and its scan_layers the
  layout. Without `shardings`, a NumPy tree; with the run's (a tree of
  shardings in that layout), each parameter goes to its devices as soon as it
  is read and its host copy is dropped, largest first, so host memory peaks
  near the parameters' size plus one parameter's.
  """
  h, arch, model = architectures.describe(hf_dir)
  want = dict(model_cfg)
  _check_same_model(hf_dir, model, want)
  dtype = layers.param_dtype(want.get("param_dtype", "float32"))
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
  ignored = _IGNORED[model["name"]]
  unknown = sorted(n for n in files.keys() - needed if not re.fullmatch(ignored, n))
  if unknown:
    architectures.refuse_option(
      hf_dir, arch, f"tensors lm_jax has no place for ({', '.join(unknown[:5])})"
    )
  params = {}
  for path, group in _leaves(entries, bool(want.get("scan_layers"))):
    if path.startswith("blocks/"):  # Scanned: block i's tensor is row i.
      x = np.empty((len(group), *group[0].shape), dtype)
      for i, e in enumerate(group):
        x[i] = _load_entry(hf_dir, files, e, dtype)
    else:
      x = _load_entry(hf_dir, files, group[0], dtype)
    if shardings is not None:
      x = jax.make_array_from_callback(x.shape, _get(shardings, path), lambda i, x=x: x[i])
    _set(params, path, x)
    del x
  return params


# Export.


def _write_json(path: str, d: dict) -> None:
  with open(path, "w") as f:
    json.dump(d, f, indent=2)
    f.write("\n")


def _model_keys(model) -> dict:
  """The lm_jax model keys of a gpt, llama or gemma module, as the export entries take them."""
  fields = getattr(model, "__dataclass_fields__", {})
  m = {k: getattr(model, k) for k in fields if k not in ("parent", "name")}
  m["name"] = {"GPT": "gpt", "Llama": "llama", "Gemma": "gemma"}.get(type(model).__name__)
  if m["name"] is None:
    raise UserError(
      f"a {type(model).__name__} model has no Hugging Face form: export gpt, llama or gemma runs."
    )
  if m["name"] != "gpt":
    m["mlp_dim"] = model.hidden_dim
  return m


def export_names(model) -> dict[str, tuple[tuple[str, ...], Callable]]:
  """{lm_jax parameter path (unscanned): (its Hugging Face tensor names, ours -> their arrays)}
  as `save_model` writes `model`."""
  m = _model_keys(model)
  return {e.ours: (e.theirs, e.save) for e in _ENTRIES[m["name"]](m, "transformer.")}


def save_model(out_dir: str, model, params, tokenizer, dtype: str | None = None) -> list[str]:
  """Writes `model` (a gpt, llama or gemma module) with `params` as a Hugging Face directory.

  config.json, model.safetensors (in `dtype`, by default the model's
  param_dtype) and, for an hf tokenizer, its files;
  `AutoModelForCausalLM.from_pretrained(out_dir)` loads it. Returns notes on
  what was left out. GPT biases the model does without are written as zeros,
  which computes the same.
  """
  m = _model_keys(model)
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise UserError(f"--out {out_dir} is a file: pass a new directory.")
  dtype = layers.param_dtype(dtype or m.get("param_dtype", "float32"))
  config = architectures.hf_config(m, tokenizer.eos_id, dtype.name)  # Refuses before writing.
  for name in ("config.json", _WEIGHTS):
    if os.path.exists(os.path.join(out_dir, name)):
      raise UserError(f"{out_dir} already holds a {name}: pass a new --out directory.")
  os.makedirs(out_dir, exist_ok=True)
  params = layers.unstack_blocks(jax.device_get(params))
  tensors = {}
  for e in _ENTRIES[m["name"]](m, "transformer."):
    try:
      x = np.asarray(_get(params, e.ours), dtype)
    except KeyError:  # A GPT without biases: Hugging Face's GPT-2 always has them.
      if not e.ours.endswith("bias"):
        raise
      x = np.zeros(e.shape, dtype)
    tensors.update({n: np.ascontiguousarray(a) for n, a in zip(e.theirs, e.save(x), strict=True)})
  safetensors.numpy.save_file(tensors, os.path.join(out_dir, _WEIGHTS), metadata={"format": "pt"})
  note = hf_tokenizer.save_tokenizer(tokenizer, out_dir, m["max_len"])
  _write_json(os.path.join(out_dir, "config.json"), config)
  return [note] if note else []
