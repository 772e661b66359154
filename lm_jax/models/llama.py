"""Llama: RMSNorm, rotary positions, SwiGLU and grouped-query attention, with a KV cache.

Its options cover the Llama family's variants: Llama 3.1's rotary scaling (rope_type='llama3'),
Qwen2's q/k/v biases (qkv_bias), Qwen3's per-head query/key norms (qk_norm) and free head
width (head_dim), Mistral's sliding window (sliding_window, layer_pattern).
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm_jax import UserError
from lm_jax import config as config_lib
from lm_jax.models import decoder, layers
from lm_jax.models import rope as rope_lib


class Attention(nn.Module):
  """Grouped-query causal self-attention with rotary positions; caches G heads, not H.

  `kv` is {'k': BxGxSxK, 'v': BxGxSxK} holding positions [0, pos); the new
  keys and values are rotated to their positions and written at [pos, pos + L).
  A `local` layer (the default) attends within `sliding_window` (0: no window)
  and rotates by `local_rope` when one is given; `local` is a Python bool, or a
  traced one in a scan (layers.apply_blocks).
  """

  num_heads: int
  num_kv_heads: int
  head_dim: int
  num_layers: int
  dropout: float
  rope: rope_lib.Rope
  dtype: jnp.dtype
  param_dtype: jnp.dtype = jnp.float32
  qkv_bias: bool = False
  out_bias: bool = False
  qk_norm: bool = False  # RMSNorm over each head's K features of q and k, before the rotation.
  norm_eps: float = 1e-6  # qk_norm's epsilon...
  norm_offset: float = 0.0  # ...and its scale's offset (layers.RMSNorm).
  query_scale: float = 0.0  # Scores are q.k * query_scale; 0: 1 / sqrt(head_dim).
  softcap: float = 0.0  # Scores soft-capped to (-softcap, softcap); 0: not capped.
  sliding_window: int = 0  # Keys a local layer's query sees, its own included; 0: all.
  local_rope: rope_lib.Rope | None = None  # Local layers' rotation, when it differs.
  attention: str = "reference"  # An implementation layers.attention runs (resolved, not 'auto').

  @nn.compact
  def __call__(self, x_BxLxD, deterministic: bool, kv=None, pos=0, starts_BxL=None, local=True):
    D = x_BxLxD.shape[-1]
    H, G, K = self.num_heads, self.num_kv_heads, self.head_dim
    dense = lambda features, name: layers.dense(
      features, name, self.qkv_bias, self.dtype, self.param_dtype
    )
    q_BxHxLxK = dense((H, K), "q")(x_BxLxD).transpose(0, 2, 1, 3)
    kv_BxLx2xGxK = dense((2, G, K), "kv")(x_BxLxD)
    k_BxGxLxK, v_BxGxLxK = jnp.unstack(kv_BxLx2xGxK.transpose(2, 0, 3, 1, 4), axis=0)
    if self.qk_norm:
      norm = lambda name: layers.RMSNorm(
        self.norm_eps, self.norm_offset, self.dtype, self.param_dtype, name=name
      )
      q_BxHxLxK, k_BxGxLxK = norm("q_norm")(q_BxHxLxK), norm("k_norm")(k_BxGxLxK)
    inv_freq = self.rope.inv_freq(K)
    if self.local_rope is not None:
      inv_freq = layers.select(local, self.local_rope.inv_freq(K), inv_freq)
    q_BxHxLxK = rope_lib.rotate(q_BxHxLxK, pos, inv_freq, starts_BxL)
    k_BxGxSxK, v_BxGxSxK = rope_lib.rotate(k_BxGxLxK, pos, inv_freq, starts_BxL), v_BxGxLxK
    if kv is not None:
      k_BxGxSxK, v_BxGxSxK, kv = layers.write_kv(kv, k_BxGxSxK, v_BxGxSxK, pos)
    dropout = lambda probs: nn.Dropout(self.dropout)(probs, deterministic)
    out_BxHxLxK = layers.attention(
      q_BxHxLxK,
      k_BxGxSxK,
      v_BxGxSxK,
      pos,
      dropout,
      self.dtype,
      self.attention,
      scale=self.query_scale or None,
      softcap=self.softcap,
      window=layers.select(local, self.sliding_window, 0) if self.sliding_window else 0,
      starts_BxL=starts_BxL,
    )
    std = 0.02 / math.sqrt(2 * self.num_layers)
    o = layers.dense(D, "o", self.out_bias, self.dtype, self.param_dtype, std, axis=(-2, -1))
    return o(out_BxHxLxK.transpose(0, 2, 1, 3)), kv


ACTIVATIONS = {
  "silu": nn.silu,  # SwiGLU (Llama, Qwen, Mistral).
  "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),  # GeGLU (Gemma).
  "gelu": layers.gelu,  # GeGLU with the exact (erf) GELU.
}


class GatedMlp(nn.Module):
  """Gated MLP: down(act(gate(x)) * up(x)), `mlp_dim` wide: SwiGLU with silu, GeGLU with GELU."""

  mlp_dim: int
  num_layers: int
  use_bias: bool
  dtype: jnp.dtype
  param_dtype: jnp.dtype = jnp.float32
  activation: str = "silu"

  @nn.compact
  def __call__(self, x_BxLxD):
    D, F = x_BxLxD.shape[-1], self.mlp_dim
    gate_up = layers.dense((2, F), "gate_up", self.use_bias, self.dtype, self.param_dtype)
    gate_up_BxLx2xF = gate_up(x_BxLxD)
    act = ACTIVATIONS[self.activation]
    h_BxLxF = act(gate_up_BxLx2xF[..., 0, :]) * gate_up_BxLx2xF[..., 1, :]
    std = 0.02 / math.sqrt(2 * self.num_layers)
    return layers.dense(D, "down", self.use_bias, self.dtype, self.param_dtype, std)(h_BxLxF)


class Block(nn.Module):
  """Pre-RMSNorm residual block: x + attn(norm(x)), then x + mlp(norm(x)); with `post_norms`
  (Gemma's sandwich), attention's and the MLP's outputs are normalized too."""

  num_heads: int
  num_kv_heads: int
  head_dim: int
  num_layers: int
  mlp_dim: int
  dropout: float
  rope: rope_lib.Rope
  norm_eps: float
  dtype: jnp.dtype
  param_dtype: jnp.dtype
  attention: str = "reference"
  qkv_bias: bool = False
  out_bias: bool = False
  mlp_bias: bool = False
  qk_norm: bool = False
  sliding_window: int = 0
  local_rope: rope_lib.Rope | None = None
  query_scale: float = 0.0  # Scores are q.k * query_scale; 0: 1 / sqrt(head_dim).
  attn_softcap: float = 0.0
  norm_offset: float = 0.0  # RMSNorm scales are offset + w (Gemma: 1, w from 0).
  post_norms: bool = False
  activation: str = "silu"

  @nn.compact
  def __call__(self, x_BxLxD, deterministic: bool, kv=None, pos=0, starts_BxL=None, local=True):
    norm = lambda name: layers.RMSNorm(
      self.norm_eps, self.norm_offset, self.dtype, self.param_dtype, name=name
    )
    attn = Attention(
      self.num_heads,
      self.num_kv_heads,
      self.head_dim,
      self.num_layers,
      self.dropout,
      self.rope,
      self.dtype,
      self.param_dtype,
      qkv_bias=self.qkv_bias,
      out_bias=self.out_bias,
      qk_norm=self.qk_norm,
      norm_eps=self.norm_eps,
      norm_offset=self.norm_offset,
      query_scale=self.query_scale,
      softcap=self.attn_softcap,
      sliding_window=self.sliding_window,
      local_rope=self.local_rope,
      attention=self.attention,
      name="attn",
    )
    h, kv = attn(norm("attn_norm")(x_BxLxD), deterministic, kv, pos, starts_BxL, local)
    if self.post_norms:
      h = norm("attn_post_norm")(h)
    x_BxLxD = x_BxLxD + nn.Dropout(self.dropout)(h, deterministic)
    mlp = GatedMlp(
      self.mlp_dim,
      self.num_layers,
      self.mlp_bias,
      self.dtype,
      self.param_dtype,
      activation=self.activation,
      name="mlp",
    )
    h = mlp(norm("mlp_norm")(x_BxLxD))
    if self.post_norms:
      h = norm("mlp_post_norm")(h)
    return x_BxLxD + nn.Dropout(self.dropout)(h, deterministic), kv


class Llama(decoder.Decoder):
  """Token embeddings, rotary pre-RMSNorm blocks, a head tied to the embedding or not."""

  num_kv_heads: int = 2  # Key/value heads, each shared by num_heads // num_kv_heads queries.
  head_dim: int = 0  # Each head's width; 0: d_model / num_heads (Qwen3 sets its own).
  mlp_dim: int = 0  # SwiGLU width; 0: 8/3 * d_model rounded up to a multiple of 8, as Llama.
  tie_embeddings: bool = False  # The head reuses the embedding table (Llama 1-3: no).
  rope_base: float = 10000.0
  rope_type: str = "default"  # default, linear or llama3 (Llama 3.1): frequency scaling (rope.py).
  rope_factor: float = 1.0  # linear, llama3: how far the context stretches (Llama 3.1: 8).
  rope_low_freq_factor: float = 1.0  # llama3: wavelengths over original_max_len / this: / factor.
  rope_high_freq_factor: float = 4.0  # llama3: wavelengths under original_max_len / this: kept.
  rope_original_max_len: int = 8192  # llama3: the context the model was pre-trained on.
  attention_bias: bool = False  # Biases in the q, k, v and output projections.
  qkv_bias: bool = False  # Biases in the q, k and v projections only (Qwen2).
  mlp_bias: bool = False  # Biases in the SwiGLU's three projections.
  qk_norm: bool = False  # RMSNorm on each head's queries and keys before the rotation (Qwen3).
  sliding_window: int = 0  # Local layers see the last this many positions, their own too; 0: all.
  layer_pattern: str = "l"  # Local (l) or global (g) layers, repeated over the depth (see layers).

  @property
  def hidden_dim(self) -> int:
    """The SwiGLU width F."""
    return self.mlp_dim or 8 * math.ceil(self.d_model / 3)  # 8/3 * d_model, up to a multiple of 8.

  @property
  def rope(self) -> rope_lib.Rope:
    return rope_lib.Rope(
      self.rope_base,
      self.rope_type,
      self.rope_factor,
      self.rope_low_freq_factor,
      self.rope_high_freq_factor,
      self.rope_original_max_len,
    )

  def block_options(self):
    local = layers.local_layers(self.layer_pattern, self.num_layers)
    window = self.sliding_window if any(local) else 0  # Layers alike: the window is static.
    options = {
      "num_kv_heads": self.num_kv_heads,
      "head_dim": self.head_width,
      "mlp_dim": self.hidden_dim,
      "rope": self.rope,
      "qkv_bias": self.qkv_bias or self.attention_bias,
      "out_bias": self.attention_bias,
      "mlp_bias": self.mlp_bias,
      "qk_norm": self.qk_norm,
      "sliding_window": window,
    }
    return Block, options, local if window and not all(local) else None

  def final_norm(self, dtype, param_dtype):
    return layers.RMSNorm(self.norm_eps, dtype=dtype, param_dtype=param_dtype, name="norm")

  def check_options(self) -> None:
    config_lib.check_int("model.mlp_dim", self.mlp_dim, 0)
    config_lib.check_number("model.rope_base", self.rope_base, 0, above=True)
    check_heads(self)
    self.rope.check()


def check_heads(m) -> None:
  """Heads of an even width (RoPE rotates pairs), key/value heads that divide the query heads,
  and a window of 0 (none) or more: Llama's and Gemma's shared ranges."""
  config_lib.check_int("model.num_kv_heads", m.num_kv_heads, 1)
  config_lib.check_int("model.head_dim", m.head_dim, 0)
  H, G, D = m.num_heads, m.num_kv_heads, m.d_model
  if not m.head_dim and D % H or m.head_width % 2:
    raise UserError(
      f"model.d_model={D} must be num_heads={H} times an even head width "
      "(RoPE rotates pairs), or model.head_dim even: change d_model, num_heads or head_dim."
    )
  if H % G:
    raise UserError(f"model.num_kv_heads={G} must divide num_heads={H}.")
  if m.sliding_window < 0:
    raise UserError(f"model.sliding_window={m.sliding_window} must be 0 (none) or more.")
