"""A run on disk: loading it back, the parameters a new run starts from, and the workdir lock."""

import contextlib
import fcntl
import os
import socket

import jax

from lm_jax import UserError, checkpoint, models, optim, parallel
from lm_jax import config as config_lib
from lm_jax import state as state_lib
from lm_jax.data import tokenizers
from lm_jax.models import layers


def load_run(workdir: str, step: int | None = None):
  """Loads a run's config, model, tokenizer and its newest (or given) checkpoint.

  Returns (config, model, tokenizer, TrainState on one device, step).
  """
  if not os.path.exists(os.path.join(workdir, "config.json")):
    raise UserError(f"{workdir} holds no training run (no config.json): check --workdir.")
  config = config_lib.load(os.path.join(workdir, "config.json"))
  tokenizer = tokenizers.load(os.path.join(workdir, "tokenizer.json"))
  eod_ids = models.document_ids(config.data, tokenizer)
  model = models.build_model(config.model, tokenizer.vocab_size, eod_ids)
  tx, _ = optim.make_optimizer(config.optim, config.train.num_steps)
  create, rng = state_lib.state_factory(config, model, tx)
  ckpt = checkpoint.Checkpointer(workdir, read_only=True)
  try:
    restored = ckpt.restore(state_lib.restore_targets(parallel.Plan("jit"), create, rng), step)
  finally:
    ckpt.close()
  if restored is None:
    raise UserError(f"{workdir} holds no checkpoint: train first, or check --workdir.")
  step, tree, _ = restored
  state = state_lib.TrainState(
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
    from lm_jax.hf import weights  # pylint: disable=g-import-not-at-top  (only for HF dirs)

    params = weights.load_params(path, model_config)
  scanned = "blocks" in abstract_params
  params = layers.stack_blocks(params) if scanned else layers.unstack_blocks(params)
  check_params_fit(params, abstract_params, path)
  return params


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
