#!/usr/bin/env bash
# The memory table of docs/scaling.md: scripts/compile_check.py for GPT-2 small, a 1.1B and an
# 8B Llama on TPU v5e and v5p slices, FSDP only and with tensor parallelism, with and without
# remat. Needs libtpu (pip install -e .[tpu-compile]); one JSON line per row into OUT (default
# tpu_memory.jsonl). Compiles run on this host's CPU: minutes each for the Llamas.
#
#   bash benchmarks/tpu_memory.sh runs/tpu_memory.jsonl
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-tpu_memory.jsonl}"
: > "$out"

gpt2="configs/gpt2_small.py --config.mesh.data=1 --config.mesh.fsdp=-1"
l1b="configs/llama_1b_tpu.py"
# Llama 3 8B's shape (32 layers, 4096 wide, 32 query and 8 key/value heads, 14,336-wide SwiGLU,
# its 128,256-id vocabulary) on the 1.1B recipe's data, batch and optimizer.
l8b="configs/llama_1b_tpu.py --config.model.num_layers=32 --config.model.d_model=4096
  --config.model.num_kv_heads=8 --config.model.mlp_dim=14336 --config.model.rope_base=500000
  --config.data.vocab_size=128256"

row() {  # row NAME TOPOLOGY CONFIG-AND-OVERRIDES...
  local name="$1" topology="$2"
  shift 2
  # shellcheck disable=SC2068
  json=$(python scripts/compile_check.py --topology "$topology" --config $@ 2>/tmp/compile_err)
  if [ -z "$json" ]; then
    json="{\"error\": $(tail -1 /tmp/compile_err | python -c 'import json,sys; print(json.dumps(sys.stdin.read().strip()))')}"
  fi
  echo "{\"row\": \"$name\", \"args\": \"$*\", \"result\": $json}" | tee -a "$out"
}

row "gpt2 fsdp" v5e:2x2 $gpt2
row "gpt2 fsdp remat" v5e:2x2 $gpt2 --config.model.remat=block
row "1b fsdp remat" v5e:2x2 $l1b
row "1b fsdp" v5e:2x4 $l1b --config.model.remat=none
row "1b fsdp remat" v5e:2x4 $l1b
row "1b fsdp+tp remat" v5e:2x4 $l1b --config.mesh.fsdp=4 --config.mesh.tensor=2
row "1b fsdp" v5p:2x2x1 $l1b --config.model.remat=none
row "8b fsdp remat" v5e:2x4 $l8b
row "8b fsdp remat" v5e:4x4 $l8b --config.train.grad_accum_steps=16
row "8b fsdp+tp remat" v5e:4x4 $l8b --config.mesh.fsdp=8 --config.mesh.tensor=2
row "8b fsdp+tp remat" v5e:8x8 $l8b --config.mesh.fsdp=16 --config.mesh.tensor=4 \
  --config.train.grad_accum_steps=16
row "8b fsdp remat" v5p:2x2x1 $l8b
row "8b fsdp remat" v5p:2x2x2 $l8b
row "8b fsdp" v5p:2x2x2 $l8b --config.model.remat=none
row "8b fsdp+tp" v5p:2x2x2 $l8b --config.mesh.fsdp=4 --config.mesh.tensor=2 --config.model.remat=none
