"""The optimizer: the learning-rate schedule's values, which parameters weight decay shrinks,
clipping and the optimizer's name checked."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from helpers.trees import assert_trees_equal

from configs import shakespeare_char_gpt_cpu, tiny
from lm_jax import UserError, checkpoint, models, optim
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


LEARNING_RATES = {
  "sgd": 0.5,
  "adam": 1e-2,
  "adamw": 1e-2,
  "lion": 3e-3,
  "adafactor": 1e-2,
  "muon": 0.05,
  "lm_jax.optim:sgd": 0.5,  # The plugin form, naming a function by module path.
}


def plain_config(**overrides):
  c = shakespeare_char_gpt_cpu.get_config().optim
  c.update({"warmup_steps": 0, "schedule": "constant", "grad_clip": 0.0, **overrides})
  return c


def toy_params(key, vocab=11, width=8, stacked=False):
  """A tiny model's tree: embedding, one hidden matrix per layer, attention output, head."""
  k = jax.random.split(key, 5)
  layer = {
    "mlp": {"fc": {"kernel": 0.3 * jax.random.normal(k[0], (width, 2 * width))}},
    "attn": {"proj": {"kernel": 0.3 * jax.random.normal(k[1], (2, width, width))}},
    "ln": {"scale": jnp.ones((width,))},
  }
  if stacked:
    layer = jax.tree_util.tree_map(lambda x: jnp.stack([x, 0.5 * x]), layer)
  return {
    "embed": {"embedding": jax.random.normal(k[2], (vocab, width))},
    "blocks" if stacked else "block_0": layer,
    "head": {
      "kernel": 0.3 * jax.random.normal(k[3], (width, vocab)),
      "bias": jnp.zeros((vocab,)),
    },
  }


def toy_loss(params, tokens):
  """Next-token cross-entropy of a one-block MLP (any stacked layers applied in turn)."""
  x = params["embed"]["embedding"][tokens[:-1]]
  block = params.get("block_0") or params["blocks"]
  layers = (
    [block]
    if "block_0" in params
    else [jax.tree_util.tree_map(lambda a, i=i: a[i], block) for i in range(2)]
  )
  for layer in layers:
    h = jnp.tanh(x @ layer["mlp"]["fc"]["kernel"])
    h = h.reshape(h.shape[0], 2, -1)
    x = x + jnp.einsum("nhk,hkd->nd", h, layer["attn"]["proj"]["kernel"]) * layer["ln"]["scale"]
  logits = x @ params["head"]["kernel"] + params["head"]["bias"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[1:]).mean()


TOKENS = jnp.array(np.arange(64) * 3 % 11)  # Each token tells the next: a loss near 0 is reachable.


@pytest.mark.parametrize("name", list(LEARNING_RATES))
def test_every_optimizer_learns_and_its_state_round_trips(name, tmp_path):
  assert set(optim.OPTIMIZERS) <= set(LEARNING_RATES)  # A new optimizer is tested here too.
  tx, _ = optim.make_optimizer(plain_config(name=name, learning_rate=LEARNING_RATES[name]), 40)
  params = toy_params(jax.random.key(0))
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state):
    loss, grads = jax.value_and_grad(toy_loss)(params, TOKENS)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  first, _, loss0 = step(params, opt_state)
  changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), params, first)
  assert all(jax.tree_util.tree_leaves(changed)), changed  # One step moves every parameter.
  losses = []
  for _ in range(40):
    params, opt_state, loss = step(params, opt_state)
    losses.append(float(loss))
  assert losses[-1] < 0.5 * float(loss0), (name, losses[::10])
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  ckpt.save(40, {"opt_state": opt_state}, meta={})
  ckpt.close()
  target = jax.tree_util.tree_map(jnp.zeros_like, {"opt_state": opt_state})
  _, restored, _ = checkpoint.Checkpointer(str(tmp_path), read_only=True).restore(target)
  assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(target)
  assert_trees_equal(restored, {"opt_state": opt_state})


def test_sgd_step_is_w_minus_lr_g_exactly():
  tx, _ = optim.make_optimizer(plain_config(name="sgd", learning_rate=20.0, weight_decay=0.0), 10)
  params = toy_params(jax.random.key(1))
  grads = jax.grad(toy_loss)(params, TOKENS)
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  new = jax.jit(optax.apply_updates)(params, updates)
  want = jax.tree_util.tree_map(
    lambda w, g: np.asarray(w) - np.float32(20.0) * np.asarray(g), params, grads
  )
  assert_trees_equal(new, want)


def test_sgd_momentum_is_pytorchs():
  """torch.optim.SGD: b = mu b + g; W -= lr b (Nesterov: W -= lr (g + mu b))."""
  for nesterov in (False, True):
    c = plain_config(name="sgd", learning_rate=0.1, momentum=0.9, nesterov=nesterov)
    c.weight_decay = 0.0
    tx, _ = optim.make_optimizer(c, 10)
    w = {"w": {"kernel": jnp.array([[1.0, -2.0]])}}
    state, ref, buf = tx.init(w), np.array([[1.0, -2.0]]), np.zeros((1, 2))
    for g in ([[0.5, 1.0]], [[-1.0, 0.25]], [[2.0, 2.0]]):
      updates, state = tx.update({"w": {"kernel": jnp.array(g)}}, state, w)
      w = optax.apply_updates(w, updates)
      buf = 0.9 * buf + np.array(g)
      ref = ref - 0.1 * ((np.array(g) + 0.9 * buf) if nesterov else buf)
    np.testing.assert_allclose(w["w"]["kernel"], ref, rtol=1e-6)


def reference_orthogonalize(g):
  """modded-nanogpt's zeropower_via_newtonschulz5, in float64 (torch layout: rows = outputs)."""
  a, b, c = 3.4445, -4.7750, 2.0315
  x = g.T if g.shape[0] > g.shape[1] else g
  x = x / (np.linalg.norm(x) + 1e-7)
  for _ in range(5):
    m = x @ x.T
    x = a * x + (b * m + c * m @ m) @ x
  return x.T if g.shape[0] > g.shape[1] else x


def reference_muon(params, grads_by_step, lr, adam_lr, wd, beta=0.95, b1=0.9, b2=0.99, eps=1e-8):
  """Muon as Keller Jordan's Muon repository describes it (hidden matrices) and AdamW as
  torch.optim.AdamW (everything else), one step per entry of `grads_by_step`.

  A Flax kernel (in, out) is a torch weight (out, in) transposed; an attention output
  projection (H, K, D) is the matrix (H K, D); a stacked layer axis is a batch of matrices.
  """
  flat = {
    jax.tree_util.keystr(p): np.asarray(x, np.float64)
    for p, x in jax.tree_util.tree_leaves_with_path(params)
  }
  muon_keys = {k for k in flat if k.endswith("['kernel']") and "head" not in k}
  state = {k: np.zeros_like(x) for k, x in flat.items()}
  second = {k: np.zeros_like(x) for k, x in flat.items()}
  for t, grads in enumerate(grads_by_step, start=1):
    gflat = {
      jax.tree_util.keystr(p): np.asarray(x, np.float64)
      for p, x in jax.tree_util.tree_leaves_with_path(grads)
    }
    for k, g in gflat.items():
      if k in muon_keys:
        state[k] = beta * state[k] + (1 - beta) * g  # buf.lerp_(grad, 1 - beta)
        u = beta * state[k] + (1 - beta) * g  # grad.lerp_(buf, beta): Nesterov
        stacked = "blocks" in k
        mats = u if stacked else u[None]
        out = []
        for m in mats:
          w_in_out = m.reshape(-1, m.shape[-1])  # (fan_in, fan_out)
          torch_w = w_in_out.T  # (out, in)
          o = reference_orthogonalize(torch_w) * max(1, torch_w.shape[0] / torch_w.shape[1]) ** 0.5
          out.append(o.T.reshape(m.shape))
        u = np.stack(out) if stacked else out[0]
        flat[k] = flat[k] * (1 - lr * wd) - lr * u
      else:
        state[k] = b1 * state[k] + (1 - b1) * g
        second[k] = b2 * second[k] + (1 - b2) * g * g
        m_hat, v_hat = state[k] / (1 - b1**t), second[k] / (1 - b2**t)
        decay = wd if k.endswith("['kernel']") else 0.0  # Embeddings, biases, norms: none.
        flat[k] = flat[k] * (1 - adam_lr * decay) - adam_lr * m_hat / (np.sqrt(v_hat) + eps)
  return flat


@pytest.mark.parametrize("stacked", [False, True])
def test_muon_equals_the_reference_implementation(stacked):
  c = plain_config(name="muon", learning_rate=0.02, adam_learning_rate=3e-3, weight_decay=0.1)
  tx, _ = optim.make_optimizer(c, 10)
  params = toy_params(jax.random.key(2), stacked=stacked)
  keys = jax.random.split(jax.random.key(3), 3)
  grads_by_step = [
    jax.tree_util.tree_map(lambda x, k=k: jax.random.normal(k, x.shape), params) for k in keys
  ]
  state, new = tx.init(params), params
  update = jax.jit(tx.update)
  for grads in grads_by_step:
    updates, state = update(grads, state, new)
    new = optax.apply_updates(new, updates)
  want = reference_muon(params, grads_by_step, 0.02, 3e-3, 0.1)
  labels = optim.muon_labels(params)

  def close_to_the_reference(path, x, x0):
    k = jax.tree_util.keystr(path)  # The change over three steps, against the reference's.
    np.testing.assert_allclose(x - x0, want[k] - x0, rtol=1e-3, atol=1e-6, err_msg=k)

  jax.tree_util.tree_map_with_path(close_to_the_reference, new, params)
  by_key = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(labels)}
  assert {k for k, v in by_key.items() if v == "muon"} == {
    k for k in by_key if k.endswith("['kernel']") and "head" not in k
  }


def test_matrix_axes_of_the_shipped_layouts():
  key = lambda *names: tuple(jax.tree_util.DictKey(n) for n in names)
  assert optim.matrix_axes(key("block_0", "attn", "qkv", "kernel"), (8, 3, 2, 4)) == (
    (0,),
    (1, 2, 3),
  )
  assert optim.matrix_axes(key("block_0", "attn", "proj", "kernel"), (2, 4, 8)) == ((0, 1), (2,))
  assert optim.matrix_axes(key("blocks", "attn", "o", "kernel"), (3, 2, 4, 8)) == ((1, 2), (3,))
  assert optim.matrix_axes(key("lstm_0", "hh_kernel"), (8, 32)) == ((0,), (1,))
  for names, shape in (
    (("head", "kernel"), (8, 11)),
    (("wte", "embedding"), (11, 8)),
    (("ln_f", "scale"), (8,)),
    (("blocks", "ln_1", "scale"), (3, 8)),
  ):
    assert optim.matrix_axes(key(*names), shape) is None


def test_orthogonalize_gives_near_unit_singular_values():
  g = np.random.default_rng(0).normal(size=(24, 8)).astype(np.float32)
  s = np.linalg.svd(np.asarray(optim.newton_schulz(jnp.asarray(g), 5)), compute_uv=False)
  assert s.min() > 0.5 and s.max() < 1.3  # Muon's quintic lands in about (0.7, 1.2).


def schedule_values(steps, **overrides):
  lr = optim.schedule(plain_config(**overrides), 100)
  return np.array([float(lr(s)) for s in steps])


def test_schedule_values():
  steps = [0, 5, 10, 55, 80, 90, 100]
  peak = dict(learning_rate=1.0, min_learning_rate=0.1, warmup_steps=10)
  np.testing.assert_allclose(
    schedule_values(steps, schedule="constant", **peak), [0, 0.5, 1, 1, 1, 1, 1], atol=1e-6
  )
  np.testing.assert_allclose(
    schedule_values(steps, schedule="plateau", **peak), [0, 0.5, 1, 1, 1, 1, 1], atol=1e-6
  )
  np.testing.assert_allclose(
    schedule_values(steps, schedule="linear", **peak),
    [0, 0.5, 1, 1 - 0.9 * 45 / 90, 1 - 0.9 * 70 / 90, 1 - 0.9 * 80 / 90, 0.1],
    atol=1e-6,
  )
  np.testing.assert_allclose(  # Stable to step 80, then linear to 0.1 over the last 20.
    schedule_values(steps, schedule="wsd", decay_fraction=0.2, **peak),
    [0, 0.5, 1, 1, 1, 0.55, 0.1],
    atol=1e-6,
  )
  cosine = lambda s: 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * (s - 10) / 90))
  np.testing.assert_allclose(
    schedule_values(steps, schedule="cosine", **peak),
    [0, 0.5, 1, *[cosine(s) for s in steps[3:]]],
    atol=1e-6,
  )
  np.testing.assert_allclose(  # No warmup: the peak from step 0.
    schedule_values([0, 50], schedule="constant", learning_rate=0.3, warmup_steps=0), [0.3, 0.3]
  )
  with pytest.raises(UserError, match="unknown optim.schedule 'step'"):
    optim.schedule(plain_config(schedule="step"), 100)


def test_plateau_divides_when_validation_does_not_beat_the_best():
  c = plain_config(schedule="plateau", plateau_factor=4.0)
  state = jax.device_get(optim.schedule_state(c))
  scales = []
  for val_loss in (5.0, 4.0, 4.0, 4.5, 3.9, 3.95):
    state = optim.after_validation(c, state, val_loss)
    scales.append(float(state["lr_scale"]))
  assert scales == [1.0, 1.0, 0.25, 0.0625, 0.0625, 0.015625]
  assert float(state["best_loss"]) == np.float32(3.9)
  assert optim.schedule_state(plain_config(schedule="cosine")) is None


def test_unknown_and_broken_optimizers_are_explained():
  with pytest.raises(UserError, match="unknown optimizer 'rmsprop'"):
    optim.make_optimizer(plain_config(name="rmsprop"), 10)
  with pytest.raises(UserError, match="cannot import optimizer module 'no_such_module'"):
    optim.make_optimizer(plain_config(name="no_such_module:opt"), 10)
  with pytest.raises(UserError, match="not an optax.GradientTransformation"):
    optim.make_optimizer(plain_config(name="functools:partial"), 10)
  with pytest.raises(UserError, match="does not name a function"):
    optim.make_optimizer(plain_config(name="lm_jax.optim:SCHEDULES"), 10)
