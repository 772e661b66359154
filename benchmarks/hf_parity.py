"""Each Hugging Face architecture lm_jax imports, against `transformers` itself, in fp32.

  python benchmarks/hf_parity.py [--archs gpt2,llama3,...] [--workdir DIR]

Builds a tiny random model of each architecture with `transformers` (nothing downloads), sized
so that every option bites: Llama 3's `llama3` scaling under inputs longer than its original
context, Qwen2's q/k/v biases and tied head, Qwen3's q/k norms with a head width other than
hidden_size / heads, Mistral's window shorter than the input and than the generation, Gemma 2's
two soft caps and both layer types, Gemma 3's q/k norms and local rotary base. The tokenizer
is a byte-level BPE trained with `tokenizers`. Each model goes through lm_jax's own path:
`hf.runs.import_hf` into a run, `runs.load_run`, `sample.generate`, `hf.runs.export_hf`, then
`import_hf` again of the export. Per architecture it measures:

  logits_diff     max |lm_jax - transformers| over the logits of one 40-token input
  greedy_equal    30 greedy ids after an 8-token prompt equal `generate(do_sample=False)`
  cache_diff      max |cached decoding - full forward pass| (5-token prefill, then one by one)
  export_diff     max |export loaded by `from_pretrained` - lm_jax| over the same logits
  reimport_exact  the export imported again gives the same config.model and bit-equal params

and prints one JSON line per architecture, then a Markdown table. Needs torch, transformers and
tokenizers (pip install torch==2.13.0 transformers==5.23.0); a few minutes on a CPU.
"""

import argparse
import json
import os
import sys
import tempfile

import jax
import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from configs import shakespeare_char_gpt_cpu
from lm_jax import UserError, console, runs, sample
from lm_jax.hf import runs as hf_runs

EOT = "<|endoftext|>"
LENGTH, PROMPT, NEW = 40, 8, 30  # Longer than every window and than Llama 3's original context.
WORDS = (
  "the king and queen of some far land went down to see a red fox run over green hills while "
  "old men sang songs by night"
).split()
COMMON = dict(
  hidden_size=32,
  intermediate_size=48,
  num_hidden_layers=3,
  num_attention_heads=4,
  num_key_value_heads=2,
  max_position_embeddings=64,
)
# name: (what it exercises, its config for a vocabulary of v ids).
ARCHS = {
  "gpt2": (
    "GPT-2, vocabulary padded past the tokenizer's",
    lambda v: transformers.GPT2Config(
      vocab_size=v + 4, n_positions=64, n_embd=32, n_layer=2, n_head=4
    ),
  ),
  "llama2": (
    "Llama 2-style, grouped-query, untied head",
    lambda v: transformers.LlamaConfig(
      **COMMON | dict(num_hidden_layers=2),
      vocab_size=v,
      tie_word_embeddings=False,
      rope_theta=500.0,
    ),
  ),
  "llama3": (
    "Llama 3, llama3 rope scaling, original context 16 < 40",
    lambda v: transformers.LlamaConfig(
      **COMMON,
      vocab_size=v,
      tie_word_embeddings=False,
      rope_parameters={
        "rope_type": "llama3",
        "rope_theta": 10000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,
      },
    ),
  ),
  "qwen2": (
    "Qwen2, q/k/v biases, tied head",
    lambda v: transformers.Qwen2Config(
      **COMMON, vocab_size=v, tie_word_embeddings=True, rope_theta=500.0
    ),
  ),
  "qwen3": (
    "Qwen3, q/k norms, head_dim 12 in a 32-wide model, 1 global + 2 local (window 6)",
    lambda v: transformers.Qwen3Config(
      **COMMON,
      vocab_size=v,
      head_dim=12,
      use_sliding_window=True,
      sliding_window=6,
      max_window_layers=1,
    ),
  ),
  "mistral": (
    "Mistral, window 6 on every layer",
    lambda v: transformers.MistralConfig(**COMMON, vocab_size=v, sliding_window=6),
  ),
  "gemma2": (
    "Gemma 2, soft caps 5 and 8, local/global/local (window 5)",
    lambda v: transformers.Gemma2Config(
      **COMMON,
      vocab_size=v,
      head_dim=16,
      query_pre_attn_scalar=12,
      attn_logit_softcapping=5.0,
      final_logit_softcapping=8.0,
      sliding_window=5,
    ),
  ),
  "gemma3": (
    "Gemma 3, q/k norms, local/local/global (window 5), linear scaling, local base 50",
    lambda v: transformers.Gemma3TextConfig(
      **COMMON,
      vocab_size=v,
      head_dim=16,
      query_pre_attn_scalar=16,
      sliding_window=5,
      sliding_window_pattern=3,
      rope_parameters={
        "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 50.0},
      },
    ),
  ),
}


def make_text(num_words: int, seed: int) -> str:
  """Seeded pseudo-sentences over a small word list."""
  rng = np.random.default_rng(seed)
  lines = []
  for _ in range(num_words // 8):
    start = rng.integers(len(WORDS) - 8)
    lines.append(" ".join(WORDS[start : start + 8]).capitalize() + ".")
  return "\n".join(lines) + "\n"


def train_tokenizer() -> transformers.PreTrainedTokenizerFast:
  """A byte-level BPE like GPT-2's, 300 ids, <|endoftext|> as id 0."""
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=300,
    special_tokens=[EOT],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  tok.train_from_iterator([make_text(2000, seed=5)], trainer)
  return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOT, bos_token=EOT)


def make_hf_dir(path: str, arch: str, seed: int, fast) -> None:
  """A random model of `arch` saved with save_pretrained, with the tokenizer."""
  torch.manual_seed(seed)
  config = ARCHS[arch][1](len(fast))
  config.update({"initializer_range": 0.3, "bos_token_id": 0, "eos_token_id": 0})
  model = transformers.AutoModelForCausalLM.from_config(config)
  with torch.no_grad():  # Norm scales and biases start at 1 and 0: move them too.
    for p in model.parameters():
      p.add_(0.1 * torch.randn_like(p))
  model.save_pretrained(path)
  fast.save_pretrained(path)


def reference(hf_dir: str):
  return transformers.AutoModelForCausalLM.from_pretrained(
    hf_dir, dtype=torch.float32, attn_implementation="eager"
  ).eval()


def hf_logits(model, ids) -> np.ndarray:
  with torch.no_grad():
    return model(torch.tensor(np.asarray(ids), dtype=torch.long)).logits.float().numpy()


def imported(hf_dir: str, workdir: str, base):
  """(config, model, tokenizer, params) of `hf_dir` as `import_hf` then `load_run` give them."""
  hf_runs.import_hf(hf_dir, workdir, base)
  config, model, tokenizer, state, *_ = runs.load_run(workdir)
  return config, model, tokenizer, jax.device_get(state.params)


def max_diff(a, b) -> float:
  return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def measure(arch: str, seed: int, root: str, fast, base) -> dict:
  """The five figures of one architecture."""
  hf_dir = os.path.join(root, arch, "hf")
  make_hf_dir(hf_dir, arch, seed, fast)
  config, model, tokenizer, params = imported(hf_dir, os.path.join(root, arch, "run"), base)
  forward = jax.jit(lambda p, t: model.apply({"params": p}, t))
  ids = tokenizer.encode(make_text(400, seed=9))[None, :LENGTH]
  assert ids.shape[1] == LENGTH, ids.shape
  ours = np.asarray(forward(params, ids))
  theirs_model = reference(hf_dir)
  theirs = hf_logits(theirs_model, ids)

  prompt = ids[:, :PROMPT]
  theirs_model.generation_config.eos_token_id = None  # NEW tokens, whatever they are.
  theirs_model.generation_config.pad_token_id = 0
  with torch.no_grad():
    want = theirs_model.generate(torch.tensor(prompt), max_new_tokens=NEW, do_sample=False)
  want = want[0, PROMPT:].numpy()
  [got] = sample.generate(
    model, params, list(prompt), jax.random.key(0), max_new_tokens=NEW, temperature=0.0
  )
  differ = np.flatnonzero(got != want) if len(got) == len(want) else [min(len(got), len(want))]

  step_fn = jax.jit(lambda t, c: model.apply({"params": params}, t, cache=c))
  logits, cache = step_fn(ids[:, :5], model.init_cache(1, LENGTH))
  pieces = [np.asarray(logits)]
  for t in range(5, LENGTH):  # Past every window.
    logits, cache = step_fn(ids[:, t : t + 1], cache)
    pieces.append(np.asarray(logits))

  out = os.path.join(root, arch, "export")
  notes = hf_runs.export_hf(os.path.join(root, arch, "run"), out)
  exported = reference(out)
  config_again, _, _, params_again = imported(out, os.path.join(root, arch, "again"), base)
  same = jax.tree_util.tree_structure(params_again) == jax.tree_util.tree_structure(params)
  same = same and all(
    np.array_equal(a, b) and a.dtype == b.dtype
    for a, b in zip(
      jax.tree_util.tree_leaves(params_again), jax.tree_util.tree_leaves(params), strict=True
    )
  )
  return {
    "arch": arch,
    "hf_class": type(theirs_model).__name__,
    "what": ARCHS[arch][0],
    "parameters": int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params))),
    "max_abs_logit": float(np.abs(theirs).max()),
    "logits_diff": max_diff(ours, theirs),
    "greedy_equal": len(differ) == 0,
    "greedy_first_difference": int(differ[0]) if len(differ) else None,
    "cache_diff": max_diff(np.concatenate(pieces, axis=1), ours),
    "export_class": type(exported).__name__,
    "export_diff": max_diff(hf_logits(exported, ids), ours),
    "reimport_exact": bool(same and config_again.model.to_dict() == config.model.to_dict()),
    "export_notes": notes,
  }


def table(rows: list[dict]) -> str:
  lines = [
    "| architecture | logits, max abs diff | 30 greedy ids equal | cached vs full, max abs diff "
    "| export -> `from_pretrained`, max abs diff | re-import bit-exact |",
    "| --- | ---: | --- | ---: | ---: | --- |",
  ]
  for r in rows:
    greedy = "yes" if r["greedy_equal"] else f"no (from id {r['greedy_first_difference']})"
    exact = "yes" if r["reimport_exact"] else "no"
    export = f"{r['export_diff']:.1e}"
    if r["export_class"] != r["hf_class"]:
      export += f" (as {r['export_class']})"
    lines.append(
      f"| {r['hf_class']}: {r['what']} | {r['logits_diff']:.1e} | {greedy} "
      f"| {r['cache_diff']:.1e} | {export} | {exact} |"
    )
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--archs", default=",".join(ARCHS), help="Comma-separated, of: %(default)s.")
  parser.add_argument(
    "--workdir", help="Keep the models, runs and exports here (default: a temp dir)."
  )
  args = parser.parse_args()
  archs = args.archs.split(",")
  unknown = [a for a in archs if a not in ARCHS]
  if unknown:
    sys.exit(f"error: no architecture {unknown}: pick from {', '.join(ARCHS)}.")
  console.setup()
  transformers.logging.set_verbosity_error()
  transformers.logging.disable_progress_bar()
  base = shakespeare_char_gpt_cpu.get_config()
  base.model.dtype = "float32"  # The figures are fp32's, on any device.
  fast = train_tokenizer()
  with tempfile.TemporaryDirectory() as tmp:
    root = args.workdir or tmp
    rows = []
    for arch in archs:
      try:
        rows.append(measure(arch, list(ARCHS).index(arch), root, fast, base))
      except UserError as e:
        sys.exit(f"error: {e}")
      print(json.dumps(rows[-1]), flush=True)
  print()
  print(table(rows))


if __name__ == "__main__":
  main()
