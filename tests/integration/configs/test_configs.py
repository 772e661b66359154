"""Every shipped config loads, builds its model and trains two steps at a reduced size."""

import glob
import math
import os

import pytest
from conftest import ROOT

from lm_jax import config as config_lib
from lm_jax import records, train

CONFIGS = sorted(
  p for p in glob.glob(os.path.join(ROOT, "configs", "*.py")) if not p.endswith("__init__.py")
)
# Configs that take an argument naming a model; their tests build one.
NEEDS_A_MODEL = {
  "finetune_hf.py": (
    "tests/integration/hf/test_runs.py::test_init_from_starts_from_those_parameters"
  ),
  "sft_hf.py": "tests/integration/data/test_conversations.py",
}
# Shrinks whichever of these keys a model has; everything else stays as shipped.
SMALL_MODEL = {
  "num_layers": "1",
  "num_heads": "2",
  "num_kv_heads": "1",
  "d_model": "16",
  "max_len": "16",
  "mlp_dim": "0",
  "embed_size": "16",
  "hidden_size": "16",
}


def test_every_config_file_is_covered():
  assert {os.path.basename(p) for p in CONFIGS} >= {"shakespeare_char_gpt_cpu.py", "tiny.py"}


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_trains_two_steps(path, corpus, tmp_path):
  if os.path.basename(path) in NEEDS_A_MODEL:
    pytest.skip(f"trains in {NEEDS_A_MODEL[os.path.basename(path)]}")
  base = config_lib.load(path)
  overrides = {f"model.{k}": v for k, v in SMALL_MODEL.items() if k in base.model}
  if base.data.tokenizer == "sentencepiece":
    overrides["data.vocab_size"] = "320"  # The test corpus has too few words for 32k pieces.
  overrides.update(
    {
      "data.dataset": "text",
      "data.text_files.train": corpus["train"],
      "data.text_files.validation": corpus["validation"],
      "data.seq_len": "16",
      "train.batch_size": "4",
      "train.eval_batch_size": "0",
      "train.grad_accum_steps": "1",
      "train.num_steps": "2",
      "train.num_epochs": "0",
      "train.log_every": "1",
      "train.eval_every": "2",
      "train.checkpoint_every": "2",
      "train.parallel": "jit",
    }
  )
  config = config_lib.override(base, overrides)
  for name, source in config.data.mixture.items():  # Each source reads the test corpus too.
    config.data.mixture[name] = {"weight": source.weight, "dataset": "text", "text_files": corpus}
  workdir = str(tmp_path / "run")
  _, final = train.train_and_evaluate(config, workdir)
  assert math.isfinite(final["loss"])
  logged = [r for r in records.read_metrics(workdir) if "train_loss" in r]
  assert [r["step"] for r in logged] == [1, 2]
  assert all(math.isfinite(r["train_loss"]) for r in logged)
