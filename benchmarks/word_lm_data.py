"""Lays out local WikiText-2 text for the word-LM comparison with PyTorch's word_language_model.

  python benchmarks/word_lm_data.py WIKITEXT_DIR OUT_DIR

OUT_DIR gets train.txt (WikiText-2's valid.txt, standing in for its train split), and
valid.txt and test.txt (both WikiText-2's test.txt) with every word that train.txt lacks
replaced by <unk>. PyTorch's main.py builds its vocabulary from all three files and lm_jax's
word tokenizer from the train file alone; with the held-out text's unseen words made <unk>,
both hold the same words: train.txt's, <unk> among them, plus an end of line (13,777 ids).
Prints the counts as JSON.
"""

import json
import os
import sys


def main(source: str, out: str) -> None:
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(source, "valid.txt"), encoding="utf8") as f:
    train = f.read()
  with open(os.path.join(source, "test.txt"), encoding="utf8") as f:
    held_out = f.readlines()
  words = set(train.split())
  replaced = 0
  lines = []
  for line in held_out:
    tokens = line.split()
    replaced += sum(w not in words for w in tokens)
    # Lines keep their words in order; whitespace between them becomes single spaces, which
    # neither side's tokenizer (str.split) sees.
    lines.append(" ".join(w if w in words else "<unk>" for w in tokens) + "\n")
  with open(os.path.join(out, "train.txt"), "w", encoding="utf8") as f:
    f.write(train)
  for name in ("valid.txt", "test.txt"):
    with open(os.path.join(out, name), "w", encoding="utf8") as f:
      f.writelines(lines)
  count = lambda text_lines: sum(len(line.split()) + 1 for line in text_lines)
  print(
    json.dumps(
      {
        "train_tokens": count(train.splitlines(keepends=True)),
        "held_out_tokens": count(lines),
        "held_out_words_made_unk": replaced,
        "vocabulary": len(words | {"<unk>"}) + 1,
      }
    )
  )


if __name__ == "__main__":
  main(*sys.argv[1:3])
