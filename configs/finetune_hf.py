"""Fine-tunes a pretrained model on tiny-shakespeare, as nanoGPT's init_from='gpt2'.

  python scripts/import_hf.py --hf_dir ~/models/gpt2 --workdir runs/gpt2     # optional
  python scripts/train.py --config configs/finetune_hf.py:runs/gpt2 --workdir runs/gpt2_shakespeare

The argument names the model: a run (such as one scripts/import_hf.py wrote)
or a Hugging Face model directory (docs/hugging_face.md lists the families). The run takes its
model section and tokenizer as they are and starts from its parameters with a
fresh optimizer at step 0 (train.init_from); everything else is
shakespeare_char_gpt_cpu.py's, with a small learning rate. LoRA instead of a
full fine-tune: add --config.train.lora.rank=8 --config.optim.learning_rate=1e-3
(docs/training.md). Without pretrained weights to hand,
benchmarks/make_hf_model.py builds a directory to try it on.
"""

import os

import ml_collections

import configs
from configs import shakespeare_char_gpt_cpu
from lm_jax import UserError
from lm_jax import config as config_lib
from lm_jax.hf import architectures


def model_of(source: str) -> ml_collections.ConfigDict:
  """The config.model of a run, or of a Hugging Face model directory."""
  if os.path.isdir(os.path.join(source, "checkpoints")):
    return config_lib.load(os.path.join(source, "config.json")).model
  return ml_collections.ConfigDict(architectures.model_config(source))


def get_config(source=None):
  source, preset = configs.split(source)
  if not source:
    raise UserError("name the model to fine-tune: --config configs/finetune_hf.py:RUN_OR_HF_DIR.")
  config = shakespeare_char_gpt_cpu.get_config()
  config.model = model_of(source)  # The pretrained model's own shape.
  config.data.tokenizer = "hf"
  config.data.hf_tokenizer = source  # Its tokenizer (a run holds a copy).
  config.data.seq_len = 128
  config.optim.update(learning_rate=1e-4, min_learning_rate=1e-5, warmup_steps=10)
  config.train.update(
    init_from=source,
    batch_size=8,
    num_steps=200,
    log_every=10,
    eval_every=100,
    checkpoint_every=100,
  )
  return configs.apply(config, preset)
