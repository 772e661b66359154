"""Writes a small chat corpus, rendered with a chat model's own template, for trying --chat.

  python benchmarks/make_chat_data.py --tokenizer HF_DIR_OR_RUN --out /tmp/chat_data

Each document is one conversation (a user's question and the assistant's answer from a fixed
table) as lm_jax.data.chat renders it with the tokenizer's template, so its special tokens
(ChatML's <|im_start|> and <|im_end|>) are the model's; documents are separated by a blank
line (data.documents='blank_line'). train.txt holds 2,000 of them in a seeded order,
validation.txt and test.txt each conversation once.
"""

import argparse
import os
import random

from lm_jax.data import hf_tokenizer

QA = {
  "What is the capital of France?": "Paris.",
  "What is the capital of Italy?": "Rome.",
  "What is the capital of Spain?": "Madrid.",
  "What colour is the sky?": "Blue, on a clear day.",
  "What colour is grass?": "Green.",
  "How many legs has a spider?": "Eight.",
  "How many days are in a week?": "Seven.",
  "Who wrote Hamlet?": "William Shakespeare.",
  "What do bees make?": "Honey.",
  "What is two plus two?": "Four.",
  "Say hello.": "Hello!",
  "What is the opposite of hot?": "Cold.",
}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tokenizer", required=True, help="A chat model's directory, or its run.")
  parser.add_argument("--out", required=True)
  parser.add_argument("--num_train", type=int, default=2000)
  args = parser.parse_args()
  template = hf_tokenizer.load_tokenizer(args.tokenizer).chat_template
  render = lambda q: template.render(
    [{"role": "user", "content": q}, {"role": "assistant", "content": QA[q]}]
  )
  rng = random.Random(0)
  os.makedirs(args.out, exist_ok=True)
  splits = {"train": [rng.choice(list(QA)) for _ in range(args.num_train)]}
  splits["validation"] = splits["test"] = list(QA)
  for split, questions in splits.items():
    with open(os.path.join(args.out, f"{split}.txt"), "w") as f:
      f.write("\n\n".join(render(q).strip() for q in questions) + "\n")
  print(f"{args.out}: {args.num_train} training conversations over {len(QA)} questions")


if __name__ == "__main__":
  main()
