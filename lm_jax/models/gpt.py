"""GPT: a decoder-only Transformer as in GPT-2 and nanoGPT, with a KV cache."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm_jax import config as config_lib
from lm_jax.models import decoder, layers


class CausalAttention(nn.Module):
  """Multi-head causal self-attention; with `kv`, attends to cached keys too.

  `kv` is {'k': BxHxSxK, 'v': BxHxSxK} holding positions [0, pos); the new
  keys and values are written at [pos, pos + L) and returned. Heads lead the
  sequence axis so both einsums read the cache in place.
  """

  num_heads: int
  num_layers: int
  dropout: float
  use_bias: bool
  dtype: jnp.dtype
  param_dtype: jnp.dtype = jnp.float32
  attention: str = "reference"  # An implementation layers.attention runs (resolved, not 'auto').

  @nn.compact
  def __call__(self, x_BxLxD, deterministic: bool, kv=None, pos=0, starts_BxL=None):
    B, L, D = x_BxLxD.shape
    H = self.num_heads
    K = D // H
    qkv = layers.dense((3, H, K), "qkv", self.use_bias, self.dtype, self.param_dtype)
    qkv_BxLx3xHxK = qkv(x_BxLxD.reshape(B * L, D)).reshape(B, L, 3, H, K)
    q_BxHxLxK, k_BxHxSxK, v_BxHxSxK = jnp.unstack(qkv_BxLx3xHxK.transpose(2, 0, 3, 1, 4), axis=0)
    if kv is not None:
      k_BxHxSxK, v_BxHxSxK, kv = layers.write_kv(kv, k_BxHxSxK, v_BxHxSxK, pos)
    dropout = lambda probs: nn.Dropout(self.dropout)(probs, deterministic)
    out_BxHxLxK = layers.attention(
      q_BxHxLxK,
      k_BxHxSxK,
      v_BxHxSxK,
      pos,
      dropout,
      self.dtype,
      self.attention,
      starts_BxL=starts_BxL,
    )
    std = 0.02 / math.sqrt(2 * self.num_layers)
    proj = layers.dense(D, "proj", self.use_bias, self.dtype, self.param_dtype, std, (-2, -1))
    out_BxLxD = proj(out_BxHxLxK.transpose(0, 2, 1, 3).reshape(B * L, H, K))
    return out_BxLxD.reshape(B, L, D), kv


GELUS = {"exact": layers.gelu, "tanh": lambda x: jax.nn.gelu(x, approximate=True)}


class Mlp(nn.Module):
  """Position-wise MLP, 4x wide, GELU (exact, or GPT-2's tanh approximation)."""

  num_layers: int
  use_bias: bool
  gelu: str
  dtype: jnp.dtype
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BxLxD):
    B, L, D = x_BxLxD.shape
    fc = layers.dense(4 * D, "fc", self.use_bias, self.dtype, self.param_dtype)
    h_NxF = GELUS[self.gelu](fc(x_BxLxD.reshape(B * L, D)))
    std = 0.02 / math.sqrt(2 * self.num_layers)
    proj = layers.dense(D, "proj", self.use_bias, self.dtype, self.param_dtype, std)
    return proj(h_NxF).reshape(B, L, D)


class Block(nn.Module):
  """Pre-LayerNorm residual block: x + attn(ln(x)), then x + mlp(ln(x))."""

  num_heads: int
  num_layers: int
  dropout: float
  use_bias: bool
  gelu: str
  norm_eps: float
  dtype: jnp.dtype
  param_dtype: jnp.dtype = jnp.float32
  attention: str = "reference"

  @nn.compact
  def __call__(self, x_BxLxD, deterministic: bool, kv=None, pos=0, starts_BxL=None):
    ln = lambda name: nn.LayerNorm(
      self.norm_eps,
      use_bias=self.use_bias,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name=name,
    )
    h, kv = CausalAttention(
      self.num_heads,
      self.num_layers,
      self.dropout,
      self.use_bias,
      self.dtype,
      self.param_dtype,
      attention=self.attention,
      name="attn",
    )(ln("ln_1")(x_BxLxD), deterministic, kv, pos, starts_BxL)
    x_BxLxD = x_BxLxD + nn.Dropout(self.dropout)(h, deterministic)
    mlp = Mlp(self.num_layers, self.use_bias, self.gelu, self.dtype, self.param_dtype, name="mlp")
    h = mlp(ln("ln_2")(x_BxLxD))
    return x_BxLxD + nn.Dropout(self.dropout)(h, deterministic), kv


class GPT(decoder.Decoder):
  """Token + learned position embeddings, pre-LN blocks, tied head (decoder.Decoder's contract)."""

  use_bias: bool = True
  gelu: str = "exact"  # The MLP's GELU: exact (erf), or tanh (GPT-2's approximation).

  EMBED = "wte"

  def block_options(self):
    return Block, {"use_bias": self.use_bias, "gelu": self.gelu}, None

  def final_norm(self, dtype, param_dtype):
    return nn.LayerNorm(
      self.norm_eps, use_bias=self.use_bias, dtype=dtype, param_dtype=param_dtype, name="ln_f"
    )

  def embed(self, table, tokens_BxL, positions_BxL, param_dtype):
    wpe = nn.Embed(
      self.max_len,
      self.d_model,
      embedding_init=nn.initializers.normal(0.02),
      param_dtype=param_dtype,
      name="wpe",
    )
    return table(tokens_BxL) + wpe(positions_BxL)

  def check_options(self) -> None:
    config_lib.check_choice("model.gelu", self.gelu, GELUS)
