"""The TrainState, the tree a checkpoint holds, and how both are made from a config.

A checkpoint holds {'step', 'params', 'opt_state', 'rng'}: the TrainState's arrays and the
dropout key as raw key data (Orbax stores arrays, not typed keys). Training, evaluation,
sampling and the benchmark build the initial state the same way, from `config.seed`, through
`state_factory`.
"""

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from lm_jax import parallel


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  # The first step whose loss, gradients or update were not finite (0: none yet). The loop
  # reads it with the metrics, so every step is watched without a device-to-host copy of its
  # own; not checkpointed.
  diverged_at: Any = 0


def create_train_state(model, tx, rng, seq_len: int) -> TrainState:
  params = jax.jit(model.init)(rng, jnp.zeros((1, seq_len), jnp.int32))["params"]
  return TrainState(
    step=jnp.array(0, jnp.int32),
    params=params,
    opt_state=tx.init(params),
    apply_fn=model.apply,
    tx=tx,
    diverged_at=jnp.array(0, jnp.int32),
  )


def state_factory(config, model, tx) -> tuple[Callable[[], TrainState], jax.Array]:
  """(a function creating the initial TrainState, the dropout key), both from config.seed."""
  init_rng, rng = jax.random.split(jax.random.key(config.seed))
  return lambda: create_train_state(model, tx, init_rng, config.data.seq_len), rng


def checkpoint_tree(state: TrainState, rng) -> dict:
  """What a checkpoint holds: the state's arrays and the dropout key's raw data."""
  if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
    rng = jax.random.key_data(rng)
  return {"step": state.step, "params": state.params, "opt_state": state.opt_state, "rng": rng}


def rng_from_tree(tree) -> jax.Array:
  """The dropout key of a restored checkpoint tree, as a typed key on the host."""
  data = tree["rng"]
  return jax.random.wrap_key_data(jax.device_get(data.addressable_data(0)))


def restore_targets(plan: parallel.Plan, create: Callable[[], TrainState], rng) -> dict:
  """Abstract arrays with the plan's checkpoint shardings: what Orbax restores onto."""
  abstract = checkpoint_tree(jax.eval_shape(create), jax.eval_shape(jax.random.key_data, rng))
  return jax.tree_util.tree_map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
    abstract,
    plan.state_shardings(abstract),
  )
