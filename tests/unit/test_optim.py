"""The optimizer: which parameters weight decay shrinks."""

import jax
import jax.numpy as jnp
import pytest

from lm_jax import config as config_lib
from lm_jax import models, optim


@pytest.mark.parametrize("scan_layers", [False, True])
def test_weight_decay_shrinks_weight_matrices_only(scan_layers):
  model = models.build_model(
    config_lib.ml_collections.ConfigDict(
      dict(
        name="gpt",
        num_layers=2,
        num_heads=2,
        d_model=8,
        max_len=8,
        use_bias=True,
        scan_layers=scan_layers,
      )
    ),
    11,
  )
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))
  for decay_embeddings in (False, True):
    mask = optim.decay_mask(params["params"], decay_embeddings)
    names = {jax.tree_util.keystr(p): m for p, m in jax.tree_util.tree_leaves_with_path(mask)}
    assert all(
      m == (k.endswith("['kernel']") or (decay_embeddings and "embedding" in k))
      for k, m in names.items()
    ), names
