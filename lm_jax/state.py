"""The TrainState, the tree a checkpoint holds, and how both are made from a config.

A checkpoint holds {'step', 'params', 'opt_state', 'rng'}: the TrainState's arrays and the
dropout key as raw key data (Orbax stores arrays, not typed keys); and 'schedule_state' when
the learning-rate schedule has state (optim.schedule='plateau'), 'carry' when a recurrent model
carries its state across steps (data.order='sequential'). Parameters a run reads but never
trains (`frozen`: a LoRA run's model, lm_jax/lora.py) are saved once, when the run starts, in
WORKDIR/frozen. Training, evaluation, sampling and the benchmark build the initial state the
same way, from `config.seed`, through `state_factory`.
"""

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from lm_jax import lora, models, optim, parallel


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any  # What trains: the model's parameters, or a LoRA run's adapters.
  opt_state: Any
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  frozen: Any = None  # Parameters read but never trained (a LoRA run's model), or None.

  def variables(self, params) -> dict:
    """What apply_fn takes, with `params` in place of the trained parameters."""
    return {"params": params} if self.frozen is None else {"params": params, "frozen": self.frozen}

  # The first step whose loss, gradients or update were not finite (0: none yet). The loop
  # reads it with the metrics, so every step is watched without a device-to-host copy of its
  # own; not checkpointed.
  diverged_at: Any = 0
  schedule_state: Any = None  # A stateful schedule's arrays (optim.schedule_state), else None.
  # A recurrent model's state after the last step, one row per batch row: the next step's
  # initial state (data.order='sequential'), else None.
  carry: Any = None


def create_train_state(model, tx, rng, seq_len: int, schedule_state=None, carry=None) -> TrainState:
  params = jax.jit(model.init)(rng, jnp.zeros((1, seq_len), jnp.int32))["params"]
  return TrainState(
    step=jnp.array(0, jnp.int32),
    params=params,
    opt_state=tx.init(params),
    apply_fn=model.apply,
    tx=tx,
    diverged_at=jnp.array(0, jnp.int32),
    schedule_state=schedule_state,
    carry=carry,
  )


def carries_state(config, model) -> bool:
  """Whether training carries the model's state from step to step: a recurrent model (one
  with `init_carry`) reading contiguous streams (data.order='sequential')."""
  return config.data.order == "sequential" and models.has_carry(model)


def state_factory(config, model, tx) -> tuple[Callable[[], TrainState], jax.Array]:
  """(a function creating the initial TrainState, the dropout key), both from config.seed.

  With train.lora.rank > 0 the state trains adapters and holds the model's parameters frozen.
  """
  init_rng, rng = jax.random.split(jax.random.key(config.seed))
  seq_len = config.data.seq_len
  extra = dict(
    schedule_state=optim.schedule_state(config.optim),
    carry=model.init_carry(config.train.batch_size) if carries_state(config, model) else None,
  )
  adapters = lora.settings(config.train.get("lora"))
  if adapters is None:
    return lambda: create_train_state(model, tx, init_rng, seq_len, **extra), rng
  apply_fn = lora.apply_fn(model, adapters)  # One function: jit keys on it.

  def create():
    frozen, params = lora.init(model, adapters, init_rng, seq_len)
    step = jnp.array(0, jnp.int32)
    return TrainState(
      step, params, tx.init(params), apply_fn, tx, frozen=frozen, diverged_at=step, **extra
    )

  return create, rng


def model_params(state: TrainState):
  """The model's own parameters: frozen under LoRA, else those that train."""
  return state.params if state.frozen is None else state.frozen


def adapted_params(state: TrainState, config):
  """What `model.apply` takes: the trained parameters, or a LoRA run's merged into its model.

  Any layout: pmap's leading device axis is one more leading axis to the merge.
  """
  if state.frozen is None:
    return state.params
  merge = jax.jit(lora.merge, static_argnums=2)
  return merge(state.frozen, state.params, lora.settings(config.train.get("lora")))


def with_model_params(state: TrainState, params) -> TrainState:
  """`state` with the model's own parameters replaced (as train.init_from does)."""
  return state.replace(params=params) if state.frozen is None else state.replace(frozen=params)


# The TrainState's arrays besides the step, params and optimizer state, by checkpoint key; a
# checkpoint holds those a run has (not None), so older checkpoints restore unchanged.
OPTIONAL = ("schedule_state", "carry")


def arrays(state: TrainState) -> dict:
  """The state's arrays by checkpoint key (what Orbax saves and the loop restores)."""
  tree = {"step": state.step, "params": state.params, "opt_state": state.opt_state}
  return {**tree, **{k: getattr(state, k) for k in OPTIONAL if getattr(state, k) is not None}}


def checkpoint_tree(state: TrainState, rng) -> dict:
  """What a checkpoint holds: the state's arrays and the dropout key's raw data."""
  if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
    rng = jax.random.key_data(rng)
  return {**arrays(state), "rng": rng}


def rng_from_tree(tree) -> jax.Array:
  """The dropout key of a restored checkpoint tree, as a typed key on the host."""
  data = tree["rng"]
  return jax.random.wrap_key_data(jax.device_get(data.addressable_data(0)))


def _with_shardings(plan: parallel.Plan, abstract):
  return jax.tree_util.tree_map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
    abstract,
    plan.state_shardings(abstract),
  )


def restore_targets(plan: parallel.Plan, create: Callable[[], TrainState], rng) -> dict:
  """Abstract arrays with the plan's checkpoint shardings: what Orbax restores onto."""
  abstract = checkpoint_tree(jax.eval_shape(create), jax.eval_shape(jax.random.key_data, rng))
  return _with_shardings(plan, abstract)


def frozen_targets(plan: parallel.Plan, create: Callable[[], TrainState]):
  """The frozen parameters as abstract arrays with the plan's shardings; None without any."""
  frozen = jax.eval_shape(create).frozen
  return None if frozen is None else _with_shardings(plan, frozen)
