"""nanoGPT's baby GPT on tiny-shakespeare: the GPU-sized character recipe.

  python scripts/train.py --config configs/shakespeare_char_gpt.py --workdir runs/gpt

6 layers, 6 heads, width 384, context 256, dropout 0.2; nanoGPT reports a
validation loss of 1.4697 after 5000 steps on one A100. lm_jax has not yet
been measured on this recipe (a GPU job: 748 tokens/s on 2 CPU cores).
"""

import configs
from configs import shakespeare_char_gpt_cpu


def get_config(arg=None):
  config = shakespeare_char_gpt_cpu.get_config()
  config.model.update(num_layers=6, num_heads=6, d_model=384, max_len=256, dropout=0.2)
  config.data.seq_len = 256
  config.train.update(batch_size=64, num_steps=5000, log_every=100, eval_every=250)
  return configs.preset(config, arg)
