"""The collectives in the compiled train step, with and without tensor parallelism, on 8 CPU
devices: one JSON line per model and layout (docs/scaling.md).

  python benchmarks/collectives.py

The models are tests/integration/test_placement.py's (2 layers, 32 wide, 8 heads, vocabulary
64; Llama with 2 key/value heads, scanned); counts are of the ops in the optimized HLO, as
scripts/compile_check.py counts them for a TPU.
"""

import json
import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import ml_collections  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from configs import tiny  # noqa: E402
from lm_jax import compile_check, train  # noqa: E402
from lm_jax import state as state_lib  # noqa: E402

V, B, L = 64, 8, 16
MODELS = {
  "gpt": dict(num_layers=2, num_heads=8, d_model=32, max_len=L),
  "llama": dict(
    name="llama", num_layers=2, num_heads=8, num_kv_heads=2, d_model=32, max_len=L, mlp_dim=64,
    scan_layers=True,
  ),
}  # fmt: skip


def config_for(name: str, mesh: dict):
  config = tiny.get_config()
  if name != "gpt":
    config.model = ml_collections.ConfigDict({"dtype": "float32", "attention": "auto"})
  config.model.update(MODELS[name])
  config.data.seq_len = L
  config.train.update(batch_size=B, parallel="sharded")
  config.mesh.update({"data": 1, "fsdp": 1, "tensor": 1, **mesh})
  return config


LAYOUTS = {
  "data 8": dict(data=8),
  "fsdp 8": dict(fsdp=8),
  "data 2 x fsdp 4": dict(data=2, fsdp=4),
  "data 2 x fsdp 2 x tensor 2": dict(data=2, fsdp=2, tensor=2),
  "fsdp 4 x tensor 2": dict(fsdp=4, tensor=2),
  "tensor 8": dict(tensor=8),
}

for name in MODELS:
  for layout, mesh in LAYOUTS.items():
    built = state_lib.setup(config_for(name, mesh), V)
    state = state_lib.with_shardings(built.plan, built.abstract)
    rows = NamedSharding(built.plan.mesh, P(("data", "fsdp")))
    tokens = jax.ShapeDtypeStruct((B, L), "int32", sharding=rows)
    batch = {"inputs": tokens, "targets": tokens}
    lowered = train.compile_step(built).lower(state, batch, built.rng)
    counts = compile_check.collectives(lowered.compile().as_text())
    print(json.dumps({"model": name, "layout": layout, "collectives": counts}), flush=True)
