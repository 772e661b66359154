"""JSON Lines (.jsonl, .jsonl.gz, .jsonl.zst) and Parquet files as sources: a record a document.

A record's document is its field data.text_key (data.format='chat': its conversation, rendered
by lm_jax/data/chat.py). Records stream and workers read their own part: a plain .jsonl file
is cut into byte ranges at line ends (text_files.spans), a Parquet file into runs of row
groups; a compressed file can only be read from its start, block by block, so each is one
chunk. A held-out end (data.holdout_fraction) is the last records of the train files.
"""

import dataclasses
import functools
import gzip
import hashlib
import io
import json
import os
from collections.abc import Iterator

import numpy as np

from lm_jax import UserError
from lm_jax.data import chat, chunks, text_files, tokenizers

SUFFIXES = {"jsonl": (".jsonl", ".jsonl.gz", ".jsonl.zst"), "parquet": (".parquet",)}
ROWS = 1024  # Parquet rows decoded at a time.


def check_paths(dataset: str, paths: list[str], key: str) -> None:
  """Refuses a file whose name does not end as data.dataset's format does."""
  for path in paths:
    if not path.endswith(SUFFIXES[dataset]):
      other = [d for d, s in SUFFIXES.items() if path.endswith(s)]
      fix = f"set data.dataset={other[0]!r}" if other else f"name {SUFFIXES[dataset]} files"
      raise UserError(f"{key} names {path}, which data.dataset={dataset!r} cannot read: {fix}.")


def _open(path: str):
  """The decompressed bytes of a .jsonl, .jsonl.gz or .jsonl.zst file, read in blocks."""
  if path.endswith(".gz"):
    return gzip.open(path, "rb")
  raw = open(path, "rb")  # noqa: SIM115 - closed with the reader.
  if path.endswith(".zst"):
    import zstandard  # pylint: disable=g-import-not-at-top

    stream = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    return io.BufferedReader(stream, text_files.BLOCK)
  return raw


def _is_plain(path: str) -> bool:
  return path.endswith(".jsonl")


def _line_number(path: str, offset: int) -> int:
  """The 1-based line of a plain file that starts at byte `offset` (counted only for errors)."""
  count, done = 1, 0
  with open(path, "rb") as f:
    while done < offset and (block := f.read(min(text_files.BLOCK, offset - done))):
      count += block.count(b"\n")
      done += len(block)
  return count


def _lines(path: str, start: int, stop: int | None) -> Iterator[tuple[int, bytes]]:
  """(line number, line) of bytes [start, stop) of a plain file, or of lines [start, stop) of
  a compressed one (stop None: to the end)."""
  if _is_plain(path):
    with open(path, "rb") as f:
      f.seek(start)
      offset = start
      for line in f:
        if stop is not None and offset >= stop:
          return
        yield (lambda o=offset: _line_number(path, o)), line  # Counted only for a refusal.
        offset += len(line)
    return
  with _open(path) as f:
    for i, line in enumerate(f):
      if stop is not None and i >= stop:
        return
      if i >= start:
        yield (lambda i=i: i + 1), line


def _json_records(path: str, start: int, stop: int | None) -> Iterator[tuple]:
  for number, line in _lines(path, start, stop):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise UserError(f"{path} line {number()} is not a JSON record ({e}): fix or drop it.") from e
    if not isinstance(record, dict):
      raise UserError(f"{path} line {number()} is not a JSON object: write one object a line.")
    yield (lambda n=number: f"{path} line {n()}"), record


def _parquet(path: str):
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

  try:
    return pq.ParquetFile(path)
  except Exception as e:  # pyarrow raises ArrowInvalid and OSError for files it cannot read.
    raise UserError(f"{path} is not a Parquet file ({e}): check data.text_files.") from e


def _parquet_records(path: str, start: int, stop: int | None, key: str) -> Iterator[tuple]:
  """Rows [start, stop) of a Parquet file, by row group, `ROWS` at a time, only column `key`."""
  pf = _parquet(path)
  if key not in pf.schema_arrow.names:
    raise UserError(
      f"{path} row {start} has no field {key!r} (no record has: they have "
      f"{pf.schema_arrow.names}): set "
      f"{'data.format' if key == chat.MESSAGES else 'data.text_key'}."
    )
  bounds = [0]
  for i in range(pf.num_row_groups):
    bounds.append(bounds[-1] + pf.metadata.row_group(i).num_rows)
  stop = bounds[-1] if stop is None else stop
  groups = [i for i in range(pf.num_row_groups) if bounds[i] < stop and bounds[i + 1] > start]
  row = bounds[groups[0]] if groups else 0
  for batch in pf.iter_batches(ROWS, row_groups=groups, columns=[key], use_threads=False):
    for value in batch.column(0).to_pylist():
      if start <= row < stop:
        yield (lambda r=row: f"{path} row {r}"), {key: value}
      row += 1


@dataclasses.dataclass(frozen=True)
class Documents:
  """What a record's document is: its field `text_key`, or (format 'chat') its conversation
  rendered with `template` (None: the built-in one), weighted on the assistant's tokens."""

  text_key: str
  format: str = "text"
  template: chat.ChatTemplate | None = None

  @property
  def key(self) -> str:
    return chat.MESSAGES if self.format == "chat" else self.text_key

  def pieces(self, records, first: bool) -> Iterator[tuple]:
    """The pieces of `(where, record)` pairs; the first starts no document if `first`."""
    for where, record in records:
      if self.format == "chat":
        parts = chat.pieces(self.template, chat.messages(record, where))
      else:
        parts = [(text_field(record, self.text_key, where), 1)]
      new = not first
      first = False
      for text, weight in parts:
        for piece in chunks.cut(text):
          yield (piece, new, weight) if self.format == "chat" else (piece, new)
          new = False


def text_field(
  record: dict, key: str, where, fix="set data.text_key to the field that holds the text"
):
  """The text in field `key` of `record`, refused naming the record (`where()`) and `fix`."""
  text = record.get(key)
  if not isinstance(text, str):
    got = "has no field" if key not in record else f"has a {type(text).__name__} in field"
    raise UserError(f"{where()} {got} {key!r} (its fields: {sorted(record)}): {fix}.")
  return text


@dataclasses.dataclass(frozen=True)
class RecordSpan:
  """Records of `ranges` `(path, start, stop)`, read by the worker that encodes them: bytes of a
  plain .jsonl file; lines of a compressed one or rows of a Parquet file (stop None: all)."""

  ranges: tuple
  documents: Documents
  first: bool  # The split's first span: its first record starts no document.

  def records(self) -> Iterator[tuple]:
    for path, start, stop in self.ranges:
      if path.endswith(".parquet"):
        yield from _parquet_records(path, start, stop, self.documents.key)
      else:
        yield from _json_records(path, start, stop)

  def pieces(self) -> Iterator[tuple]:
    return self.documents.pieces(self.records(), self.first)


def _parquet_spans(path: str, start: int, stop: int | None, key: str, size: int) -> Iterator:
  """Rows [start, stop) in runs of whole row groups holding about `size` bytes of `key`."""
  pf = _parquet(path)
  meta = pf.metadata
  column = pf.schema_arrow.names.index(key) if key in pf.schema_arrow.names else 0
  row, filled, first = 0, 0, start
  stop = meta.num_rows if stop is None else stop
  for i in range(meta.num_row_groups):
    group = meta.row_group(i)
    row += group.num_rows
    if row <= start:
      continue
    filled += group.column(column).total_uncompressed_size
    if filled >= size or row >= stop:
      yield (path, first, min(row, stop))
      first, filled = min(row, stop), 0
      if first >= stop:
        return


def _file_ranges(ranges, key: str, size: int) -> Iterator[tuple]:
  """Ranges of about `size` bytes each that a worker reads on its own."""
  for path, start, stop in ranges:
    if path.endswith(".parquet"):
      yield from ((r,) for r in _parquet_spans(path, start, stop, key, size))
    elif _is_plain(path):
      end = os.path.getsize(path) if stop is None else stop
      yield from (s.ranges for s in text_files.spans([(path, start, end)], "line", size))
    else:
      yield ((path, start, stop),)


def records(path: str) -> Iterator[tuple]:
  """`(where, record)` of every record of a JSON Lines or Parquet file, with all its fields;
  `where()` names the record for a refusal."""
  if not path.endswith(".parquet"):
    yield from _json_records(path, 0, None)
    return
  row = 0
  for batch in _parquet(path).iter_batches(ROWS, use_threads=False):
    for record in batch.to_pylist():
      yield (lambda r=row: f"{path} row {r}"), record
      row += 1


def encoded(c, workdir: str, is_writer: bool, reader: str, config_file: str, encode, empty):
  """(the model's tokenizer, {split: `encode(tokenizer, records)`}) of the records by_split
  reads for `reader` (a data.format; `config_file` sets it up); a split that encodes to nothing
  is refused as 'the SPLIT split holds no ' + `empty(encoded)`. The tokenizer is kept in
  `workdir`, as data.prepare keeps it."""
  tokenizer = tokenizers.the_models(c, workdir, reader, config_file)
  found = {}
  for split, records in by_split(c, reader).items():
    found[split] = encode(tokenizer, records)
    if not len(found[split]):
      raise UserError(f"the {split} split holds no {empty(found[split])}.")
  tokenizers.keep(tokenizer, workdir, is_writer)
  return tokenizer, found


def fingerprint(*arrays, extra=None) -> str:
  """The sha256 of arrays' bytes (and of `extra`, as JSON): what a split of records encodes to."""
  h = hashlib.sha256()
  for a in arrays:
    h.update(np.ascontiguousarray(a).tobytes())
  if extra is not None:
    h.update(json.dumps(extra, sort_keys=True, default=str).encode())
  return h.hexdigest()


def by_split(c, reader: str) -> dict[str, list]:
  """The train and validation splits' `(where, record)`, all of them, read from
  data.text_files; without validation files, the last data.holdout_fraction of the train
  records. `reader` names what reads them, for a refusal."""
  if c.dataset not in SUFFIXES:
    raise UserError(
      f"{reader} reads record files, and data.dataset={c.dataset!r} is not "
      f"one: set data.dataset to one of {sorted(SUFFIXES)}."
    )
  found = {}
  for split in ("train", "validation"):
    if c.text_files[split]:
      paths = text_files.expand(c.text_files[split], f"data.text_files.{split}")
      check_paths(c.dataset, paths, f"data.text_files.{split}")
      found[split] = [r for p in paths for r in records(p)]
  if "train" not in found:
    raise UserError(
      "data.text_files.train is empty: name the records with --config.data.text_files.train=PATH."
    )
  if "validation" not in found:
    if not c.holdout_fraction > 0:
      raise UserError(
        "no validation records: set data.text_files.validation, or data.holdout_fraction > 0 "
        "to hold out the last train records."
      )
    train = found["train"]
    cut = len(train) - max(1, int(len(train) * c.holdout_fraction))
    found["train"], found["validation"] = train[:cut], train[cut:]
  return found


def _num_records(path: str) -> int:
  """Rows of a Parquet file; lines of a JSON Lines file (read through once)."""
  if path.endswith(".parquet"):
    return _parquet(path).metadata.num_rows
  count, last = 0, b"\n"
  with _open(path) as f:
    while block := f.read(text_files.BLOCK):
      count += block.count(b"\n")
      last = block[-1:]
  return count + (last != b"\n")


def _line_offset(path: str, line: int) -> int:
  """The byte where line `line` (0-based) of a plain file starts."""
  offset = 0
  with open(path, "rb") as f:
    for i, text in enumerate(f):
      if i == line:
        return offset
      offset += len(text)
  return offset


def holdout(paths: list[str], fraction: float) -> tuple[list, list]:
  """Ranges of the train files and of their last `fraction` of records (lines or rows)."""
  counts = [_num_records(p) for p in paths]
  cut = int(sum(counts) * (1 - fraction))
  head, tail = [], []
  for path, count in zip(paths, counts, strict=True):
    at = min(max(cut, 0), count)
    cut -= count
    if _is_plain(path):
      size = os.path.getsize(path)
      at = size if at == count else _line_offset(path, at)
      count = size
    if at > 0:
      head.append((path, 0, at))
    if at < count:
      tail.append((path, at, None if not _is_plain(path) else count))
  return head, tail


def splits(c, paths: dict[str, list[str]], held_out: bool) -> dict[str, tuple]:
  """(identity, pieces, spans) of each split of record files; with `held_out`, validation is
  the end of the train files."""
  fmt = c.get("format", "text")
  documents = Documents(c.text_key, fmt, chat.template_for(c) if fmt == "chat" else None)

  @functools.cache
  def ranges() -> dict[str, list]:
    out = {s: [(p, 0, None) for p in ps] for s, ps in paths.items()}
    if held_out:
      out["train"], out["validation"] = holdout(paths["train"], c.holdout_fraction)
    return out

  def spans(split):
    return [
      RecordSpan(r, documents, first=i == 0)
      for i, r in enumerate(_file_ranges(ranges()[split], documents.key, chunks.CHUNK_CHARS))
    ]

  def pieces(split):
    return (p for span in spans(split) for p in span.pieces())

  def identity(split):
    files = [
      (os.path.abspath(p), os.path.getsize(p), os.stat(p).st_mtime_ns)
      for p in paths.get(split, paths["train"])
    ]
    held = c.holdout_fraction if held_out and split in ("train", "validation") else None
    kind = {"records": c.dataset, "format": fmt, "key": documents.key}
    if documents.template is not None:
      kind["template"] = documents.template.to_dict()
    return {"files": files, **kind, "holdout": held, "split": split}

  names = [
    s for s in ("train", "validation", "test") if s in paths or (s == "validation" and held_out)
  ]
  return {
    s: (identity(s), functools.partial(pieces, s), functools.partial(spans, s)) for s in names
  }
