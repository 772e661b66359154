"""The harness on a run: its checkpoint (`evaluate_run`, scripts/eval_harness.py), or the live
parameters of a training run every train.eval_tasks_every steps (`InLoop`, lm_jax/train.py).

Both log each task metric at the step as harness/<task>/<metric> and write the harness's
results file, WORKDIR/harness/<step>.json. Both begin with their tasks (tasks.Tasks), so that the
Hub's reachability is checked, and unknown or unreadable tasks refused, when an evaluation is
asked for and before a model loads.
"""

import os

import jax
import numpy as np

from lm_jax import UserError, parallel, records, runs
from lm_jax.harness import adapter
from lm_jax.harness import tasks as tasks_lib  # `tasks` names the tasks asked for.


def _info(model, params, tokenizer, step: int) -> dict:
  n = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
  return {"model_num_parameters": n, "tokenizer": tokenizer.kind, "step": int(step)}


def evaluate_run(
  workdir: str,
  tasks: str,
  *,
  limit: int | None = None,
  num_fewshot: int | None = None,
  include_path: str = "",
  step: int | None = None,
  output: str = "",
  log_samples: bool = False,
  batch_size: int = 0,
  parallel_mode: str = "",
  max_gen_toks: int = 256,
) -> tuple[dict, str]:
  """Evaluates a run's newest (or given) checkpoint on harness tasks.

  Writes the results to WORKDIR/harness/<step>.json (or `output`), the samples beside them
  with `log_samples`, and each task metric to metrics.jsonl and TensorBoard at the
  checkpoint's step as harness/<task>/<metric>. Returns (results, the results' path).
  """
  task_set = tasks_lib.Tasks(tasks, include_path)  # Refuses unknown tasks before a model loads.
  saved = runs.read_config(workdir)
  batch_size = batch_size or saved.train.eval_batch_size or saved.train.batch_size
  config, model, tokenizer, state, step, plan = runs.load_run(
    workdir, step, parallel=parallel_mode or saved.train.parallel, batch_size=batch_size
  )
  lm = adapter.LMJax(
    adapter.Programs(model, plan),
    state.params,
    tokenizer,
    batch_size=batch_size,
    max_length=adapter.context_length(model, config),
    max_gen_toks=max_gen_toks,
    seed=config.seed,
    info=_info(model, plan.get(state.params), tokenizer, step),
  )
  results = tasks_lib.evaluate(
    lm,
    task_set,
    limit=limit,
    num_fewshot=num_fewshot,
    log_samples=log_samples,
    model_args={"pretrained": os.path.abspath(workdir), "step": step},
  )
  path = output or os.path.join(workdir, "harness", f"{step}.json")
  tasks_lib.write_results(results, path, str(step))
  writer = records.MetricWriter(workdir)
  try:
    for key, value in tasks_lib.metrics(results).items():
      writer.write(step, **{key: value})
  finally:
    writer.close()
  return results, path


class InLoop:
  """train.eval_tasks on the live parameters, every train.eval_tasks_every steps and at the end."""

  def __init__(self, config, workdir: str, model, tokenizer, plan: parallel.Plan):
    c = config.train
    if jax.process_count() > 1:
      raise UserError(
        "train.eval_tasks runs in single-process runs: evaluate this run's checkpoints with "
        "scripts/eval_harness.py instead."
      )
    if c.get("eval_tasks_every", 1) < 1:
      raise UserError(f"train.eval_tasks_every={c.eval_tasks_every}: give a positive step count.")
    self.every, self.workdir = c.get("eval_tasks_every", 500), workdir
    self.limit = c.get("eval_tasks_limit", 0) or None
    self.tasks = tasks_lib.Tasks(c.eval_tasks, c.get("eval_tasks_include_path", ""))
    self.programs, self.tokenizer, self.config = adapter.Programs(model, plan), tokenizer, config

  def due(self, step: int, last: bool) -> bool:
    return step % self.every == 0 or last

  def evaluate(self, params, writer: records.MetricWriter, step: int) -> dict:
    """Evaluates `params` (the plan's layout); logs the metrics, writes harness/<step>.json."""
    c = self.config.train
    lm = adapter.LMJax(
      self.programs,
      params,
      self.tokenizer,
      batch_size=c.eval_batch_size or c.batch_size,
      max_length=adapter.context_length(self.programs.model, self.config),
      seed=self.config.seed,
      progress=False,
      info={"tokenizer": self.tokenizer.kind, "step": int(step)},
    )
    results = tasks_lib.evaluate(
      lm, self.tasks, limit=self.limit, model_args={"pretrained": self.workdir, "step": step}
    )
    found = tasks_lib.metrics(results)
    for key, value in found.items():
      writer.write(step, **{key: value})
    if jax.process_index() == 0:
      tasks_lib.write_results(
        results, os.path.join(self.workdir, "harness", f"{step}.json"), str(step)
      )
    return found
