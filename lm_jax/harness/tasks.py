"""Harness tasks by name, their evaluation, and the results as the harness writes them.

Tasks load when an evaluation starts, not when this module is imported: first a quick check that
the Hub takes connections (lm_jax/network.py). Where it takes none, `datasets` runs offline (task
data from disk, or a refusal at once, where it would retry the Hub for half a minute) unless
HF_DATASETS_OFFLINE or HF_HUB_OFFLINE is set.
"""

import copy
import dataclasses
import json
import os
import sys
import time

from lm_eval import simple_evaluate
from lm_eval import utils as lm_eval_utils
from lm_eval.loggers import EvaluationTracker
from lm_eval.tasks import TaskManager

from lm_jax import UserError, console, network
from lm_jax.harness import adapter

LOCAL_DATA_FIX = (
  "put the task's data in local files and point a task YAML at them (dataset_path: json, "
  "dataset_kwargs: {data_files: {test: FILE.jsonl}}) in a folder passed as --include_path "
  "(train.eval_tasks_include_path in a run's config); docs/evaluation.md shows one. To let "
  "`datasets` download it instead, set HF_DATASETS_OFFLINE=0 HF_HUB_OFFLINE=0."
)


def _offline_without_hub() -> None:
  """network.offline_without_hub, for this process's `datasets` and Hub client too.

  Each reads HF_HUB_OFFLINE / HF_DATASETS_OFFLINE once, when first imported (datasets.config,
  huggingface_hub.constants), and this module's imports of lm_eval import both: where they are
  already imported, their copies of the variables are set as well.
  """
  if not network.offline_without_hub():
    return
  if (config := sys.modules.get("datasets.config")) is not None:
    config.HF_HUB_OFFLINE = config.HF_DATASETS_OFFLINE = True
  if (constants := sys.modules.get("huggingface_hub.constants")) is not None:
    constants.HF_HUB_OFFLINE = True


class Tasks:
  """Harness tasks by name, among the harness's own and the YAMLs under `include_path`.

  Made once: unknown names, and tasks whose data is neither on disk nor downloadable, are
  refused here, in seconds, before any model runs.
  """

  def __init__(self, names, include_path: str = ""):
    self.names = [n.strip() for n in (names.split(",") if isinstance(names, str) else names)]
    self.names = [n for n in self.names if n]
    if not self.names:
      raise UserError("no harness task given: name one or more, e.g. --tasks hellaswag,arc_easy.")
    if include_path and not os.path.isdir(include_path):
      raise UserError(f"--include_path {include_path} is not a folder of task YAMLs: check it.")
    # Before `datasets` first reads task data: offline, what is not on disk fails at once.
    _offline_without_hub()
    _quiet_harness()
    self.include_path = include_path or None
    manager = None
    if include_path:  # Indexing the harness's own thousands of tasks takes seconds: only if needed.
      manager = TaskManager(include_path=include_path, include_defaults=False)
      if not set(self.names) <= set(manager.all_tasks):
        manager = None
    self.manager = manager or TaskManager(include_path=self.include_path)
    unknown = [n for n in self.names if n not in self.manager.all_tasks]
    if unknown:
      raise UserError(
        f"unknown harness task(s) {', '.join(unknown)}: check the names (`lm_eval ls tasks` "
        "lists the harness's own), or pass --include_path DIR with their YAMLs."
      )
    for name in self.names:
      _load_task(self.manager, name)


def _load_task(manager, name: str):
  try:
    return manager.load([name])
  except (ConnectionError, FileNotFoundError) as e:
    raise UserError(
      f"harness task {name!r} cannot read its data ({str(e)[:200]}): {LOCAL_DATA_FIX}"
    ) from e


def _quiet_harness() -> None:
  """The harness's and `datasets`' INFO logging and progress bars stay off unless verbose."""
  if console.verbose():
    return
  import logging  # pylint: disable=g-import-not-at-top

  import datasets  # pylint: disable=g-import-not-at-top

  datasets.utils.logging.disable_progress_bar()
  datasets.utils.logging.set_verbosity_error()
  logging.getLogger("lm_eval").setLevel(logging.WARNING)


def evaluate(
  lm: adapter.LMJax,
  tasks: Tasks,
  *,
  limit: int | None = None,
  num_fewshot: int | None = None,
  log_samples: bool = False,
  bootstrap_iters: int = 100_000,
  model_args: dict | None = None,
) -> dict:
  """The harness's results for `tasks` (with 'samples' when `log_samples`), as its CLI gets them."""
  # Bootstrapped standard errors otherwise fork a pool of workers off this multithreaded process.
  os.environ.setdefault("DISABLE_MULTIPROC", "1")
  tracker, start = EvaluationTracker(), time.perf_counter()
  results = simple_evaluate(
    model=lm,
    model_args=model_args or {},
    tasks=tasks.names,
    num_fewshot=num_fewshot,
    limit=limit or None,
    log_samples=log_samples,
    bootstrap_iters=bootstrap_iters,
    evaluation_tracker=tracker,
    task_manager=tasks.manager,
    torch_random_seed=None,  # lm_jax draws with JAX keys; torch need not load.
  )
  tracker.general_config_tracker.log_end_time()
  samples = results.get("samples") or {}
  results["task_hashes"] = {  # As the harness's tracker adds them when it saves.
    task: lm_eval_utils.hash_string(
      "".join(s["doc_hash"] + s["prompt_hash"] + s["target_hash"] for s in rows)
    )
    for task, rows in samples.items()
  }
  results.update(dataclasses.asdict(tracker.general_config_tracker))
  results["config"]["batch_size"] = lm.batch_size
  results["lm_jax"] = {
    "wall_sec": time.perf_counter() - start,
    "requests": lm.requests,
    "requests_per_sec": lm.requests / lm.request_sec if lm.request_sec else None,
    "programs": len(lm.programs.shapes),
    **lm.info,
  }
  return results


def metrics(results: dict) -> dict:
  """{'harness/<task>/<metric>': value} for each task's metrics (a filter other than 'none' is
  appended as '/<filter>'); standard errors and non-numbers are left out."""
  out = {}
  for task, values in results.get("results", {}).items():
    for key, value in values.items():
      name, _, filter_name = key.partition(",")
      if not filter_name or name.endswith("_stderr") or not isinstance(value, (int, float)):
        continue
      suffix = "" if filter_name == "none" else f"/{filter_name}"
      out[f"harness/{task}/{name}{suffix}"] = float(value)
  return out


def write_results(results: dict, path: str, samples_id: str) -> None:
  """The results as the harness saves them, at `path`; the samples, if any, beside them as
  samples_<task>_<samples_id>.jsonl (the harness puts a date where lm_jax puts the step)."""
  results = dict(results)
  samples = results.pop("samples", None)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    encode = lm_eval_utils.handle_non_serializable
    json.dump(results, f, indent=2, default=encode, ensure_ascii=False)
    f.write("\n")
  os.replace(tmp, path)
  if samples:
    tracker = EvaluationTracker(output_path=os.path.join(folder, "results.json"))
    tracker.date_id = samples_id
    for task in results["configs"]:
      target = os.path.join(folder, f"samples_{task}_{samples_id}.jsonl")
      if os.path.exists(target):  # The harness appends; a second evaluation replaces.
        os.remove(target)
      tracker.save_results_samples(task_name=task, samples=copy.deepcopy(samples[task]))


def table(results: dict) -> str:
  """The harness's results table (and its groups' table, when there are groups)."""
  text = lm_eval_utils.make_table(results)
  return text + ("\n" + lm_eval_utils.make_table(results, "groups") if "groups" in results else "")
