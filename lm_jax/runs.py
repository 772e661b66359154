"""A run on disk: the one road to its initial state, loading it back, and the workdir lock."""

import contextlib
import fcntl
import json
import os
import socket
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np

from lm_jax import UserError, checkpoint
from lm_jax import config as config_lib
from lm_jax import state as state_lib
from lm_jax.data import tokenizers
from lm_jax.models import layers


class Start(NamedTuple):
  """Where a run starts: its state (in the plan's layout), dropout key, step, and the meta of
  the checkpoint it resumed (None when it starts at step 0)."""

  state: Any
  rng: jax.Array
  step: int
  meta: dict | None


def initial_state(
  s: state_lib.Setup,
  ckpt: checkpoint.Checkpointer | None,
  step: int | None = None,
  resume_only: bool = False,
) -> Start:
  """The state a run starts from, in `s.plan`'s layout, by the one rule every entry point takes.

  1. The newest checkpoint in `ckpt` that restores (or `step`), with the trees saved once
     (a LoRA run's frozen model, preference tuning's reference).
  2. Else, with train.init_from, that run's or Hugging Face model's parameters and a fresh
     optimizer state (`resume_only`: refused instead, for a run loaded back).
  3. Else fresh parameters from config.seed.
  A trainer's (writable) `ckpt` also saves those trees, once, at a fresh start; no `ckpt`
  (a run not on disk yet) starts at 2 or 3.
  """
  plan, abstract = s.plan, s.abstract
  restored = None
  if ckpt is not None:
    restored = ckpt.restore(state_lib.with_shardings(plan, _targets(abstract, s.rng)), step)
  if restored is not None:
    at, tree, meta = restored
    arrays = {k: tree[k] for k in state_lib.arrays(abstract)}
    state = abstract.replace(**plan.put({**arrays, "diverged_at": np.int32(0)}))
    for name in checkpoint.ONCE:  # Saved once, when the run started.
      if getattr(abstract, name) is not None:
        once = ckpt.restore_once(name, state_lib.with_shardings(plan, getattr(abstract, name)))
        state = state.replace(**{name: plan.put(once)})
    return Start(state, state_lib.rng_from_tree(tree), at, meta)
  if resume_only:
    workdir = os.path.dirname(ckpt.directory)
    raise UserError(f"{workdir} holds no checkpoint: train first, or check --workdir.")
  source = s.config.train.get("init_from")
  if source:  # Read straight onto the devices, in the layout the state takes.
    model = state_lib.model_params(abstract)
    params = initial_params(source, s.config.model, model, plan.state_shardings(model))
    state = plan.init(s.create, abstract, plan.place(params))
  else:
    state = plan.init(s.create, abstract)
  for name in checkpoint.ONCE:
    if getattr(state, name) is not None and ckpt is not None and not ckpt.read_only:
      ckpt.save_once(name, plan.place(plan.get(getattr(state, name))))
  return Start(state, s.rng, 0, None)


def _targets(abstract: state_lib.TrainState, rng) -> dict:
  return state_lib.checkpoint_tree(abstract, jax.eval_shape(jax.random.key_data, rng))


def save_state(ckpt: checkpoint.Checkpointer, plan, state, rng, step: int, meta: dict, **kw):
  """Starts saving `state` (in `plan`'s layout) and the dropout key as checkpoint `step`."""
  tree = plan.place(state_lib.checkpoint_tree(plan.get(state), rng))
  ckpt.save(step, tree, meta={"step": step, **meta}, **kw)


class Loaded(NamedTuple):
  """A run loaded back: its config, model, tokenizer, state, the checkpoint's step, and the
  layout the state is in."""

  config: Any
  model: Any
  tokenizer: Any
  state: state_lib.TrainState
  step: int
  plan: Any


def load_run(
  workdir: str,
  step: int | None = None,
  merge: bool = True,
  parallel: str = "jit",
  batch_size: int = 0,
) -> Loaded:
  """Loads a run's config, model, tokenizer and its newest (or given) checkpoint.

  The state is laid out by `parallel` (train.parallel's modes; '' the run's own), which
  must split `batch_size` rows when given; by default one device. A LoRA run's state holds
  the adapted model: its parameters with the adapters merged in, for `model.apply` (no
  optimizer state); with `merge=False`, the state as it trains (adapters and their optimizer
  state; the model's parameters in `frozen`).
  """
  config = read_config(workdir)
  tokenizer = tokenizers.load(os.path.join(workdir, "tokenizer.json"))
  layout = ml_collections.ConfigDict(config.to_dict())
  layout.train.parallel = parallel or config.train.parallel
  sizes = {"the eval batch size": batch_size} if batch_size else {}
  s = state_lib.setup(layout, tokenizer.vocab_size, tokenizer, batch_sizes=sizes)
  ckpt = checkpoint.Checkpointer(workdir, read_only=True)
  try:
    state, _, at, _ = initial_state(s, ckpt, step, resume_only=True)
  finally:
    ckpt.close()
  if merge and state.frozen is not None:
    adapted = state_lib.adapted_params(state, config)
    state = state.replace(params=adapted, opt_state=None, frozen=None, apply_fn=s.model.apply)
  state = state.replace(reference=None)  # Preference tuning's; nothing a loaded run reads.
  return Loaded(config, s.model, tokenizer, state, at, s.plan)


def read_config(workdir: str):
  """The config a run was trained with (its config.json), once the path is checked to hold one."""
  check_run(workdir)
  return config_lib.load(os.path.join(workdir, "config.json"))


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
    params = jax.device_get(load_run(path).state.params)
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
