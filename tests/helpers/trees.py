"""Tree equalities that also compare structure: a missing or extra leaf fails, never passes.

Trees are compared leaf by leaf at the same key paths, so two TrainStates compare by what
they hold: their static fields (apply_fn, tx: functions made per run) are no leaves.
"""

import jax
import numpy as np


def _pairs(a, b):
  """(key path, leaf of a, leaf of b) for every leaf; the two trees' paths must be the same."""
  flat_a, flat_b = (jax.tree_util.tree_flatten_with_path(t)[0] for t in (a, b))
  paths_a = [jax.tree_util.keystr(p) for p, _ in flat_a]
  paths_b = [jax.tree_util.keystr(p) for p, _ in flat_b]
  only_a, only_b = sorted(set(paths_a) - set(paths_b)), sorted(set(paths_b) - set(paths_a))
  assert paths_a == paths_b, f"different trees: only in the first {only_a}, in the second {only_b}"
  return [(p, x, y) for p, (_, x), (_, y) in zip(paths_a, flat_a, flat_b, strict=True)]


def assert_trees_equal(a, b, err_msg="") -> None:
  """Same structure, and every leaf equal bit for bit; a failure names the leaf's path."""
  for path, x, y in _pairs(a, b):
    np.testing.assert_array_equal(x, y, err_msg=f"{err_msg} {path}".strip())


def assert_trees_close(a, b, err_msg="", **tolerances) -> None:
  """Same structure, and every leaf within np.testing.assert_allclose's `tolerances`."""
  for path, x, y in _pairs(a, b):
    np.testing.assert_allclose(x, y, err_msg=f"{err_msg} {path}".strip(), **tolerances)
