"""LoRA runs on Hugging Face models, exported merged and as PEFT adapters, against the clients."""

import json
import os

import jax
import ml_collections
import numpy as np
import pytest
from conftest import make_text

from lm_jax import UserError, runs, train
from lm_jax.hf import architectures, weights
from lm_jax.hf import runs as hf_runs

INSTALL = (
  "the PEFT tests need torch, transformers and peft: pip install torch==2.13.0 --index-url "
  "https://download.pytorch.org/whl/cpu && pip install transformers==5.23.0 peft==0.21.2"
)
torch = pytest.importorskip("torch", reason=INSTALL)
transformers = pytest.importorskip("transformers", reason=INSTALL)
peft = pytest.importorskip("peft", reason=INSTALL)

# GPT-2's Conv1D layers (fan_in_fan_out) and Llama's Linear ones, fused kv and gate_up; Llama's
# head too: lm_head is a Linear PEFT adapts as well.
TARGETS = {
  "gpt2": None,
  "llama_gqa": [r".*attn/[^/]+/kernel", r".*mlp/[^/]+/kernel", "head/kernel"],
}
ARCHS = list(TARGETS)


@pytest.fixture(scope="module")
def lora_runs(hf_dirs, tmp_path_factory):
  """{arch: a LoRA run of 2 steps from hf_dirs[arch], on local text}, trained once."""
  from configs import tiny

  root = tmp_path_factory.mktemp("runs")
  paths = {}
  for i, split in enumerate(("train", "validation", "test")):
    paths[split] = str(root / f"{split}.txt")
    with open(paths[split], "w") as f:
      f.write(make_text(2000 if split == "train" else 200, seed=i))
  out = {}
  for arch in ARCHS:
    hf_dir = hf_dirs[arch]
    c = tiny.get_config()
    c.model = ml_collections.ConfigDict(architectures.model_config(hf_dir))
    c.data.update(dataset="text", tokenizer="hf", hf_tokenizer=hf_dir, seq_len=16)
    c.data.text_files.update(paths)
    c.optim.update(learning_rate=3e-2, warmup_steps=0)  # Adapters move far from zero.
    c.train.update(batch_size=8, num_steps=2, log_every=1, eval_every=2, parallel="jit")
    c.train.update(init_from=hf_dir, checkpoint_every=2)
    c.train.lora.update(rank=4, alpha=8.0, dropout=0.1)
    if TARGETS[arch]:
      c.train.lora.targets = TARGETS[arch]
    out[arch] = str(root / arch)
    train.train_and_evaluate(c, out[arch])
  return out


def ids_of(run):
  tokenizer = runs.load_run(run)[2]
  return tokenizer.encode(make_text(200, seed=9))[None, :16]


def adapted_logits(run, ids):
  """The LoRA run's own forward pass: the frozen model plus its adapters, unmerged."""
  state = runs.load_run(run, merge=False)[3]
  return np.asarray(jax.jit(state.apply_fn)(state.variables(state.params), ids))


def torch_logits(model, ids):
  with torch.no_grad():
    return model(torch.tensor(np.asarray(ids), dtype=torch.long)).logits.numpy()


@pytest.mark.parametrize("arch", ARCHS)
def test_the_frozen_model_is_bit_identical_after_training(hf_dirs, lora_runs, arch):
  state = runs.load_run(lora_runs[arch], merge=False)[3]
  jax.tree_util.tree_map(
    np.testing.assert_array_equal,
    jax.device_get(state.frozen),
    weights.load_params(hf_dirs[arch], architectures.model_config(hf_dirs[arch])),
  )
  b = [x for p, x in jax.tree_util.tree_leaves_with_path(state.params) if "lora_b" in str(p)]
  assert b and all(np.abs(np.asarray(x)).max() > 1e-3 for x in b)  # The adapters trained.


@pytest.mark.parametrize("arch", ARCHS)
def test_merged_export_equals_the_adapted_model(lora_runs, arch, tmp_path):
  run, out = lora_runs[arch], str(tmp_path / "merged")
  assert hf_runs.export_hf(run, out) == []
  ids = ids_of(run)
  adapted = adapted_logits(run, ids)
  model, params = runs.load_run(run)[1], weights.load_params(out, architectures.model_config(out))
  np.testing.assert_allclose(  # Float32 rounding of W + A B against x W + x A B.
    jax.jit(model.apply)({"params": params}, ids), adapted, atol=1e-5, rtol=1e-5
  )
  reference = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
  np.testing.assert_allclose(torch_logits(reference, ids), adapted, atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_peft_loads_the_adapters_and_computes_the_adapted_model(hf_dirs, lora_runs, arch, tmp_path):
  run, out = lora_runs[arch], str(tmp_path / "adapters")
  assert hf_runs.export_hf(run, out, adapters=True) == []
  assert sorted(os.listdir(out)) == ["adapter_config.json", "adapter_model.safetensors"]
  config = json.load(open(os.path.join(out, "adapter_config.json")))
  assert config["base_model_name_or_path"] == hf_dirs[arch] and config["r"] == 4
  base = transformers.AutoModelForCausalLM.from_pretrained(hf_dirs[arch], dtype=torch.float32)
  ids = ids_of(run)
  unadapted = torch_logits(base.eval(), ids)
  model = peft.PeftModel.from_pretrained(base, out).eval()  # Wraps `base` in place.
  ours, theirs = adapted_logits(run, ids), torch_logits(model, ids)
  assert np.abs(theirs - unadapted).max() > 1e-2  # The adapters change the model.
  np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)


def test_adapters_of_a_run_without_lora_are_refused(hf_dirs, config, tmp_path):
  config.data.update(tokenizer="hf", seq_len=16)
  hf_runs.import_hf(hf_dirs["llama_gqa"], str(tmp_path / "imported"), config)
  with pytest.raises(UserError, match="no LoRA run .* export it without --adapters"):
    hf_runs.export_hf(str(tmp_path / "imported"), str(tmp_path / "out"), adapters=True)
  config.train.lora.rank = 8
  with pytest.raises(UserError, match="import it with train.lora.rank=0"):
    hf_runs.import_hf(hf_dirs["llama_gqa"], str(tmp_path / "again"), config)
