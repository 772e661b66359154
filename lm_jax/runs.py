"""A run on disk: loading it back, the parameters a new run starts from, and the workdir lock."""

import contextlib
import fcntl
import json
import os
import socket

import jax
import numpy as np

from lm_jax import UserError, checkpoint, models, optim, parallel
from lm_jax import config as config_lib
from lm_jax import state as state_lib
from lm_jax.data import tokenizers
from lm_jax.models import layers


def load_run(workdir: str, step: int | None = None, merge: bool = True):
  """Loads a run's config, model, tokenizer and its newest (or given) checkpoint.

  Returns (config, model, tokenizer, TrainState on one device, step). A LoRA run's state
  holds the adapted model: its parameters with the adapters merged in, for `model.apply`
  (no optimizer state); with `merge=False`, the state as it trains (adapters and their
  optimizer state; the model's parameters in `frozen`).
  """
  check_run(workdir)
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
    apply_fn=jax.eval_shape(create).apply_fn,
    tx=tx,
    **{k: tree[k] for k in state_lib.OPTIONAL if k in tree},
  )
  frozen = state_lib.frozen_targets(parallel.Plan("jit"), create)
  if frozen is not None:
    state = state.replace(frozen=checkpoint.restore_frozen(workdir, frozen))
    if merge:
      params = state_lib.adapted_params(state, config)
      state = state_lib.TrainState(state.step, params, None, model.apply, tx)
  return config, model, tokenizer, state, step


def best_step(workdir: str) -> int:
  """The checkpoint step with the lowest validation loss in metrics.jsonl (train.keep_best
  keeps that checkpoint)."""
  from lm_jax import records  # pylint: disable=g-import-not-at-top  (records imports TensorBoard)

  ckpt = checkpoint.Checkpointer(workdir, read_only=True)
  try:
    saved = set(ckpt.steps())
  finally:
    ckpt.close()
  losses = {r["step"]: r["val_loss"] for r in records.read_metrics(workdir) if "val_loss" in r}
  evaluated = [s for s in saved if s in losses]
  if not evaluated:
    raise UserError(
      f"{workdir} holds no checkpoint with a validation loss: train with train.keep_best=true, "
      "or name the step with --checkpoint_step."
    )
  return min(evaluated, key=lambda s: (losses[s], s))


def check_params_fit(params, abstract_params, source: str) -> None:
  """Refuses parameters whose tree, shapes or dtypes differ from the config's model."""
  lines = checkpoint.mismatch(params, abstract_params, source)
  if lines:
    raise UserError(
      f"the parameters in {source} do not fit the model of this config (path: "
      f"theirs vs config shape, dtype):\n{lines}\nSet config.model and the tokenizer "
      "(its vocabulary) as that model has them."
    )


def is_run(path: str) -> bool:
  """True for a training run's directory (it holds checkpoints)."""
  return os.path.isdir(os.path.join(path, "checkpoints"))


def check_run(workdir: str, what: str = "--workdir") -> None:
  """Refuses a path that holds no training run, naming what it holds instead."""
  if os.path.isdir(workdir) and os.path.exists(os.path.join(workdir, "config.json")):
    if is_run(workdir) or not _is_hf_dir(workdir):
      return
    raise UserError(
      f"{what} {workdir} is a Hugging Face model directory, not a training run: import it "
      f"first (scripts/import_hf.py --hf_dir {workdir} --workdir RUN) and pass RUN."
    )
  held = "is a file" if os.path.isfile(workdir) else "holds no training run (no config.json)"
  if not os.path.exists(workdir):
    held = "does not exist"
  raise UserError(f"{what} {workdir} {held}: check {what}.")


def _is_hf_dir(path: str) -> bool:
  """A directory that save_pretrained wrote: its config.json names a model type."""
  try:
    with open(os.path.join(path, "config.json")) as f:
      found = json.load(f)
  except (OSError, ValueError):
    return False
  return isinstance(found, dict) and ("model_type" in found or "architectures" in found)


def check_source(path: str, what: str) -> None:
  """Refuses a path that is neither a run with a checkpoint nor a Hugging Face model directory."""
  if is_run(path) or _is_hf_dir(path):
    return
  if os.path.exists(os.path.join(path, "config.json")):
    raise UserError(f"{what}={path!r} is a run with no checkpoint yet: train it first.")
  raise UserError(
    f"{what}={path!r} is neither a training run (a checkpoints/ folder) nor a Hugging Face "
    "model directory (config.json and model.safetensors): check the path."
  )


def initial_params(path: str, model_config, abstract_params, shardings=None):
  """The parameters train.init_from names: a run's newest checkpoint, or a Hugging Face model.

  Arrays in the layout (scanned or not) and dtype of `abstract_params`, checked to fit it:
  on the host, except a Hugging Face model's with `shardings` (the parameters'),
  which are placed on their devices tensor by tensor as they are read.
  """
  if is_run(path):
    params = jax.device_get(load_run(path)[3].params)
    scanned = "blocks" in abstract_params
    params = layers.stack_blocks(params) if scanned else layers.unstack_blocks(params)
    same = jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(abstract_params)
    if same:  # In this run's model.param_dtype.
      params = jax.tree_util.tree_map(lambda x, a: np.asarray(x, a.dtype), params, abstract_params)
  else:
    from lm_jax.hf import weights  # pylint: disable=g-import-not-at-top  (only for HF dirs)

    params = weights.load_params(path, model_config, shardings)
  check_params_fit(params, abstract_params, path)
  return params


def make_workdir(workdir: str, what: str = "--workdir") -> None:
  """Creates a run's directory; a path that is a file or cannot be written is refused."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f"{what} {workdir} is a file, not a directory: pass a directory.")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create {what} {workdir} ({e.strerror}): pick a writable one.") from e


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
  try:
    f = open(path, "a+")  # Closed by the `with` below.
  except OSError as e:
    raise UserError(
      f"cannot write in --workdir {workdir} ({e.strerror}): pick a writable one."
    ) from e
  with f:
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
