"""Gemma 2 and 3: Llama's attention and gated MLP, with Gemma's norms, scales and soft caps.

What differs from llama.py: RMSNorm scales are 1 + w (w starts at 0), embeddings are scaled by
sqrt(d_model), the MLP is a GeGLU (tanh GELU), each block normalizes attention's and the MLP's
outputs as well as their inputs, scores are scaled by 1/sqrt(query_pre_attn_scalar) and
soft-capped, so are the logits, and local (sliding-window) and global layers alternate
(layer_pattern). Gemma 3 adds per-head query/key norms (qk_norm) and its own rotary base for
local layers (rope_local_base).
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm_jax import UserError
from lm_jax.models import layers, llama
from lm_jax.models import rope as rope_lib


class Block(nn.Module):
  """Sandwich-norm residual block: x + norm(attn(norm(x))), then x + norm(mlp(norm(x)))."""

  num_heads: int
  num_kv_heads: int
  head_dim: int
  num_layers: int
  mlp_dim: int
  dropout: float
  rope: rope_lib.Rope
  local_rope: rope_lib.Rope | None
  norm_eps: float
  query_scale: float
  attn_softcap: float
  qk_norm: bool
  sliding_window: int
  dtype: jnp.dtype
  param_dtype: jnp.dtype
  attention: str = "reference"

  @nn.compact
  def __call__(self, x_BxLxD, deterministic: bool, kv=None, pos=0, starts_BxL=None, local=True):
    norm = lambda name: layers.RMSNorm(self.norm_eps, 1.0, self.dtype, self.param_dtype, name=name)
    attn = llama.Attention(
      self.num_heads,
      self.num_kv_heads,
      self.head_dim,
      self.num_layers,
      self.dropout,
      self.rope,
      self.dtype,
      self.param_dtype,
      qk_norm=self.qk_norm,
      norm_eps=self.norm_eps,
      norm_offset=1.0,
      query_scale=self.query_scale,
      softcap=self.attn_softcap,
      sliding_window=self.sliding_window,
      local_rope=self.local_rope,
      attention=self.attention,
      name="attn",
    )
    h, kv = attn(norm("attn_norm")(x_BxLxD), deterministic, kv, pos, starts_BxL, local)
    x_BxLxD = x_BxLxD + nn.Dropout(self.dropout)(norm("attn_post_norm")(h), deterministic)
    mlp = llama.GatedMlp(
      self.mlp_dim,
      self.num_layers,
      False,
      self.dtype,
      self.param_dtype,
      activation="gelu_tanh",
      name="mlp",
    )
    h = norm("mlp_post_norm")(mlp(norm("mlp_norm")(x_BxLxD)))
    return x_BxLxD + nn.Dropout(self.dropout)(h, deterministic), kv


class Gemma(nn.Module):
  """Scaled token embeddings, sandwich-norm blocks, a soft-capped head tied to the embedding.

  The same contract as Llama: `model.apply(v, tokens_BxL)` gives logits_BxLxV
  (float32); with a cache from `init_cache`, `(logits_BxLxV, cache)`.
  """

  vocab_size: int
  num_layers: int = 4
  num_heads: int = 4
  num_kv_heads: int = 2  # Key/value heads, each shared by num_heads // num_kv_heads queries.
  head_dim: int = 0  # Each head's width; 0: d_model / num_heads (Gemma 2 2B: 256, 2304 wide).
  d_model: int = 128
  max_len: int = 256  # Longest context: the decode cache's limit.
  mlp_dim: int = 0  # GeGLU width; 0: 4 * d_model (Gemma 2 2B's ratio).
  dropout: float = 0.0
  tie_embeddings: bool = True  # The head reuses the embedding table (every Gemma does).
  rope_base: float = 10000.0  # Global layers' rotary base (Gemma 3: 1e6).
  rope_type: str = "default"  # Global layers' frequency scaling: default or linear (rope.py).
  rope_factor: float = 1.0  # linear: how far the context stretches (Gemma 3 4B and up: 8).
  rope_local_base: float = 0.0  # Local layers' own base, unscaled (Gemma 3: 1e4); 0: as global.
  norm_eps: float = 1e-6
  query_pre_attn_scalar: int = 0  # Scores are q.k / sqrt(this); 0: the head width.
  attn_softcap: float = 50.0  # Scores soft-capped to (-cap, cap); 0: not (Gemma 3).
  final_softcap: float = 30.0  # Logits soft-capped likewise; 0: not (Gemma 3).
  qk_norm: bool = False  # RMSNorm on each head's queries and keys before the rotation (Gemma 3).
  sliding_window: int = 4096  # Local layers see the last this many positions, their own too.
  layer_pattern: str = "lg"  # Local (l) or global (g), repeated: Gemma 2 'lg', Gemma 3 'lllllg'.
  dtype: str = "float32"  # Activations (auto: bfloat16 on accelerators); softmax and logits
  # stay float32.
  param_dtype: str = "float32"  # Parameters (and so the weights a checkpoint holds): or bfloat16.
  attention: str = "auto"  # reference, xla, cudnn or auto; soft caps need the reference.
  remat: str = "none"  # Recompute blocks in the backward pass: none, block, dots (see layers).
  scan_layers: bool = False  # One nn.scan over stacked blocks: compile time flat in depth.

  @property
  def hidden_dim(self) -> int:
    """The GeGLU width F."""
    return self.mlp_dim or 4 * self.d_model

  @property
  def head_width(self) -> int:
    """Each head's width K."""
    return self.head_dim or self.d_model // self.num_heads

  def flops_per_token(self, params, seq_len: int) -> float:
    """6 per parameter that multiplies (the embedding only as a tied head), plus attention's."""
    n = sum(x.size for x in jax.tree_util.tree_leaves(params))
    if not self.tie_embeddings:
      n -= params["embed"]["embedding"].size
    return 6.0 * n + 12.0 * self.num_layers * self.num_heads * self.head_width * seq_len

  def init_cache(self, batch_size: int, length: int):
    """An empty KV cache of num_kv_heads heads for `length` positions (at most max_len)."""
    shape = (batch_size, self.num_kv_heads, min(length, self.max_len), self.head_width)
    return layers.init_kv_cache(
      self.num_layers, self.scan_layers, shape, layers.compute_dtype(self.dtype)
    )

  def _check(self):
    H, G = self.num_heads, self.num_kv_heads
    if not self.head_dim and self.d_model % H or self.head_width % 2:
      raise UserError(
        f"model.d_model={self.d_model} must be num_heads={H} times an even head width, "
        "or model.head_dim even: change d_model, num_heads or head_dim."
      )
    if G < 1 or H % G:
      raise UserError(f"model.num_kv_heads={G} must divide num_heads={H}.")
    if self.rope_type not in ("default", "linear"):
      raise UserError(f"model.rope_type={self.rope_type!r}: Gemma takes 'default' or 'linear'.")
    if self.sliding_window < 0:
      raise UserError(f"model.sliding_window={self.sliding_window} must be 0 (none) or more.")

  def _layers(self):
    """(rope, local_rope, window, per-layer local flags) for the blocks.

    Where every layer is alike (all local, all global, or local ones differing
    in nothing) nothing is per layer: the blocks get that kind's window and rotation.
    """
    local = layers.local_layers(self.layer_pattern, self.num_layers)
    rope = rope_lib.Rope(self.rope_base, self.rope_type, self.rope_factor)
    local_rope = rope_lib.Rope(self.rope_local_base) if self.rope_local_base else rope
    if not any(local):
      return rope, None, 0, None
    if all(local):
      return local_rope, None, self.sliding_window, None
    if not self.sliding_window and local_rope == rope:
      return rope, None, 0, None
    return rope, None if local_rope == rope else local_rope, self.sliding_window, local

  @nn.compact
  def __call__(self, tokens_BxL, deterministic: bool = True, cache=None):
    self._check()
    L = tokens_BxL.shape[1]
    pos = 0 if cache is None else cache["pos"]
    dtype, param_dtype = layers.compute_dtype(self.dtype), layers.param_dtype(self.param_dtype)
    embed = nn.Embed(
      self.vocab_size,
      self.d_model,
      embedding_init=llama._init(0.02),
      param_dtype=param_dtype,
      name="embed",
    )
    # The scale in the parameters' dtype, as Gemma's reference implementation rounds it.
    x_BxLxD = embed(tokens_BxL) * jnp.asarray(math.sqrt(self.d_model), param_dtype)
    x_BxLxD = nn.Dropout(self.dropout)(x_BxLxD, deterministic).astype(dtype)
    rope, local_rope, window, local = self._layers()
    block_kwargs = {
      "num_heads": self.num_heads,
      "num_kv_heads": self.num_kv_heads,
      "head_dim": self.head_width,
      "num_layers": self.num_layers,
      "mlp_dim": self.hidden_dim,
      "dropout": self.dropout,
      "rope": rope,
      "local_rope": local_rope,
      "norm_eps": self.norm_eps,
      "query_scale": 1.0 / math.sqrt(self.query_pre_attn_scalar or self.head_width),
      "attn_softcap": self.attn_softcap,
      "qk_norm": self.qk_norm,
      "sliding_window": window,
      "dtype": dtype,
      "param_dtype": param_dtype,
      "attention": layers.resolve_attention(
        self.attention, dtype, self.dropout, self.head_width, softcap=self.attn_softcap
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
      per_layer=local,
    )
    norm = layers.RMSNorm(self.norm_eps, 1.0, dtype, param_dtype, name="norm")
    x_BxLxD = norm(x_BxLxD).astype(jnp.float32)
    if self.tie_embeddings:
      logits_BxLxV = embed.attend(x_BxLxD)
    else:
      logits_BxLxV = nn.Dense(
        self.vocab_size,
        use_bias=False,
        kernel_init=llama._init(0.02),
        param_dtype=param_dtype,
        name="head",
      )(x_BxLxD)
    if self.final_softcap:
      logits_BxLxV = self.final_softcap * jnp.tanh(logits_BxLxV / self.final_softcap)
    if cache is None:
      return logits_BxLxV
    return logits_BxLxV, {"pos": pos + L, "layers": kv_layers}
