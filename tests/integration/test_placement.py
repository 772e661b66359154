"""Tensor parallelism: the sharded step over data x fsdp x tensor equals one device's."""

import jax
import ml_collections
import numpy as np
import pytest

from configs import tiny
from lm_jax import UserError, compile_check, data, train
from lm_jax import state as state_lib
from lm_jax.data import batches, streams

# The MLP is 48 wide, not V: weights are told apart by their shapes in the HLO.
V, B, L, STEPS = 64, 8, 16, 20
MODELS = {
  "gpt": dict(num_layers=2, num_heads=8, d_model=32, max_len=L),
  "llama": dict(  # GQA: 2 key/value heads split over tensor=2, replicated over tensor=8.
    name="llama", num_layers=2, num_heads=8, num_kv_heads=2, d_model=32, max_len=L, mlp_dim=48
  ),
}
MODELS["llama"]["scan_layers"] = True  # Rules align with a stack's trailing dimensions.
LAYOUTS = [("jit", {}), ("sharded", dict(data=2, fsdp=2, tensor=2)), ("sharded", dict(tensor=8))]


def config_for(name: str, mode: str, mesh: dict):
  config = tiny.get_config()
  if name != "gpt":
    config.model = ml_collections.ConfigDict({"dtype": "float32", "attention": "auto"})
  config.model.update(MODELS[name])
  config.data.seq_len = L
  config.optim.warmup_steps = 5
  config.train.update(batch_size=B, num_steps=STEPS, parallel=mode)
  config.mesh.update({"data": 1, "fsdp": 1, "tensor": 1, **mesh})
  return config


def train_steps(config):
  """Losses of STEPS steps, the compiled step's HLO and the abstract parameters."""
  built = state_lib.setup(config, V)
  plan = built.plan
  tokens = streams.Mixture.single(data.synthetic_tokens("random", V, 20_000, seed=0))
  batch = lambda s: plan.shard(batches.train_batch(tokens, 0, s, B, L, plan.rows(B)))
  state = plan.init(built.create, built.abstract)
  step = train.compile_step(built).lower(state, batch(0), built.rng).compile()
  losses = []
  for s in range(STEPS):
    state, metrics = step(state, batch(s), built.rng)
    losses.append(float(plan.to_host(metrics)["train_loss"]))
  return np.array(losses), step.as_text(), plan, built.abstract


def tensor_split_weights(plan, abstract) -> set:
  """Full shapes of the attention and MLP weights split by tensor (per layer when stacked)."""
  shapes = set()
  flat = jax.tree_util.tree_flatten_with_path(abstract.params)[0]
  shardings = jax.tree_util.tree_leaves(plan.state_shardings(abstract).params)
  for (path, x), sharding in zip(flat, shardings, strict=True):
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    if ("attn/" in name or "mlp/" in name) and "tensor" in str(sharding.spec):
      shapes.add(tuple(x.shape))
      if name.startswith("blocks/"):  # A scanned stack: each layer's weight too.
        shapes.add(tuple(x.shape[1:]))
  return shapes


@pytest.mark.slow  # 3 layouts x 20 steps.
@pytest.mark.parametrize("name", sorted(MODELS))
def test_tensor_parallel_steps_equal_one_device_and_never_gather_a_whole_weight(name):
  reference = train_steps(config_for(name, *LAYOUTS[0]))[0]
  for mode, mesh in LAYOUTS[1:]:
    losses, hlo, plan, abstract = train_steps(config_for(name, mode, mesh))
    worst = float(np.max(np.abs(losses - reference) / reference))
    print(f"{name} {mesh}: largest relative loss difference over {STEPS} steps {worst:.1e}")
    assert worst <= 1e-5, (losses, reference)
    whole = tensor_split_weights(plan, abstract)
    assert whole, "no attention or MLP weight is split by tensor"
    gathered = set(compile_check.all_gather_shapes(hlo))
    assert not whole & gathered, whole & gathered
    print(f"  collectives {compile_check.collectives(hlo)}")


def test_tensor_parallelism_needs_the_sharded_mode_and_a_model_it_splits():
  with pytest.raises(UserError, match="mesh.tensor=2 splits layers over devices only in"):
    train.compile_step(state_lib.setup(config_for("gpt", "pmap", dict(tensor=2)), V))
  lstm = config_for("gpt", "sharded", dict(data=4, tensor=2))
  lstm.model = ml_collections.ConfigDict({"name": "lstm", "embed_size": 16, "hidden_size": 16})
  with pytest.raises(UserError, match="model 'lstm' has neither: set mesh.tensor=1"):
    train.compile_step(state_lib.setup(lstm, V))
