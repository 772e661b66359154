"""What a config makes before any step runs: the model, its optimizer, the TrainState and layout.

`setup(config, vocab_size)` builds each of them once: the model (its 'auto' settings resolved
for the devices), the optimizer and its schedule, the one function that creates the initial
TrainState (from `config.seed`) and that state's abstract shape, the layout over the devices (a
parallel.Plan) and the training FLOPs per token. Training, evaluation, sampling, import, the
benchmark and the compile check all start from a Setup, and `runs.initial_state` gives each of
them its state by one rule.

A checkpoint holds {'step', 'params', 'opt_state', 'rng'}: the TrainState's arrays and the
dropout key as raw key data (Orbax stores arrays, not typed keys); and 'schedule_state' when
the learning-rate schedule has state (optim.schedule='plateau'), 'carry' when a recurrent model
carries its state across steps (data.order='sequential'). Parameters a run reads but never
trains (`frozen`: a LoRA run's model, lm_jax/lora.py) are saved once, when the run starts, in
WORKDIR/frozen.
"""

import dataclasses
import sys
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from lm_jax import UserError, lora, models, optim, parallel


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any  # What trains: the model's parameters, or a LoRA run's adapters.
  opt_state: Any
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  frozen: Any = None  # Parameters read but never trained (a LoRA run's model), or None.
  # The starting model's parameters, kept frozen beside those that train, for an objective
  # that compares with it (preference tuning without LoRA), else None.
  reference: Any = None

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


def carries_state(config, model) -> bool:
  """Whether training carries the model's state from step to step: a recurrent model (one
  with `init_carry`) reading contiguous streams (data.order='sequential')."""
  return config.data.order == "sequential" and models.has_carry(model)


def state_factory(
  config, model, tx, reference: bool = False
) -> tuple[Callable[..., TrainState], jax.Array]:
  """(create, the dropout key), both from config.seed; the one place a TrainState is made.

  `create(model_params=None)` gives the step-0 state: the model's parameters as `model.init`
  draws them, or `model_params` (train.init_from's), and a fresh optimizer state. With
  train.lora.rank > 0 the state trains adapters and holds the model's parameters frozen; with
  `reference`, a copy of the starting parameters too (none under LoRA: the frozen model is it).
  """
  init_rng, rng = jax.random.split(jax.random.key(config.seed))
  seq_len = config.data.seq_len
  tokens = jnp.zeros((1, seq_len), jnp.int32)
  schedule_state = optim.schedule_state(config.optim)
  carry = model.init_carry(config.train.batch_size) if carries_state(config, model) else None
  adapters = lora.settings(config.train.get("lora"))
  apply_fn = model.apply if adapters is None else lora.apply_fn(model, adapters)  # jit keys on it.

  def create(model_params=None) -> TrainState:
    if adapters is None:
      frozen, params = None, model_params
      if params is None:
        params = jax.jit(model.init)(init_rng, tokens)["params"]
    else:
      frozen, params = lora.init(model, adapters, init_rng, seq_len)
      frozen = frozen if model_params is None else model_params
    step = jnp.array(0, jnp.int32)
    return TrainState(
      step,
      params,
      tx.init(params),
      apply_fn,
      tx,
      frozen=frozen,
      reference=params if reference and adapters is None else None,
      diverged_at=step,
      schedule_state=schedule_state,
      carry=carry,
    )

  return create, rng


@dataclasses.dataclass(frozen=True)
class Setup:
  """What a config and a vocabulary make, before any state exists; see the module docstring."""

  config: Any
  model: Any
  plan: parallel.Plan
  create: Callable[..., TrainState]  # state_factory's.
  abstract: TrainState  # jax.eval_shape(create): the state's shapes and dtypes, traced once.
  rng: jax.Array  # The dropout key.
  lr_schedule: Callable
  flops_per_token: float
  resolved: dict  # What 'auto' settings became on these devices, and why (run.json).


def setup(
  config,
  vocab_size: int,
  tokenizer=None,
  *,
  devices=None,
  plan=None,
  batch_sizes=None,
  reference: bool = False,
) -> Setup:
  """The model, optimizer, initial-state factory and layout of `config` (checked before).

  `tokenizer` gives the end-of-document ids of data.document_masking; without one
  (synthetic benchmarks, compile checks) id 0 stands in, which costs the same. `devices`
  (default: JAX's) are what the layout covers and what 'auto' settings are resolved for:
  the compile check passes a TPU topology's compile-only devices. `plan` is the layout when
  it was made before (an explicit train.parallel, made before the data is read); otherwise it
  is made here, for `batch_sizes` ({what: rows}; default: the training and evaluation batches).
  `reference`: the state keeps a frozen copy of the starting parameters (state_factory).
  """
  c, seq_len = config.train, config.data.seq_len
  if tokenizer is not None:
    eod_ids = models.document_ids(config.data, tokenizer)
  else:
    eod_ids = (0,) if config.data.get("document_masking", False) else ()
  model = models.build_model(config.model, vocab_size, eod_ids)
  requested_attention = config.model.get("attention")
  model, resolved = models.resolve_auto(model, devices[0] if devices is not None else None)
  if requested_attention == "auto" and resolved["attention"] == "reference" and model.dropout:
    print(f"model.attention=auto: reference, {resolved['attention_reason']}", file=sys.stderr)
  max_len = getattr(model, "max_len", None)
  if max_len is not None and max_len < seq_len:
    raise UserError(
      f"data.seq_len={seq_len} exceeds model.max_len={max_len}: "
      "raise model.max_len or lower data.seq_len."
    )
  tx, lr_schedule = optim.make_optimizer(config.optim, c.num_steps)
  create, rng = state_factory(config, model, tx, reference)
  abstract = jax.eval_shape(create)
  flops_per_token = models.flops_per_token(model, abstract.params, seq_len, abstract.frozen)
  if plan is None:
    if batch_sizes is None:
      batch_sizes = parallel.batch_sizes(c)
    flops = flops_per_token * c.batch_size * seq_len
    plan = parallel.make_plan(c.parallel, config.mesh, flops, devices, batch_sizes)
  resolved = {**resolved, "parallel": plan.mode, "parallel_reason": plan.reason}
  return Setup(config, model, plan, create, abstract, rng, lr_schedule, flops_per_token, resolved)


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


# The TrainState's arrays besides the step, params and optimizer state, by checkpoint key; a
# checkpoint holds those a run has (not None), so older checkpoints restore unchanged.
OPTIONAL = ("schedule_state", "carry")


def arrays(state: TrainState) -> dict:
  """The state's arrays by checkpoint key (what Orbax saves and a restore reads)."""
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


def with_shardings(plan: parallel.Plan, abstract):
  """Abstract arrays with the plan's checkpoint shardings: what Orbax restores onto."""
  return jax.tree_util.tree_map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
    abstract,
    plan.state_shardings(abstract),
  )
