"""The reward of the arithmetic demonstration (docs/benchmarks.md): 1 for a reply whose sum is
the answer, else 0. With benchmarks/ on PYTHONPATH, train.grpo.reward=arithmetic_reward:correct.
"""

import re


def correct(prompts, completions, answer, **fields):
  """1 where the reply's last 'is WORD' names the record's answer, else 0."""
  scores = []
  for completion, want in zip(completions, answer, strict=True):
    text = completion[0]["content"] if isinstance(completion, list) else completion
    said = re.findall(r"\bis (\w+)", text)
    scores.append(float(bool(said) and said[-1] == want))
  return scores
