"""Placement rules: which dimension of each parameter tensor parallelism and FSDP split."""

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import PartitionSpec as P

from lm_jax import UserError, models, parallel, placement

MODELS = {
  "gpt": dict(name="gpt", num_layers=2, num_heads=4, d_model=32, max_len=16, use_bias=True),
  "llama": dict(
    name="llama",
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    d_model=32,
    max_len=16,
    attention_bias=True,
    mlp_bias=True,
  ),
}


def abstract(model_config, vocab_size=64, **changes):
  """A model's parameters as shapes only: nothing compiles."""
  model = models.build_model({**model_config, **changes}, vocab_size)
  init = lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  return jax.eval_shape(init)["params"]


def params(model_config, vocab_size=64, **changes):
  leaves = jax.tree_util.tree_flatten_with_path(abstract(model_config, vocab_size, **changes))[0]
  return [(placement.path_str(p), x.shape) for p, x in leaves]


@pytest.mark.parametrize("scan_layers", [False, True])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_attention_and_mlp_matrix_is_split_by_tensor(name, scan_layers):
  for path, shape in params(MODELS[name], scan_layers=scan_layers):
    spec = placement.spec(path, shape, fsdp=2, tensor=2)
    if "/attn/" in path or "/mlp/" in path:
      if path.endswith("kernel") or not path.endswith(("/o/bias", "/proj/bias", "/down/bias")):
        assert "tensor" in spec, (path, shape, spec)  # Biases of split outputs split too.
      else:
        assert "tensor" not in spec, (path, spec)  # The residual stream's bias: whole.
    if path.endswith("norm/scale") or "/ln_" in path:
      assert "tensor" not in spec, path


def test_the_dimension_each_rule_names():
  spec = lambda *a: tuple(placement.spec(*a))
  assert spec("params/block_0/attn/qkv/kernel", (32, 3, 4, 8), 2, 2) == (
    "fsdp",
    None,
    "tensor",
    None,
  )
  assert spec("params/blocks/attn/o/kernel", (2, 4, 8, 32), 1, 2) == (None, "tensor", None, None)
  assert spec("params/blocks/mlp/gate_up/kernel", (2, 32, 2, 96), 2, 2) == (
    None,
    "fsdp",
    None,
    "tensor",
  )
  assert spec("params/block_1/mlp/proj/kernel", (128, 32), 2, 4) == ("tensor", "fsdp")
  # Optimizer state follows its parameter.
  assert spec("opt_state/1/0/mu/block_1/mlp/fc/kernel", (32, 128), 1, 4) == (None, "tensor")
  # Embedding rows take tensor and FSDP together; the head splits its vocabulary columns.
  assert spec("params/wte/embedding", (64, 32), 2, 2) == (("tensor", "fsdp"), None)
  assert spec("params/embed/embedding", (66, 32), 2, 2) == ("tensor", "fsdp")  # 66 = 2 x 33.
  assert spec("params/head/kernel", (32, 64), 2, 4) == ("fsdp", "tensor")
  assert spec("params/head/kernel", (32, 65), 2, 4) == ("fsdp", None)  # 65 stays whole.


def test_kv_heads_are_replicated_when_tensor_does_not_divide_them():
  spec = lambda *a: tuple(placement.spec(*a))
  assert spec("params/block_0/attn/kv/kernel", (32, 2, 2, 8), 1, 2) == (None, None, "tensor", None)
  assert spec("params/block_0/attn/kv/kernel", (32, 2, 2, 8), 1, 4) == ()
  assert spec("params/block_0/attn/q/kernel", (32, 4, 8), 1, 4) == (None, "tensor", None)


def test_heads_or_widths_tensor_cannot_divide_are_refused():
  with pytest.raises(UserError, match="mesh.tensor=4 does not divide the 6 heads of .*attn/qkv"):
    placement.spec("params/block_0/attn/qkv/kernel", (48, 3, 6, 8), 1, 4)
  with pytest.raises(UserError, match="does not divide the 90 mlp"):
    placement.spec("params/block_0/mlp/down/kernel", (90, 32), 1, 4)


def test_without_tensor_parallelism_it_is_plain_fsdp():
  for path, shape in params(MODELS["llama"]) + params(MODELS["gpt"], scan_layers=True):
    assert placement.spec(path, shape, 4, 1) == placement.spec("", shape, 4, 1)
    assert placement.spec(path, shape, 1, 1) == P()


def test_a_model_with_nothing_to_split_refuses_tensor_parallelism():
  lstm = abstract(dict(name="lstm", embed_size=16, hidden_size=16))
  with pytest.raises(UserError, match="model 'lstm' has neither: set mesh.tensor=1"):
    placement.check_tensor_parallel(lstm, 2, "sharded", "lstm")
  placement.check_tensor_parallel(lstm, 1, "sharded", "lstm")
  placement.check_tensor_parallel(abstract(MODELS["gpt"]), 2, "sharded", "gpt")
  with pytest.raises(UserError, match="mesh.tensor=2 splits layers over devices only in"):
    placement.check_tensor_parallel(abstract(MODELS["gpt"]), 2, "pmap", "gpt")


@pytest.mark.parametrize(
  "mesh, match",
  [
    ({"data": -1, "fsdp": 3, "tensor": 1}, "does not cover the 8 devices: the other sizes make 3"),
    ({"data": 2, "fsdp": 2, "tensor": 4}, "tensor=4 makes 16 and does not cover the 8"),
    ({"data": -1, "fsdp": 1, "tensor": -1}, "at most one of them -1"),
  ],
)
def test_meshes_that_do_not_divide_the_devices_are_refused_with_the_numbers(mesh, match):
  assert jax.device_count() == 8
  with pytest.raises(UserError, match=match):
    parallel.make_plan("sharded", mesh)


def test_the_batch_is_split_over_data_and_fsdp_only():
  plan = parallel.make_plan("sharded", {"data": 2, "fsdp": 2, "tensor": 2})
  assert plan.mesh.shape == {"data": 2, "fsdp": 2, "tensor": 2}
  assert plan.num_replicas == 4
  plan.check_batch(4)
  with pytest.raises(UserError, match="not divisible by the 4 mesh.data x mesh.fsdp"):
    plan.check_batch(6)
  assert parallel.make_plan("sharded", {"data": -1, "fsdp": 1, "tensor": 8}).num_replicas == 1
