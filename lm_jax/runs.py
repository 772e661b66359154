"""A run on disk: its TrainState, the tree its checkpoints hold, and loading it back.

A checkpoint holds {'step', 'params', 'opt_state', 'rng'}: the TrainState's
arrays and the dropout key as raw key data (Orbax stores arrays, not typed
keys). Training, evaluation, sampling and the benchmark build the initial
state the same way, from `config.seed`, through `state_factory`.
"""

import contextlib
import fcntl
import os
import socket
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from lm_jax import UserError, checkpoint, models, optim, parallel, tokenizers
from lm_jax import config as config_lib


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)


def create_train_state(model, tx, rng, seq_len: int) -> TrainState:
  params = jax.jit(model.init)(rng, jnp.zeros((1, seq_len), jnp.int32))["params"]
  return TrainState(
    step=jnp.array(0, jnp.int32),
    params=params,
    opt_state=tx.init(params),
    apply_fn=model.apply,
    tx=tx,
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


def load_run(workdir: str, step: int | None = None):
  """Loads a run's config, model, tokenizer and its newest (or given) checkpoint.

  Returns (config, model, tokenizer, TrainState on one device, step).
  """
  if not os.path.exists(os.path.join(workdir, "config.json")):
    raise UserError(f"{workdir} holds no training run (no config.json): check --workdir.")
  config = config_lib.load(os.path.join(workdir, "config.json"))
  tokenizer = tokenizers.load(os.path.join(workdir, "tokenizer.json"))
  model = models.build_model(config.model, tokenizer.vocab_size)
  tx, _ = optim.make_optimizer(config.optim, config.train.num_steps)
  create, rng = state_factory(config, model, tx)
  ckpt = checkpoint.Checkpointer(workdir, read_only=True)
  try:
    restored = ckpt.restore(restore_targets(parallel.Plan("jit"), create, rng), step)
  finally:
    ckpt.close()
  if restored is None:
    raise UserError(f"{workdir} holds no checkpoint: train first, or check --workdir.")
  step, tree, _ = restored
  state = TrainState(
    step=tree["step"],
    params=tree["params"],
    opt_state=tree["opt_state"],
    apply_fn=model.apply,
    tx=tx,
  )
  return config, model, tokenizer, state, step


@contextlib.contextmanager
def lock_workdir(workdir: str):
  """Holds WORKDIR/lock for the life of a trainer; a second trainer is refused at once.

  An OS lock (flock), so a killed run leaves nothing stale behind: the next
  trainer just takes it. In a multi-host run only process 0 holds it. On
  network file systems without flock, use a workdir per run.
  """
  if jax.process_index() != 0:
    yield
    return
  path = os.path.join(workdir, "lock")
  with open(path, "a+") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = f.read().strip() or "another process"
      raise UserError(
        f"{workdir} is in use by a live training run ({holder}): wait for it to end, "
        "stop it, or pass another --workdir."
      ) from None
    f.seek(0)
    f.truncate()
    f.write(f"host {socket.gethostname()}, pid {os.getpid()}\n")
    f.flush()
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)
