"""Instruction tuning: fine-tunes an imported model on local conversations, loss on its replies.

  python scripts/import_hf.py --hf_dir ~/models/chat_model --workdir runs/chat   # optional
  python scripts/train.py --config configs/sft_hf.py:runs/chat --workdir runs/chat_sft \
    --config.data.text_files.train=conversations.jsonl

The argument names the model, as for finetune_hf.py: a run (such as one scripts/import_hf.py
wrote) or a Hugging Face model directory. Records {"messages": [{"role": "user", "content":
...}, {"role": "assistant", "content": ...}]} in JSON Lines (.jsonl, .jsonl.gz, .jsonl.zst; or
Parquet with data.dataset=parquet, a Hugging Face dataset with data.dataset=hf:NAME) are
rendered with the model's chat template (the built-in one where it has none) and packed into
windows; the loss counts the assistant's tokens only, and the validation loss is the loss on
them (the last 5% of the conversations unless data.text_files.validation names others).
Everything else is finetune_hf.py's. Measured: docs/benchmarks.md.
"""

import configs
from configs import finetune_hf


def get_config(source=None):
  source, preset = configs.split(source)
  config = finetune_hf.get_config(source)
  config.data.update(dataset="jsonl", format="chat", holdout_fraction=0.05)
  config.data.text_files.update(train="", validation="", test="")  # Name the conversations.
  config.data.order = "epochs"  # Each window of the conversations once per epoch.
  return configs.apply(config, preset)
