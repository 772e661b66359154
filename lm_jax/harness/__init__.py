"""lm-evaluation-harness on lm_jax runs: any model and tokenizer as the harness's `TemplateLM`.

  adapter.py  LMJax, the harness's TemplateLM, and the programs it compiles: how each kind of
              request is answered, as the harness's Hugging Face backend answers it
  tasks.py    Tasks by name (refused before a model loads), evaluate, metrics, the results files,
              the table; the Hub's reachability checked when tasks load
  run.py      a run's checkpoint (evaluate_run) and the live parameters of training (InLoop)

With scripts/eval_harness.py, the only code that imports the harness. Its names are read here
from their modules when first used (`harness.evaluate_run`): importing this package imports
neither the harness, which sets environment variables when imported, nor JAX.
"""

import importlib

_MODULES = {
  "adapter": ("MIN_LENGTH", "LMJax", "Programs", "context_length", "padded_length"),
  "tasks": ("LOCAL_DATA_FIX", "Tasks", "evaluate", "metrics", "table", "write_results"),
  "run": ("InLoop", "evaluate_run"),
}
_MODULE_OF = {name: module for module, names in _MODULES.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
  if name not in _MODULE_OF:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)


def __dir__() -> list[str]:
  return sorted({*globals(), *_MODULE_OF})
