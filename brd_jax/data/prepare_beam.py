"""The prepared examples built on an Apache Beam runner: the paper-scale join, distributed.

The same shards, byte for byte, as `prepare.prepare` builds on one machine (same fingerprint,
same directory, so `brd train` finds them), from a pipeline any Beam runner runs: DirectRunner
here, Dataflow, Flink or Spark at scale. The ledger join is two CoGroupByKeys instead of spill
files: records with the paragraphs' key requests by sentence key (`ledger.select` picks the one
training uses, among the key's records in ledger order, so ties fall as in the local build), then
the chosen readings with the paragraphs by chunk, each chunk formatted by `prepare.ChunkFormatter`
and written as one shard per task. Task distillation and export inputs are small and are built
by the launching process, as locally.

The workers read the inputs and the tokenizer at the paths given and write the shards under
the prepared root, so on a distributed runner all three are shared storage (gs://...): a local
root is built in `.FP.partial/` and renamed, a URL root in place with its manifest last.
"""
from __future__ import annotations

import json
import logging

from brd_jax.behaviors import ledger, spec
from brd_jax.corpus.paragraphs import iter_shard, paragraph_shards
from brd_jax.data import formatting, prepare
from brd_jax.data.config import DataConfig
from brd_jax.errors import UserError, optional_import
from brd_jax.io_utils import as_path, atomic_write_text, rmtree


def _import_beam():
  """Beam, imported without its root-logger warning about the GCP clients it can do without."""
  root, level = logging.getLogger(), logging.getLogger().level
  root.setLevel(logging.ERROR)
  try:
    return (optional_import("apache_beam", "beam", "brd train --beam"),
            optional_import("apache_beam.options.pipeline_options", "beam", "brd train --beam"))
  finally:
    root.setLevel(level)


beam, _options = _import_beam()
PipelineOptions, StandardOptions = _options.PipelineOptions, _options.StandardOptions

RESULTS = ".beam-chunks"  # a JSON file a chunk: its shards' counts (fsspec, not Beam's IO)


def build(cfg: DataConfig, tokenizer_spec: str, kd: bool, root, beam_args: list[str]):
  """The prepared directory of these inputs and settings (as `prepare.prepare` names it),
  built by a Beam pipeline with these pipeline options unless it exists already."""
  from brd_jax.checkpoints import resolve
  create_runner = optional_import("apache_beam.runners.runner", "beam", "--beam").create_runner
  runner = PipelineOptions(beam_args).view_as(StandardOptions).runner or "DirectRunner"
  try:
    create_runner(runner)
  except ValueError as e:
    raise UserError(f"--beam: {e}") from None
  return prepare.prepare(cfg, resolve.load_tokenizer(tokenizer_spec), kd, root, progress=False,
                         ledger_tasks=lambda b: _ledger_tasks(b, tokenizer_spec, beam_args),
                         built_by=f"beam:{runner}")


def _ledger_tasks(b: prepare.Builder, tokenizer_spec: str, beam_args: list[str]) -> None:
  """Runs the join-and-format pipeline and records its shards in the builder."""
  cfg = b.cfg
  manifest, context, declared, behaviors, tasks, b.k = prepare.ledger_plan(cfg, b.kd)
  pars = [str(p) for p in paragraph_shards(cfg.paragraphs_dir)]
  leds = [str(p) for p in ledger.shards(cfg.ledger_dir, required=True)] if cfg.ledger_dir else []
  for t in tasks:
    b.shards_of(t)  # the task directories, made here so that workers only write files
  results = as_path(b.out) / RESULTS
  opts = PipelineOptions(beam_args)
  per = cfg.shard_paragraphs
  with beam.Pipeline(options=opts) as p:
    files = p | "paragraph shards" >> beam.Create(list(enumerate(pars)))
    counts = beam.pvalue.AsList(files | "count" >> beam.Map(_count))
    paras = files | "number" >> beam.FlatMap(_numbered, counts, per)
    reqs = paras | "key requests" >> beam.ParDo(_Requests(manifest, behaviors, context))
    recs = (p | "ledger shards" >> beam.Create(list(enumerate(leds)))
            | "valid records" >> beam.FlatMap(_valid_records))
    readings = ({"recs": recs, "reqs": reqs} | "by key" >> beam.CoGroupByKey()
                | "select" >> beam.FlatMap(_choose, manifest))
    _ = ({"paras": paras, "readings": readings} | "by chunk" >> beam.CoGroupByKey()
         | "format and write" >> beam.ParDo(_WriteChunk(
             cfg, tokenizer_spec, b.kd, b.k, manifest, context, declared, tasks, str(b.out))))
  rows = sorted((r for f in (results.iterdir() if results.is_dir() else ())
                 for r in json.loads(f.read_text())), key=lambda r: (r["task"], r["chunk"]))
  rmtree(results)
  n_chunks = len({r["chunk"] for r in rows})
  if not rows:  # paragraph shards without paragraphs: one empty shard a task, as locally
    empty = formatting.Readings({}, context, declared)
    fmt = prepare.ChunkFormatter(cfg, b.tok, b.kd, b.k)
    for t in tasks:
      b.shards_of(t).write(0, fmt.chunk(t, [], empty))
  elif sorted({r["chunk"] for r in rows}) != list(range(n_chunks)):
    raise RuntimeError(f"the Beam build wrote chunks {sorted({r['chunk'] for r in rows})}")
  for r in rows:
    b.shards_of(r["task"]).add(r["chunk"], r["count"], r["kept"], r["cut"])


def _count(shard: tuple[int, str]) -> tuple[int, int]:
  return shard[0], sum(1 for _ in iter_shard(shard[1]))


def _numbered(shard: tuple[int, str], counts: list, per: int):
  """(chunk, (ordinal, paragraph)): the ordinal is the paragraph's place in shard order."""
  i, path = shard
  o = sum(n for j, n in counts if j < i)
  for k, par in enumerate(iter_shard(path)):
    yield (o + k) // per, (o + k, par)


def _valid_records(shard: tuple[int, str]):
  """(sentence_key, (shard, line, record)) of the valid records: the place orders ties."""
  i, path = shard
  for j, r in enumerate(ledger.read_shard(path)):
    if r.get("valid") is True:
      yield r["sentence_key"], (i, j, r)


def _choose(item, manifest: dict):
  """(chunk, (key, record)) for every chunk asking for a key with a usable record."""
  key, g = item
  chunks = sorted(set(g["reqs"]))
  if not chunks:
    return
  ordered = [r for _, _, r in sorted(g["recs"], key=lambda t: (t[0], t[1]))]
  chosen = ledger.select(ordered, manifest).get(key)
  if chosen is not None:
    for c in chunks:
      yield c, (key, chosen)


class _WithSpecs(beam.DoFn):
  """A DoFn whose worker knows the behaviours the ledger declares in files."""

  def __init__(self, manifest: dict):
    super().__init__()
    self.manifest = manifest

  def setup(self):
    spec.from_manifest(self.manifest)


class _Requests(_WithSpecs):
  """(sentence_key, chunk) of every key a paragraph's examples look up."""

  def __init__(self, manifest: dict, behaviors: tuple, context: int):
    super().__init__(manifest)
    self.behaviors, self.context = behaviors, context

  def process(self, item):
    c, (_, par) = item
    for b in self.behaviors:
      for key in formatting.reading_keys(par, b, self.context):
        yield key, c


class _WriteChunk(_WithSpecs):
  """A chunk's paragraphs and readings -> one shard a task, and a file of their counts."""

  def __init__(self, cfg, tokenizer_spec, kd, k, manifest, context, declared, tasks, out):
    super().__init__(manifest)
    self.cfg, self.tokenizer_spec, self.kd, self.k = cfg, tokenizer_spec, kd, k
    self.context, self.declared, self.tasks, self.out = context, declared, tasks, out

  def setup(self):
    from brd_jax.checkpoints import resolve
    super().setup()
    tok = resolve.load_tokenizer(self.tokenizer_spec)
    self.fmt = prepare.ChunkFormatter(self.cfg, tok, self.kd, self.k)

  def process(self, item):
    c, g = item
    paragraphs = [par for _, par in sorted(g["paras"], key=lambda t: t[0])]
    readings = formatting.Readings(dict(g["readings"]), self.context, self.declared)
    rows = []
    for t in self.tasks:
      records, kept, cut = self.fmt.chunk(t, paragraphs, readings)
      prepare.write_shard(as_path(self.out) / t / prepare.shard_name(c), records)
      rows.append({"task": t, "chunk": c, "count": len(records), "kept": kept, "cut": cut})
    atomic_write_text(as_path(self.out) / RESULTS / f"chunk-{c:05d}.json", json.dumps(rows))
