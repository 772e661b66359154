"""A model family of its own, plugged into the decoder: attention and MLP side by side.

PaLM's and GPT-J's parallel block, x + attn(ln(x)) + mlp(ln(x)), from GPT's attention and MLP;
registered by tests/integration/models/test_plugins.py to show that a new family gets every
property test (docs/extending.md shows the same file).
"""

import flax.linen as nn

from lm_jax.models import decoder, gpt


class Block(nn.Module):
  num_heads: int
  num_layers: int
  dropout: float
  norm_eps: float
  dtype: str
  param_dtype: str
  attention: str

  @nn.compact
  def __call__(self, x_BxLxD, deterministic: bool, kv=None, pos=0, starts_BxL=None):
    h_BxLxD = nn.LayerNorm(self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype)(x_BxLxD)
    attn = gpt.CausalAttention(
      self.num_heads, self.num_layers, self.dropout, False, self.dtype, self.param_dtype,
      attention=self.attention, name="attn",
    )  # fmt: skip
    a_BxLxD, kv = attn(h_BxLxD, deterministic, kv, pos, starts_BxL)
    mlp = gpt.Mlp(self.num_layers, False, "exact", self.dtype, self.param_dtype, name="mlp")
    return x_BxLxD + a_BxLxD + mlp(h_BxLxD), kv


class ParallelBlocks(decoder.Decoder):
  """Token embeddings, parallel blocks, a final LayerNorm and a tied head."""

  def block_options(self):
    return Block, {}, None

  def final_norm(self, dtype, param_dtype):
    return nn.LayerNorm(self.norm_eps, dtype=dtype, param_dtype=param_dtype, name="norm")
