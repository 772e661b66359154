"""Reward functions for the GRPO tests, as a user writes them (TRL's signature)."""

WORDS = "zero one two three four five six seven eight nine".split()


def correct(prompts, completions, answer, **fields):
  """1 where the completion holds the record's answer, else 0."""
  return [float(a in c) for c, a in zip(completions, answer, strict=True)]


def shorter(prompts, completions, **fields):
  """Fewer characters, more reward."""
  return [-len(c) / 50 for c in completions]


def broken(prompts, completions, **fields):
  raise ValueError("no score today")


def too_few(prompts, completions, **fields):
  return [1.0]


def words(prompts, completions, **fields):
  return ["good" for _ in completions]
