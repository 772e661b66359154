"""Preference tuning (DPO) of a run or a Hugging Face model on pairs of responses.
  python scripts/train.py --config configs/dpo.py:runs/chat --workdir runs/chat_dpo \
    --config.data.text_files.train=pairs.jsonl
The argument names the model, as for finetune_hf.py: a run (one scripts/import_hf.py wrote, or
an SFT run) or a Hugging Face model directory; its tokenizer and chat template come with it.
Records {"prompt": ..., "chosen": ..., "rejected": ...} (or {"messages": [...], "chosen": ...,
"rejected": ...}, rendered by the chat template) in JSON Lines or Parquet; the last 5% are the
validation pairs unless data.text_files.validation names others. The loss is DPO's (beta 0.1)
against the starting model, frozen; train.dpo.loss=ipo or simpo switches it, and
--config.train.lora.rank=8 trains adapters only (the reference is then the model with its
adapters off: no second copy). Logged: train_loss (ln 2 = 0.6931 at the first step),
dpo_accuracy, dpo_margin, logps_chosen, logps_rejected, and each with val_ on the validation
pairs. Measured: docs/benchmarks.md ("Preference tuning").
"""

import configs
from configs import finetune_hf


def get_config(source=None):
  source, preset = configs.split(source)
  config = finetune_hf.get_config(source)
  config.data.update(dataset="jsonl", format="preference", holdout_fraction=0.05, seq_len=128)
  config.data.text_files.update(train="", validation="", test="")  # Name the pairs.
  config.optim.update(learning_rate=5e-6, min_learning_rate=5e-7, warmup_steps=10, weight_decay=0.0)
  config.train.update(objective="dpo", batch_size=8, num_steps=200, eval_every=50, log_every=10)
  return configs.apply(config, preset)
