"""GPT: a decoder-only Transformer as in GPT-2 and nanoGPT, with a KV cache."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm_jax import config as config_lib
from lm_jax.models import layers


def _init(std: float):
  return nn.initializers.normal(stddev=std)


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
    qkv_BxLx3xHxK = nn.DenseGeneral(
      (3, H, K),
      use_bias=self.use_bias,
      kernel_init=_init(0.02),
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name="qkv",
    )(x_BxLxD.reshape(B * L, D)).reshape(B, L, 3, H, K)
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
    out_BxLxD = nn.DenseGeneral(
      D,
      axis=(-2, -1),
      use_bias=self.use_bias,
      kernel_init=_init(0.02 / math.sqrt(2 * self.num_layers)),
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name="proj",
    )(out_BxHxLxK.transpose(0, 2, 1, 3).reshape(B * L, H, K))
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
    h_NxF = nn.Dense(
      4 * D,
      use_bias=self.use_bias,
      kernel_init=_init(0.02),
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name="fc",
    )(x_BxLxD.reshape(B * L, D))
    h_NxF = GELUS[self.gelu](h_NxF)
    return nn.Dense(
      D,
      use_bias=self.use_bias,
      kernel_init=_init(0.02 / math.sqrt(2 * self.num_layers)),
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name="proj",
    )(h_NxF).reshape(B, L, D)


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


class GPT(nn.Module):
  """Token + learned position embeddings, pre-LN blocks, tied head.

  `model.apply(v, tokens_BxL)` gives logits_BxLxV; with a cache from
  `init_cache`, `model.apply(v, tokens_BxL, cache=cache)` gives
  (logits_BxLxV, cache) for the tokens following those already cached.
  """

  vocab_size: int
  num_layers: int = 4
  num_heads: int = 4
  d_model: int = 128
  max_len: int = 256
  dropout: float = 0.0
  use_bias: bool = True
  gelu: str = "exact"  # The MLP's GELU: exact (erf), or tanh (GPT-2's approximation).
  norm_eps: float = 1e-5  # LayerNorm epsilon.
  dtype: str = "float32"  # Activations (auto: bfloat16 on accelerators); softmax and logits
  # stay float32.
  param_dtype: str = "float32"  # Parameters (and so the weights a checkpoint holds): or bfloat16.
  attention: str = "auto"  # reference, xla, cudnn or auto (layers.resolve_attention).
  remat: str = "none"  # Recompute blocks in the backward pass: none, block, dots (see layers).
  scan_layers: bool = False  # One nn.scan over stacked blocks: compile time flat in depth.
  eod_ids: tuple = ()  # Set from data.document_masking: attention and positions restart at these.

  def flops_per_token(self, params, seq_len: int) -> float:
    """6 per non-position-embedding parameter plus attention's 12 * layers * width * context."""
    n = sum(x.size for x in jax.tree_util.tree_leaves(params)) - params["wpe"]["embedding"].size
    return 6.0 * n + 12.0 * self.num_layers * self.d_model * seq_len

  def init_cache(self, batch_size: int, length: int):
    """An empty KV cache for `length` positions (at most max_len)."""
    shape = (batch_size, self.num_heads, min(length, self.max_len), self.d_model // self.num_heads)
    cache = layers.init_kv_cache(
      self.num_layers, self.scan_layers, shape, layers.compute_dtype(self.dtype)
    )
    return {**cache, "start": jnp.zeros((batch_size,), jnp.int32)} if self.eod_ids else cache

  def check(self) -> None:
    """Refuses settings outside their range (UserError)."""
    layers.check_transformer(self)
    config_lib.check_choice("model.gelu", self.gelu, GELUS)

  @nn.compact
  def __call__(self, tokens_BxL, deterministic: bool = True, cache=None):
    self.check()
    L = tokens_BxL.shape[1]
    pos = 0 if cache is None else cache["pos"]
    dtype, param_dtype = layers.compute_dtype(self.dtype), layers.param_dtype(self.param_dtype)
    embed = lambda n, name: nn.Embed(
      n, self.d_model, embedding_init=_init(0.02), param_dtype=param_dtype, name=name
    )
    wte, wpe = embed(self.vocab_size, "wte"), embed(self.max_len, "wpe")
    positions_1xL = (pos + jnp.arange(L))[None]
    starts_BxL = None
    if self.eod_ids:  # Positions count from each document's start.
      starts_BxL = layers.document_starts(
        tokens_BxL, self.eod_ids, pos, None if cache is None else cache["start"]
      )
      positions_1xL = positions_1xL - starts_BxL  # Now BxL.
    x_BxLxD = wte(tokens_BxL) + wpe(positions_1xL)
    x_BxLxD = nn.Dropout(self.dropout)(x_BxLxD, deterministic).astype(dtype)
    block_kwargs = {
      "num_heads": self.num_heads,
      "num_layers": self.num_layers,
      "dropout": self.dropout,
      "use_bias": self.use_bias,
      "gelu": self.gelu,
      "norm_eps": self.norm_eps,
      "dtype": dtype,
      "param_dtype": param_dtype,
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
    ln_f = nn.LayerNorm(
      self.norm_eps, use_bias=self.use_bias, dtype=dtype, param_dtype=param_dtype, name="ln_f"
    )
    x_BxLxD = ln_f(x_BxLxD)
    logits_BxLxV = wte.attend(x_BxLxD.astype(jnp.float32))
    if cache is None:
      return logits_BxLxV
    cache = {"pos": pos + L, "layers": kv_layers}
    return logits_BxLxV, cache if starts_BxL is None else {**cache, "start": starts_BxL[:, -1]}
