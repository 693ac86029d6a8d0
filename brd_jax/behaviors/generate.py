"""`run(cfg, paragraphs_dir, ledger_dir, mesh)`: the teacher reads every sentence, exactly once.

Units are built from the paragraphs (a sentence repeated anywhere is one unit), the committed
ledger says which are done, and this process takes the rest whose key hash falls to it. Rows
stream out of the engine as they finish and are committed in shards of `commit_every` records;
an invalid unit is tried again (a sampled retry) until `max_attempts`. A kill loses at most the
uncommitted records; a re-run, with any process count, does only what is not committed.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import time

from brd_jax import sharding, writer_lock
from brd_jax.behaviors import ledger, parse, spec, templates
from brd_jax.behaviors.config import GenerateConfig
from brd_jax.errors import UserError
from brd_jax.io_utils import as_path, atomic_write_text, content_digest
from brd_jax.preemption import SigtermFlag

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Unit:
  unit: str
  sentence_key: str
  behavior: str
  template: str
  text: str                 # the sentence (the paragraph for a paragraph-unit behaviour)
  context: str
  paragraph_id: str
  sentence_index: int
  attempt: int = 0


def teacher_fingerprint(loaded, chat_template: str | None, system: str | None) -> str:
  """Weights + tokenizer + the chat template actually used."""
  tok = loaded.tokenizer
  return content_digest(loaded.fingerprint, tok.fingerprint(), chat_template or tok.chat_template,
                        system)


def build_units(paragraphs, cfg: GenerateConfig, teacher: str) -> list[Unit]:
  """Every (sentence, behaviour) unit, once, in first-seen order."""
  chosen = templates.chosen(cfg.templates, cfg.behaviors)
  # per behaviour, what its keys need, settled once: a restart keys millions of units
  plans = [(b, tid, spec.get(b).unit == "paragraph", ledger.unit_keyer(tid, teacher, cfg.decode()))
           for b in cfg.behaviors for tid in (templates.get(chosen[b], b).id,)]
  c, min_words = cfg.context_sentences, cfg.min_sentence_words
  seen: dict[str, Unit] = {}
  for p in paragraphs:
    sents = p["sentences"]
    for b, tid, whole, unit_key in plans:
      items = [(-1, p.get("text") or " ".join(sents), "")] if whole else [
          (i, s, " ".join(sents[max(0, i - c):i]) if c else "") for i, s in enumerate(sents)]
      for i, text, ctx in items:
        if not whole and len(text.split(None, min_words)) < min_words:  # split no further
          continue
        sk = ledger.sentence_key(b, text, ctx)
        u = unit_key(sk)
        if u not in seen:
          seen[u] = Unit(u, sk, b, tid, text, ctx, p["id"], i)
  return list(seen.values())


def declarations(cfg: GenerateConfig) -> dict[str, str]:
  """behaviour -> its file's declaration (JSON), as the manifest keeps it."""
  return {b: spec.get(b).declared for b in cfg.behaviors}


def check_declarations(cfg: GenerateConfig, ledger_dir) -> None:
  """A behaviour file edited without a new version would file new readings under the old
  template ids (so the old unit keys): refused, before any teacher call."""
  old = (ledger.read_manifest(ledger_dir) or {}).get("behavior_specs") or {}
  for b, declared in declarations(cfg).items():
    if b in old and old[b] != declared and \
        json.loads(old[b]).get("version") == spec.get(b).version:
      raise UserError(f"behaviour {b} version {spec.get(b).version} differs from the one ledger "
                      f"{ledger_dir} was generated with; give the changed file a new version")


def ledger_state(ledger_dir) -> dict[str, tuple[int, bool]]:
  """unit -> (attempts committed, any valid)."""
  state: dict[str, tuple[int, bool]] = {}
  if not as_path(ledger_dir).is_dir():
    return state
  for cols in ledger.index_columns(ledger_dir):  # by column: a restart reads millions
    for unit, attempt, valid in zip(cols["unit"], cols["attempt"], cols["valid"]):
      n, ok = state.get(unit, (0, False))
      state[unit] = (max(n, attempt + 1), ok or valid is True)
  return state


def teacher_overrides(cfg: GenerateConfig) -> dict | None:
  """The teacher's dtype as configured (part of its fingerprint, so of every unit key)."""
  return {"dtype": cfg.dtype, "param_dtype": cfg.dtype} if cfg.dtype else None


def _share(unit: str, n: int) -> int:
  return int(unit[:8], 16) % n


def processes(cfg: GenerateConfig) -> tuple[int, int]:
  return sharding.process_share(cfg.num_processes, cfg.process_index, "generate")


def run(cfg: GenerateConfig, paragraphs_dir, ledger_dir, mesh=None, progress: bool = True,
        loaded=None) -> dict:
  """Generates this process's share of the missing units; returns a summary."""
  from brd_jax.corpus.paragraphs import read_paragraphs
  paragraphs = list(read_paragraphs(paragraphs_dir))
  n_proc, proc = processes(cfg)
  # One writer per (ledger, process index), before the teacher loads: a duplicate run fails fast.
  with writer_lock.hold(ledger_dir, proc, "generate"):
    check_declarations(cfg, ledger_dir)
    return _run(cfg, paragraphs, ledger_dir, mesh, progress, loaded, n_proc, proc)


def _run(cfg, paragraphs, ledger_dir, mesh, progress, loaded, n_proc, proc) -> dict:
  if loaded is None:
    if not cfg.teacher:
      raise UserError("no teacher: give --teacher SPEC (generate.teacher)")
    from brd_jax.checkpoints import resolve
    loaded = resolve.load(cfg.teacher, sharding.multi_device(mesh),
                          teacher_overrides(cfg))
  if loaded.tokenizer is None:
    raise UserError(f"teacher {cfg.teacher} has no tokenizer")
  from brd_jax.inference import chat
  chat_template, system = chat.template()
  teacher = teacher_fingerprint(loaded, chat_template, system)
  units = build_units(paragraphs, cfg, teacher)
  state = ledger_state(ledger_dir)
  todo = []
  for u in units:
    attempts, ok = state.get(u.unit, (0, False))
    if not ok and attempts < cfg.max_attempts and _share(u.unit, n_proc) == proc:
      u.attempt = attempts
      todo.append(u)
  if cfg.limit:
    todo = todo[:cfg.limit]
  stats = _generate(cfg, loaded, mesh, todo, ledger_dir, proc, teacher, chat_template, system,
                    progress)
  manifest = write_manifest(ledger_dir, cfg, teacher, units, stats,
                            loaded.tokenizer.fingerprint())
  return {"units": len(units), "this_run": stats["rows"], "valid_this_run": stats["valid"],
          "done": manifest["done"], "remaining": manifest["remaining"],
          "tokens_per_s": stats["tokens_per_s"], "stopped": stats["stopped"],
          "ledger": str(ledger_dir)}


def _sampling(cfg: GenerateConfig, attempt: int):
  from brd_jax.inference.sampling import Sampling
  if attempt > 0 and cfg.temperature == 0.0:
    return Sampling(cfg.retry_temperature, cfg.top_k, cfg.top_p)
  return Sampling(cfg.temperature, cfg.top_k, cfg.top_p)


def speculate_k(cfg: GenerateConfig, backend: str | None = None) -> int:
  """Draft tokens per verify step: as configured, or by backend (see GenerateConfig.speculate);
  `backend` defaults to JAX's (`brd plan` passes its target's)."""
  if cfg.speculate >= 0:
    return cfg.speculate
  if backend is None:
    import jax
    backend = jax.default_backend()
  return 0 if backend == "cpu" or cfg.batch_size > 64 else 4


def make_engine(cfg: GenerateConfig, loaded, mesh):
  """The teacher's engine: decode slots, shared-prefix cache and speculation as configured."""
  from brd_jax.inference.slots import SlotEngine
  return SlotEngine(loaded.model, loaded.tokenizer, sharding.multi_device(mesh),
                    max_batch=cfg.batch_size, continuous=cfg.continuous_batching,
                    prefix_cache=cfg.prefix_cache, speculate_k=speculate_k(cfg))


def unit_prompts(tok, units: list[Unit], chat_template, system) -> list[str]:
  return [templates.get(u.template).prompt(tok, u.text, u.context, chat_template, system)
          for u in units]


def _generate(cfg, loaded, mesh, todo: list[Unit], ledger_dir, proc, teacher, chat_template,
              system, progress) -> dict:
  from tqdm import tqdm
  tok = loaded.tokenizer
  engine = make_engine(cfg, loaded, mesh)
  writer = ledger.Writer(ledger_dir, proc)
  window = 64 * cfg.batch_size
  stats = collections.Counter()
  t0 = time.perf_counter()
  bar = tqdm(total=len(todo), desc="generate", unit="unit", disable=not progress,
             dynamic_ncols=True)
  with SigtermFlag() as stop:
    queue = todo
    while queue and not stop.requested:
      retry: list[Unit] = []
      # One stream per template: its prompts share the few-shot preamble (the prefix cache).
      streams = collections.defaultdict(list)
      for u in queue:
        streams[(_sampling(cfg, u.attempt), u.template)].append(u)
      for (sampling_, _), group in streams.items():
        # Prompts are built a window at a time: a process's share can be millions of units.
        for w in range(0, len(group), window):
          for u, g, n_prompt in _stream_window(engine, tok, group[w:w + window], sampling_, cfg,
                                               chat_template, system):
            rec = _record(u, g, sampling_, cfg, teacher, proc, n_prompt)
            writer.add(rec)
            stats["rows"] += 1
            stats["valid"] += rec["valid"]
            stats["tokens"] += rec["n_tokens"]
            stats["prompt_tokens"] += n_prompt
            if not rec["valid"] and u.attempt + 1 < cfg.max_attempts:
              retry.append(dataclasses.replace(u, attempt=u.attempt + 1))
            else:
              bar.update(1)
            if len(writer.buffer) >= cfg.commit_every:
              writer.commit()
            dt = max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(sent_per_s=f"{stats['rows'] / dt:.2f}",
                            tok_per_s=f"{stats['tokens'] / dt:.1f}",
                            valid=f"{100 * stats['valid'] / stats['rows']:.0f}%")
            if stop.requested:
              break
          if stop.requested:
            break
        if stop.requested:
          break
      writer.commit()
      queue = retry
    writer.commit()
  bar.close()
  dt = max(time.perf_counter() - t0, 1e-9)
  return {"rows": stats["rows"], "valid": stats["valid"], "tokens": stats["tokens"],
          "prompt_tokens": stats["prompt_tokens"], "seconds": round(dt, 2),
          "tokens_per_s": round(stats["tokens"] / dt, 2),
          "units_per_s": round(stats["rows"] / dt, 3), "stopped": stop.requested}


def _stream_window(engine, tok, units: list[Unit], sampling_, cfg, chat_template, system):
  """(unit, Generation, prompt tokens) for each unit, in the order rows finish."""
  import jax
  prompts = [tok.encode(p) for p in unit_prompts(tok, units, chat_template, system)]
  keys = jax.numpy.stack([jax.random.key(ledger.seed_of(ledger.record_key(u.unit, u.attempt))
                                         ^ cfg.seed) for u in units])
  for i, g in engine.stream(prompts, cfg.max_new_tokens, sampling_, keys=keys, stop=cfg.stop,
                            top_logprobs=cfg.topk):
    yield units[i], g, len(prompts[i])


def _record(u: Unit, g, sampling_, cfg, teacher, proc, prompt_tokens) -> dict:
  parsed, error = parse.parse(u.behavior, g.text or "", u.text, g.finish_reason)
  rec = {"key": ledger.record_key(u.unit, u.attempt), "unit": u.unit,
         "sentence_key": u.sentence_key, "attempt": u.attempt, "paragraph_id": u.paragraph_id,
         "sentence_index": u.sentence_index, "behavior": u.behavior, "template": u.template,
         "teacher": teacher, "sentence": u.text, "context": u.context,
         "decode": {**cfg.decode(), "temperature": sampling_.temperature},
         "text": g.text, "finish_reason": g.finish_reason, "n_tokens": len(g.tokens),
         "prompt_tokens": prompt_tokens, "parsed": parsed, "valid": error is None,
         "error": error, "process": proc}
  if cfg.topk:
    rec["tokens"] = ledger.pack_tokens(g.tokens)
    rec["topk"] = ledger.pack_topk(g.top_logprobs or [])
  return rec


def write_manifest(ledger_dir, cfg: GenerateConfig, teacher: str, units: list[Unit],
                   stats: dict, tokenizer: str) -> dict:
  """Counts over the whole committed ledger (every process's shards) for this configuration."""
  wanted = {u.unit: u.behavior for u in units}
  per = {b: collections.Counter() for b in cfg.behaviors}
  done = set()
  for r in ledger.read_index(ledger_dir):
    b = wanted.get(r["unit"])
    if b is None:
      continue
    c = per[b]
    c["records"] += 1
    if r["valid"] is True:
      if r["unit"] not in done:
        c["valid_units"] += 1
      done.add(r["unit"])
    else:
      c[f"error:{r.get('error')}"] += 1
      if r["attempt"] + 1 >= cfg.max_attempts:
        done.add(r["unit"])
    c["tokens"] += r.get("n_tokens") or 0
  totals = collections.Counter(u.behavior for u in units)
  chosen = templates.chosen(cfg.templates, cfg.behaviors)
  manifest = {
      "teacher": teacher, "teacher_spec": cfg.teacher, "tokenizer": tokenizer,
      "templates": {b: chosen[b] for b in cfg.behaviors}, "decode": cfg.decode(),
      # every behaviour this ledger holds readings of (earlier runs' too): training renders them
      "behavior_specs": {**((ledger.read_manifest(ledger_dir) or {}).get("behavior_specs") or {}),
                         **declarations(cfg)},
      "max_attempts": cfg.max_attempts, "topk": cfg.topk,
      "context_sentences": cfg.context_sentences,
      "units": len(units), "done": len(done), "remaining": len(units) - len(done),
      "behaviors": {b: {"units": totals[b], **dict(per[b]),
                        "keep_rate": round(per[b]["valid_units"] / totals[b], 4)
                        if totals[b] else None} for b in cfg.behaviors},
      "last_run": stats,
  }
  if cfg.topk:  # 4-byte id + 2-byte logprob per entry, base64 (4/3), plus the 4-byte token id
    manifest["topk_bytes_per_token"] = round((cfg.topk * 6 + 4) * 4 / 3, 1)
  atomic_write_text(as_path(ledger_dir) / "manifest.json", json.dumps(manifest, indent=1))
  return manifest
