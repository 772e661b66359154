"""The optimizer: the learning-rate schedule's values, which parameters weight decay shrinks,
clipping and the optimizer's name checked."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import shakespeare_char_gpt_cpu, tiny
from lm_jax import UserError, models, optim
from lm_jax import config as config_lib


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


def optim_config(**kwargs):
  c = tiny.get_config().optim
  c.update(kwargs)
  return c


def test_schedule_warms_up_peaks_and_decays_to_the_minimum():
  c = optim_config(learning_rate=1e-3, min_learning_rate=1e-4, warmup_steps=10)
  lr = optim.schedule(c, num_steps=100)
  value = lambda step: float(lr(step))
  assert value(0) == 0.0 and value(5) == pytest.approx(5e-4)  # Linear warmup from 0.
  assert value(10) == pytest.approx(1e-3)  # The peak at the end of warmup.
  # Cosine from the peak at step 10 to the minimum at step 100: halfway at step 55.
  assert value(55) == pytest.approx(1e-4 + 0.5 * 9e-4)
  assert value(32.5) == pytest.approx(1e-4 + 9e-4 * 0.5 * (1 + math.cos(math.pi / 4)))
  assert value(100) == pytest.approx(1e-4) and value(150) == pytest.approx(1e-4)
  steps = np.arange(10, 101)
  assert np.all(np.diff(np.asarray(lr(steps))) <= 0)  # Only down after the peak.


def test_schedule_without_warmup_starts_at_the_peak():
  lr = optim.schedule(optim_config(learning_rate=2e-3, min_learning_rate=0.0, warmup_steps=0), 50)
  assert float(lr(0)) == pytest.approx(2e-3) and float(lr(50)) == pytest.approx(0.0, abs=1e-12)


def test_decay_mask_goes_by_parameter_name():
  shape = jax.ShapeDtypeStruct
  params = {
    "Dense_0": {"kernel": shape((4, 8), jnp.float32), "bias": shape((8,), jnp.float32)},
    "blocks": {  # Stacked layers (scan_layers): every parameter one rank higher.
      "ln": {"scale": shape((2, 8), jnp.float32), "bias": shape((2, 8), jnp.float32)},
      "mlp": {"kernel": shape((2, 8, 8), jnp.float32)},
    },
    "wte": {"embedding": shape((10, 8), jnp.float32)},
    "Plugin_0": {"w": shape((3, 3), jnp.float32), "v": shape((3,), jnp.float32)},  # Other names.
  }
  for decay_embeddings in (False, True):
    mask = optim.decay_mask(params, decay_embeddings)
    assert mask == {
      "Dense_0": {"kernel": True, "bias": False},
      "blocks": {"ln": {"scale": False, "bias": False}, "mlp": {"kernel": True}},
      "wte": {"embedding": decay_embeddings},
      "Plugin_0": {"w": True, "v": False},
    }


def test_adamw_decays_the_masked_parameters_only():
  c = optim_config(name="adamw", learning_rate=0.1, warmup_steps=0, weight_decay=0.5, grad_clip=0.0)
  tx, _ = optim.make_optimizer(c, 10)
  params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
  zero = jax.tree_util.tree_map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  np.testing.assert_allclose(updates["kernel"], -0.1 * 0.5 * np.ones((2, 2)), rtol=1e-6)
  np.testing.assert_array_equal(updates["bias"], np.zeros(2))


def test_grad_clip_scales_the_global_norm_down_before_adam():
  # A large eps keeps Adam's update proportional to the gradient, so clipping shows.
  g = {"w": jnp.array([300.0, 400.0])}  # Global norm 500.
  for clip, seen in ((1.0, np.array([0.6, 0.8])), (0.0, np.array([300.0, 400.0]))):
    c = optim_config(name="adam", learning_rate=1.0, warmup_steps=0, eps=1e3, grad_clip=clip)
    tx, _ = optim.make_optimizer(c, 10)
    updates, _ = tx.update(g, tx.init(g), g)
    np.testing.assert_allclose(updates["w"], -seen / (seen + 1e3), rtol=1e-5)


def test_an_unknown_optimizer_is_refused():
  with pytest.raises(UserError, match="unknown optimizer 'sgdd': set optim.name to"):
    optim.make_optimizer(optim_config(name="sgdd"), 10)


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
