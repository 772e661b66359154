"""Every Hugging Face architecture lm_jax imports, against `transformers` itself: exact parity.

Tiny random models of each of helpers.hf.ARCHS (GPT-2, Llama 2 and 3, Qwen2, Qwen3, Mistral,
Gemma 2 and 3), imported once (integration/conftest.py). Inputs are longer than every sliding
window and than Llama 3's original context, and generation runs past the windows. Float32.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import hf

from lm_jax import sample
from lm_jax.hf import architectures, weights

torch = pytest.importorskip("torch", reason=hf.INSTALL)
transformers = pytest.importorskip("transformers", reason=hf.INSTALL)

LENGTH, PROMPT, NEW = 40, 8, 30  # Longer than every window and Llama 3's original context.
ARCHS = list(hf.ARCHS)


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_equal_transformers(hf_dirs, ours, arch):
  _, params, tokenizer, forward = ours[arch]
  ids = hf.token_ids(tokenizer, LENGTH)
  logits = forward(params, ids)
  theirs = hf.hf_logits(hf.reference(hf_dirs[arch]), ids)
  assert logits.shape == theirs.shape
  assert np.abs(theirs).max() > 1.0  # Far from uniform: the test can tell models apart.
  np.testing.assert_allclose(logits, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_generation_equals_transformers(hf_dirs, ours, arch):
  model, params, tokenizer, _ = ours[arch]
  prompt = hf.token_ids(tokenizer, PROMPT)
  reference_model = hf.reference(hf_dirs[arch])
  reference_model.generation_config.eos_token_id = None  # NEW tokens, whatever they are.
  reference_model.generation_config.pad_token_id = 0
  with torch.no_grad():
    out = reference_model.generate(torch.tensor(prompt), max_new_tokens=NEW, do_sample=False)
  [new] = sample.generate(
    model, params, list(prompt), jax.random.key(0), max_new_tokens=NEW, temperature=0.0
  )
  np.testing.assert_array_equal(new, out[0, PROMPT:].numpy())


@pytest.mark.parametrize("arch", ARCHS)
def test_cached_decoding_equals_full_forward(ours, arch):
  model, params, tokenizer, forward = ours[arch]
  ids = hf.token_ids(tokenizer, LENGTH)
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


@pytest.mark.parametrize("arch", ARCHS)
def test_export_loads_in_transformers_and_imports_back_exactly(hf_dirs, ours, arch, tmp_path):
  model, params, tokenizer, forward = ours[arch]
  out = str(tmp_path / "export")
  assert weights.save_model(out, model, params, tokenizer) == []
  assert architectures.read_config(out)["architectures"] == [hf.ARCHS[arch].model_class]
  ids = hf.token_ids(tokenizer, LENGTH)
  np.testing.assert_allclose(
    hf.hf_logits(hf.reference(out), ids), forward(params, ids), atol=1e-4, rtol=0
  )
  auto = transformers.AutoTokenizer.from_pretrained(out)
  assert auto(hf.TEXT, add_special_tokens=False)["input_ids"] == tokenizer.encode(hf.TEXT).tolist()
  assert architectures.model_config(out) == architectures.model_config(hf_dirs[arch])
  again = weights.load_params(out, architectures.model_config(out))
  jax.tree_util.tree_map(np.testing.assert_array_equal, again, params)


@pytest.mark.parametrize("arch", ARCHS)
def test_scanned_import_equals_unrolled(hf_dirs, ours, arch):
  """The layers as one scan; for Qwen3 and Gemma 2 and 3, mixed local and global layers (and
  Gemma 3's two rotations)."""
  _, params, tokenizer, forward = ours[arch]
  scanned, stacked, _ = hf.imported(hf_dirs[arch], scan_layers=True)
  assert "blocks" in stacked and "block_0" not in stacked
  ids = hf.token_ids(tokenizer, LENGTH)
  np.testing.assert_allclose(
    jax.jit(scanned.apply)({"params": stacked}, ids), forward(params, ids), atol=1e-5, rtol=1e-5
  )
