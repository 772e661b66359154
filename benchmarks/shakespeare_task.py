"""Writes a local multiple-choice harness task from tiny-shakespeare's validation text.

  python benchmarks/shakespeare_task.py --input DIR/input.txt --out tasks/ [--docs 250]

shakespeare_cloze: a passage of the play up to a word, and four words to continue it: the true
one and three other words of the same length from the validation text (seeded), so that length
alone tells nothing. Every character is in the char runs' vocabulary. Writes
OUT/shakespeare_cloze.yaml and .jsonl; with 250 documents the task makes 1,000 log-likelihood
requests. Nothing in lm_jax or its tests imports it.
"""

import argparse
import json
import os
import re

import numpy as np

TRAIN, VALIDATION = 0.90, 0.05  # TFDS's cut of input.txt: train, validation, then test.
CONTEXT = 120  # Characters of the passage before the word, at least (from a line's start).


def documents(text: str, num_docs: int, seed: int) -> list[dict]:
  """Cloze questions on lowercase words of 4 letters or more."""
  words = [m for m in re.finditer(r"(?<=[ \n])[a-z]{4,}(?=[ ,.;:!?'\n])", text)]
  by_length = {}
  for m in words:
    by_length.setdefault(len(m.group()), set()).add(m.group())
  rng = np.random.default_rng(seed)
  docs = []
  for k in rng.permutation(len(words)):
    m = words[k]
    start = text.rfind("\n", 0, max(m.start() - CONTEXT, 0)) + 1
    pool = sorted(by_length[len(m.group())] - {m.group()})
    if m.start() < CONTEXT or len(pool) < 3:
      continue
    choices = [m.group(), *rng.choice(pool, 3, replace=False)]
    order = rng.permutation(4)
    docs.append(
      {
        "context": text[start : m.start()],
        "choices": [str(choices[j]) for j in order],
        "answer": int(np.argmax(order == 0)),
      }
    )
    if len(docs) == num_docs:
      break
  return docs


YAML = """task: shakespeare_cloze
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: choices
doc_to_target: answer
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--input", required=True, help="tiny-shakespeare's input.txt")
  parser.add_argument("--out", required=True, help="folder for the task (an --include_path)")
  parser.add_argument("--docs", type=int, default=250)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  with open(args.input) as f:
    text = f.read()
  start = int(len(text) * TRAIN)
  validation = text[start : start + int(len(text) * VALIDATION)]
  docs = documents(validation, args.docs, args.seed)
  os.makedirs(args.out, exist_ok=True)
  data = os.path.abspath(os.path.join(args.out, "shakespeare_cloze.jsonl"))
  with open(data, "w") as f:
    f.writelines(json.dumps(d) + "\n" for d in docs)
  with open(os.path.join(args.out, "shakespeare_cloze.yaml"), "w") as f:
    f.write(YAML.format(data=data))
  print(f"{len(docs)} documents ({4 * len(docs)} requests) in {data}")


if __name__ == "__main__":
  main()
