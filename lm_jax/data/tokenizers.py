"""Tokenizers: text <-> integer ids, saved as one JSON file in the run's workdir.

  char           one id per character of the train split; documents are joined
                 by a newline, as in the classic char-level recipes.
  byte           the 256 UTF-8 byte values plus an end-of-document id; needs no
                 training and encodes any text.
  sentencepiece  BPE or unigram pieces (data.vocab_size, data.sentencepiece_type)
                 trained on the train split, with byte fallback so that any
                 text encodes; end of document is its own id.
  word           whitespace-separated words: the data.vocab_size most frequent words of the
                 train split, plus <unk> for the rest and an end-of-document id (PyTorch's
                 word_language_model); decode joins words by single spaces.
  hf             a Hugging Face tokenizer.json (data.hf_tokenizer names its
                 directory), with the model's end-of-text id as end of document.
  ids            synthetic data: token ids written as space-separated integers.

Every tokenizer but word returns the original text from decode(encode(text)) (hf:
where the Hugging Face tokenizer is lossless, as byte-level BPE is). SentencePiece lives in
lm_jax/data/sp_tokenizer.py, the Hugging Face tokenizer in lm_jax/data/hf_tokenizer.py; `obtain`
is the pipeline's tokenizer stage.
"""

import collections
import fractions
import hashlib
import json
import os
from collections.abc import Iterable, Iterator

import numpy as np

from lm_jax import UserError
from lm_jax.data import token_cache

EOD = "<|endoftext|>"  # How decode renders the end-of-document id.
KINDS = {}  # kind -> class, filled as each Tokenizer subclass is defined.


class Tokenizer:
  """What every tokenizer kind is and answers for itself; subclasses register by `kind`.

  A kind says which data keys it is trained from (`settings`: the tokenizer cache's key and
  what a saved tokenizer must match), whether it needs the train text (`reads_text`), whether
  decode gives the text back (`lossless`), and how many bytes of text its ids stand for.
  """

  kind = ""
  reads_text = True  # Trained on the train split's text (False: built from the config alone).
  lossless = True  # decode(encode(text)) == text.
  unit = "token"  # What one id stands for, as evaluation reports it ('word': word perplexity).
  note = None  # What evaluation adds to its report, if anything.
  recorded = None  # The settings it was trained with, as `train` or the saved file gives them.
  eos_id = None
  eod_ids = np.zeros(0, np.int32)  # Ids written between documents.

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    KINDS[cls.kind] = cls

  @classmethod
  def settings(cls, data_config) -> dict:
    """The data keys this kind is trained from, with their values in `data_config`."""
    del data_config
    return {}

  def implied_settings(self) -> dict:
    """What a tokenizer saved without its settings shows of them."""
    return {}

  @classmethod
  def train(cls, texts, data_config) -> "Tokenizer":
    raise NotImplementedError

  @classmethod
  def from_dict(cls, d: dict) -> "Tokenizer":
    """The tokenizer `to_dict` described."""
    return cls(**{k: v for k, v in d.items() if k != "kind"})

  def to_dict(self) -> dict:
    return {"kind": self.kind}

  def encode(self, text: str) -> np.ndarray:
    raise NotImplementedError

  def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
    return [self.encode(t) for t in texts]

  def decode(self, ids) -> str:
    raise NotImplementedError

  def fingerprint(self) -> str:
    """A short hash naming the tokenizer's exact vocabulary."""
    blob = json.dumps(self.to_dict(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]

  def byte_lengths(self) -> np.ndarray | None:
    """UTF-8 bytes each id decodes to (an end of document: one); None: count by decoding."""
    return None

  def num_bytes(self, ids, start: int = 0) -> int | None:
    """UTF-8 bytes of the text `ids[start:]` stands for; an end of document counts as one.

    Reads `ids` (an array or a token cache's stream) in slices; None where the ids do not
    keep the text (not `lossless`).
    """
    if not self.lossless:
      return None
    table = self.byte_lengths()
    total = 0
    for at in range(start, len(ids), 1 << 22):
      part = np.asarray(ids[at : at + (1 << 22)]).reshape(-1)
      if table is None:  # Decode: ends of document come back as EOD, one byte each.
        eods = 0 if self.eos_id is None else int((part == self.eos_id).sum())
        total += len(self.decode(part).encode("utf-8")) - eods * (len(EOD) - 1)
      else:
        total += int(table[part].sum())
    return total


class CharTokenizer(Tokenizer):
  """One id per character seen in the training text, in code-point order."""

  kind = "char"
  eos_id = None  # Generation runs to max_new_tokens; newline is text here.

  def __init__(self, chars: str):
    self.chars = chars
    self._codepoints = np.array([ord(c) for c in chars], dtype=np.uint32)
    # Ids by code point below the largest one the vocabulary holds; -1 where none.
    self._table = np.full(int(self._codepoints.max(initial=0)) + 1, -1, np.int32)
    self._table[self._codepoints] = np.arange(len(chars), dtype=np.int32)
    self.eod_ids = self.encode("\n")

  @classmethod
  def train(cls, texts, data_config) -> "CharTokenizer":
    del data_config
    seen = set()
    for text in texts:
      seen.update(text)
    return cls("".join(sorted(seen | {"\n"})))

  @property
  def vocab_size(self) -> int:
    return len(self.chars)

  def encode(self, text: str) -> np.ndarray:
    """Returns int32 ids; characters outside the vocabulary are refused."""
    codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    ids = self._table[np.minimum(codepoints, len(self._table) - 1)]
    unknown = (ids < 0) | (codepoints >= len(self._table))
    if unknown.any():
      missing = sorted({chr(c) for c in codepoints[unknown]})
      raise UserError(
        f"the text holds characters the char tokenizer never saw in training: "
        f"{''.join(missing)[:50]!r}; remove them, or train with a tokenizer that "
        "covers any text (data.tokenizer='byte' or 'sentencepiece')."
      )
    return ids

  def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
    return np.split(*self.encode_joined(texts))

  def encode_joined(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The ids of the texts' concatenation, and where each text's ids start (after the first)."""
    return self.encode("".join(texts)), np.cumsum([len(t) for t in texts[:-1]], dtype=np.int64)

  def decode(self, ids) -> str:
    return "".join(self.chars[i] for i in np.asarray(ids).reshape(-1))

  def to_dict(self) -> dict:
    return {"kind": self.kind, "chars": self.chars}

  def byte_lengths(self) -> np.ndarray:
    return np.array([len(c.encode("utf-8")) for c in self.chars], np.int64)


class ByteTokenizer(Tokenizer):
  """UTF-8 bytes (ids 0-255) and an end-of-document id (256)."""

  kind = "byte"
  reads_text = False
  vocab_size = 257
  eos_id = 256
  eod_ids = np.array([eos_id], np.int32)

  @classmethod
  def train(cls, texts, data_config) -> "ByteTokenizer":
    del texts, data_config
    return cls()

  def encode(self, text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)

  def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
    return np.split(*self.encode_joined(texts))

  def encode_joined(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The ids of the texts' concatenation, and where each text's ids start (after the first)."""
    joined = "".join(texts)
    raw = joined.encode("utf-8")
    sizes = [len(t) for t in texts[:-1]] if len(raw) == len(joined) else None  # ASCII
    sizes = sizes if sizes is not None else [len(t.encode("utf-8")) for t in texts[:-1]]
    return np.frombuffer(raw, np.uint8).astype(np.int32), np.cumsum(sizes, dtype=np.int64)

  def decode(self, ids) -> str:
    ids = np.asarray(ids).reshape(-1)
    parts = np.split(ids, np.flatnonzero(ids == 256))
    texts = [bytes(p[p < 256].astype(np.uint8)).decode("utf-8", errors="replace") for p in parts]
    return EOD.join(texts)

  def byte_lengths(self) -> np.ndarray:
    return np.ones(self.vocab_size, np.int64)


class WordTokenizer(Tokenizer):
  """Whitespace-separated words; ids 0 and 1 are <unk> and the end of document."""

  kind = "word"
  lossless = False  # Whitespace becomes single spaces; rare words become <unk>.
  unit = "word"
  note = (
    "word tokenizer: every token is a word or an end of document; bits_per_byte is not "
    "comparable with other tokenizers (one <unk> id stands for every rare word), so it is "
    "not reported"
  )
  eos_id = 1
  eod_ids = np.array([eos_id], np.int32)
  UNK = "<unk>"

  def __init__(self, words: list[str]):
    self.words = words
    self._ids = {w: i for i, w in enumerate(words)}
    self._vocab = [self.UNK, EOD, *words]

  @classmethod
  def train(cls, texts, data_config) -> "WordTokenizer":
    """The data.vocab_size most frequent words (ties in code-point order); '<unk>' is never one."""
    counts = collections.Counter()
    for text in texts:
      counts.update(text.split())
    counts.pop(cls.UNK, None)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return cls([w for w, _ in ranked[: data_config.vocab_size]])

  @classmethod
  def settings(cls, data_config) -> dict:
    return {"vocab_size": data_config.vocab_size}  # The words kept.

  @property
  def vocab_size(self) -> int:
    return len(self.words) + 2

  def encode(self, text: str) -> np.ndarray:
    get = self._ids.get
    return np.array([get(w, -2) + 2 for w in text.split()], np.int32)

  def decode(self, ids) -> str:
    return " ".join(self._vocab[i] for i in np.asarray(ids).reshape(-1))

  def to_dict(self) -> dict:
    return {"kind": self.kind, "words": self.words}


class IdsTokenizer(Tokenizer):
  """For synthetic data: ids are written as space-separated integers."""

  kind = "ids"
  reads_text = False

  def __init__(self, vocab_size: int):
    self.vocab_size = vocab_size

  @classmethod
  def train(cls, texts, data_config) -> "IdsTokenizer":
    del texts
    return cls(data_config.vocab_size)

  @classmethod
  def settings(cls, data_config) -> dict:
    return {"vocab_size": data_config.vocab_size}

  def implied_settings(self) -> dict:
    return {"vocab_size": self.vocab_size}

  def encode(self, text: str) -> np.ndarray:
    try:
      ids = np.array([int(t) for t in text.split()], np.int32)
    except ValueError as e:
      raise UserError(
        f"synthetic-data runs take prompts of space-separated token ids, "
        f"not {text[:40]!r}: write e.g. '3 14 15'."
      ) from e
    if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
      raise UserError(f"token ids must lie in [0, {self.vocab_size}): check the prompt.")
    return ids

  def decode(self, ids) -> str:
    return " ".join(str(int(i)) for i in np.asarray(ids).reshape(-1))

  def to_dict(self) -> dict:
    return {"kind": self.kind, "vocab_size": self.vocab_size}

  def byte_lengths(self) -> np.ndarray:
    return np.array([len(str(i)) + 1 for i in range(self.vocab_size)], np.int64)  # And a space.

  def num_bytes(self, ids, start: int = 0) -> int:
    """The decoded text's bytes: each id's digits, and a space between two ids."""
    return max(super().num_bytes(ids, start) - 1, 0)


def kind(name: str) -> type[Tokenizer]:
  if name not in KINDS:
    raise UserError(f"unknown tokenizer {name!r}: set data.tokenizer to one of {sorted(KINDS)}.")
  return KINDS[name]


def train(name: str, texts, data_config) -> Tokenizer:
  """Trains a tokenizer of kind `name` on an iterable of training texts."""
  cls = kind(name)
  tokenizer = cls.train(texts, data_config)
  tokenizer.recorded = cls.settings(data_config)
  return tokenizer


def from_dict(d: dict) -> Tokenizer:
  """The tokenizer `save` wrote (its settings, where the file records them)."""
  d = dict(d)
  recorded = d.pop("settings", None)
  tokenizer = kind(d["kind"]).from_dict(d)
  tokenizer.recorded = tokenizer.implied_settings() if recorded is None else recorded
  return tokenizer


def save(tokenizer: Tokenizer, path: str) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump({**tokenizer.to_dict(), "settings": tokenizer.recorded}, f, ensure_ascii=False)
  os.replace(tmp, path)


def load(path: str) -> Tokenizer:
  """Loads a tokenizer saved by `save`."""
  if not os.path.exists(path):
    raise UserError(f"no tokenizer at {path}: is this a training run's workdir?")
  with open(path) as f:
    return from_dict(json.load(f))


def check_matches(tokenizer: Tokenizer, data_config, path: str) -> None:
  """Refuses a saved tokenizer that the config would not have trained.

  Compares the settings the saved file records (or shows) with the config's.
  """
  want = data_config.tokenizer
  wanted = kind(want).settings(data_config)
  have = tokenizer.recorded or tokenizer.implied_settings()
  if tokenizer.kind == want and all(wanted.get(k, v) == v for k, v in have.items()):
    return
  describe = lambda name, s: name + "".join(f", {k} {v}" for k, v in sorted(s.items()))
  raise UserError(
    f"the tokenizer saved at {path} is {describe(tokenizer.kind, have)} but the config asks "
    f"for {describe(want, wanted)}: use a new --workdir for a different tokenizer, or set "
    "data.tokenizer (and its keys) back."
  )


def interleaved(texts: dict[str, Iterable[str]], w: dict[str, fractions.Fraction]) -> Iterator[str]:
  """The sources' texts interleaved so that each source's characters so far follow its weight.

  A tokenizer that trains on a prefix (SentencePiece's data.tokenizer_train_bytes) thus sees
  every source in proportion; one that reads everything sees all of it.
  """
  iters = {n: iter(t) for n, t in texts.items()}
  seen = dict.fromkeys(iters, 0)
  while iters:
    n = min(iters, key=lambda n: (seen[n] / w[n], n))
    text = next(iters[n], None)
    if text is None:
      del iters[n]
      continue
    seen[n] += len(text)
    yield text


def obtain(data_config, workdir: str, sources) -> Tokenizer:
  """The workdir's tokenizer, else one cached for the same text and settings, else a new one.

  `sources`: the corpus's sources (sources.Named); a tokenizer that reads text trains on
  their train splits interleaved by weight.
  """
  c = data_config
  path = os.path.join(workdir, "tokenizer.json") if workdir else ""
  if path and os.path.exists(path):
    tokenizer = load(path)
    check_matches(tokenizer, c, path)
    return tokenizer
  cls = kind(c.tokenizer)
  if not cls.reads_text:  # Built from the config alone: nothing to train, nothing to cache.
    return train(c.tokenizer, (), c)
  text = {n.name: [str(n.weight), n.splits["train"].identity] for n in sources}
  settings = {"kind": c.tokenizer, **cls.settings(c)}
  name = f"{c.tokenizer}-{token_cache.key(token_cache.FORMAT, text, settings)}.json"
  cache = os.path.join(token_cache.root(c), "tokenizers", name)
  if os.path.exists(cache):
    return load(cache)
  texts = interleaved(
    {n.name: n.splits["train"].texts() for n in sources}, {n.name: n.weight for n in sources}
  )
  tokenizer = train(c.tokenizer, texts, c)
  os.makedirs(os.path.dirname(cache), exist_ok=True)
  save(tokenizer, cache)
  return tokenizer


def the_models(data_config, workdir: str, reader: str, config_file: str) -> Tokenizer:
  """The tokenizer of the model a run tunes: the workdir's, or data.hf_tokenizer's; a kind
  that would train a new tokenizer on the text is refused, since `reader` (the data format
  that reads the records) tunes an existing model (`config_file` sets it up)."""
  saved = workdir and os.path.exists(os.path.join(workdir, "tokenizer.json"))
  if not saved and kind(data_config.tokenizer).reads_text:
    raise UserError(
      f"{reader} tunes a model with its own tokenizer, and data.tokenizer="
      f"{data_config.tokenizer!r} would train a new one: set data.tokenizer='hf' and "
      f"data.hf_tokenizer to the model ({config_file} does)."
    )
  return obtain(data_config, workdir, [])


def keep(tokenizer: Tokenizer, workdir: str, is_writer: bool) -> None:
  """Saves `tokenizer` as WORKDIR/tokenizer.json once (the writer process; not when `workdir`
  is ''), so that sampling and evaluation decode exactly as training encoded."""
  path = os.path.join(workdir, "tokenizer.json")
  if workdir and is_writer and not os.path.exists(path):
    os.makedirs(workdir, exist_ok=True)
    save(tokenizer, path)
