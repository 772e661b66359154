"""A run on disk: its TrainState, the tree its checkpoints hold, and loading it back.

Also where runs meet Hugging Face directories (through `hf`): importing a
model as a run, starting a run from one (train.init_from), exporting a run.

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
import ml_collections
import optax

from lm_jax import UserError, checkpoint, hf, models, optim, parallel, records, tokenizers
from lm_jax import config as config_lib
from lm_jax.models import layers


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


def check_params_fit(params, abstract_params, source: str) -> None:
  """Refuses parameters whose tree, shapes or dtypes differ from the config's model."""
  lines = checkpoint.mismatch(params, abstract_params, source)
  if lines:
    raise UserError(
      f"the parameters in {source} do not fit the model of this config (path: "
      f"theirs vs config shape, dtype):\n{lines}\nSet config.model and the tokenizer "
      "(its vocabulary) as that model has them."
    )


def _is_run(path: str) -> bool:
  return os.path.isdir(os.path.join(path, "checkpoints"))


def initial_params(path: str, model_config, abstract_params):
  """The parameters train.init_from names: a run's newest checkpoint, or a Hugging Face model.

  Host arrays in the layout of `abstract_params` (scanned or not), checked to fit it.
  """
  if _is_run(path):
    params = jax.device_get(load_run(path)[3].params)
  else:
    params = hf.load_params(path, model_config)
  scanned = "blocks" in abstract_params
  params = layers.stack_blocks(params) if scanned else layers.unstack_blocks(params)
  check_params_fit(params, abstract_params, path)
  return params


def import_hf(hf_dir: str, workdir: str, base_config) -> None:
  """Writes the Hugging Face model in `hf_dir` as a run: config.json, tokenizer.json, step 0.

  The config is `base_config` with the model's config.model (keeping the
  base's dtype, remat and scan_layers) and its tokenizer (data.tokenizer='hf').
  """
  if os.path.exists(os.path.join(workdir, "config.json")):
    raise UserError(f"{workdir} already holds a run: pass a new --workdir.")
  config = ml_collections.ConfigDict(base_config.to_dict())
  model_config = hf.model_config(hf_dir)
  for key in ("dtype", "remat", "scan_layers"):
    model_config[key] = config.model.get(key, model_config[key])
  config.model = ml_collections.ConfigDict(model_config)
  config.data.tokenizer, config.data.hf_tokenizer = "hf", os.path.abspath(hf_dir)
  tokenizer = hf.load_tokenizer(hf_dir)
  model = models.build_model(config.model, tokenizer.vocab_size)
  tx, _ = optim.make_optimizer(config.optim, config.train.num_steps)
  create, rng = state_factory(config, model, tx)
  params = jax.tree_util.tree_map(jnp.asarray, hf.load_params(hf_dir, config.model))
  check_params_fit(params, jax.eval_shape(create).params, hf_dir)
  state = TrainState(jnp.array(0, jnp.int32), params, jax.jit(tx.init)(params), model.apply, tx)
  os.makedirs(workdir, exist_ok=True)
  tokenizers.save(tokenizer, os.path.join(workdir, "tokenizer.json"))
  ckpt = checkpoint.Checkpointer(workdir)
  try:
    tree = parallel.Plan("jit").place(checkpoint_tree(state, rng))
    ckpt.save(0, tree, meta={"step": 0, "seed": config.seed, "order": config.data.order})
  finally:
    ckpt.close()  # Waits for the save.
  records.write_config(config, workdir)  # Last: a run directory is complete once it has one.
  records.write_run_info(config, workdir)


def export_hf(workdir: str, out_dir: str, step: int | None = None) -> list[str]:
  """Writes a run's newest (or given) checkpoint as a Hugging Face directory; returns notes."""
  _, model, tokenizer, state, _ = load_run(workdir, step)
  return hf.save_model(out_dir, model, state.params, tokenizer)


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
