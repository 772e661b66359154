"""The optimizer's state dtype, whatever the parameters' dtype."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import shakespeare_char_gpt_cpu
from lm_jax import UserError, optim


def test_bfloat16_parameters_keep_float32_moments_and_their_own_dtype():
  c = ml_collections.ConfigDict(shakespeare_char_gpt_cpu.get_config().optim.to_dict())
  tx, _ = optim.make_optimizer(c, 10)
  params = {"kernel": jnp.linspace(-1, 1, 12, dtype=jnp.bfloat16).reshape(3, 4)}
  grads = {"kernel": jnp.full((3, 4), 0.5, jnp.bfloat16)}
  state = tx.init(params)
  moments = [x for x in jax.tree_util.tree_leaves(state) if x.ndim]
  assert moments and {x.dtype for x in moments} == {jnp.dtype(jnp.float32)}
  updates, state = tx.update(grads, state, params)
  new = optax.apply_updates(params, updates)
  assert new["kernel"].dtype == jnp.bfloat16
  # The same step on float32 copies, then rounded: the update math ran in float32.
  wide = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), (params, grads))
  u32, _ = tx.update(wide[1], tx.init(wide[0]), wide[0])
  want = optax.apply_updates(wide[0], u32)["kernel"].astype(jnp.bfloat16)
  np.testing.assert_array_equal(new["kernel"], want)
  c.state_dtype = "bfloat16"
  tx16, _ = optim.make_optimizer(c, 10)
  assert {x.dtype for x in jax.tree_util.tree_leaves(tx16.init(params)) if x.ndim} == {
    jnp.dtype(jnp.bfloat16)
  }
  c.state_dtype = "float16"
  with pytest.raises(UserError, match="unknown optim.state_dtype 'float16'"):
    optim.make_optimizer(c, 10)
