"""TrainState, the pure train step, and the training loop around it."""

import contextlib
import os
import signal
import sys
import threading
import time
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from lm_jax import config as config_lib
from lm_jax import (UserError, checkpoint, data, evaluate, losses, models, optim, parallel,
                    records, tokenizers)


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)


def train_step(state: TrainState, batch, rng, axis_name=None):
  """One optimizer step on `batch`; returns (new state, scalar metrics).

  The loss is the mean over every target token of the global batch: each
  replica's token-loss sum is divided by the global token count, so summing
  gradients over replicas gives exactly the one-device gradient.
  """
  rng = jax.random.fold_in(rng, state.step)
  if axis_name is not None:
    rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
  weights = batch.get("weights")
  local_tokens = jnp.float32(batch["targets"].size) if weights is None else weights.sum()
  num_tokens = parallel.psum(local_tokens, axis_name)

  def loss_fn(params):
    logits = state.apply_fn({"params": params}, batch["inputs"], deterministic=False,
                            rngs={"dropout": rng})
    loss_sum, _ = losses.cross_entropy_sums(logits, batch["targets"], weights)
    return loss_sum / num_tokens, loss_sum

  (_, loss_sum), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
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
  return TrainState(step=jnp.array(0, jnp.int32), params=params, opt_state=tx.init(params),
                    apply_fn=model.apply, tx=tx)


def prepare_data(data_config, workdir: str):
  """Loads the texts, trains (or reloads) the tokenizer, and tokenizes each split."""
  texts = data.load_texts(data_config)
  path = os.path.join(workdir, "tokenizer.json")
  if os.path.exists(path):
    tokenizer = tokenizers.load(path)
  else:
    tokenizer = tokenizers.train(data_config.tokenizer, texts["train"])
    if jax.process_index() == 0:
      tokenizers.save(tokenizer, path)
  tokens = {split: tokenizer.encode(text) for split, text in texts.items()}
  for split, toks in tokens.items():
    data.check_length(toks, split, data_config.seq_len)
  return tokenizer, tokens


class Preempted(Exception):
  """SIGTERM or SIGINT arrived; a checkpoint of the current step was saved."""

  def __init__(self, signum: int, step: int):
    super().__init__(f"received {signal.Signals(signum).name}: saved a checkpoint at step "
                     f"{step}; run the same command to resume.")
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
  return {"step": state.step, "params": state.params, "opt_state": state.opt_state, "rng": rng}


def load_run(workdir: str, step: int | None = None):
  """Loads a run's config, model, tokenizer and the newest (or given) checkpoint.

  Returns (config, model, tokenizer, host TrainState, step).
  """
  if not os.path.exists(os.path.join(workdir, "config.json")):
    raise UserError(f"{workdir} holds no training run (no config.json): check --workdir.")
  config = config_lib.load(os.path.join(workdir, "config.json"))
  tokenizer = tokenizers.load(os.path.join(workdir, "tokenizer.json"))
  model = models.build_model(config.model, tokenizer.vocab_size)
  tx, _ = optim.make_optimizer(config.optim, config.train.num_steps)
  init_rng, rng = jax.random.split(jax.random.key(config.seed))
  state = jax.eval_shape(lambda: create_train_state(model, tx, init_rng, config.data.seq_len))
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                                  _checkpoint_tree(state, rng))
  ckpt = checkpoint.Checkpointer(workdir, read_only=True)
  try:
    restored = ckpt.restore(target, step)
  finally:
    ckpt.close()
  if restored is None:
    raise UserError(f"{workdir} holds no checkpoint: train first, or check --workdir.")
  step, tree, _ = restored
  state = TrainState(step=tree["step"], params=tree["params"], opt_state=tree["opt_state"],
                     apply_fn=model.apply, tx=tx)
  return config, model, tokenizer, state, step


def train_and_evaluate(config, workdir: str):
  """Trains `config` in `workdir`, resuming from its newest checkpoint if any.

  Returns (final host state, final validation metrics).
  """
  os.makedirs(workdir, exist_ok=True)
  writer = records.MetricWriter(workdir)
  c = config.train
  seq_len = config.data.seq_len

  # Data.
  tokenizer, tokens = prepare_data(config.data, workdir)

  # Model and optimizer.
  model = models.build_model(config.model, tokenizer.vocab_size)
  max_len = getattr(model, "max_len", None)
  if max_len is not None and max_len < seq_len:
    raise UserError(f"data.seq_len={seq_len} exceeds model.max_len={max_len}: "
                    "raise model.max_len or lower data.seq_len.")
  tx, lr_schedule = optim.make_optimizer(config.optim, c.num_steps)
  init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))
  state = create_train_state(model, tx, init_rng, seq_len)
  flops_per_token = models.flops_per_token(model, state.params, seq_len)

  # Restore.
  ckpt = checkpoint.Checkpointer(workdir, c.keep_checkpoints, c.keep_best)
  restored = ckpt.restore(_checkpoint_tree(state, dropout_rng))
  if restored is not None:
    step, tree, _ = restored
    state = state.replace(step=tree["step"], params=tree["params"], opt_state=tree["opt_state"])
    dropout_rng = tree["rng"]
    print(f"resumed {workdir} from step {step}", file=sys.stderr)
  else:
    writer.write_text("config", "```\n" + config.to_json_best_effort(indent=2) + "\n```")
  start_step = int(state.step)
  records.truncate_metrics(workdir, start_step)  # Lines a killed run wrote past its checkpoint.
  records.write_config(config, workdir)  # Only now: a refused restore leaves the records alone.
  records.write_run_info(config, workdir)

  # Step functions.
  mode = parallel.resolve_mode(c.parallel)
  eval_batch_size = c.eval_batch_size or c.batch_size
  parallel.check_batch(c.batch_size, mode)
  parallel.check_batch(eval_batch_size, mode, "train.eval_batch_size")
  p_train_step = parallel.compile_step(train_step, mode)
  p_eval_step = parallel.compile_step(evaluate.eval_step, mode, in_axes=(0, 0), donate=False)
  state = parallel.replicate(state, mode)

  def run_eval(step):
    m = evaluate.evaluate(p_eval_step, state, tokens["validation"], seq_len, eval_batch_size,
                          mode)
    writer.write(step, val_loss=m["loss"], val_ppl=m["perplexity"])
    return m

  def save(step, eval_metrics):
    metrics = {"val_loss": eval_metrics["loss"]} if eval_metrics else None
    host_state = parallel.unreplicate(state, mode)
    ckpt.save(step, _checkpoint_tree(host_state, dropout_rng),
              meta={"step": step, "seed": config.seed, "batch": "random_windows"},
              metrics=metrics)

  # Loop.
  tokens_per_step = c.batch_size * seq_len
  t_start = t_last = time.perf_counter()
  last_step = start_step
  eval_metrics = None
  received = []
  bar = tqdm.tqdm(range(start_step, c.num_steps), initial=start_step, total=c.num_steps,
                  disable=jax.process_index() != 0, dynamic_ncols=True)
  try:
    with _catch_signals(received):
      for step in bar:
        batch = data.train_batch(tokens["train"], config.seed, step, c.batch_size, seq_len)
        state, metrics = p_train_step(state, parallel.shard(batch, mode), dropout_rng)
        done = step + 1
        last = done == c.num_steps
        do_save = done % c.checkpoint_every == 0 or last or bool(received)
        do_eval = done % c.eval_every == 0 or last or (do_save and c.keep_best)
        if done % c.log_every == 0 or do_save:
          metrics = jax.device_get(parallel.unreplicate(metrics, mode))
          if not np.isfinite(metrics["train_loss"]):
            raise UserError(f"the training loss became {metrics['train_loss']} by step {done}; "
                            "nothing past the last checkpoint was saved: lower "
                            "optim.learning_rate or set optim.grad_clip.")
          now = time.perf_counter()
          tok_s = tokens_per_step * (done - last_step) / (now - t_last)
          t_last, last_step = now, done
          writer.write(done, **metrics, learning_rate=lr_schedule(step), tokens_per_sec=tok_s,
                       flops_per_sec=tok_s * flops_per_token, elapsed_sec=now - t_start)
          bar.set_postfix(loss=f"{metrics['train_loss']:.4f}", tok_s=f"{tok_s:,.0f}",
                          flop_s=f"{tok_s * flops_per_token:.3g}")
        eval_metrics = run_eval(done) if do_eval else None
        if eval_metrics:
          bar.write(f"step {done}: val_loss {eval_metrics['loss']:.4f} "
                    f"val_ppl {eval_metrics['perplexity']:.2f}", file=sys.stderr)
        if do_save:
          save(done, eval_metrics)
        if received:
          raise Preempted(received[0], done)
    if c.num_steps <= start_step:
      eval_metrics = run_eval(start_step)
  finally:
    bar.close()
    ckpt.wait()
    ckpt.close()
    writer.close()
  return jax.device_get(parallel.unreplicate(state, mode)), eval_metrics
