"""Local UTF-8 text files as a stream of pieces, read in blocks: memory never holds a whole file.

A piece is `(text, starts_document)`. Long documents come in pieces that end at a newline, which
leaves every tokenizer's output unchanged (no token spans a newline). The held-out end of the
train text is cut by byte offset, so nothing is loaded to find it.
"""

import codecs
import dataclasses
import glob
import os
from collections.abc import Iterator

from lm_jax import UserError

BLOCK = 1 << 20  # Bytes read at a time; a piece is about this long.
NEAR = 1000  # The holdout cut moves forward to a newline at most this far away.
LONG = 16 * BLOCK  # A span of one long file is cut mid-line if no newline comes within this.
DOCUMENTS = ("file", "blank_line", "line")


def expand(pattern: str, key: str) -> list[str]:
  """The sorted files a path or glob names; none is an error."""
  paths = sorted(glob.glob(os.path.expanduser(pattern)))
  if not paths:
    raise UserError(f"{key}={pattern!r} matches no file: check the path.")
  return paths


def _blocks(path: str, start: int, end: int) -> Iterator[str]:
  """The text of bytes [start, end) of `path`, in blocks that end at a newline where one is."""
  decoder = codecs.getincrementaldecoder("utf-8")()
  carry, offset = "", start
  with open(path, "rb") as f:
    f.seek(start)
    while offset < end:
      raw = f.read(min(BLOCK, end - offset))
      if not raw:
        break
      held = len(decoder.getstate()[0])  # Bytes of a character cut by the previous block.
      try:
        text = carry + decoder.decode(raw, final=offset + len(raw) >= end)
      except UnicodeDecodeError as e:
        at = offset - held + e.start
        raise UserError(f"{path} is not UTF-8 at byte {at}: convert it to UTF-8.") from e
      offset += len(raw)
      cut = text.rfind("\n") + 1
      if cut == 0 and len(text) < 16 * BLOCK:  # A long line: wait for its end, within reason.
        carry = text
        continue
      cut = cut or len(text)
      yield text[:cut]
      carry = text[cut:]
  if carry:
    yield carry


def _by_file(ranges) -> Iterator[tuple[str, bool]]:
  for path, start, end in ranges:
    first = True
    for text in _blocks(path, start, end):
      yield text, first
      first = False
    if first:
      yield "", True  # An empty file is an empty document.


def _by_line(ranges) -> Iterator[tuple[str, bool]]:
  for path, start, end in ranges:
    for text in _blocks(path, start, end):
      lines = text.split("\n")
      if text.endswith("\n"):
        lines.pop()
      for line in lines:
        yield line, True


def _by_blank_line(ranges) -> Iterator[tuple[str, bool]]:
  """Blocks between empty lines, without their outer newlines; whitespace-only ones dropped."""
  for path, start, end in ranges:
    pending, started = "", False  # pending holds no "\n\n": the text after the last separator.
    for text in _blocks(path, start, end):
      *done, pending = (pending + text).split("\n\n")
      for block in done:
        if started:
          if block.rstrip("\n"):
            yield block.rstrip("\n"), False
        elif block.strip():
          yield block.strip("\n"), True
        started = False
      cut = pending.rfind("\n", 0, len(pending) - 1) + 1
      if len(pending) > 4 * BLOCK and cut and (started or pending[:cut].strip()):
        # A long block goes out in pieces; the rest starts after a newline, so no separator
        # is cut in two.
        head = pending[:cut] if started else pending[:cut].lstrip("\n")
        yield head, not started
        pending, started = pending[cut:], True
    if started and pending.rstrip("\n"):
      yield pending.rstrip("\n"), False
    elif not started and pending.strip():
      yield pending.strip("\n"), True


def pieces(ranges, documents: str) -> Iterator[tuple[str, bool]]:
  """The pieces of byte ranges `(path, start, end)`, documents per file, blank line or line."""
  if documents not in DOCUMENTS:
    raise UserError(f"data.documents={documents!r}: use one of {list(DOCUMENTS)}.")
  return {"file": _by_file, "blank_line": _by_blank_line, "line": _by_line}[documents](ranges)


def whole(paths: list[str]) -> list[tuple[str, int, int]]:
  return [(p, 0, os.path.getsize(p)) for p in paths]


def holdout(paths: list[str], fraction: float) -> tuple[list, list]:
  """Byte ranges of the train text and its last `fraction`, cut at a newline where one is near."""
  ranges = whole(paths)
  cut = int(sum(end for _, _, end in ranges) * (1 - fraction))
  for i, (path, _, size) in enumerate(ranges):
    if cut <= size:
      with open(path, "rb") as f:
        f.seek(cut)
        near = f.read(NEAR + 4)
      at = near.find(b"\n")
      if 0 <= at <= NEAR:
        cut += at + 1
      else:  # Not inside a UTF-8 character: skip continuation bytes.
        cut += next((j for j, b in enumerate(near) if b & 0xC0 != 0x80), len(near))
      cut = min(cut, size)
      head = ranges[:i] + ([(path, 0, cut)] if cut > 0 else [])
      tail = ([(path, cut, size)] if cut < size else []) + ranges[i + 1 :]
      return head, tail
    cut -= size
  return ranges, []


@dataclasses.dataclass(frozen=True)
class Span:
  """Byte ranges `(path, start, end)` of a split, read where they are encoded.

  `starts_document`: whether the span's first piece begins a document (False for the first
  span of a split, and for a span that begins inside a `file` document).
  """

  ranges: tuple
  documents: str
  starts_document: bool

  def pieces(self) -> list[tuple[str, bool]]:
    out = list(pieces(self.ranges, self.documents))
    if out:
      out[0] = (out[0][0], self.starts_document)
    return out


def _find(path: str, at: int, end: int, pattern: bytes, isolated: bool) -> int | None:
  """The first offset in [at, end) where `pattern` starts (and, if `isolated`, the byte before
  is not pattern[0]); None if there is none. Reads BLOCK bytes at a time."""
  base, data = at - 1, b""  # data holds the bytes from offset base on.
  with open(path, "rb") as f:
    f.seek(base)
    while more := f.read(min(BLOCK, end - base - len(data))):
      data += more
      i = data.find(pattern, 1)
      while i >= 1 and isolated and data[i - 1] == pattern[0]:
        i = data.find(pattern, i + 1)
      if i >= 1:
        return base + i
      drop = max(0, len(data) - len(pattern))  # A match cut by the read starts in the rest.
      base, data = base + drop, data[drop:]
  return None


def _cut(path: str, at: int, end: int, documents: str) -> int:
  """A clean place to end a span in (at, end]: after a newline, or after the first two
  newlines of a run of them for blank-line documents; `end` if there is none."""
  if documents == "blank_line":
    i = _find(path, at, end, b"\n\n", isolated=True)
    return end if i is None else i + 2
  i = _find(path, at, min(end, at + LONG) if documents == "file" else end, b"\n", False)
  if i is not None:
    return i + 1
  if documents == "line" or at + LONG >= end:
    return end
  at += LONG
  with open(path, "rb") as f:  # One line of 16 MB: cut it, not inside a UTF-8 character.
    f.seek(at)
    head = f.read(4)
  return at + next((j for j, b in enumerate(head) if b & 0xC0 != 0x80), len(head))


def spans(ranges, documents: str, size: int) -> Iterator[Span]:
  """The ranges in spans of about `size` bytes, cut where reading span by span changes nothing.

  A pure function of the ranges' bytes and `size`: the same spans for any number of readers.
  """
  current, filled, opens = [], 0, False
  for path, start, end in ranges:
    pos = start
    if start == end:
      current.append((path, start, end))  # An empty file: an empty document.
    while pos < end:
      cut = end if end - pos <= size - filled else _cut(path, pos + size - filled, end, documents)
      current.append((path, pos, cut))
      filled += cut - pos
      pos = cut
      if filled >= size:
        yield Span(tuple(current), documents, opens)
        current, filled = [], 0
        opens = documents != "file" or pos == end  # A file span continues its document.
  if current:
    yield Span(tuple(current), documents, opens)
