"""TrainState, the pure train step, and the training loop around it."""

import contextlib
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from lm_jax import (
  UserError,
  checkpoint,
  data,
  evaluate,
  losses,
  models,
  optim,
  parallel,
  records,
  tokenizers,
)
from lm_jax import config as config_lib


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)


def train_step(state: TrainState, batch, rng, axis_name=None, grad_accum_steps: int = 1):
  """One optimizer step on `batch`; returns (new state, scalar metrics).

  The loss is the mean over every target token of the global batch: token-loss
  sums are divided by the global token count, so summing gradients over
  replicas (pmap) or over microbatches (`grad_accum_steps`, scanned here)
  gives exactly the one-device, one-batch gradient up to rounding.
  """
  rng = jax.random.fold_in(rng, state.step)
  if axis_name is not None:
    rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
  if "weights" not in batch:
    batch = {**batch, "weights": jnp.ones(batch["targets"].shape, jnp.float32)}
  num_tokens = parallel.psum(batch["weights"].sum(), axis_name)

  def loss_fn(params, micro, rng):
    logits = state.apply_fn(
      {"params": params}, micro["inputs"], deterministic=False, rngs={"dropout": rng}
    )
    loss_sum, _ = losses.cross_entropy_sums(logits, micro["targets"], micro["weights"])
    return loss_sum / num_tokens, loss_sum

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if grad_accum_steps == 1:
    (_, loss_sum), grads = grad_fn(state.params, batch, rng)
  else:
    # Row i goes to microbatch i % n, so each device keeps its own rows.
    n = grad_accum_steps
    micro = jax.tree_util.tree_map(
      lambda x: x.reshape(x.shape[0] // n, n, *x.shape[1:]).swapaxes(0, 1), batch
    )

    def accumulate(carry, xs):
      i, m = xs
      (_, loss_sum), grads = grad_fn(state.params, m, jax.random.fold_in(rng, i))
      return jax.tree_util.tree_map(jnp.add, carry, (loss_sum, grads)), None

    zeros = (jnp.zeros((), jnp.float32), jax.tree_util.tree_map(jnp.zeros_like, state.params))
    (loss_sum, grads), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(n), micro))
  grads = parallel.psum(grads, axis_name)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {
    "train_loss": parallel.psum(loss_sum, axis_name) / num_tokens,
    "grad_norm": optax.tree.norm(grads),
    "update_norm": optax.tree.norm(updates),
  }
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def create_train_state(model, tx, rng, seq_len: int) -> TrainState:
  params = jax.jit(model.init)(rng, jnp.zeros((1, seq_len), jnp.int32))["params"]
  return TrainState(
    step=jnp.array(0, jnp.int32),
    params=params,
    opt_state=tx.init(params),
    apply_fn=model.apply,
    tx=tx,
  )


class Preempted(Exception):
  """SIGTERM or SIGINT arrived; a checkpoint of the current step was saved."""

  def __init__(self, signum: int, step: int):
    super().__init__(
      f"received {signal.Signals(signum).name}: saved a checkpoint at step "
      f"{step}; run the same command to resume."
    )
    self.signum = signum


@contextlib.contextmanager
def _catch_signals(received: list):
  """Records SIGTERM/SIGINT in `received` instead of dying mid-step."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  handler = lambda signum, frame: received.append(signum)
  previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


def _checkpoint_tree(state: TrainState, rng) -> dict:
  rng = jax.random.key_data(rng) if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key) else rng
  return {"step": state.step, "params": state.params, "opt_state": state.opt_state, "rng": rng}


def _state_factory(config, model, tx):
  """(a function creating the initial TrainState, the dropout rng), both from config.seed."""
  init_rng, rng = jax.random.split(jax.random.key(config.seed))
  create = lambda: create_train_state(model, tx, init_rng, config.data.seq_len)
  return create, rng


def load_run(workdir: str, step: int | None = None):
  """Loads a run's config, model, tokenizer and the newest (or given) checkpoint.

  Returns (config, model, tokenizer, TrainState on one device, step).
  """
  if not os.path.exists(os.path.join(workdir, "config.json")):
    raise UserError(f"{workdir} holds no training run (no config.json): check --workdir.")
  config = config_lib.load(os.path.join(workdir, "config.json"))
  tokenizer = tokenizers.load(os.path.join(workdir, "tokenizer.json"))
  model = models.build_model(config.model, tokenizer.vocab_size)
  tx, _ = optim.make_optimizer(config.optim, config.train.num_steps)
  create, rng = _state_factory(config, model, tx)
  plan = parallel.Plan("jit")
  abstract = _checkpoint_tree(jax.eval_shape(create), jax.eval_shape(jax.random.key_data, rng))
  ckpt = checkpoint.Checkpointer(workdir, read_only=True)
  try:
    restored = ckpt.restore(_targets(plan, abstract), step)
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


def _targets(plan, abstract_tree):
  """Abstract arrays carrying the plan's checkpoint shardings: what Orbax restores onto."""
  return jax.tree_util.tree_map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
    abstract_tree,
    plan.state_shardings(abstract_tree),
  )


def train_and_evaluate(config, workdir: str):
  """Trains `config` in `workdir`, resuming from its newest checkpoint if any.

  Returns (final state, final validation metrics).
  """
  os.makedirs(workdir, exist_ok=True)
  writer = records.MetricWriter(workdir)
  c = config.train
  seq_len = config.data.seq_len

  # Data.
  tokenizer, tokens = data.prepare(config.data, workdir, is_writer=jax.process_index() == 0)

  # Model, optimizer and their layout on the devices.
  model = models.build_model(config.model, tokenizer.vocab_size)
  max_len = getattr(model, "max_len", None)
  if max_len is not None and max_len < seq_len:
    raise UserError(
      f"data.seq_len={seq_len} exceeds model.max_len={max_len}: "
      "raise model.max_len or lower data.seq_len."
    )
  tx, lr_schedule = optim.make_optimizer(config.optim, c.num_steps)
  plan = parallel.make_plan(c.parallel, config.mesh)
  eval_batch_size = c.eval_batch_size or c.batch_size
  plan.check_batch(c.batch_size)
  plan.check_batch(eval_batch_size, "train.eval_batch_size")
  per_replica = c.batch_size // plan.num_replicas
  if c.grad_accum_steps < 1 or per_replica % c.grad_accum_steps:
    raise UserError(
      f"train.grad_accum_steps={c.grad_accum_steps} does not divide the "
      f"{per_replica} rows each device gets: pick a divisor of {per_replica}."
    )
  create, dropout_rng = _state_factory(config, model, tx)
  state = plan.init(create)
  flops_per_token = models.flops_per_token(model, jax.eval_shape(create).params, seq_len)

  # Restore.
  ckpt = checkpoint.Checkpointer(workdir, c.keep_checkpoints, c.keep_best)
  restored = ckpt.restore(
    _targets(
      plan,
      _checkpoint_tree(jax.eval_shape(create), jax.eval_shape(jax.random.key_data, dropout_rng)),
    )
  )
  if restored is not None:
    step, tree, _ = restored
    state = state.replace(**plan.put({k: tree[k] for k in ("step", "params", "opt_state")}))
    dropout_rng = jax.random.wrap_key_data(np.asarray(tree["rng"].addressable_data(0)))
    print(f"resumed {workdir} from step {step}", file=sys.stderr)
  else:
    writer.write_text("config", "```\n" + config.to_json_best_effort(indent=2) + "\n```")
  start_step = int(plan.to_host(state.step))
  records.truncate_metrics(workdir, start_step)  # Lines a killed run wrote past its checkpoint.
  records.write_config(config, workdir)  # Only now: a refused restore leaves the records alone.
  records.write_run_info(config, workdir, data.fingerprints(tokens))

  # Step functions.
  p_train_step = plan.compile_step(
    functools.partial(train_step, grad_accum_steps=c.grad_accum_steps), state=state
  )
  p_eval_step = plan.compile_step(evaluate.eval_step, in_axes=(0, 0), donate=False)

  def run_eval(step):
    m = evaluate.evaluate(p_eval_step, state, tokens["validation"], seq_len, eval_batch_size, plan)
    writer.write(step, val_loss=m["loss"], val_ppl=m["perplexity"])
    return m

  def save(step, eval_metrics):
    metrics = {"val_loss": eval_metrics["loss"]} if eval_metrics else None
    ckpt.save(
      step,
      plan.place(_checkpoint_tree(plan.get(state), dropout_rng)),
      meta={"step": step, "seed": config.seed, "order": config.data.order},
      metrics=metrics,
    )

  # Loop.
  tokens_per_step = c.batch_size * seq_len
  t_start = t_last = time.perf_counter()
  last_step = start_step
  eval_metrics = in_flight = None
  received = []
  rows = plan.rows(c.batch_size)
  make_batch = lambda step: plan.shard(
    data.train_batch(
      tokens["train"], config.seed, step, c.batch_size, seq_len, rows, config.data.order
    )
  )
  batches = data.Prefetcher(make_batch, range(start_step, c.num_steps), config.data.prefetch)
  bar = tqdm.tqdm(
    range(start_step, c.num_steps),
    initial=start_step,
    total=c.num_steps,
    disable=jax.process_index() != 0,
    dynamic_ncols=True,
  )
  try:
    with _catch_signals(received):
      for step, batch in zip(bar, batches):
        state, metrics = p_train_step(state, batch, dropout_rng)
        # One step in flight at most: enough to hide dispatch, and XLA:CPU's in-process
        # collectives (pmap over a CPU's cores) can deadlock when many steps queue up.
        jax.block_until_ready(in_flight)
        in_flight = metrics
        done = step + 1
        last = done == c.num_steps
        stop = list(received)  # Signals after this point are handled at the next step.
        do_save = done % c.checkpoint_every == 0 or last or bool(stop)
        do_eval = done % c.eval_every == 0 or last or (do_save and c.keep_best)
        if done % c.log_every == 0 or do_save:
          metrics = plan.to_host(metrics)
          if not np.isfinite(metrics["train_loss"]):
            raise UserError(
              f"the training loss became {metrics['train_loss']} by step {done}; "
              "nothing past the last checkpoint was saved: lower "
              "optim.learning_rate or set optim.grad_clip."
            )
          now = time.perf_counter()
          tok_s = tokens_per_step * (done - last_step) / (now - t_last)
          input_wait = batches.wait_sec / (now - t_last)
          t_last, last_step, batches.wait_sec = now, done, 0.0
          writer.write(
            done,
            **metrics,
            learning_rate=lr_schedule(step),
            tokens_per_sec=tok_s,
            flops_per_sec=tok_s * flops_per_token,
            input_wait_share=input_wait,
            elapsed_sec=now - t_start,
          )
          bar.set_postfix(
            loss=f"{metrics['train_loss']:.4f}",
            tok_s=f"{tok_s:,.0f}",
            flop_s=f"{tok_s * flops_per_token:.3g}",
          )
        eval_metrics = run_eval(done) if do_eval else None
        if eval_metrics:
          bar.write(
            f"step {done}: val_loss {eval_metrics['loss']:.4f} "
            f"val_ppl {eval_metrics['perplexity']:.2f}",
            file=sys.stderr,
          )
        if do_save:
          save(done, eval_metrics)
        if stop:
          raise Preempted(stop[0], done)
    if c.num_steps <= start_step:
      eval_metrics = run_eval(start_step)
  finally:
    batches.close()
    bar.close()
    ckpt.wait()
    ckpt.close()
    writer.close()
  final = plan.get(state)  # Global arrays; on one host, fetched to numpy.
  return (jax.device_get(final) if jax.process_count() == 1 else final), eval_metrics
