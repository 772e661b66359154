"""The import graph of lm_jax runs one way, and training reaches Hugging Face code only on demand.

Read from the source (the AST), so importing nothing: every import counts for the cycle check,
lazy ones inside functions included; only those that run at import time count for what
importing lm_jax.train loads.
"""

import ast
import os

from conftest import ROOT

PACKAGE = os.path.join(ROOT, "lm_jax")


def _module_name(path: str) -> str:
  rel = os.path.relpath(path, ROOT)[: -len(".py")].replace(os.sep, ".")
  return rel.removesuffix(".__init__")


def _modules() -> dict[str, str]:
  found = {}
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        found[_module_name(path)] = path
  return found


def _import_nodes(tree, at_import_time: bool):
  """Every node of the module; with `at_import_time`, not those inside functions (lazy)."""
  todo = [tree]
  while todo:
    node = todo.pop()
    yield node
    for child in ast.iter_child_nodes(node):
      lazy = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
      if not (at_import_time and lazy):
        todo.append(child)


def _imports(path: str, modules, at_import_time: bool) -> set[str]:
  """The lm_jax modules a file imports: `from lm_jax.data import tokenizers` is
  lm_jax.data.tokenizers, `from lm_jax import data` the package lm_jax.data."""
  with open(path) as f:
    tree = ast.parse(f.read())
  found = set()
  for node in _import_nodes(tree, at_import_time):
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names if a.name in modules}
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lm_jax"):
      for a in node.names:
        sub = f"{node.module}.{a.name}"
        found.add(sub if sub in modules else node.module)
  return found


def _graph(at_import_time: bool) -> dict[str, set[str]]:
  modules = _modules()
  graph = {m: _imports(p, modules, at_import_time) - {m} for m, p in modules.items()}
  for m in graph:  # A submodule's package runs first: its own imports count as the package's.
    graph[m].discard(m.rpartition(".")[0])
  return graph


def _cycle(graph) -> list[str] | None:
  state, stack = {}, []

  def visit(m):
    state[m] = "open"
    stack.append(m)
    for n in sorted(graph.get(m, ())):
      if state.get(n) == "open":
        return stack[stack.index(n) :] + [n]
      if n not in state and (found := visit(n)):
        return found
    state[m] = "done"
    stack.pop()
    return None

  for m in sorted(graph):
    if m not in state and (found := visit(m)):
      return found
  return None


def test_no_module_imports_itself_through_others():
  graph = _graph(at_import_time=False)
  assert "lm_jax.data.tokenizers" in graph["lm_jax.data.hf_tokenizer"]  # The graph is read.
  assert _cycle(graph) is None


def test_a_cycle_is_found():
  graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
  assert _cycle(graph) == ["a", "b", "c", "a"]
  assert _cycle({"a": {"b"}, "b": set()}) is None


def test_training_imports_no_hugging_face_code_until_asked():
  graph, seen, todo = _graph(at_import_time=True), set(), ["lm_jax.train"]
  while todo:
    m = todo.pop()
    if m not in seen:
      seen.add(m)
      # Importing a module runs its packages' __init__ first (lm_jax.data for its stages).
      parents = [m.rsplit(".", i)[0] for i in range(1, m.count(".") + 1)]
      todo += [*graph.get(m, ()), *parents]
  assert {"lm_jax.data", "lm_jax.runs", "lm_jax.checkpoint"} <= seen  # What training loads.
  assert not sorted(m for m in seen if m.startswith("lm_jax.hf"))
  assert "lm_jax.hf.weights" in _graph(at_import_time=False)["lm_jax.runs"]  # Lazily, for HF dirs.
