"""A LoRA run's adapters in PEFT's layout: adapter_config.json + adapter_model.safetensors.

`peft.PeftModel.from_pretrained(base, DIR)` loads them onto the Hugging Face form of the run's
model (its train.init_from, or scripts/export_hf.py of the run that was). Each adapted kernel
goes to the Hugging Face modules its weight is written to (lm_jax/hf/weights.py names them):
PEFT keeps A as lora_A (rank x inputs) and B as lora_B (outputs x rank); a fused kernel
(Llama's kv and gate_up) becomes one module per part, each with the same A and its own
columns of B, which computes the same.
"""

import json
import os

import jax
import numpy as np
import safetensors.numpy
from flax import traverse_util

from lm_jax import UserError
from lm_jax.hf import weights
from lm_jax.models import layers

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
PREFIX = "base_model.model."  # What PEFT puts before the model's module names.


def _layout(save, kernel_shape, n_out: int):
  """[(tensor index, fan_in_fan_out, input rows, output columns)] of each Hugging Face tensor
  `save` writes a kernel to, found by saving the kernel's flat indices; None if not a matrix.

  Entry [o, i] of a torch Linear weight (fan_in_fan_out False), or [i, o] of GPT-2's Conv1D
  (True), holds kernel element (input row i', output column o') = (index // n_out, index % n_out).
  """
  out = []
  for t, m in enumerate(save(np.arange(int(np.prod(kernel_shape))).reshape(kernel_shape))):
    if m.ndim != 2:
      return None
    rows, cols = m // n_out, m % n_out
    if (rows == rows[:1]).all() and (cols == cols[:, :1]).all():
      out.append((t, False, rows[0], cols[:, 0]))
    elif (rows == rows[:, :1]).all() and (cols == cols[:1]).all():
      out.append((t, True, rows[:, 0], cols[0]))
    else:
      return None
  return out


def adapter_tensors(model, adapters) -> tuple[dict, list[str], bool]:
  """({PEFT tensor name: array}, the adapted module names, fan_in_fan_out) of `adapters`."""
  names = weights.export_names(model)
  flat = traverse_util.flatten_dict(layers.unstack_blocks(jax.device_get(adapters)))
  tensors, modules, orientations = {}, [], set()
  for key in sorted({k[:-1] for k in flat}):
    path = "/".join(key) + "/kernel"
    a, b = np.asarray(flat[(*key, "lora_a")]), np.asarray(flat[(*key, "lora_b")])
    a_IxR, b_RxO = a.reshape(-1, a.shape[-1]), b.reshape(b.shape[0], -1)
    layout = None
    if path in names:
      theirs, save = names[path]
      layout = _layout(save, a.shape[:-1] + b.shape[1:], b_RxO.shape[1])
    if layout is None:
      raise UserError(
        f"{path} has an adapter but no Hugging Face linear layer to carry it: export the "
        "merged model (without --adapters), or leave it out of train.lora.targets."
      )
    for t, fan_in_fan_out, rows, cols in layout:
      module = theirs[t].removesuffix(".weight")
      tensors[f"{PREFIX}{module}.lora_A.weight"] = np.ascontiguousarray(a_IxR[rows].T, np.float32)
      tensors[f"{PREFIX}{module}.lora_B.weight"] = np.ascontiguousarray(
        b_RxO[:, cols].T, np.float32
      )
      modules.append(module)
      orientations.add(fan_in_fan_out)
  if len(orientations) > 1:
    raise UserError(
      "the adapted layers mix torch Linear and Conv1D weights, which one PEFT adapter cannot "
      "hold: export the merged model (without --adapters)."
    )
  return tensors, modules, orientations.pop()


def save_adapters(out_dir: str, model, adapters, s, base_model: str | None) -> None:
  """Writes `adapters` (lora.Settings `s`) as PEFT does; `base_model` is recorded as the
  model they apply to (base_model_name_or_path)."""
  for name in (CONFIG, WEIGHTS):
    if os.path.exists(os.path.join(out_dir, name)):
      raise UserError(f"{out_dir} already holds a {name}: pass a new --out directory.")
  tensors, modules, fan_in_fan_out = adapter_tensors(model, adapters)
  number = lambda x: int(x) if float(x).is_integer() else float(x)
  config = {
    "peft_type": "LORA",
    "task_type": "CAUSAL_LM",
    "base_model_name_or_path": base_model,
    "r": s.rank,
    "lora_alpha": number(s.alpha),
    "lora_dropout": s.dropout,
    "target_modules": modules,
    "fan_in_fan_out": fan_in_fan_out,
    "bias": "none",
    "use_rslora": False,
    "use_dora": False,
    "modules_to_save": None,
    "init_lora_weights": True,
    "inference_mode": True,
  }
  os.makedirs(out_dir, exist_ok=True)
  safetensors.numpy.save_file(tensors, os.path.join(out_dir, WEIGHTS), metadata={"format": "pt"})
  with open(os.path.join(out_dir, CONFIG), "w") as f:
    json.dump(config, f, indent=2)
    f.write("\n")
