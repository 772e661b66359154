"""Hugging Face configs read as transformers wrote them, and what lm_jax cannot import or export.

On the tiny models of integration/conftest.py (helpers.hf.ARCHS); their parity with
`transformers` is test_parity.py's.
"""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from lm_jax import UserError, models
from lm_jax.data import tokenizers
from lm_jax.hf import architectures, weights


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
  model = models.build_model(ml_collections.ConfigDict({"name": name, **options}), 257)
  params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"]
  with pytest.raises(UserError, match=f"no Hugging Face form: {why}"):
    weights.save_model(str(tmp_path / "out"), model, params, tokenizers.ByteTokenizer())
  assert not os.path.exists(tmp_path / "out")
