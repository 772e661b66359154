"""The originating LSTM: embedding 128, one LSTM layer of 256, Adam 1e-3.

  python scripts/train.py --config configs/shakespeare_char_lstm.py --workdir runs/lstm

Context 128, batch 32, constant learning rate, 2000 steps. Measured (seed 0,
whole validation split, 249 s on 2 CPU cores): validation loss 1.548, 2.233
bits per byte; PyTorch's nn.LSTM on the same recipe: 1.533.
"""

import ml_collections

import configs
from configs import shakespeare_char_gpt_cpu


def get_config(arg=None):
  config = shakespeare_char_gpt_cpu.get_config()
  config.model = ml_collections.ConfigDict(
    dict(
      name="lstm",
      embed_size=128,
      hidden_size=256,
      num_layers=1,  # As torch.nn.LSTM's default.
      dropout=0.0,  # Between layers and around the stack.
      tie_weights=False,  # Share embedding and head (needs embed_size == hidden_size).
    )
  )
  config.data.seq_len = 128
  config.optim.update(
    name="adam",
    learning_rate=1e-3,
    min_learning_rate=1e-3,
    warmup_steps=0,
    b2=0.999,
    weight_decay=0.0,
    grad_clip=1.0,
  )
  config.train.batch_size = 32
  return configs.preset(config, arg)
