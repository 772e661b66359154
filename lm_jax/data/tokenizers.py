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
                 directory), with the model's end-of-text id as end of document
                 (lm_jax/data/hf_tokenizer.py).
  ids            synthetic data: token ids written as space-separated integers.

Every tokenizer but word returns the original text from decode(encode(text)) (hf:
where the Hugging Face tokenizer is lossless, as byte-level BPE is).
"""

import base64
import collections
import hashlib
import io
import json
import os

import numpy as np

from lm_jax import UserError

EOD = "<|endoftext|>"  # How decode renders the end-of-document id.
KINDS = {}  # kind -> class: each Tokenizer subclass by its `kind` (hf: data/hf_tokenizer.py).


class Tokenizer:
  """What every tokenizer kind is; a subclass is registered in KINDS by its `kind`."""

  kind = ""

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    KINDS[cls.kind] = cls


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


class ByteTokenizer(Tokenizer):
  """UTF-8 bytes (ids 0-255) and an end-of-document id (256)."""

  kind = "byte"
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

  def to_dict(self) -> dict:
    return {"kind": self.kind}


class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece model kept in the JSON file as base64 bytes."""

  kind = "sentencepiece"

  def __init__(self, model: str):
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top

    self.model = model
    self._sp = spm.SentencePieceProcessor(model_proto=base64.b64decode(model))
    self.eos_id = self._sp.eos_id()
    self.eod_ids = np.array([self.eos_id], np.int32)

  @classmethod
  def train(cls, texts, data_config) -> "SentencePieceTokenizer":
    """Trains on the lines of `texts`, up to data.tokenizer_train_bytes of them."""
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top

    c = data_config
    if c.sentencepiece_type not in ("bpe", "unigram"):
      raise UserError(f"data.sentencepiece_type={c.sentencepiece_type!r}: use 'bpe' or 'unigram'.")

    def lines():
      budget = c.tokenizer_train_bytes
      for text in texts:
        for line in text.splitlines():
          if line:
            yield line
            budget -= len(line)
          if budget <= 0:
            return

    proto = io.BytesIO()
    try:
      spm.SentencePieceTrainer.train(
        sentence_iterator=lines(),
        model_writer=proto,
        vocab_size=c.vocab_size,
        model_type=c.sentencepiece_type,
        character_coverage=1.0,
        byte_fallback=True,
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        max_sentence_length=1 << 16,
        unk_id=0,
        eos_id=1,
        bos_id=-1,
        pad_id=-1,
        hard_vocab_limit=True,
        minloglevel=2,
        num_threads=1,
      )  # One thread: every process of a multi-host run trains the same.
    except RuntimeError as e:
      # Too small: fewer ids than the 256 byte pieces plus the text's characters.
      fix = "raise" if "smaller than required" in str(e) else "lower"
      raise UserError(
        f"SentencePiece cannot train data.vocab_size={c.vocab_size} on this text "
        f"({str(e).strip().splitlines()[-1][:160]}): {fix} data.vocab_size."
      ) from e
    return cls(base64.b64encode(proto.getvalue()).decode("ascii"))

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def encode(self, text: str) -> np.ndarray:
    return np.array(self._sp.encode(text), np.int32)

  def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
    # One thread: the token cache runs one tokenizer per worker process (data.workers).
    return [np.array(ids, np.int32) for ids in self._sp.encode(texts, num_threads=1)]

  def decode(self, ids) -> str:
    ids = [int(i) for i in np.asarray(ids).reshape(-1)]
    eod = self.eos_id
    parts, start = [], 0
    for j, i in enumerate(ids + [eod]):
      if i == eod:
        parts.append(self._sp.decode(ids[start:j]))
        start = j + 1
    return EOD.join(parts)

  def to_dict(self) -> dict:
    return {"kind": self.kind, "model": self.model}


class WordTokenizer(Tokenizer):
  """Whitespace-separated words; ids 0 and 1 are <unk> and the end of document."""

  kind = "word"
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

  @property
  def vocab_size(self) -> int:
    return len(self.words) + 2

  def encode(self, text: str) -> np.ndarray:
    get = self._ids.get
    return np.array([get(w, -2) + 2 for w in text.split()], np.int32)

  def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
    return [self.encode(t) for t in texts]

  def decode(self, ids) -> str:
    return " ".join(self._vocab[i] for i in np.asarray(ids).reshape(-1))

  def to_dict(self) -> dict:
    return {"kind": self.kind, "words": self.words}


class IdsTokenizer(Tokenizer):
  """For synthetic data: ids are written as space-separated integers."""

  kind = "ids"
  eos_id = None
  eod_ids = np.zeros(0, np.int32)

  def __init__(self, vocab_size: int):
    self.vocab_size = vocab_size

  @classmethod
  def train(cls, texts, data_config) -> "IdsTokenizer":
    del texts
    return cls(data_config.vocab_size)

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

  def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
    return [self.encode(t) for t in texts]

  def decode(self, ids) -> str:
    return " ".join(str(int(i)) for i in np.asarray(ids).reshape(-1))

  def to_dict(self) -> dict:
    return {"kind": self.kind, "vocab_size": self.vocab_size}


def train(kind: str, texts, data_config):
  """Trains a tokenizer of `kind` on an iterable of training texts."""
  if kind not in KINDS:
    raise UserError(f"unknown tokenizer {kind!r}: set data.tokenizer to one of {sorted(KINDS)}.")
  return KINDS[kind].train(texts, data_config)


def fingerprint(tokenizer) -> str:
  """A short hash naming the tokenizer's exact vocabulary."""
  blob = json.dumps(tokenizer.to_dict(), sort_keys=True).encode()
  return hashlib.sha256(blob).hexdigest()[:16]


def check_matches(tokenizer, data_config, path: str) -> None:
  """Refuses a saved tokenizer that the config would not have trained."""
  want = "ids" if data_config.dataset == "synthetic" else data_config.tokenizer
  have = tokenizer.kind
  if have == want and (
    want not in ("sentencepiece", "ids") or tokenizer.vocab_size == data_config.vocab_size
  ):
    return
  have_desc = f"{have} (vocab {tokenizer.vocab_size})"
  raise UserError(
    f"the tokenizer saved at {path} is {have_desc} but the config asks for {want}"
    f"{f' (vocab {data_config.vocab_size})' if want in ('sentencepiece', 'ids') else ''}: "
    "use a new --workdir for a different tokenizer, or set data.tokenizer back."
  )


def _byte_lengths(tokenizer) -> np.ndarray | None:
  """UTF-8 bytes each id decodes to (an end of document: one); None where text is not kept."""
  if tokenizer.kind == "char":
    return np.array([len(c.encode("utf-8")) for c in tokenizer.chars], np.int64)
  if tokenizer.kind == "byte":
    return np.ones(tokenizer.vocab_size, np.int64)
  if tokenizer.kind == "sentencepiece":
    sp = tokenizer._sp  # pylint: disable=protected-access
    return np.array(
      [
        1
        if sp.is_byte(i) or i == tokenizer.eos_id
        else 0
        if sp.is_unknown(i) or sp.is_control(i)
        else len(sp.id_to_piece(i).replace("\u2581", " ").encode("utf-8"))
        for i in range(sp.get_piece_size())
      ],
      np.int64,
    )
  return None


def num_bytes(tokenizer, ids, start: int = 0) -> int | None:
  """UTF-8 bytes of the text `ids[start:]` stands for; an end of document counts as one byte.

  Reads `ids` (an array or a token cache's stream) in slices. None for the word tokenizer,
  whose ids do not keep the text (whitespace, <unk>).
  """
  if tokenizer.kind == "word":
    return None
  table = _byte_lengths(tokenizer)
  total = 0
  for at in range(start, len(ids), 1 << 22):
    part = np.asarray(ids[at : at + (1 << 22)]).reshape(-1)
    if table is None:  # Decode: ends of document come back as EOD, one byte each.
      eods = 0 if tokenizer.eos_id is None else int((part == tokenizer.eos_id).sum())
      total += len(tokenizer.decode(part).encode("utf-8")) - eods * (len(EOD) - 1)
      total += tokenizer.kind == "ids" and at > start  # Ids are joined by spaces.
    else:
      total += int(table[part].sum())
  return total


def save(tokenizer, path: str) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(tokenizer.to_dict(), f, ensure_ascii=False)
  os.replace(tmp, path)


def from_dict(d: dict):
  """The tokenizer `to_dict` described."""
  d = dict(d)
  return KINDS[d.pop("kind")](**d)


def load(path: str):
  """Loads a tokenizer saved by `save`."""
  if not os.path.exists(path):
    raise UserError(f"no tokenizer at {path}: is this a training run's workdir?")
  with open(path) as f:
    return from_dict(json.load(f))
