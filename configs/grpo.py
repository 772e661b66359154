"""Reinforcement learning from reward functions (GRPO) on a run or a Hugging Face model.
  python scripts/train.py --config configs/grpo.py:runs/chat_sft --workdir runs/chat_grpo \
    --config.data.text_files.train=prompts.jsonl --config.train.grpo.reward=rewards:correct
The argument names the model, as for finetune_hf.py. Records {"prompt": ...} (or {"messages":
[...]}, rendered by the chat template with its generation prompt) and any other fields the
reward functions read (a reference "answer", say) in JSON Lines or Parquet; the last 5% are the
held-out prompts unless data.text_files.validation names others. train.grpo.reward names the
functions as 'package.module:function' (on PYTHONPATH), called as TRL calls them:
reward(prompts, completions, **fields) -> a float per completion. Each step samples
train.grpo.group_size completions of each of train.batch_size / group_size prompts, and takes
one step of GRPO's clipped objective with a KL penalty (train.grpo.kl) to the starting model.
Logged: reward, reward_std, reward/<function>, kl, completion_length, zero_variance_groups,
sample and update tokens/s; evaluation: val_reward of one greedy completion per held-out
prompt. Measured: docs/benchmarks.md ("Reinforcement learning from a reward").
"""

import configs
from configs import finetune_hf


def get_config(source=None):
  source, preset = configs.split(source)
  config = finetune_hf.get_config(source)
  config.data.update(dataset="jsonl", format="prompt", holdout_fraction=0.05, seq_len=128)
  config.data.text_files.update(train="", validation="", test="")  # Name the prompts.
  config.optim.update(learning_rate=1e-5, min_learning_rate=1e-6, warmup_steps=0, weight_decay=0.0)
  config.train.grpo.update(group_size=8, max_new_tokens=64, temperature=1.0, kl=0.04)
  config.train.update(objective="grpo", batch_size=32, num_steps=200, eval_every=50, log_every=5)
  return configs.apply(config, preset)
