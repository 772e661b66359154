"""Writes seeded conversations as JSON Lines, and a ChatML chat template into a model directory.

  python benchmarks/make_conversations.py --out /tmp/conversations.jsonl --num 4000 \
      --template_dir /tmp/sft_base
  python benchmarks/make_conversations.py --out /tmp/prompts.jsonl --num 1000 --kind prompts
  python benchmarks/make_conversations.py --out /tmp/pairs.jsonl --num 1000 --kind pairs

Each record is {"messages": [...]}: an optional system turn, then one to three user questions
about sums of small numbers, each answered by the assistant in a fixed form, so that a model
can learn the replies in a few hundred steps. With --template_dir, the tokenizer_config.json
there gains a ChatML `chat_template`, as a chat model's tokenizer carries one. --kind prompts
writes one question each with its answer for a reward function (configs/grpo.py,
benchmarks/arithmetic_reward.py); --kind pairs, one question with the right reply (chosen) and
a reply with a wrong sum (rejected), for preference tuning (configs/dpo.py).
"""

import argparse
import json
import os

import numpy as np

CHATML = (
  "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
  "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WORDS = "zero one two three four five six seven eight nine".split()


def conversation(rng) -> list[dict]:
  turns = [{"role": "system", "content": "Answer in words."}] if rng.random() < 0.3 else []
  for _ in range(rng.integers(1, 4)):
    a, b = rng.integers(0, 5, 2)
    turns.append({"role": "user", "content": f"What is {a} plus {b}?"})
    turns.append({"role": "assistant", "content": f"{WORDS[a]} plus {WORDS[b]} is {WORDS[a + b]}."})
  return turns


def question(rng) -> tuple[list[dict], int, int]:
  a, b = rng.integers(0, 5, 2)
  return [{"role": "user", "content": f"What is {a} plus {b}?"}], int(a), int(b)


def prompt(rng) -> dict:
  turns, a, b = question(rng)
  return {"messages": turns, "answer": WORDS[a + b]}


def pair(rng) -> dict:
  turns, a, b = question(rng)
  wrong = (a + b + rng.integers(1, 9)) % 9
  reply = lambda s: f"{WORDS[a]} plus {WORDS[b]} is {WORDS[s]}."
  return {"messages": turns, "chosen": reply(a + b), "rejected": reply(wrong)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--num", type=int, default=4000)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--template_dir", default="", help="A Hugging Face model directory.")
  parser.add_argument(
    "--kind", default="conversations", choices=["conversations", "prompts", "pairs"]
  )
  args = parser.parse_args()
  rng = np.random.default_rng(args.seed)
  with open(args.out, "w") as f:
    for _ in range(args.num):
      make = {"prompts": prompt, "pairs": pair}.get(args.kind)
      f.write(json.dumps(make(rng) if make else {"messages": conversation(rng)}) + "\n")
  if args.template_dir:
    path = os.path.join(args.template_dir, "tokenizer_config.json")
    with open(path) as f:
      tokenizer_config = json.load(f)
    with open(path, "w") as f:
      json.dump({**tokenizer_config, "chat_template": CHATML}, f, indent=2)


if __name__ == "__main__":
  main()
