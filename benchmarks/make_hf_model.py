"""Builds a local Hugging Face model directory with `transformers`, for trying the interop offline.

Needs torch, transformers and tokenizers (pip install torch==2.13.0 transformers==5.23.0);
nothing in lm_jax or its tests imports it.

  python benchmarks/make_hf_model.py --out /tmp/gpt2_124m --corpus DIR/input.txt
  python benchmarks/make_hf_model.py --out /tmp/gpt2_small --corpus DIR/input.txt \
      --n_layer 4 --n_head 4 --n_embd 256 --n_positions 256 --tokenizer_vocab 2048

Random weights (GPT2Config's defaults unless a flag changes them: the 124M GPT-2),
and a byte-level BPE like GPT-2's trained on the corpus with `tokenizers`, whose
<|endoftext|> (id 0) is the model's end of text. save_pretrained writes
config.json, model.safetensors and tokenizer.json. With --chat the tokenizer gains
ChatML's <|im_start|> and <|im_end|> and a ChatML chat template (chat_template.jinja),
as Qwen's and SmolLM's chat models have them.
"""

import argparse

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOT = "<|endoftext|>"
CHATML = (
  "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
  "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--corpus", required=True, help="A text file to train the tokenizer on.")
  parser.add_argument("--arch", default="gpt2", choices=["gpt2", "llama"])
  parser.add_argument("--tokenizer_vocab", type=int, default=50257)
  parser.add_argument("--vocab_size", type=int, default=50257, help="The model's (>= tokenizer's).")
  parser.add_argument("--n_layer", type=int, default=12)
  parser.add_argument("--n_head", type=int, default=12)
  parser.add_argument("--n_embd", type=int, default=768)
  parser.add_argument("--n_positions", type=int, default=1024)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--chat", action="store_true", help="ChatML special tokens and template.")
  args = parser.parse_args()

  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=args.tokenizer_vocab,
    special_tokens=[EOT] + (["<|im_start|>", "<|im_end|>"] if args.chat else []),
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  with open(args.corpus) as f:
    tok.train_from_iterator([f.read()], trainer)
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOT, bos_token=EOT)
  if args.chat:
    fast.chat_template = CHATML
  ids = {"bos_token_id": 0, "eos_token_id": 0, "vocab_size": args.vocab_size}
  if args.arch == "gpt2":
    config = transformers.GPT2Config(
      n_layer=args.n_layer,
      n_head=args.n_head,
      n_embd=args.n_embd,
      n_positions=args.n_positions,
      **ids,
    )
  else:
    config = transformers.LlamaConfig(
      num_hidden_layers=args.n_layer,
      num_attention_heads=args.n_head,
      num_key_value_heads=max(1, args.n_head // 2),
      hidden_size=args.n_embd,
      intermediate_size=8 * ((8 * args.n_embd // 3 + 7) // 8),
      max_position_embeddings=args.n_positions,
      **ids,
    )
  torch.manual_seed(args.seed)
  model = transformers.AutoModelForCausalLM.from_config(config)
  model.save_pretrained(args.out)
  fast.save_pretrained(args.out)
  n = sum(p.numel() for p in model.parameters())
  print(f"{args.out}: {type(model).__name__}, {n:,} parameters, tokenizer of {len(fast)} ids")


if __name__ == "__main__":
  main()
