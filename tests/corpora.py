"""Small corpora as text files, JSON Lines (plain, gzip, zstd) and Parquet, for the data tests."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from conftest import make_text

from configs import tiny

# Documents of every kind: non-ASCII, blank lines inside, one much longer, an empty one.
DOCS = [
  make_text(40 * (i % 7 + 1), i) + ("naïve 日本\n\nλόγος" if i % 3 else "") for i in range(60)
]
DOCS[5] = make_text(4000, 99)
DOCS[9] = ""


def write_records(path, docs, key="text", row_group=7):
  """`docs` as records {key: doc, 'id': i} in the file format its name gives."""
  rows = [{"id": i, key: d} for i, d in enumerate(docs)]
  if path.suffix == ".parquet":
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group)
    return str(path)
  raw = "".join(json.dumps(r, ensure_ascii=i % 2 == 0) + "\n" for i, r in enumerate(rows)).encode()
  if path.name.endswith(".gz"):
    raw = gzip.compress(raw)
  elif path.name.endswith(".zst"):
    raw = zstandard.ZstdCompressor().compress(raw)
  path.write_bytes(raw)
  return str(path)


def write_texts(folder, docs):
  """One text file a document (data.documents='file'), in name order."""
  folder.mkdir()
  for i, d in enumerate(docs):
    (folder / f"{i:03d}.txt").write_text(d, encoding="utf-8")
  return str(folder / "*.txt")


def config(dataset, train, validation, **kwargs):
  c = tiny.get_config().data
  c.update({"dataset": dataset, "tokenizer": "char", "seq_len": 8, "workers": 1, **kwargs})
  c.text_files.update(train=train, validation=validation, test="")
  return c


def conversation(i: int) -> list[dict]:
  turns = [{"role": "system", "content": "Be brief."}] if i % 3 == 0 else []
  for j in range(1 + i % 3):
    turns.append({"role": "user", "content": f"What is {i} + {j}?\nSay it in words, naïvely."})
    turns.append({"role": "assistant", "content": f"It is {i + j}.\n\nThat is all: 日本 {j}"})
  return turns


CONVERSATIONS = [conversation(i) for i in range(40)]


def write_chats(path, conversations=CONVERSATIONS):
  rows = [{"id": i, "messages": m} for i, m in enumerate(conversations)]
  if str(path).endswith(".parquet"):
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=6)
  else:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)
