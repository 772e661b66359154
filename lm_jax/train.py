"""Training: the entry point first, then the loop, then the pure train step.

`train_and_evaluate` reads the data, builds the run (state.setup), takes its state by the one
rule of runs.initial_state (resume, train.init_from, or fresh) and runs `_loop`, the one place
that decides when to log, evaluate, save and stop. `train_step` is a pure function
(state, batch, rng) -> (state, metrics) that knows only its pmap axis name, if any.
"""

import contextlib
import dataclasses
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from lm_jax import (
  UserError,
  checkpoint,
  checks,
  console,
  losses,
  objectives,
  optim,
  parallel,
  placement,
  profiling,
  records,
  runs,
)
from lm_jax import config as config_lib
from lm_jax import state as state_lib
from lm_jax.data import batches


def train_and_evaluate(config, workdir: str):
  """Trains `config` in `workdir`, resuming from its newest checkpoint if any.

  Returns (final state, final validation metrics).
  """
  checks.check_config(config)
  plan, c = parallel.training_plan(config), config.train
  runs.make_workdir(workdir)
  with runs.lock_workdir(workdir):
    run = _prepare(config, workdir, plan)
    ckpt = checkpoint.Checkpointer(workdir, c.keep_checkpoints, c.keep_best)
    writer = records.MetricWriter(workdir, run.config)  # run.config: epochs resolved.
    try:
      start = runs.initial_state(run.setup, ckpt)
      _begin(run, start, writer)
      state, eval_metrics = _loop(run, start, ckpt, writer)
    finally:
      writer.close()
      ckpt.close()  # Waits for the last save.
  final = run.plan.get(state)  # Global arrays; on one host, fetched to numpy.
  return (jax.device_get(final) if jax.process_count() == 1 else final), eval_metrics


def compile_step(s: state_lib.Setup) -> Callable:
  """`train_step` as `s` configures it, checked against its layout and compiled for it: the
  step training, the benchmark and the compile check run."""
  c, plan = s.config.train, s.plan
  tensor = int(s.config.mesh.get("tensor", 1))
  placement.check_tensor_parallel(s.abstract.params, tensor, plan.mode, s.config.model.name)
  per_replica = c.batch_size // plan.num_replicas
  if c.grad_accum_steps < 1 or per_replica % c.grad_accum_steps:
    raise UserError(
      f"train.grad_accum_steps={c.grad_accum_steps} does not divide the "
      f"{per_replica} rows each device gets: pick a divisor of {per_replica}."
    )
  loss = objectives.loss(s)
  step = functools.partial(train_step, grad_accum_steps=c.grad_accum_steps, loss=loss)
  return plan.compile_step(step, state=s.abstract)


@dataclasses.dataclass(frozen=True)
class _Run:
  """A run's setup, data, directory and compiled steps: everything the loop reads but never
  changes."""

  setup: state_lib.Setup
  workdir: str
  objective: Any  # lm_jax/objectives: the data, the batches, the evaluation.
  train_step: Callable
  resolved: dict  # The setup's, and the evaluation protocol in words (run.json).
  harness: Any = None  # train.eval_tasks: a harness.InLoop; None when off.

  @property
  def config(self):
    return self.setup.config

  @property
  def plan(self) -> parallel.Plan:
    return self.setup.plan


def _prepare(config, workdir: str, plan) -> _Run:
  """Data first (it gives the vocabulary and the length of an epoch), then the setup."""
  objective = objectives.make(config, workdir)
  if config.train.get("num_epochs"):
    config = config_lib.with_epochs(config, objective.steps_per_epoch(config))
  config_lib.check_epoch_keys(config)
  tokenizer = objective.tokenizer
  reference = objectives.needs_reference(config)
  s = state_lib.setup(config, tokenizer.vocab_size, tokenizer, plan=plan, reference=reference)
  objective = objective.bind(s)
  resolved = {**s.resolved, "eval_protocol": objective.describe()}
  harness = None
  if config.train.get("eval_tasks"):
    try:
      from lm_jax import harness as harness_lib  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise UserError(
        f"train.eval_tasks needs lm-evaluation-harness ({e}): pip install -e .[harness]."
      ) from e
    harness = harness_lib.InLoop(config, workdir, s.model, tokenizer, s.plan)
  return _Run(s, workdir, objective, compile_step(s), resolved, harness)


def _begin(run: _Run, start: runs.Start, writer: records.MetricWriter) -> None:
  """What a start says and records: a resume and what changed since its checkpoint, or the
  config of a new run; then the run's config and run.json, rewritten."""
  config = run.config
  if start.meta is not None:
    print(f"resumed {run.workdir} from step {start.step}", file=sys.stderr)
    for change in _batch_changes(start.meta, _meta(run)):
      print(
        f"warning: {change} since checkpoint {start.step}: the batches from here on differ "
        "from those the run would have seen unbroken.",
        file=sys.stderr,
      )
  else:
    writer.write_text("config", "```\n" + config.to_json_best_effort(indent=2) + "\n```")
  records.truncate_metrics(run.workdir, start.step)  # Lines a killed run wrote past its save.
  records.write_config(config, run.workdir)  # Only now: a refused restore leaves records alone.
  records.write_run_info(config, run.workdir, run.objective.fingerprints(), run.resolved)


class _Meter:
  """Throughput between log lines: tokens/s, FLOP/s and the share spent waiting for input."""

  def __init__(self, run: _Run, start_step: int):
    c = run.config
    self.tokens_per_step = c.train.batch_size * c.data.seq_len
    self.flops_per_token = run.setup.flops_per_token
    self.t_start = self.t_last = time.perf_counter()
    self.last_step = start_step

  def read(self, step: int, prefetcher: batches.Prefetcher) -> dict:
    now = time.perf_counter()
    tok_s = self.tokens_per_step * (step - self.last_step) / (now - self.t_last)
    wait = prefetcher.wait_sec / (now - self.t_last)
    self.t_last, self.last_step, prefetcher.wait_sec = now, step, 0.0
    return {
      "tokens_per_sec": tok_s,
      "flops_per_sec": tok_s * self.flops_per_token,
      "input_wait_share": wait,
      "elapsed_sec": now - self.t_start,
    }


def _check_finite(metrics: dict, step: int, ckpt: checkpoint.Checkpointer) -> None:
  """Stops a run whose loss, gradients or updates stopped being finite, before it saves."""
  first = int(metrics.pop("diverged_at"))
  if first:
    kept = max(ckpt.steps(), default=None)
    saved = f"its newest checkpoint, step {kept}, is intact and nothing later was saved"
    if kept is None:
      saved = "no checkpoint was saved"
    raise UserError(
      f"the run diverged: its loss, gradients or updates were not finite at step {first} "
      f"(seen at step {step}); {saved}: lower optim.learning_rate (or raise "
      "optim.warmup_steps, set optim.grad_clip) and run again, here with "
      "--override=optim.learning_rate or in a new --workdir."
    )


def _evaluate(run: _Run, state, writer: records.MetricWriter, step: int) -> dict:
  m = run.objective.evaluate(state)
  writer.write(step, **run.objective.logged(m))
  return m


def _learning_rate(run: _Run, state, step: int) -> float:
  """The learning rate of `step`: the schedule's, times a stateful schedule's factor."""
  lr = float(run.setup.lr_schedule(step))
  if state.schedule_state is not None:
    lr *= float(run.plan.to_host(state.schedule_state)["lr_scale"])
  return lr


def _after_validation(run: _Run, state, val_loss: float):
  """A stateful schedule's decision (plateau) once a validation loss is known."""
  if state.schedule_state is None:
    return state
  host = run.plan.to_host(state.schedule_state)
  return state.replace(
    schedule_state=run.plan.put(optim.after_validation(run.config.optim, host, val_loss))
  )


def _meta(run: _Run) -> dict:
  """What the batch after a checkpoint depends on, besides its step: saved beside the state."""
  c = run.config
  return {"seed": c.seed, "order": c.data.order, "data_fingerprints": run.objective.fingerprints()}


def _batch_changes(saved: dict, now: dict) -> list[str]:
  """What differs between a checkpoint's meta and this run's (a key the checkpoint lacks is
  not compared: older checkpoints hold fewer)."""
  changes = [
    f"{k} changed from {saved[k]!r} to {now[k]!r}"
    for k in ("seed", "order")
    if k in saved and saved[k] != now[k]
  ]
  before, after = saved.get("data_fingerprints"), now["data_fingerprints"]
  if before is not None:
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
      changes.append(f"the tokens of {', '.join(changed)} changed (data fingerprints)")
  return changes


def _save(run: _Run, ckpt: checkpoint.Checkpointer, state, rng, step: int, eval_metrics) -> None:
  metrics = {"val_loss": eval_metrics["loss"]} if eval_metrics else None
  runs.save_state(ckpt, run.plan, state, rng, step, _meta(run), metrics=metrics)


def _loop(run: _Run, start: runs.Start, ckpt, writer):
  """Steps from `start_step` to train.num_steps; the one place that decides when to log,
  evaluate, save and stop. Returns (state, the last evaluation's metrics)."""
  c, d, plan = run.config.train, run.config.data, run.plan
  state, rng, start_step = start.state, start.rng, start.step
  make_batch = lambda step: plan.shard(run.objective.batch(step))
  prefetcher = batches.Prefetcher(make_batch, range(start_step, c.num_steps), d.prefetch)
  progress = console.Progress(start_step, c.num_steps, enabled=jax.process_index() == 0)
  meter, received = _Meter(run, start_step), []
  tracer = profiling.StepTracer(
    os.path.join(run.workdir, "profile"), profiling.check_profile_steps(c.get("profile_steps"))
  )
  eval_metrics = in_flight = None
  try:
    with _catch_signals(received):
      # The prefetcher yields one batch per step; the range stops the loop with the last.
      for step, batch in zip(range(start_step, c.num_steps), prefetcher, strict=False):
        tracer.before(step)
        sampled = {}
        if hasattr(run.objective, "complete"):  # Completions of the current parameters.
          batch, sampled = run.objective.complete(state, batch, step, rng)
        state, metrics = run.train_step(state, batch, rng)
        tracer.after(step, metrics)
        # One step in flight at most: enough to hide dispatch, and XLA:CPU's in-process
        # collectives (pmap over a CPU's cores) can deadlock when many steps queue up.
        jax.block_until_ready(in_flight)
        in_flight = metrics
        done = step + 1
        progress.advance()
        last = done == c.num_steps
        # Harness tasks before `stop` is read: a signal during them stops the run at this step.
        if run.harness is not None and run.harness.due(done, last):
          _check_finite(plan.to_host(metrics), done, ckpt)  # Never a diverged state.
          found = run.harness.evaluate(state_lib.adapted_params(state, run.config), writer, done)
          line = ", ".join(f"{k} {v:.4f}" for k, v in found.items())
          progress.write(f"step {done}: {line}")
        # Every process stops at the same step, whichever of them got the signal.
        stop = parallel.any_process(bool(received))
        do_save = done % c.checkpoint_every == 0 or last or stop
        do_eval = done % c.eval_every == 0 or last or (do_save and c.keep_best)
        if done % c.log_every == 0 or do_save or do_eval:
          metrics = plan.to_host(metrics)
          _check_finite(metrics, done, ckpt)
          rates = meter.read(done, prefetcher)
          peak = profiling.peak_memory_bytes()  # None on CPU.
          rates.update({} if peak is None else {"peak_memory_bytes": peak})
          lr = _learning_rate(run, state, step)
          writer.write(done, **metrics, **sampled, learning_rate=lr, **rates)
          progress.log(
            done,
            loss=f"{metrics['train_loss']:.4f}",
            tok_s=f"{rates['tokens_per_sec']:,.0f}",
            flop_s=f"{rates['flops_per_sec']:.3g}",
          )
        eval_metrics = _evaluate(run, state, writer, done) if do_eval else None
        if eval_metrics:
          state = _after_validation(run, state, eval_metrics["loss"])
          logged = run.objective.logged(eval_metrics).items()
          line = " ".join(
            f"{k} {v:.{2 if k == 'val_ppl' else 4}f}" for k, v in logged if "/" not in k
          )
          progress.write(f"step {done}: {line}")
        if do_save:
          _save(run, ckpt, state, rng, done, eval_metrics)
          writer.flush()  # TensorBoard holds every line up to the checkpoint.
        if stop:
          raise Preempted(received[0] if received else None, done)
    if c.num_steps <= start_step:
      eval_metrics = _evaluate(run, state, writer, start_step)
  finally:
    tracer.close()
    prefetcher.close()
    progress.close()
  return state, eval_metrics


class Preempted(Exception):
  """SIGTERM or SIGINT reached this process or another of the run; all saved the same step."""

  def __init__(self, signum: int | None, step: int):
    cause = f"received {signal.Signals(signum).name}" if signum else "another process stopped"
    super().__init__(f"{cause}: saved a checkpoint at step {step}; run the same command to resume.")
    self.signum = signum or signal.SIGTERM


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


LANGUAGE = losses.CrossEntropy()  # train_step's loss by default: next-token cross-entropy.


def train_step(
  state: state_lib.TrainState,
  batch,
  rng,
  axis_name=None,
  grad_accum_steps: int = 1,
  loss=LANGUAGE,
):
  """One optimizer step on `batch`; returns (new state, scalar metrics).

  `loss` (losses.CrossEntropy, or an objective's) gives sums over the batch; the step takes
  the gradient of their total over `loss.count` of the global batch (target tokens, pairs), so
  summing gradients over replicas (pmap) or over microbatches (`grad_accum_steps`, scanned
  here) gives exactly the one-device, one-batch gradient up to rounding; each sum over that
  count is a metric ('train_loss' first). A stateful schedule's 'lr_scale' multiplies the
  updates. A carry the loss returns (a recurrent model on contiguous streams) is the next
  step's.
  """
  rng = jax.random.fold_in(rng, state.step)
  if axis_name is not None:
    rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
  batch = loss.prepare(state, batch)
  count = parallel.psum(loss.count(batch), axis_name)

  def loss_fn(params, micro, rng):
    total, sums, carry = loss(state, params, micro, rng)
    return total / count, (sums, carry)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if grad_accum_steps == 1:
    (_, (sums, carry)), grads = grad_fn(state.params, batch, rng)
  else:
    # Row i goes to microbatch i % n, so each device keeps its own rows (and their carry).
    n = grad_accum_steps
    split = lambda x: x.reshape(x.shape[0] // n, n, *x.shape[1:]).swapaxes(0, 1)
    micro = jax.tree_util.tree_map(split, batch)

    def accumulate(total, xs):
      i, m = xs
      (_, (sums, carry)), grads = grad_fn(state.params, m, jax.random.fold_in(rng, i))
      return jax.tree_util.tree_map(jnp.add, total, (sums, grads)), carry

    zero = {name: jnp.zeros((), jnp.float32) for name in loss.names}
    zeros = (zero, jax.tree_util.tree_map(jnp.zeros_like, state.params))
    (sums, grads), carries = jax.lax.scan(accumulate, zeros, (jnp.arange(n), micro))
    join = lambda x: x.swapaxes(0, 1).reshape(x.shape[0] * x.shape[1], *x.shape[2:])
    carry = jax.tree_util.tree_map(join, carries)
  grads = parallel.psum(grads, axis_name)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  if state.schedule_state is not None:
    scale = state.schedule_state["lr_scale"]
    updates = jax.tree_util.tree_map(lambda u: u * scale.astype(u.dtype), updates)
  params = optax.apply_updates(state.params, updates)
  sums = parallel.psum(sums, axis_name)
  metrics = {
    "train_loss": sums["train_loss"] / count,
    "grad_norm": optax.tree.norm(grads),
    "update_norm": optax.tree.norm(updates),
  }
  # Finite updates of finite parameters keep them finite: what a checkpoint may hold.
  finite = jnp.all(jnp.isfinite(jnp.stack(list(metrics.values()))))
  diverged_at = jnp.where(finite | (state.diverged_at > 0), state.diverged_at, state.step + 1)
  metrics["diverged_at"] = diverged_at
  metrics.update({name: sums[name] / count for name in loss.names[1:]})
  new = state.replace(
    step=state.step + 1, params=params, opt_state=opt_state, carry=carry, diverged_at=diverged_at
  )
  return new, metrics
