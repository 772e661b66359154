"""Train states made as training makes them, for tests that drive a step or an evaluation."""

import jax

from configs import tiny
from lm_jax import optim
from lm_jax import state as state_lib


def train_state(model, config=None, tx=None, params=None, **fields) -> state_lib.TrainState:
  """The step-0 TrainState of `model` by state.state_factory (config: configs/tiny.py's; tx:
  its optimizer), with the model's parameters `params` when given and `fields` replaced."""
  config = config or tiny.get_config()
  tx = tx or optim.make_optimizer(config.optim, config.train.num_steps)[0]
  create, _ = state_lib.state_factory(config, model, tx)
  state = jax.jit(create)(params)
  return state.replace(**fields) if fields else state
