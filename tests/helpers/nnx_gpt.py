"""A GPT written in Flax NNX, outside lm_jax: what a researcher prototyping in NNX brings.

The same architecture as lm_jax's own `gpt` at use_bias=False and gelu='exact' (pre-LayerNorm
blocks, learned positions, a tied head), so the two step times compare. It has no decode
cache: lm_jax samples it by the full forward pass.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx


class Block(nnx.Module):
  def __init__(self, d_model: int, num_heads: int, num_layers: int, dropout: float, *, rngs):
    out_std = 0.02 / math.sqrt(2 * num_layers)
    dense = lambda i, o, std: nnx.Linear(
      i, o, use_bias=False, kernel_init=nnx.initializers.normal(std), rngs=rngs
    )
    self.num_heads = num_heads
    self.ln_1 = nnx.LayerNorm(d_model, use_bias=False, rngs=rngs)
    self.qkv = dense(d_model, 3 * d_model, 0.02)
    self.proj = dense(d_model, d_model, out_std)
    self.ln_2 = nnx.LayerNorm(d_model, use_bias=False, rngs=rngs)
    self.fc = dense(d_model, 4 * d_model, 0.02)
    self.out = dense(4 * d_model, d_model, out_std)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, x_BxLxD, deterministic: bool):
    B, L, D = x_BxLxD.shape
    H = self.num_heads
    q, k, v = jnp.split(self.qkv(self.ln_1(x_BxLxD)).reshape(B, L, 3 * H, D // H), 3, axis=2)
    scores_BxHxLxL = jnp.einsum("blhk,bshk->bhls", q, k) / math.sqrt(D // H)
    causal_LxL = jnp.tril(jnp.ones((L, L), bool))
    probs = jax.nn.softmax(jnp.where(causal_LxL, scores_BxHxLxL, -1e30), axis=-1)
    a_BxLxD = jnp.einsum("bhls,bshk->blhk", probs, v).reshape(B, L, D)
    x_BxLxD = x_BxLxD + self.dropout(self.proj(a_BxLxD), deterministic=deterministic)
    h_BxLxF = jax.nn.gelu(self.fc(self.ln_2(x_BxLxD)), approximate=False)
    return x_BxLxD + self.dropout(self.out(h_BxLxF), deterministic=deterministic)


class GPT(nnx.Module):
  def __init__(
    self,
    vocab_size: int,
    num_layers: int = 2,
    num_heads: int = 2,
    d_model: int = 16,
    max_len: int = 16,
    dropout: float = 0.0,
    *,
    rngs: nnx.Rngs,
  ):
    embed = lambda n: nnx.Embed(n, d_model, embedding_init=nnx.initializers.normal(0.02), rngs=rngs)
    self.wte, self.wpe = embed(vocab_size), embed(max_len)
    self.blocks = nnx.List(
      [Block(d_model, num_heads, num_layers, dropout, rngs=rngs) for _ in range(num_layers)]
    )
    self.ln_f = nnx.LayerNorm(d_model, use_bias=False, rngs=rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, tokens_BxL, deterministic: bool = True):
    x_BxLxD = self.wte(tokens_BxL) + self.wpe(jnp.arange(tokens_BxL.shape[1]))[None]
    x_BxLxD = self.dropout(x_BxLxD, deterministic=deterministic)
    for block in self.blocks:
      x_BxLxD = block(x_BxLxD, deterministic)
    return self.wte.attend(self.ln_f(x_BxLxD)).astype(jnp.float32)
