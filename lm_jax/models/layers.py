"""What the Transformers share: cached causal attention, KV caches, norms, remat and layer scan."""

import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lm_jax import UserError
from lm_jax import config as config_lib

DTYPES = ("auto", "float32", "bfloat16")  # auto: bfloat16 on GPU and TPU, float32 on CPU.
PARAM_DTYPES = ("float32", "bfloat16")  # model.param_dtype: how parameters are stored.
ATTENTION = ("auto", "reference", "xla", "cudnn")

# What the backward pass may keep from the forward pass of each block.
REMAT_POLICIES = {
  "none": None,  # No rematerialization: keep everything.
  "block": jax.checkpoint_policies.nothing_saveable,  # Keep only each block's input.
  # Keep the projections' outputs, recompute attention's L x S scores (einsums with batch dims).
  "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def check_transformer(m) -> None:
  """The ranges of the settings the Transformers share; a UserError names the first outside."""
  for key in ("num_layers", "num_heads", "d_model", "max_len"):
    config_lib.check_int(f"model.{key}", getattr(m, key), 1)
  config_lib.check_number("model.dropout", m.dropout, 0, 1, below=True)
  config_lib.check_number("model.norm_eps", m.norm_eps, 0, above=True)
  config_lib.check_choice("model.dtype", m.dtype, DTYPES)
  config_lib.check_choice("model.attention", m.attention, ATTENTION)
  config_lib.check_choice("model.remat", m.remat, REMAT_POLICIES)
  if not getattr(m, "head_dim", 0) and m.d_model % m.num_heads:
    raise UserError(
      f"model.d_model={m.d_model} is not divisible by model.num_heads={m.num_heads}: "
      "pick a width that is a multiple of the head count."
    )


@jax.custom_jvp
def gelu(x):
  """Exact (erf) GELU, as jax.nn.gelu(approximate=False), in half its time on CPU.

  The derivative is written out, cdf + x * pdf, so the backward pass reuses
  one erf and one exp instead of differentiating through erf's expansion.
  """
  return x * (0.5 + 0.5 * jax.lax.erf(x * (1 / math.sqrt(2))))


@gelu.defjvp
def _gelu_jvp(primals, tangents):
  (x,), (t,) = primals, tangents
  cdf = 0.5 + 0.5 * jax.lax.erf(x * (1 / math.sqrt(2)))
  pdf = jnp.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
  return x * cdf, (cdf + x * pdf) * t


def compute_dtype(name: str, platform: str | None = None) -> jnp.dtype:
  """The activation dtype named by `model.dtype` (parameters: `param_dtype`).

  'auto' is bfloat16 on accelerators (`platform`, default JAX's backend) and
  float32 on CPUs, where XLA computes bfloat16 dots in float32 unless told
  otherwise (see backend.prepare_cpu_backend).
  """
  if name not in DTYPES:
    raise UserError(f"unknown model.dtype {name!r}: use one of {list(DTYPES)}.")
  if name == "auto":
    name = "float32" if (platform or jax.default_backend()) == "cpu" else "bfloat16"
  return jnp.dtype(name)


def param_dtype(name: str) -> jnp.dtype:
  """The parameter dtype named by `model.param_dtype`."""
  if name not in PARAM_DTYPES:
    raise UserError(f"unknown model.param_dtype {name!r}: use one of {list(PARAM_DTYPES)}.")
  return jnp.dtype(name)


def select(flag, if_true, if_false):
  """`if_true if flag else if_false`, also for a traced flag (a scanned layer's)."""
  if isinstance(flag, (bool, np.bool_)):
    return if_true if flag else if_false
  return jnp.where(flag, if_true, if_false)


def local_layers(pattern: str, num_layers: int) -> tuple[bool, ...]:
  """Which layers are local (attend within a sliding window), by model.layer_pattern: one
  letter per layer, l (local) or g (global), the pattern repeated over the depth ('lg':
  local, global, local, ...; 'lllllg': five local then one global, as Gemma 3)."""
  if not pattern or set(pattern) - {"l", "g"}:
    raise UserError(
      f"model.layer_pattern={pattern!r} must be letters l (local) and g (global), "
      "such as 'l' (every layer local) or 'lg' (alternating)."
    )
  return tuple(pattern[i % len(pattern)] == "l" for i in range(num_layers))


def dense(features, name: str, bias: bool, dtype, param_dtype, std=0.02, axis=-1) -> nn.Module:
  """A projection with a N(0, std) kernel, as GPT-2 initialises them (layers that add to the
  residual stream take std / sqrt(2 * layers)): nn.Dense for one output axis from the last
  input axis, else nn.DenseGeneral (`features` a tuple, or `axis` several input axes)."""
  kwargs = dict(
    use_bias=bias,
    kernel_init=nn.initializers.normal(std),
    dtype=dtype,
    param_dtype=param_dtype,
    name=name,
  )
  if isinstance(features, int) and axis == -1:
    return nn.Dense(features, **kwargs)
  return nn.DenseGeneral(features, axis=axis, **kwargs)


class RMSNorm(nn.Module):
  """x / rms(x) * (offset + scale), in float32: Llama's offset is 0, Gemma's 1 (scale from 0)."""

  eps: float
  offset: float = 0.0
  dtype: jnp.dtype = jnp.float32  # Of the output.
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    init = nn.initializers.zeros if self.offset else nn.initializers.ones
    scale = self.param("scale", init, (x.shape[-1],), self.param_dtype)
    f = x.astype(jnp.float32)
    f = f * jax.lax.rsqrt(jnp.mean(f * f, axis=-1, keepdims=True) + self.eps)
    return (f * (self.offset + scale.astype(jnp.float32))).astype(self.dtype)


def write_kv(kv, k_BxGxLxK, v_BxGxLxK, pos):
  """Writes the new keys and values into `kv` at [pos, pos + L); returns all S of them and kv."""
  write = lambda cache, new: jax.lax.dynamic_update_slice(
    cache, new.astype(cache.dtype), (0, 0, pos, 0)
  )
  kv = {"k": write(kv["k"], k_BxGxLxK), "v": write(kv["v"], v_BxGxLxK)}
  return kv["k"], kv["v"], kv


def document_starts(tokens_BxL, eod_ids, pos=0, start_B=None):
  """The position at which each token's document starts: that of its latest end-of-document id.

  An end-of-document token opens the document after it (the token cache writes one before
  each document), so a document's first token is its end-of-document token. Tokens before
  any in the window continue the document that started at `start_B` (a cache's open one),
  or at the window's start. A start is a segment id that a KV cache can carry: a query
  at position p with start t sees the keys at [t, p], its own document's.
  """
  at_L = pos + jnp.arange(tokens_BxL.shape[1], dtype=jnp.int32)
  is_eod_BxL = jnp.isin(tokens_BxL, jnp.asarray(eod_ids, jnp.int32))
  if start_B is None:
    start_B = jnp.zeros(tokens_BxL.shape[:1], jnp.int32) + jnp.int32(pos)
  return jax.lax.cummax(jnp.where(is_eod_BxL, at_L[None], start_B[:, None]), axis=1)


def causal_mask(L: int, S: int, pos, window=0, starts_BxL=None):
  """Which keys at [0, S) each query at [pos, pos + L) sees: those not after it and, with a
  `window` > 0 (a sliding window), only the last `window` of them (its own included). LxS, or
  BxLxS inside each query's document when `starts_BxL` (document_starts) is given."""
  q_Lx1, k_1xS = pos + jnp.arange(L)[:, None], jnp.arange(S)[None, :]
  mask_LxS = k_1xS <= q_Lx1
  if not (isinstance(window, int) and window == 0):
    mask_LxS = mask_LxS & ((window <= 0) | (k_1xS > q_Lx1 - window))
  if starts_BxL is None:
    return mask_LxS
  return mask_LxS[None] & (jnp.arange(S)[None, None, :] >= starts_BxL[:, :, None])


def _einsum_attention(q_BxHxLxK, k_BxGxSxK, v_BxGxSxK, mask, dropout, dtype, scale, softcap):
  """Softmax attention of the queries over the keys `mask` (LxS, or BxLxS) lets each see, in
  float32: `attention`'s reference."""
  B, H, L, K = q_BxHxLxK.shape
  G = k_BxGxSxK.shape[1]
  scale = 1.0 / math.sqrt(K) if scale is None else scale
  q_BxGxRxLxK = q_BxHxLxK.reshape(B, G, H // G, L, K) * scale
  logits_BxGxRxLxS = jnp.einsum("bgrlk,bgsk->bgrls", q_BxGxRxLxK, k_BxGxSxK.astype(dtype))
  logits_BxGxRxLxS = logits_BxGxRxLxS.astype(jnp.float32)
  if softcap:
    logits_BxGxRxLxS = softcap * jnp.tanh(logits_BxGxRxLxS / softcap)
  mask = mask if mask.ndim == 2 else mask[:, None, None]  # BxLxS -> Bx1x1xLxS.
  logits_BxGxRxLxS = jnp.where(mask, logits_BxGxRxLxS, jnp.finfo(jnp.float32).min)
  probs_BxGxRxLxS = dropout(jax.nn.softmax(logits_BxGxRxLxS, axis=-1).astype(dtype))
  out_BxGxRxLxK = jnp.einsum("bgrls,bgsk->bgrlk", probs_BxGxRxLxS, v_BxGxSxK.astype(dtype))
  return out_BxGxRxLxK.reshape(B, H, L, K)


# On CPU, XLA's dot_product_attention lowers to the same einsums and softmax as the reference;
# what differs is how XLA fuses them with the layout changes around them. Whole training steps
# ran faster with the reference at narrow heads and with XLA's from 64-wide heads on
# (scripts/benchmark.py and benchmarks/attention_speed.py: docs/benchmarks.md).
CPU_XLA_MIN_HEAD_DIM = 64


def _cudnn_problem(dtype, head_dim: int, device, documents: bool = False) -> str | None:
  """Why cuDNN's fused attention cannot run here, or None when it can."""
  if documents:
    # cuDNN has packed-sequence (segment offset) attention, but jax.nn.dot_product_attention
    # does not reach it: it would hand cuDNN the document mask as a dense L x S bias per row.
    return (
      "jax.nn.dot_product_attention passes cuDNN no segments, so it cannot keep attention "
      "inside documents (data.document_masking) without a dense bias"
    )
  if device.platform != "gpu" or "nvidia" not in device.device_kind.lower():
    return f"it needs an NVIDIA GPU, and this is a {device.platform} ({device.device_kind})"
  capability = float(getattr(device, "compute_capability", "0") or 0)
  if capability < 8.0:
    return f"it needs compute capability 8.0 (Ampere) or newer, and this GPU has {capability}"
  if jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
    return f"it computes in bfloat16 or float16, not {jnp.dtype(dtype).name} (set model.dtype)"
  limit = 256 if capability >= 9.0 else 128
  if head_dim % 8 or head_dim > limit:
    return f"the head width must be a multiple of 8 up to {limit}, not {head_dim}"
  return None


def resolve_attention(
  requested: str,
  dtype,
  dropout: float,
  head_dim: int,
  device=None,
  softcap: float = 0.0,
  documents: bool = False,
):
  """The attention implementation to run, and why: (choice, reason).

  An explicit choice runs as asked or is refused (UserError) with the reason;
  only 'auto' chooses: cuDNN on NVIDIA GPUs where dtype and head width allow,
  else XLA's fused attention on accelerators; on CPU, XLA's for heads at least
  CPU_XLA_MIN_HEAD_DIM wide and the einsum reference for narrower ones (see
  that constant). Fused kernels neither drop attention probabilities nor
  soft-cap scores, so with dropout or `softcap` 'auto' takes the reference.
  `documents` (document masking) rules out cuDNN.
  """
  if requested not in ATTENTION:
    raise UserError(f"unknown model.attention {requested!r}: use one of {list(ATTENTION)}.")
  device = device or jax.devices()[0]
  if requested in ("xla", "cudnn") and dropout > 0:
    raise UserError(
      f"model.attention={requested!r} cannot apply model.dropout={dropout} to attention "
      "probabilities: set model.attention='reference' (or 'auto'), or model.dropout=0."
    )
  if requested in ("xla", "cudnn") and softcap > 0:
    raise UserError(
      f"model.attention={requested!r} cannot soft-cap attention scores "
      f"(model.attn_softcap={softcap}): set model.attention='reference' (or 'auto')."
    )
  if requested == "cudnn":
    problem = _cudnn_problem(dtype, head_dim, device, documents)
    if problem:
      raise UserError(f"model.attention='cudnn' cannot run: {problem}; use 'auto' or 'xla'.")
  if requested != "auto":
    return requested, "set in the config"
  if dropout > 0:
    return "reference", f"model.dropout={dropout}: the fused kernels cannot drop probabilities"
  if softcap > 0:
    return "reference", f"model.attn_softcap={softcap}: the fused kernels cannot soft-cap scores"
  problem = _cudnn_problem(dtype, head_dim, device, documents)
  if problem is None:
    return "cudnn", f"{device.device_kind} supports cuDNN attention at this dtype and head width"
  if device.platform != "cpu":
    return "xla", f"cuDNN does not apply ({problem})"
  if head_dim >= CPU_XLA_MIN_HEAD_DIM:
    return "xla", f"on CPU with heads {head_dim} >= {CPU_XLA_MIN_HEAD_DIM} wide XLA's is faster"
  return (
    "reference",
    f"on CPU with heads {head_dim} < {CPU_XLA_MIN_HEAD_DIM} wide the einsum is faster",
  )


def attention(
  q_BxHxLxK,
  k_BxGxSxK,
  v_BxGxSxK,
  pos,
  dropout,
  dtype,
  implementation: str,
  scale=None,
  softcap=0.0,
  window=0,
  starts_BxL=None,
):
  """Softmax attention of queries at [pos, pos + L) over keys at [0, S), by `implementation`.

  Each of the G key/value heads serves H // G query heads (grouped-query attention; G == H is
  multi-head). Scores are q.k * `scale` (default 1/sqrt(K)), soft-capped to (-softcap,
  softcap) by softcap * tanh(s / softcap) when `softcap` > 0, and masked by `causal_mask`
  with `window` and `starts_BxL` (each query inside its own document); `dropout` is applied to
  the probabilities. 'reference' computes them as einsums in float32; 'xla' and 'cudnn' are
  jax.nn.dot_product_attention's (no dropout, no softcap; resolve_attention refuses them with
  either). Without a cache (S == L, `pos` the Python int 0) and without a window the fused
  kernels use their own causal mask; with one, a single query (decoding) sees the first
  pos + 1 keys by length, and otherwise they get causal_mask. Document starts always make an
  explicit mask.
  """
  B, H, L, K = q_BxHxLxK.shape
  S = k_BxGxSxK.shape[2]
  if implementation == "reference":
    mask = causal_mask(L, S, pos, window, starts_BxL)
    return _einsum_attention(q_BxHxLxK, k_BxGxSxK, v_BxGxSxK, mask, dropout, dtype, scale, softcap)
  if implementation not in ("xla", "cudnn"):
    raise UserError(f"model.attention={implementation!r} is not resolved: see resolve_attention.")
  layout = lambda x: x.astype(dtype).transpose(0, 2, 1, 3)  # BxHxLxK -> BxLxHxK, as JAX takes it.
  kwargs = {}
  no_window = isinstance(window, int) and window == 0
  if starts_BxL is not None:  # Bx1xLxS: every head alike.
    kwargs["mask"] = causal_mask(L, S, pos, window, starts_BxL)[:, None]
  elif no_window and isinstance(pos, int) and pos == 0 and S == L:
    kwargs["is_causal"] = True
  elif no_window and L == 1:
    kwargs["key_value_seq_lengths"] = jnp.full((B,), pos + 1, jnp.int32)
  else:
    kwargs["mask"] = causal_mask(L, S, pos, window)[None, None]
  out_BxLxHxK = jax.nn.dot_product_attention(
    layout(q_BxHxLxK),
    layout(k_BxGxSxK),
    layout(v_BxGxSxK),
    scale=scale,
    implementation=implementation,
    **kwargs,
  )
  return out_BxLxHxK.transpose(0, 2, 1, 3)


def init_kv_cache(num_layers: int, scan_layers: bool, shape_BxGxSxK, dtype):
  """An empty KV cache {'pos', 'layers'}: layers a list of kv, or one kv stacked if scanned."""
  if scan_layers:
    shape_BxGxSxK = (num_layers, *shape_BxGxSxK)
  kv = lambda: {"k": jnp.zeros(shape_BxGxSxK, dtype), "v": jnp.zeros(shape_BxGxSxK, dtype)}
  layers = kv() if scan_layers else [kv() for _ in range(num_layers)]
  return {"pos": jnp.zeros((), jnp.int32), "layers": layers}


def apply_blocks(
  block_cls,
  block_kwargs: dict,
  num_layers: int,
  remat: str,
  scan_layers: bool,
  x_BxLxD,
  deterministic: bool,
  layers,
  pos,
  starts_BxL=None,
  per_layer=None,
):
  """Runs `num_layers` blocks `block_cls(**block_kwargs)(x, deterministic, kv, pos, starts_BxL)
  -> (x, kv)`; `starts_BxL` are document_starts under document masking, else None.

  Call inside a compact method. Unscanned, the blocks are submodules
  block_0, block_1, ... and `layers` (the cache's) is a list of per-layer kv;
  scanned, one submodule 'blocks' holds every parameter with a leading layer
  axis, so compile time does not grow with depth, and `layers` is one kv
  with that leading axis. `per_layer` (a sequence of num_layers bools, such as
  which layers are local), when given, is passed to each block as a sixth
  argument: its own Python bool unscanned, a traced one scanned. Returns
  (x_BxLxD, layers); layers is None without a cache.
  """
  if remat not in REMAT_POLICIES:
    raise UserError(f"unknown model.remat {remat!r}: use one of {list(REMAT_POLICIES)}.")
  if remat != "none":
    # Argument 2 (after self) is `deterministic`, a Python bool, and so is an unscanned
    # per-layer one (6). Inside a scan the loop already keeps XLA from merging recomputation
    # with the forward pass.
    static = (2,) if per_layer is None or scan_layers else (2, 6)
    block_cls = nn.remat(
      block_cls, policy=REMAT_POLICIES[remat], static_argnums=static, prevent_cse=not scan_layers
    )
  extra = () if per_layer is None else (jnp.asarray(per_layer),)
  if scan_layers:
    stack = nn.scan(
      block_cls,
      variable_axes={"params": 0},
      split_rngs={"params": True, "dropout": True},
      in_axes=(nn.broadcast, 0, nn.broadcast, nn.broadcast) + (0,) * len(extra),
      length=num_layers,
    )
    blocks = stack(**block_kwargs, name="blocks")
    return blocks(x_BxLxD, deterministic, layers, pos, starts_BxL, *extra)
  new_layers = []
  for i in range(num_layers):
    kv = None if layers is None else layers[i]
    extra = () if per_layer is None else (bool(per_layer[i]),)
    block = block_cls(**block_kwargs, name=f"block_{i}")
    x_BxLxD, kv = block(x_BxLxD, deterministic, kv, pos, starts_BxL, *extra)
    new_layers.append(kv)
  return x_BxLxD, None if layers is None else new_layers


def stack_blocks(params: dict) -> dict:
  """block_0 ... block_{n-1} -> 'blocks' with a leading layer axis (scan_layers=True)."""
  names = sorted((k for k in params if re.fullmatch(r"block_\d+", k)), key=lambda k: int(k[6:]))
  if not names:
    return params
  rest = {k: v for k, v in params.items() if k not in names}
  return {
    **rest,
    "blocks": jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *map(params.get, names)),
  }


def unstack_blocks(params: dict) -> dict:
  """The inverse of `stack_blocks`."""
  if "blocks" not in params:
    return params
  rest = {k: v for k, v in params.items() if k != "blocks"}
  blocks = params["blocks"]
  n = jax.tree_util.tree_leaves(blocks)[0].shape[0]
  unstacked = {f"block_{i}": jax.tree_util.tree_map(lambda x, i=i: x[i], blocks) for i in range(n)}
  return {**rest, **unstacked}
