"""What the Transformers share: cached causal attention, KV caches, remat and layer scan."""

import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm_jax import UserError

DTYPES = ("auto", "float32", "bfloat16")  # auto: bfloat16 on GPU and TPU, float32 on CPU.
ATTENTION = ("auto", "reference", "xla", "cudnn")

# What the backward pass may keep from the forward pass of each block.
REMAT_POLICIES = {
  "none": None,  # No rematerialization: keep everything.
  "block": jax.checkpoint_policies.nothing_saveable,  # Keep only each block's input.
  # Keep the projections' outputs, recompute attention's L x S scores (einsums with batch dims).
  "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


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
  """The activation dtype named by `model.dtype`; parameters stay float32 regardless.

  'auto' is bfloat16 on accelerators (`platform`, default JAX's backend) and
  float32 on CPUs, where XLA computes bfloat16 dots in float32 unless told
  otherwise (see parallel.prepare_cpu_backend).
  """
  if name not in DTYPES:
    raise UserError(f"unknown model.dtype {name!r}: use one of {list(DTYPES)}.")
  if name == "auto":
    name = "float32" if (platform or jax.default_backend()) == "cpu" else "bfloat16"
  return jnp.dtype(name)


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


def visible(L: int, S: int, pos, starts_BxL=None):
  """Which keys at [0, S) each query at [pos, pos + L) sees: LxS causal, or BxLxS inside
  each query's document when `starts_BxL` (document_starts) is given."""
  at_L = pos + jnp.arange(L)
  causal_LxS = jnp.arange(S)[None, :] <= at_L[:, None]
  if starts_BxL is None:
    return causal_LxS
  return causal_LxS[None] & (jnp.arange(S)[None, None, :] >= starts_BxL[:, :, None])


def causal_attention(q_BxHxLxK, k_BxGxSxK, v_BxGxSxK, pos, dropout, dtype, starts_BxL=None):
  """Softmax attention of queries at [pos, pos + L) over keys at [0, S), in float32.

  Each of the G key/value heads serves H // G query heads (grouped-query
  attention; G == H is multi-head). `dropout` is applied to the probabilities.
  With `starts_BxL` (document_starts) each query sees only its own document.
  """
  B, H, L, K = q_BxHxLxK.shape
  G, S = k_BxGxSxK.shape[1], k_BxGxSxK.shape[2]
  q_BxGxRxLxK = q_BxHxLxK.reshape(B, G, H // G, L, K) * (1.0 / math.sqrt(K))
  logits_BxGxRxLxS = jnp.einsum("bgrlk,bgsk->bgrls", q_BxGxRxLxK, k_BxGxSxK.astype(dtype))
  mask = visible(L, S, pos, starts_BxL)
  mask = mask if starts_BxL is None else mask[:, None, None]  # BxLxS -> Bx1x1xLxS.
  logits_BxGxRxLxS = jnp.where(
    mask, logits_BxGxRxLxS.astype(jnp.float32), jnp.finfo(jnp.float32).min
  )
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
  requested: str, dtype, dropout: float, head_dim: int, device=None, documents: bool = False
):
  """The attention implementation to run, and why: (choice, reason).

  An explicit choice runs as asked or is refused (UserError) with the reason;
  only 'auto' chooses: cuDNN on NVIDIA GPUs where dtype and head width allow,
  else XLA's fused attention on accelerators; on CPU, XLA's for heads at least
  CPU_XLA_MIN_HEAD_DIM wide and the einsum reference for narrower ones (see
  that constant). Fused kernels do not drop attention probabilities, so with
  dropout 'auto' takes the reference. `documents` (document masking) rules out cuDNN.
  """
  if requested not in ATTENTION:
    raise UserError(f"unknown model.attention {requested!r}: use one of {list(ATTENTION)}.")
  device = device or jax.devices()[0]
  if requested in ("xla", "cudnn") and dropout > 0:
    raise UserError(
      f"model.attention={requested!r} cannot apply model.dropout={dropout} to attention "
      "probabilities: set model.attention='reference' (or 'auto'), or model.dropout=0."
    )
  if requested == "cudnn":
    problem = _cudnn_problem(dtype, head_dim, device, documents)
    if problem:
      raise UserError(f"model.attention='cudnn' cannot run: {problem}; use 'auto' or 'xla'.")
  if requested != "auto":
    return requested, "set in the config"
  if dropout > 0:
    return "reference", f"model.dropout={dropout}: the fused kernels cannot drop probabilities"
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
  q_BxHxLxK, k_BxGxSxK, v_BxGxSxK, pos, dropout, dtype, implementation: str, starts_BxL=None
):
  """causal_attention by `implementation`: 'reference', or jax.nn.dot_product_attention's
  'xla' or 'cudnn' (no dropout; resolve_attention refuses them with it).

  Without a cache (S == L, `pos` the Python int 0) the fused kernels use their
  own causal mask; with one, a single query (decoding) sees the first pos + 1
  keys by length, and several queries get an explicit causal mask. Document
  starts (`starts_BxL`) always make an explicit mask.
  """
  if implementation == "reference":
    return causal_attention(q_BxHxLxK, k_BxGxSxK, v_BxGxSxK, pos, dropout, dtype, starts_BxL)
  if implementation not in ("xla", "cudnn"):
    raise UserError(f"model.attention={implementation!r} is not resolved: see resolve_attention.")
  B, H, L, K = q_BxHxLxK.shape
  S = k_BxGxSxK.shape[2]
  layout = lambda x: x.astype(dtype).transpose(0, 2, 1, 3)  # BxHxLxK -> BxLxHxK, as JAX takes it.
  kwargs = {}
  if starts_BxL is not None:
    kwargs["mask"] = visible(L, S, pos, starts_BxL)[:, None]  # Bx1xLxS: every head alike.
  elif isinstance(pos, int) and pos == 0 and S == L:
    kwargs["is_causal"] = True
  elif L == 1:
    kwargs["key_value_seq_lengths"] = jnp.full((B,), pos + 1, jnp.int32)
  else:
    kwargs["mask"] = (jnp.arange(S)[None, :] <= pos + jnp.arange(L)[:, None])[None, None]
  out_BxLxHxK = jax.nn.dot_product_attention(
    layout(q_BxHxLxK),
    layout(k_BxGxSxK),
    layout(v_BxGxSxK),
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
):
  """Runs `num_layers` blocks `block_cls(**block_kwargs)(x, deterministic, kv, pos, starts_BxL)
  -> (x, kv)`; `starts_BxL` are document_starts under document masking, else None.

  Call inside a compact method. Unscanned, the blocks are submodules
  block_0, block_1, ... and `layers` (the cache's) is a list of per-layer kv;
  scanned, one submodule 'blocks' holds every parameter with a leading layer
  axis, so compile time does not grow with depth, and `layers` is one kv
  with that leading axis. Returns (x_BxLxD, layers); layers is None without a cache.
  """
  if remat not in REMAT_POLICIES:
    raise UserError(f"unknown model.remat {remat!r}: use one of {list(REMAT_POLICIES)}.")
  if remat != "none":
    # Argument 2 (after self) is `deterministic`, a Python bool. Inside a scan the loop
    # already keeps XLA from merging recomputation with the forward pass.
    block_cls = nn.remat(
      block_cls, policy=REMAT_POLICIES[remat], static_argnums=(2,), prevent_cse=not scan_layers
    )
  if scan_layers:
    stack = nn.scan(
      block_cls,
      variable_axes={"params": 0},
      split_rngs={"params": True, "dropout": True},
      in_axes=(nn.broadcast, 0, nn.broadcast, nn.broadcast),
      length=num_layers,
    )
    return stack(**block_kwargs, name="blocks")(x_BxLxD, deterministic, layers, pos, starts_BxL)
  new_layers = []
  for i in range(num_layers):
    kv = None if layers is None else layers[i]
    block = block_cls(**block_kwargs, name=f"block_{i}")
    x_BxLxD, kv = block(x_BxLxD, deterministic, kv, pos, starts_BxL)
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
