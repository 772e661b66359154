"""Hugging Face datasets as sources (data.dataset='hf:NAME'), through the `datasets` library.

NAME is a Hub dataset (data.hf_config, data.hf_revision), a folder that `save_to_disk` wrote,
or a builder of local files (hf:json, hf:parquet, hf:csv, hf:text with data.text_files). A Hub
dataset is downloaded and prepared once into the `datasets` cache (data.data_dir, else its
default); records then stream from the memory-mapped Arrow files, which workers read in row
ranges. Offline (the Hub unreachable), the cache is used as it is, in seconds. A record's
document is as for record files (record_files.Documents). The only module that imports
`datasets`, and only when such a source is asked for.
"""

import contextlib
import dataclasses
import functools
import os
import urllib.parse
from collections.abc import Iterator

from lm_jax import UserError, console, network
from lm_jax.data import chat, chunks, record_files, text_files

PREFIX = "hf:"
ROWS = 1024  # Rows decoded at a time.


def _import():
  import datasets  # pylint: disable=g-import-not-at-top

  if not console.verbose():
    datasets.disable_progress_bars()  # The token cache's progress line says enough.
    datasets.logging.set_verbosity_error()  # Not its notes on cached versions and downloads.
  return datasets


@contextlib.contextmanager
def _offline(datasets, offline: bool):
  """The `datasets` cache alone while `offline` (as HF_HUB_OFFLINE=1): no download retries."""
  before = datasets.config.HF_HUB_OFFLINE
  datasets.config.HF_HUB_OFFLINE = before or offline
  try:
    yield
  finally:
    datasets.config.HF_HUB_OFFLINE = before


def _is_saved(path: str) -> bool:
  return any(os.path.isfile(os.path.join(path, f)) for f in ("dataset_dict.json", "state.json"))


def _missing(name: str, key: str, fields) -> UserError:
  fix = "data.format" if key == chat.MESSAGES else "data.text_key"
  return UserError(
    f"the Hugging Face dataset {name!r} has no field {key!r} (its records have {list(fields)}): "
    f"set {fix}."
  )


@functools.cache
def _load(name: str, config: str, revision: str, cache_dir: str, data_files: tuple) -> dict:
  """{split name: Dataset} of NAME: a saved folder, a builder of local files, or the Hub's."""
  datasets = _import()
  if os.path.isdir(name) and _is_saved(name):
    loaded = datasets.load_from_disk(name)
    return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
  endpoint = datasets.config.HF_ENDPOINT
  local = os.path.isdir(name) or bool(data_files)
  offline = not local and network.unreachable_host([endpoint]) is not None
  kwargs = {"cache_dir": cache_dir or None, "revision": revision or None}
  if data_files:
    kwargs["data_files"] = {split: list(paths) for split, paths in data_files}
  try:
    with _offline(datasets, offline):
      return dict(datasets.load_dataset(name, config or None, **kwargs))
  except ConnectionError as e:
    where = cache_dir or datasets.config.HF_DATASETS_CACHE
    raise UserError(
      f"the Hugging Face dataset {name!r} is not in the datasets cache ({where}) and "
      f"{urllib.parse.urlsplit(endpoint).hostname} cannot be reached: connect once to cache "
      "it, or point at local files: data.dataset='hf:FOLDER' (a save_to_disk folder), "
      "'hf:json' or 'hf:parquet' with data.text_files, or data.dataset='jsonl' / 'parquet'."
    ) from e
  except (ValueError, FileNotFoundError) as e:  # No such dataset, configuration or files.
    raise UserError(
      f"cannot load the Hugging Face dataset {name!r} ({type(e).__name__}: {str(e)[:300]}): "
      "check data.dataset, data.hf_config and data.hf_revision."
    ) from e


def _parts(loaded: dict, name: str, spec: str) -> list[tuple[str, int, int]]:
  """The row ranges `(split name, start, stop)` a split spec ('train[:10%]+validation') names."""
  sizes = {n: len(d) for n, d in loaded.items()}
  try:
    parts = _import().ReadInstruction.from_spec(spec).to_absolute(sizes)
  except (ValueError, KeyError, AssertionError) as e:
    raise UserError(
      f"the Hugging Face dataset {name!r} has no split {spec!r} (it has {sorted(sizes)}): "
      "check data.*_split; slices like 'train[:1%]' work."
    ) from e
  return [(p.splitname, p.from_, p.to) for p in parts]


@functools.cache
def _files(paths: tuple):
  """The Arrow files `paths` as one memory-mapped Dataset, opened once per process."""
  datasets = _import()
  tables = [datasets.Dataset.from_file(p) for p in paths]
  return tables[0] if len(tables) == 1 else datasets.concatenate_datasets(tables)


@dataclasses.dataclass(frozen=True)
class HfSpan:
  """Rows [start, stop) of a split, read where they are encoded: from its Arrow `files`, or
  from `dataset` itself where the split is not stored as whole files."""

  name: str
  files: tuple
  start: int
  stop: int
  documents: record_files.Documents
  first: bool  # The split's first span: its first record starts no document.
  dataset: object = None

  def pieces(self) -> Iterator[tuple]:
    dataset = self.dataset if self.dataset is not None else _files(self.files)
    key = self.documents.key
    if key not in dataset.column_names:
      raise _missing(self.name, key, dataset.column_names)
    column = dataset.select_columns([key]).with_format("arrow")
    records = (
      (lambda i=at + j: f"{self.name} row {i}", {key: value})
      for at in range(self.start, self.stop, ROWS)
      for j, value in enumerate(column[at : min(at + ROWS, self.stop)].column(0).to_pylist())
    )
    return self.documents.pieces(records, self.first)


def _spans(name: str, loaded: dict, parts: list, documents, size: int) -> list[HfSpan]:
  """The split in row ranges of about `size` bytes each."""
  spans = []
  for split, start, stop in parts:
    dataset = loaded[split]
    files = tuple(f["filename"] for f in dataset.cache_files)
    if not files or len(_files(files)) != len(dataset):  # Not whole files: read here.
      spans.append(HfSpan(name, (), start, stop, documents, not spans, dataset))
      continue
    rows = max(1, len(dataset) * size // max(dataset.data.nbytes, 1))
    for a in range(start, stop, rows):
      spans.append(HfSpan(name, files, a, min(a + rows, stop), documents, not spans))
  return spans


def _data_files(c) -> tuple:
  """data.text_files as `datasets` data files: ((split, absolute paths), ...)."""
  return tuple(
    (split, tuple(os.path.abspath(p) for p in text_files.expand(c.text_files[split], key)))
    for split, key in ((s, f"data.text_files.{s}") for s in ("train", "validation", "test"))
    if c.text_files[split]
  )


def splits(c, names: dict[str, str]) -> dict[str, tuple]:
  """(identity, pieces, spans) of each split `names` maps to a split spec of data.dataset."""
  name = os.path.expanduser(c.dataset[len(PREFIX) :])
  if not name:
    raise UserError("data.dataset='hf:' names no dataset: write hf:NAME (a Hub name or a folder).")
  fmt = c.get("format", "text")
  documents = record_files.Documents(
    c.text_key, fmt, chat.template_for(c) if fmt == "chat" else None
  )
  config, revision = c.get("hf_config", ""), c.get("hf_revision", "")
  loaded = _load(name, config, revision, c.data_dir, _data_files(c))
  out = {}
  for split, spec in names.items():
    if not spec or (split == "test" and spec not in loaded and "[" not in spec and "+" not in spec):
      continue  # No test split: evaluation says so if asked for it.
    parts = _parts(loaded, name, spec)
    files = sorted({f["filename"] for s, _, _ in parts for f in loaded[s].cache_files})
    identity = {
      "hf": name,
      "config": config,
      "revision": revision,
      "files": [(f, os.path.getsize(f), os.stat(f).st_mtime_ns) for f in files],
      "rows": parts,
      "format": fmt,
      "key": documents.key,
      "split": split,
    }
    if documents.template is not None:
      identity["template"] = documents.template.to_dict()
    spans = functools.partial(_spans, name, loaded, parts, documents, chunks.CHUNK_CHARS)
    pieces = lambda spans=spans: (p for s in spans() for p in s.pieces())
    out[split] = (identity, pieces, spans)
  return out
