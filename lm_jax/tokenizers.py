"""Tokenizers: text <-> integer ids, saved as JSON in the run's workdir."""

import json
import os

import numpy as np

from lm_jax import UserError


class CharTokenizer:
  """One id per character seen in the training text, in code-point order."""

  kind = "char"

  def __init__(self, chars: str):
    self.chars = chars
    self._codepoints = np.array([ord(c) for c in chars], dtype=np.uint32)

  @classmethod
  def train(cls, text: str) -> "CharTokenizer":
    return cls("".join(sorted(set(text))))

  @property
  def vocab_size(self) -> int:
    return len(self.chars)

  def encode(self, text: str) -> np.ndarray:
    """Returns int32 ids; characters outside the vocabulary are refused."""
    codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    ids = np.searchsorted(self._codepoints, codepoints)
    ids = np.minimum(ids, len(self.chars) - 1)
    unknown = self._codepoints[ids] != codepoints
    if unknown.any():
      missing = sorted({chr(c) for c in codepoints[unknown]})
      raise UserError(
          f"the text holds characters the char tokenizer never saw in training: "
          f"{''.join(missing)!r}; remove them, or train with a tokenizer that "
          "covers them (data.tokenizer='byte').")
    return ids.astype(np.int32)

  def decode(self, ids) -> str:
    return "".join(self.chars[i] for i in np.asarray(ids).reshape(-1))

  def to_dict(self) -> dict:
    return {"kind": self.kind, "chars": self.chars}


KINDS = {"char": CharTokenizer}


def train(kind: str, text: str):
  """Trains a tokenizer of `kind` on `text`."""
  if kind not in KINDS:
    raise UserError(f"unknown tokenizer {kind!r}: set data.tokenizer to one of {sorted(KINDS)}.")
  return KINDS[kind].train(text)


def save(tokenizer, path: str) -> None:
  with open(path, "w") as f:
    json.dump(tokenizer.to_dict(), f, ensure_ascii=False)


def load(path: str):
  """Loads a tokenizer saved by `save`."""
  if not os.path.exists(path):
    raise UserError(f"no tokenizer at {path}: is this a training run's workdir?")
  with open(path) as f:
    d = json.load(f)
  return KINDS[d.pop("kind")](**d)
