"""Peak host memory and time of importing a Hugging Face model, against its weights' size.

  python benchmarks/hf_import_memory.py --make /tmp/qwen05b          # once: fp32 and bf16 dirs
  python benchmarks/hf_import_memory.py --hf_dir /tmp/qwen05b/float32 [--param_dtype bfloat16]
  python benchmarks/hf_import_memory.py --hf_dir /tmp/qwen05b/bfloat16 --param_dtype bfloat16 \
      --script --workdir /tmp/run      # the whole scripts/import_hf.py instead of the loading

--make builds a random model of Qwen2.5-0.5B's shape (494M parameters, tied head) with
`transformers` and saves it in float32 and bfloat16, with a small byte-level BPE (needs torch,
transformers and tokenizers). Measuring
runs the import in a child process and samples the resident memory of its whole process tree
(/proc/PID/statm) every 5 ms: the loading alone is `weights.load_params` straight onto the
device in the run's layout, as train.init_from reads a model; --script runs
scripts/import_hf.py, which also builds the optimizer state and writes the step-0 checkpoint.
Prints one JSON line.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.sysconf("SC_PAGE_SIZE")


def make(out: str) -> None:
  import torch
  import transformers
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

  tok = Tokenizer(models.BPE())  # A small byte-level BPE: import_hf needs a tokenizer.
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=512,
    special_tokens=["<|endoftext|>"],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  tok.train_from_iterator([" ".join(f"word{i % 97} and {i % 13}" for i in range(5000))], trainer)
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")

  config = transformers.Qwen2Config(
    vocab_size=151936,
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    tie_word_embeddings=True,
    bos_token_id=0,
    eos_token_id=0,
  )
  torch.manual_seed(0)
  model = transformers.AutoModelForCausalLM.from_config(config)
  n = sum(p.numel() for p in model.parameters())
  for dtype in (torch.float32, torch.bfloat16):
    path = os.path.join(out, str(dtype).removeprefix("torch."))
    model.to(dtype).save_pretrained(path)
    fast.save_pretrained(path)
    print(f"{path}: {n:,} parameters in {dtype}", file=sys.stderr)


def load(hf_dir: str, param_dtype: str) -> None:
  """The child: reads the weights onto the device; prints its resident memory before."""
  import jax
  import jax.numpy as jnp

  from lm_jax import models, parallel
  from lm_jax.hf import architectures, weights

  config = {**architectures.model_config(hf_dir), "param_dtype": param_dtype}
  model = models.build_model(config, architectures.read_config(hf_dir)["vocab_size"])
  init = lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
  abstract = jax.eval_shape(init)
  shardings = parallel.Plan("jit").state_shardings(abstract)
  print(json.dumps({"baseline_rss_bytes": rss([os.getpid()])}), flush=True)
  start = time.perf_counter()
  params = jax.block_until_ready(weights.load_params(hf_dir, config, shardings))
  seconds = time.perf_counter() - start
  n = sum(x.size for x in jax.tree_util.tree_leaves(params))
  print(json.dumps({"load_seconds": seconds, "parameters": n}), flush=True)


def tree(pid: int) -> list[int]:
  """pid and its descendants."""
  pids, i = [pid], 0
  while i < len(pids):
    try:
      with open(f"/proc/{pids[i]}/task/{pids[i]}/children") as f:
        pids += [int(c) for c in f.read().split()]
    except OSError:
      pass
    i += 1
  return pids


def rss(pids) -> int:
  total = 0
  for pid in pids:
    try:
      with open(f"/proc/{pid}/statm") as f:
        total += int(f.read().split()[1]) * PAGE
    except OSError:
      pass
  return total


def measure(args) -> dict:
  files = [f for f in os.listdir(args.hf_dir) if f.endswith(".safetensors")]
  on_disk = sum(os.path.getsize(os.path.join(args.hf_dir, f)) for f in files)
  if args.script:
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "import_hf.py"), "--hf_dir", args.hf_dir]
    cmd += ["--workdir", args.workdir, f"--config.model.param_dtype={args.param_dtype}"]
  else:
    cmd = [sys.executable, __file__, "--child", "--hf_dir", args.hf_dir]
    cmd += ["--param_dtype", args.param_dtype]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  start = time.perf_counter()
  child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
  peak = 0
  while child.poll() is None:
    peak = max(peak, rss(tree(child.pid)))
    time.sleep(0.005)
  seconds = time.perf_counter() - start
  out, err = child.communicate()
  if child.returncode:
    sys.exit(f"error: the import failed:\n{err[-2000:]}")
  result = {
    "hf_dir": args.hf_dir,
    "what": "scripts/import_hf.py" if args.script else "weights.load_params onto the device",
    "param_dtype": args.param_dtype,
    "weights_bytes_on_disk": on_disk,
    "peak_rss_bytes": peak,
    "peak_over_weights": round(peak / on_disk, 3),
    "process_seconds": round(seconds, 2),
  }
  for line in out.splitlines():
    if line.startswith("{"):
      result.update(json.loads(line))
  if "baseline_rss_bytes" in result:
    result["added_over_weights"] = round((peak - result["baseline_rss_bytes"]) / on_disk, 3)
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--make", help="Build the 0.5B model here (float32/ and bfloat16/).")
  parser.add_argument("--hf_dir", help="The Hugging Face model directory to import.")
  parser.add_argument("--param_dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--script", action="store_true", help="Run scripts/import_hf.py.")
  parser.add_argument("--workdir", help="--script: the new run's directory.")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.make:
    make(args.make)
  elif args.child:
    load(args.hf_dir, args.param_dtype)
  else:
    print(json.dumps(measure(args)))


if __name__ == "__main__":
  main()
