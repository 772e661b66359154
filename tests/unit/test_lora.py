"""LoRA's settings, trees and arithmetic, and the kernels a pattern may name (nothing compiles)."""

import jax
import ml_collections
import numpy as np
import pytest

from lm_jax import UserError, lora, models
from lm_jax.models import layers

GPT = dict(name="gpt", num_layers=2, num_heads=2, d_model=8, max_len=8)


def settings(**kw):
  c = {"rank": 4, "alpha": 8.0, "targets": [".*attn/[^/]+/kernel"], "dropout": 0.0, **kw}
  return lora.settings(ml_collections.ConfigDict(c))


def test_rank_zero_or_no_section_is_off_and_bad_settings_are_refused():
  assert settings(rank=0) is None and lora.settings(None) is None
  s = settings()
  assert s.scale == 2.0 and s.targeted("block_1/attn/qkv/kernel")
  assert not s.targeted("block_1/attn/qkv/bias") and not s.targeted("x/block_1/mlp/fc/kernel")
  for bad, match in [
    ({"rank": -2}, "use a positive integer"),
    ({"alpha": 0.0}, "positive number"),
    ({"dropout": 1.0}, r"probability in \[0, 1\)"),
    ({"targets": []}, "targets is empty"),
    ({"targets": ["attn/(q"]}, "no regular expression"),
  ]:
    with pytest.raises(UserError, match=match):
      settings(**bad)


def test_split_and_join_are_inverses():
  tree = {"a": {"kernel": 1, "lora_a": 2, "lora_b": 3, "bias": 4}, "b": {"embedding": 5}}
  frozen, adapters = lora.split(tree)
  assert frozen == {"a": {"kernel": 1, "bias": 4}, "b": {"embedding": 5}}
  assert adapters == {"a": {"lora_a": 2, "lora_b": 3}}
  assert lora.join(frozen, adapters) == tree


def test_merge_adds_scale_times_a_b_to_each_kernel_stacked_or_not():
  rng = np.random.default_rng(0)
  w, a, b = rng.normal(size=(5, 2, 3, 4)), rng.normal(size=(5, 2, 6)), rng.normal(size=(6, 3, 4))
  s = settings(rank=6, alpha=3.0)
  merged = lora.merge({"q": {"kernel": w}}, {"q": {"lora_a": a, "lora_b": b}}, s)["q"]["kernel"]
  np.testing.assert_allclose(merged, w + 0.5 * np.einsum("ijr,rkl->ijkl", a, b), atol=1e-5)
  # Scanned layers: every array has a leading layer axis, merged layer by layer.
  ws, as_, bs = np.stack([w, 2 * w]), np.stack([a, -a]), np.stack([b, b])
  stacked = lora.merge({"q": {"kernel": ws}}, {"q": {"lora_a": as_, "lora_b": bs}}, s)
  for i in range(2):
    one = lora.merge({"q": {"kernel": ws[i]}}, {"q": {"lora_a": as_[i], "lora_b": bs[i]}}, s)
    np.testing.assert_allclose(stacked["q"]["kernel"][i], one["q"]["kernel"], rtol=1e-6)


@pytest.mark.parametrize("scan_layers", [False, True])
def test_adapters_sit_beside_the_kernels_they_adapt(scan_layers):
  model = models.build_model(ml_collections.ConfigDict({**GPT, "scan_layers": scan_layers}), 11)
  s = settings(targets=[r".*attn/[^/]+/kernel", r".*mlp/fc/kernel"])
  init = lambda: lora.init(model, s, jax.random.key(0), 8)
  frozen, adapters = jax.eval_shape(lambda: (init()[0], layers.unstack_blocks(init()[1])))
  shapes = jax.tree_util.tree_map(lambda x: x.shape, adapters)
  assert shapes["block_1"] == {  # Inputs x rank and rank x outputs, as each layer contracts.
    "attn": {
      "qkv": {"lora_a": (8, 4), "lora_b": (4, 3, 2, 4)},
      "proj": {"lora_a": (2, 4, 4), "lora_b": (4, 8)},
    },
    "mlp": {"fc": {"lora_a": (8, 4), "lora_b": (4, 32)}},
  }
  assert "lora_a" not in str(frozen)


def test_patterns_must_name_dense_kernels():
  model = models.build_model(ml_collections.ConfigDict(GPT), 11)
  init = lambda s: lora.init(model, s, jax.random.key(0), 8)
  with pytest.raises(UserError, match=r"'attn/qkv/kernel' matches no parameter .* block_0/"):
    init(settings(targets=["attn/qkv/kernel"]))  # Whole paths only.
  with pytest.raises(
    UserError, match="matches block_0/attn/proj/bias, which is not the kernel of a Dense"
  ):
    init(settings(targets=[".*"]))
  lstm = ml_collections.ConfigDict({"name": "lstm", "num_layers": 1})
  with pytest.raises(UserError, match="matches no parameter"):
    lora.init(models.build_model(lstm, 11), settings(), jax.random.key(0), 8)


def test_flops_leave_out_the_frozen_weights_gradients():
  model = models.build_model(ml_collections.ConfigDict(GPT), 11)
  s = settings()
  frozen, adapters = jax.eval_shape(lambda: lora.init(model, s, jax.random.key(0), 8))
  full = models.flops_per_token(model, frozen, 8)
  weights = sum(x.size for x in jax.tree_util.tree_leaves(frozen)) - 8 * 8  # Less wpe.
  n_adapters = sum(x.size for x in jax.tree_util.tree_leaves(adapters))
  assert models.flops_per_token(model, adapters, 8, frozen) == full - 2 * weights + 6 * n_adapters
  assert models.flops_per_token(model, frozen, 8, None) == full


def test_an_nnx_model_is_refused_in_one_sentence():
  model = models.build_model(ml_collections.ConfigDict({"name": "helpers.nnx_gpt:GPT"}), 11)
  with pytest.raises(UserError, match=r"GPT is an NNX module .*: set train.lora.rank=0\.$"):
    lora.init(model, settings(), jax.random.key(0), 8)
