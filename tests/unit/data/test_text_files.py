"""Local text read in blocks: the same documents as reading each file whole."""

import hypothesis
import hypothesis.strategies as st
import pytest

from lm_jax import UserError
from lm_jax.data import text_files

SETTINGS = hypothesis.settings(max_examples=150, deadline=None)


def documents(pieces) -> list[str]:
  docs = []
  for text, new in pieces:
    if new or not docs:
      docs.append(text)
    else:
      docs[-1] += text
  return docs


def whole_file_documents(text: str, per: str) -> list[str]:
  """What each kind of document is, defined on the whole text at once."""
  if per == "file":
    return [text]
  if per == "line":
    return text.split("\n")[: -1 if text.endswith("\n") else None] if text else []
  return [d.strip("\n") for d in text.split("\n\n") if d.strip()]


@SETTINGS
@hypothesis.given(
  st.text(alphabet="ab \n\né日", max_size=300), st.sampled_from(text_files.DOCUMENTS)
)
def test_blocks_give_the_documents_of_the_whole_file(tmp_path_factory, text, per):
  path = tmp_path_factory.mktemp("t") / "a.txt"
  path.write_bytes(text.encode("utf-8"))
  with pytest.MonkeyPatch.context() as m:
    m.setattr(text_files, "BLOCK", 5)  # Blocks cut characters, lines and separators in two.
    pieces = list(text_files.pieces(text_files.whole([str(path)]), per))
  assert documents(pieces) == whole_file_documents(text, per)
  assert all(len(t) < 100 for t, _ in pieces) or len(text) < 100  # Read in pieces.


def test_holdout_cuts_at_a_newline_by_byte_offset(tmp_path):
  a, b = tmp_path / "a.txt", tmp_path / "b.txt"
  a.write_text("first file\n" * 30)
  b.write_text("é line\n" * 100)
  head, tail = text_files.holdout([str(a), str(b)], 0.25)
  read = lambda ranges: "".join(t for t, _ in text_files.pieces(ranges, "file"))
  assert read(head) + read(tail) == a.read_text() + b.read_text()
  assert read(head).endswith("\n") and tail[0][0] == str(b)
  assert abs(len(read(tail).encode()) - 0.25 * (330 + 800)) < 10


def test_a_bad_byte_is_located_across_blocks(tmp_path, monkeypatch):
  path = tmp_path / "a.txt"
  path.write_bytes("aé\n".encode() * 10 + b"ab\xffc")
  monkeypatch.setattr(text_files, "BLOCK", 4)
  with pytest.raises(UserError, match="not UTF-8 at byte 42: convert it"):
    list(text_files.pieces(text_files.whole([str(path)]), "file"))


@SETTINGS
@hypothesis.given(
  st.lists(st.text(alphabet="ab \n\né日", max_size=120), min_size=1, max_size=3),
  st.sampled_from(text_files.DOCUMENTS),
  st.integers(1, 40),
)
def test_spans_read_one_by_one_give_the_documents_of_the_whole(tmp_path_factory, texts, per, size):
  folder = tmp_path_factory.mktemp("t")
  paths = []
  for i, text in enumerate(texts):
    paths.append(str(folder / f"{i}.txt"))
    with open(paths[-1], "wb") as f:
      f.write(text.encode("utf-8"))
  ranges = text_files.whole(paths)
  with pytest.MonkeyPatch.context() as m:
    m.setattr(text_files, "BLOCK", 5)
    m.setattr(text_files, "LONG", 12)  # Long lines of 'file' documents are cut too.
    spans = list(text_files.spans(ranges, per, size))
    pieces = [p for span in spans for p in span.pieces()]  # As workers would read them.
    whole = list(text_files.pieces(ranges, per))
  assert documents(pieces) == documents(whole)
  assert sum(end - start for s in spans for _, start, end in s.ranges) == sum(
    len(t.encode()) for t in texts
  )
