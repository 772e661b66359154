"""Where each parameter lies on a ('data', 'fsdp', 'tensor') mesh, written once as rules.

A parameter's path (`params/blocks/attn/qkv/kernel`, or the same path inside the optimizer
state) names the logical axes of its trailing dimensions (PARAM_RULES); logical axes name
mesh axes (MESH_OF). Tensor parallelism as Megatron-LM does it:

  attention  the query, key and value projections split by output heads, the output
             projection by input heads (key/value heads under grouped-query attention
             split when mesh.tensor divides their count, else they are replicated);
  MLP        the first projections (fc, or gate and up) by columns, the last by rows;
  vocabulary the embedding table and the head split by vocabulary when it divides.

With the residual stream whole on every chip of a tensor group, XLA keeps each block's
activations split by heads (or hidden width) from the first projection to the last and adds
one all-reduce after attention and one after the MLP; the loss reduces split logits with
all-reduces of per-token scalars. FSDP then splits the largest remaining dimension divisible
by mesh.fsdp (ZeRO-3), as without tensor parallelism. A parameter no rule names (a norm's
scale, a new model's weights) is split by FSDP only: correct everywhere, just not split by
tensor. A scanned stack (model.scan_layers) has a leading layer axis: rules align with the
trailing dimensions.
"""

import math
import re

import jax
from jax.sharding import PartitionSpec as P

from lm_jax import UserError


def _dense(module: str, inputs: tuple, outputs: tuple) -> tuple:
  """A Dense/DenseGeneral's kernel (inputs then outputs) and its bias (outputs)."""
  return ((rf"{module}/kernel", inputs + outputs), (rf"{module}/bias", outputs))


# Regular expressions over the end of a parameter's path -> logical axes of its trailing
# dimensions; the first match wins. Shape letters as in lm_jax/models/__init__.py.
PARAM_RULES = (
  *_dense(r"attn/qkv", ("embed",), (None, "heads", None)),  # GPT: D x 3 x H x K.
  *_dense(r"attn/q", ("embed",), ("heads", None)),  # Llama: D x H x K.
  *_dense(r"attn/kv", ("embed",), (None, "kv_heads", None)),  # D x 2 x G x K.
  *_dense(r"attn/(k|v)", ("embed",), ("kv_heads", None)),  # D x G x K each.
  *_dense(r"attn/(proj|o)", ("heads", None), ("embed",)),  # H x K x D.
  *_dense(r"mlp/(fc|gate|up)", ("embed",), ("mlp",)),  # D x F.
  *_dense(r"mlp/gate_up", ("embed",), (None, "mlp")),  # D x 2 x F.
  *_dense(r"mlp/(proj|down)", ("mlp",), ("embed",)),  # F x D.
  (r"(wte|embed)/embedding", ("rows", "embed")),  # V x D.
  *_dense(r"head", ("embed",), ("vocab",)),  # D x V.
)
_COMPILED = tuple((re.compile(rf"(^|/){p}$"), axes) for p, axes in PARAM_RULES)

# Logical axis -> the mesh axes that split it, dropped from the end until their product
# divides the dimension. An embedding table's rows (vocabulary) take FSDP too: FSDP on its
# width would split the looked-up features over the axis that splits the batch, and XLA
# would then gather whole activations.
MESH_OF = {
  "heads": ("tensor",),
  "kv_heads": ("tensor",),
  "mlp": ("tensor",),
  "vocab": ("tensor",),
  "rows": ("tensor", "fsdp"),
}
# Split or refused: a model whose heads or MLP width mesh.tensor does not divide would keep
# whole copies of its largest weights on every chip. The others fall back to replication.
MUST_DIVIDE = ("heads", "mlp")


def logical_axes(path: str, ndim: int) -> tuple:
  """The logical axis name (or None) of each dimension of the parameter at `path`."""
  for pattern, axes in _COMPILED:
    if pattern.search(path) and len(axes) <= ndim:
      return (None,) * (ndim - len(axes)) + tuple(axes)
  return (None,) * ndim


def spec(path: str, shape, fsdp: int, tensor: int) -> P:
  """The PartitionSpec of one parameter (or optimizer-state array) at `path`.

  With tensor > 1, first the mesh axes its rule names (MESH_OF) on that dimension; then
  FSDP, unless used already, on the largest remaining dimension divisible by `fsdp`. With
  tensor == 1 this is plain FSDP, rules or not.
  """
  shape = tuple(shape)
  if path == "rng":  # A checkpoint's dropout key: two words that every process reads whole.
    return P()
  mesh = [None] * len(shape)
  sizes = {"tensor": tensor, "fsdp": fsdp}
  for d, name in enumerate(logical_axes(path, len(shape)) if tensor > 1 else ()):
    axes = [a for a in MESH_OF.get(name, ()) if sizes[a] > 1]
    if "tensor" not in axes:
      continue
    while axes and shape[d] % math.prod(sizes[a] for a in axes):
      axes.pop()
    if not axes and name in MUST_DIVIDE:
      raise UserError(
        f"mesh.tensor={tensor} does not divide the {shape[d]} {name} of {path} "
        f"(shape {shape}): set mesh.tensor to a divisor of {shape[d]}."
      )
    mesh[d] = (axes[0] if len(axes) == 1 else tuple(axes)) if axes else None
    break
  used = {a for m in mesh if m for a in ((m,) if isinstance(m, str) else m)}
  if fsdp > 1 and "fsdp" not in used:
    for d in sorted(range(len(shape)), key=lambda d: -shape[d]):
      if mesh[d] is None and shape[d] % fsdp == 0:
        mesh[d] = "fsdp"
        break
  return P(*mesh) if any(m is not None for m in mesh) else P()


def path_str(path) -> str:
  """A jax tree path as 'params/blocks/attn/qkv/kernel'."""
  keys = (getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path)
  return "/".join(str(k) for k in keys)


def check_tensor_parallel(params, tensor: int, mode: str, model_name: str) -> None:
  """Refuses mesh.tensor > 1 outside the sharded mode, or for a model with nothing it splits."""
  if tensor == 1:
    return
  if mode != "sharded":
    raise UserError(
      f"mesh.tensor={tensor} splits layers over devices only in train.parallel='sharded', "
      f"and this run is {mode!r}: set train.parallel='sharded', or mesh.tensor=1."
    )
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  if not any(
    name in MUST_DIVIDE for p, x in leaves for name in logical_axes(path_str(p), len(x.shape))
  ):
    raise UserError(
      f"mesh.tensor={tensor} splits attention heads and MLP widths, and model "
      f"{model_name!r} has neither: set mesh.tensor=1 (mesh.fsdp splits its parameters)."
    )
