"""Llama: RMSNorm, rotary positions, SwiGLU and grouped-query attention, with a KV cache."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm_jax import UserError
from lm_jax.models import layers


def _init(std: float):
  return nn.initializers.normal(stddev=std)


def rope(x_BxHxLxK, pos, base: float, starts_BxL=None):
  """Rotates each (i, i + K/2) pair of features by angle position * base^(-2i/K).

  Positions run from `pos`; with `starts_BxL` (layers.document_starts) they count from
  each token's document start.
  """
  L, K = x_BxHxLxK.shape[2:]
  inv_freq = base ** (-jnp.arange(0, K, 2, dtype=jnp.float32) / K)
  positions = pos + jnp.arange(L, dtype=jnp.float32)
  if starts_BxL is not None:
    positions = (positions[None] - starts_BxL)[:, None]  # Bx1xL: every head alike.
  angles_LxK = positions[..., None] * jnp.tile(inv_freq, 2)  # LxK, or Bx1xLxK.
  f_BxHxLxK = x_BxHxLxK.astype(jnp.float32)  # Angles grow with position: rotate in float32.
  x1, x2 = jnp.split(f_BxHxLxK, 2, axis=-1)
  rotated_BxHxLxK = jnp.concatenate([-x2, x1], axis=-1)
  out_BxHxLxK = f_BxHxLxK * jnp.cos(angles_LxK) + rotated_BxHxLxK * jnp.sin(angles_LxK)
  return out_BxHxLxK.astype(x_BxHxLxK.dtype)


class Attention(nn.Module):
  """Grouped-query causal self-attention with rotary positions; caches G heads, not H.

  `kv` is {'k': BxGxSxK, 'v': BxGxSxK} holding positions [0, pos); the new
  keys and values are rotated to their positions and written at [pos, pos + L).
  """

  num_heads: int
  num_kv_heads: int
  num_layers: int
  dropout: float
  rope_base: float
  use_bias: bool
  dtype: jnp.dtype
  attention: str = "reference"  # An implementation layers.attention runs (resolved, not 'auto').

  @nn.compact
  def __call__(self, x_BxLxD, deterministic: bool, kv=None, pos=0, starts_BxL=None):
    D = x_BxLxD.shape[-1]
    H, G = self.num_heads, self.num_kv_heads
    K = D // H
    dense = lambda features, name: nn.DenseGeneral(
      features, use_bias=self.use_bias, kernel_init=_init(0.02), dtype=self.dtype, name=name
    )
    q_BxHxLxK = dense((H, K), "q")(x_BxLxD).transpose(0, 2, 1, 3)
    kv_BxLx2xGxK = dense((2, G, K), "kv")(x_BxLxD)
    k_BxGxLxK, v_BxGxLxK = jnp.unstack(kv_BxLx2xGxK.transpose(2, 0, 3, 1, 4), axis=0)
    q_BxHxLxK = rope(q_BxHxLxK, pos, self.rope_base, starts_BxL)
    k_BxGxSxK, v_BxGxSxK = rope(k_BxGxLxK, pos, self.rope_base, starts_BxL), v_BxGxLxK
    if kv is not None:
      k_BxGxSxK, v_BxGxSxK, kv = layers.write_kv(kv, k_BxGxSxK, v_BxGxSxK, pos)
    dropout = lambda probs: nn.Dropout(self.dropout)(probs, deterministic)
    out_BxHxLxK = layers.attention(
      q_BxHxLxK, k_BxGxSxK, v_BxGxSxK, pos, dropout, self.dtype, self.attention, starts_BxL
    )
    out_BxLxD = nn.DenseGeneral(
      D,
      axis=(-2, -1),
      use_bias=self.use_bias,
      kernel_init=_init(0.02 / math.sqrt(2 * self.num_layers)),
      dtype=self.dtype,
      name="o",
    )(out_BxHxLxK.transpose(0, 2, 1, 3))
    return out_BxLxD, kv


class SwiGLU(nn.Module):
  """Gated MLP: down(silu(gate(x)) * up(x)), `mlp_dim` wide."""

  mlp_dim: int
  num_layers: int
  use_bias: bool
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x_BxLxD):
    D = x_BxLxD.shape[-1]
    gate_up_BxLx2xF = nn.DenseGeneral(
      (2, self.mlp_dim),
      use_bias=self.use_bias,
      kernel_init=_init(0.02),
      dtype=self.dtype,
      name="gate_up",
    )(x_BxLxD)
    h_BxLxF = nn.silu(gate_up_BxLx2xF[..., 0, :]) * gate_up_BxLx2xF[..., 1, :]
    return nn.Dense(
      D,
      use_bias=self.use_bias,
      kernel_init=_init(0.02 / math.sqrt(2 * self.num_layers)),
      dtype=self.dtype,
      name="down",
    )(h_BxLxF)


class Block(nn.Module):
  """Pre-RMSNorm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

  num_heads: int
  num_kv_heads: int
  num_layers: int
  mlp_dim: int
  dropout: float
  rope_base: float
  norm_eps: float
  attention_bias: bool
  mlp_bias: bool
  dtype: jnp.dtype
  attention: str = "reference"

  @nn.compact
  def __call__(self, x_BxLxD, deterministic: bool, kv=None, pos=0, starts_BxL=None):
    norm = lambda name: nn.RMSNorm(self.norm_eps, dtype=self.dtype, name=name)
    attn = Attention(
      self.num_heads,
      self.num_kv_heads,
      self.num_layers,
      self.dropout,
      self.rope_base,
      self.attention_bias,
      self.dtype,
      attention=self.attention,
      name="attn",
    )
    h, kv = attn(norm("attn_norm")(x_BxLxD), deterministic, kv, pos, starts_BxL)
    x_BxLxD = x_BxLxD + nn.Dropout(self.dropout)(h, deterministic)
    mlp = SwiGLU(self.mlp_dim, self.num_layers, self.mlp_bias, self.dtype, name="mlp")
    h = mlp(norm("mlp_norm")(x_BxLxD))
    return x_BxLxD + nn.Dropout(self.dropout)(h, deterministic), kv


class Llama(nn.Module):
  """Token embeddings, rotary pre-RMSNorm blocks, a head tied to the embedding or not.

  The same contract as GPT: `model.apply(v, tokens_BxL)` gives logits_BxLxV
  (float32); with a cache from `init_cache`, `model.apply(v, tokens_BxL,
  cache=cache)` gives (logits_BxLxV, cache) for the tokens that follow.
  """

  vocab_size: int
  num_layers: int = 4
  num_heads: int = 4
  num_kv_heads: int = 2  # Key/value heads, each shared by num_heads // num_kv_heads queries.
  d_model: int = 128
  max_len: int = 256  # Longest context: the decode cache's limit (RoPE itself has none).
  mlp_dim: int = 0  # SwiGLU width; 0: 8/3 * d_model rounded up to a multiple of 8, as Llama.
  dropout: float = 0.0
  tie_embeddings: bool = False  # The head reuses the embedding table (Llama 1-3: no).
  rope_base: float = 10000.0
  norm_eps: float = 1e-5
  attention_bias: bool = False  # Biases in the q, k, v and output projections.
  mlp_bias: bool = False  # Biases in the SwiGLU's three projections.
  dtype: str = "float32"  # Activations (auto: bfloat16 on accelerators); parameters, softmax
  # and logits stay float32.
  attention: str = "auto"  # reference, xla, cudnn or auto (layers.resolve_attention).
  remat: str = "none"  # Recompute blocks in the backward pass: none, block, dots (see layers).
  scan_layers: bool = False  # One nn.scan over stacked blocks: compile time flat in depth.
  eod_ids: tuple = ()  # Set from data.document_masking: attention and positions restart at these.

  @property
  def hidden_dim(self) -> int:
    """The SwiGLU width F."""
    return self.mlp_dim or 8 * math.ceil(self.d_model / 3)  # 8/3 * d_model, up to a multiple of 8.

  def flops_per_token(self, params, seq_len: int) -> float:
    """6 per parameter that multiplies (the embedding only as a tied head), plus attention's."""
    n = sum(x.size for x in jax.tree_util.tree_leaves(params))
    if not self.tie_embeddings:
      n -= params["embed"]["embedding"].size
    return 6.0 * n + 12.0 * self.num_layers * self.d_model * seq_len

  def init_cache(self, batch_size: int, length: int):
    """An empty KV cache of num_kv_heads heads for `length` positions (at most max_len)."""
    shape = (
      batch_size,
      self.num_kv_heads,
      min(length, self.max_len),
      self.d_model // self.num_heads,
    )
    cache = layers.init_kv_cache(
      self.num_layers, self.scan_layers, shape, layers.compute_dtype(self.dtype)
    )
    return {**cache, "start": jnp.zeros((batch_size,), jnp.int32)} if self.eod_ids else cache

  def _check(self):
    H, G, D = self.num_heads, self.num_kv_heads, self.d_model
    if D % H or (D // H) % 2:
      raise UserError(
        f"model.d_model={D} must be num_heads={H} times an even head width "
        "(RoPE rotates pairs): change d_model or num_heads."
      )
    if G < 1 or H % G:
      raise UserError(f"model.num_kv_heads={G} must divide num_heads={H}.")

  @nn.compact
  def __call__(self, tokens_BxL, deterministic: bool = True, cache=None):
    self._check()
    L = tokens_BxL.shape[1]
    pos = 0 if cache is None else cache["pos"]
    dtype = layers.compute_dtype(self.dtype)
    starts_BxL = None
    if self.eod_ids:
      start_B = None if cache is None else cache["start"]
      starts_BxL = layers.document_starts(tokens_BxL, self.eod_ids, pos, start_B)
    embed = nn.Embed(self.vocab_size, self.d_model, embedding_init=_init(0.02), name="embed")
    x_BxLxD = nn.Dropout(self.dropout)(embed(tokens_BxL), deterministic).astype(dtype)
    block_kwargs = {
      "num_heads": self.num_heads,
      "num_kv_heads": self.num_kv_heads,
      "num_layers": self.num_layers,
      "mlp_dim": self.hidden_dim,
      "dropout": self.dropout,
      "rope_base": self.rope_base,
      "norm_eps": self.norm_eps,
      "attention_bias": self.attention_bias,
      "mlp_bias": self.mlp_bias,
      "dtype": dtype,
      "attention": layers.resolve_attention(
        self.attention,
        dtype,
        self.dropout,
        self.d_model // self.num_heads,
        documents=bool(self.eod_ids),
      )[0],
    }
    x_BxLxD, kv_layers = layers.apply_blocks(
      Block,
      block_kwargs,
      self.num_layers,
      self.remat,
      self.scan_layers,
      x_BxLxD,
      deterministic,
      None if cache is None else cache["layers"],
      pos,
      starts_BxL,
    )
    x_BxLxD = nn.RMSNorm(self.norm_eps, dtype=dtype, name="norm")(x_BxLxD).astype(jnp.float32)
    if self.tie_embeddings:
      logits_BxLxV = embed.attend(x_BxLxD)
    else:
      logits_BxLxV = nn.Dense(
        self.vocab_size, use_bias=False, kernel_init=_init(0.02), name="head"
      )(x_BxLxD)
    if cache is None:
      return logits_BxLxV
    cache = {"pos": pos + L, "layers": kv_layers}
    return logits_BxLxV, cache if starts_BxL is None else {**cache, "start": starts_BxL[:, -1]}
