"""`brd export`: `paragraphs/` + `ledger/` -> the BRD dataset as Parquet, with a dataset card.

OUT/readings/part-*.parquet   every ledger record (valid or not): keys, sentence, behaviour,
                              template, teacher text, parsed entities / questions, valid, error
OUT/texts/<task>/part-*.parquet   the training texts of each task (id, text), in training order
OUT/README.md                 the card: YAML header (HF `configs`, teacher, templates, decoding,
                              counts and keep rates, corpus manifest, licence left empty)
OUT/export.json               what was exported from what (fingerprints, data.sep / data.level)

`datasets.load_dataset("parquet", data_files="OUT/readings/*.parquet")` reads it, and
`data.export_dir = 'OUT'` trains from it exactly as from the ledger (same examples, same order).
"""
from __future__ import annotations

import json
import pathlib

from brd_jax.behaviors import ledger as ledger_lib
from brd_jax.corpus.paragraphs import MANIFEST
from brd_jax.data.config import DataConfig
from brd_jax.data.exported import INFO, TEXT_TASKS
from brd_jax.errors import UserError
from brd_jax.io_utils import as_path, atomic_write_text, content_digest, dir_fingerprint, rmtree

VERSION = 1
ROWS_PER_PART = 100_000
# ledger fields stored as their own columns; any other field goes to `extra_json`
_COLUMNS = ("key", "unit", "sentence_key", "attempt", "paragraph_id", "sentence_index", "behavior",
            "template", "teacher", "sentence", "context", "text", "finish_reason", "n_tokens",
            "prompt_tokens", "valid", "error", "process")


def _schema():
  import pyarrow as pa
  s, i = pa.string(), pa.int64()
  return pa.schema([
      ("key", s), ("unit", s), ("sentence_key", s), ("attempt", i), ("paragraph_id", s),
      ("sentence_index", i), ("behavior", s), ("template", s), ("teacher", s), ("sentence", s),
      ("context", s), ("teacher_text", s), ("finish_reason", s), ("n_tokens", i),
      ("prompt_tokens", i), ("valid", pa.bool_()), ("error", s), ("process", i),
      ("selected", pa.bool_()),  # the record training uses for its sentence (`ledger.select`)
      ("entities", pa.list_(pa.struct([("entity", s), ("type", s), ("description", s)]))),
      ("qa", pa.list_(pa.struct([("question", s), ("answer", s)]))),
      ("parsed_json", s), ("decode_json", s), ("extra_json", s)])


def _row(rec: dict, selected: bool) -> dict:
  parsed, behavior = rec.get("parsed"), rec.get("behavior")
  row = {k: rec.get(k) for k in _COLUMNS if k != "text"}
  extra = {k: v for k, v in rec.items() if k not in _COLUMNS and k not in ("parsed", "decode")}
  return {**row, "teacher_text": rec.get("text"), "selected": selected,
          "entities": parsed if behavior == "ner" and isinstance(parsed, list) else None,
          "qa": parsed if behavior == "qra" and isinstance(parsed, list) else None,
          "parsed_json": json.dumps(parsed, ensure_ascii=False),
          "decode_json": json.dumps(rec.get("decode"), ensure_ascii=False),
          "extra_json": json.dumps(extra, ensure_ascii=False) if extra else None}


def record_of(row: dict) -> dict:
  """The ledger record an exported row came from (the inverse of the export)."""
  rec = {k: row[k] for k in _COLUMNS if k != "text"}
  rec["text"] = row["teacher_text"]
  rec["parsed"] = json.loads(row["parsed_json"])
  rec["decode"] = json.loads(row["decode_json"])
  rec.update(json.loads(row["extra_json"]) if row.get("extra_json") else {})
  return rec


class _Parts:
  """Writes rows as numbered Parquet parts of ROWS_PER_PART rows each."""

  def __init__(self, d: pathlib.Path, schema):
    self.dir, self.schema, self.rows, self.n, self.parts = d, schema, [], 0, 0
    d.mkdir(parents=True, exist_ok=True)

  def add(self, row: dict) -> None:
    self.rows.append(row)
    if len(self.rows) >= ROWS_PER_PART:
      self.flush()

  def flush(self) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    if not self.rows and self.parts:
      return
    pq.write_table(pa.Table.from_pylist(self.rows, schema=self.schema),
                   str(self.dir / f"part-{self.parts:05d}.parquet"))
    self.n += len(self.rows)
    self.rows, self.parts = [], self.parts + 1


def _texts_schema():
  import pyarrow as pa
  return pa.schema([("id", pa.string()), ("text", pa.string())])


def _card(info: dict) -> str:
  """README.md: YAML header (JSON values are YAML too) and a short human part."""
  configs = [{"config_name": "readings", "data_files": "readings/*.parquet"}] + [
      {"config_name": t, "data_files": f"texts/{t}/*.parquet"} for t in info["texts"]]
  gen = info["generation"]
  head = {
      "configs": configs,
      "license": "",  # left for the user: the corpus's and the teacher's terms decide it
      "language": ["en"],
      "task_categories": ["text-generation"],
      "brd": {k: info[k] for k in ("version", "fingerprint", "sep", "level")} | {
          "teacher": gen.get("teacher_spec"), "teacher_fingerprint": gen.get("teacher"),
          "tokenizer_fingerprint": gen.get("tokenizer"), "templates": gen.get("templates"),
          "decoding": gen.get("decode"), "max_attempts": gen.get("max_attempts"),
          "context_sentences": gen.get("context_sentences", 0), "topk": gen.get("topk", 0),
          "records": info["records"], "counts": info["counts"],
          "keep_rates": {b: v.get("keep_rate") for b, v in gen.get("behaviors", {}).items()},
          "behaviors": gen.get("behaviors"), "corpus": info["corpus"]}}
  lines = ["---"] + [f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in head.items()] + [
      "---", "", "# BRD dataset (Basic Reading Distillation, arXiv 2507.19741)", "",
      f"The teacher `{gen.get('teacher_spec')}` read every sentence of "
      f"{info['corpus'].get('paragraphs', '?')} paragraphs sentence by sentence "
      f"({', '.join(gen.get('templates', {}).values())}).", "",
      "- `readings`: one row per teacher output, valid or not (`valid`, `error`); `selected` "
      "marks the reading training uses for its sentence; `entities` / `qa` are the parsed "
      "readings; `parsed_json`, `decode_json` and `extra_json` keep the rest of each ledger record.",
      f"- `texts/<task>`: the training texts (`id`, `text`) of each task, data.level = "
      f"{info['level']!r}, data.sep = {info['sep']!r}.", "",
      "| behaviour | units | records | valid units | keep rate |", "|---|---|---|---|---|"]
  for b, v in gen.get("behaviors", {}).items():
    lines.append(f"| {b} | {v.get('units')} | {v.get('records')} | {v.get('valid_units')} | "
                 f"{v.get('keep_rate')} |")
  lines += ["", "| task | examples |", "|---|---|"] + [
      f"| {t} | {n} |" for t, n in info["counts"].items()] + [
      "", "Licence: not set. The corpus's licence and the teacher's terms of use decide it; "
      "fill in `license` above before sharing.", ""]
  return "\n".join(lines)


def run(cfg: DataConfig, out_dir, progress: bool = True) -> dict:
  """Writes the export to OUT (replacing an earlier export there); returns its export.json."""
  from tqdm import tqdm
  from brd_jax.data import tasks
  if not cfg.ledger_dir:
    raise UserError("brd export needs a ledger (--ledger_dir DIR or data.ledger_dir)")
  tasks.check(cfg)
  out = as_path(out_dir)
  if out.exists() and any(out.iterdir()) and not (out / INFO).exists():
    raise UserError(f"{out} exists and is not a brd export; name a new or empty directory")
  fp = content_digest("export", VERSION, dir_fingerprint(cfg.paragraphs_dir),
                      dir_fingerprint(cfg.ledger_dir), dir_fingerprint(cfg.task_distill_dir or "-"),
                      cfg.sep, cfg.level)
  if (out / INFO).exists():
    old = json.loads((out / INFO).read_text())
    if old.get("fingerprint") == fp:
      return old
  tmp = out.parent / f".{out.name}.tmp"
  rmtree(tmp)
  manifest = ledger_lib.read_manifest(cfg.ledger_dir) or {}
  chosen_keys = {r["key"] for r in ledger_lib.select(ledger_lib.read(cfg.ledger_dir),
                                                     manifest).values()}
  parts = _Parts(tmp / "readings", _schema())
  for rec in tqdm(ledger_lib.read(cfg.ledger_dir), desc="readings", unit="rec",
                  disable=not progress):
    parts.add(_row(rec, rec["key"] in chosen_keys))
  parts.flush()
  by_task = tasks.examples_by_task(cfg)
  counts = {}
  for t in by_task:  # the built-in tasks and one per behaviour declared in a file
    if t == "brd_tdist" and not cfg.task_distill_dir:
      continue
    tp = _Parts(tmp / "texts" / t, _texts_schema())
    for e in by_task[t]:
      tp.add({"id": e["id"], "text": e["text"]})
    tp.flush()
    counts[t] = tp.n
  try:
    corpus = json.loads((as_path(cfg.paragraphs_dir) / MANIFEST).read_text())
  except (OSError, ValueError):
    corpus = {}
  corpus = {k: corpus[k] for k in ("fingerprint", "version", "inputs", "counts", "paragraphs")
            if k in corpus}
  corpus.setdefault("paragraphs", counts["brd_ori"])  # D_ORI: one example per paragraph
  info = {"version": VERSION, "fingerprint": fp, "sep": cfg.sep, "level": cfg.level,
          "paragraphs_dir": str(cfg.paragraphs_dir), "ledger_dir": str(cfg.ledger_dir),
          "records": parts.n, "texts": list(counts), "counts": counts, "corpus": corpus,
          "generation": {k: v for k, v in manifest.items() if k != "last_run"}}
  atomic_write_text(tmp / "README.md", _card(info))
  atomic_write_text(tmp / INFO, json.dumps(info, indent=1, ensure_ascii=False) + "\n")
  rmtree(out)  # an earlier export of other inputs: the new one replaces it whole
  tmp.rename(out)
  return info
