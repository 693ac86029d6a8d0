"""`brd train`'s entry point, `run(workdir, mesh)`: the training loop with exact resume, async
checkpoints, metrics and a loss plot (settings from gin `train.*`, `data.*`, `student.*`)."""
from __future__ import annotations

import hashlib
import logging
import pathlib
import shlex
import time

import gin
import jax
import numpy as np

from brd_jax import sharding
from brd_jax.checkpoints import orbax
from brd_jax.io_utils import (as_path, atomic_write_text, dir_fingerprint, is_url, local_copy,
                              rmtree, upload_dir)
from brd_jax.preemption import SigtermFlag
from brd_jax.errors import UserError
from brd_jax.models import build
from brd_jax.models.config import ModelConfig
from brd_jax.training import metrics as metrics_lib
from brd_jax.training import optim, student
from brd_jax.training import step as step_lib
from brd_jax.training.config import StudentConfig, TrainConfig

# Settings that fix the order of the data stream; resuming with other values would not continue
# the same stream, so it is refused.
_STREAM_KEYS = ("mixture", "seed", "seq_len", "pack", "level", "sep", "batch_size",
                "shard_paragraphs")
FEED = 1  # the input pipeline's version: prepared shards read by Grain


def example_ids(batch: dict) -> list[str]:
  """Content ids (sha1 of the target tokens) of every packed segment in a host batch."""
  out = []
  for tgt, seg in zip(batch["decoder_target_tokens"], batch["decoder_segment_ids"]):
    for s in np.unique(seg[seg > 0]):
      out.append(hashlib.sha1(tgt[seg == s].astype(np.int32).tobytes()).hexdigest()[:12])
  return out


def _any_host(flag: bool) -> bool:
  """True on every host when any host saw the flag (all must save the same step together)."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils
  return bool(np.asarray(multihost_utils.process_allgather(np.int32(flag))).any())


def _save_tokenizer(tok, workdir) -> None:
  out = workdir / "tokenizer"
  if jax.process_index() != 0:
    return
  if is_url(workdir):  # saved locally, uploaded file by file, then the marker (no rename there)
    if (out / ".complete").exists():
      return
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
      tok.save(pathlib.Path(tmp))
      upload_dir(pathlib.Path(tmp), out)
    atomic_write_text(out / ".complete", "")
    return
  if out.is_dir():
    return
  tmp = workdir / ".tokenizer.tmp"
  rmtree(tmp)
  tmp.mkdir(parents=True)
  tok.save(tmp)
  tmp.rename(out)


def _gather_text(text: str) -> list[str]:
  """Every host's string, in process order (each host's input position, for the checkpoint)."""
  if jax.process_count() == 1:
    return [text]
  from jax.experimental import multihost_utils
  raw = np.frombuffer(text.encode(), np.uint8)
  n = int(np.asarray(multihost_utils.process_allgather(np.int32(len(raw)))).max())
  padded = np.zeros(n, np.uint8)
  padded[:len(raw)] = raw
  rows = np.asarray(multihost_utils.process_allgather(padded))
  return [bytes(r).rstrip(b"\0").decode() for r in rows]


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def _resume(ck, workdir, stream: dict, tcfg: TrainConfig, mesh):
  """Restores the newest checkpoint that reads; None when there is none yet.

  A checkpoint that fails to read (truncated or missing files, broken metadata) is renamed to
  `<step>.unreadable` with a warning that names it, and the one before it is tried: a preempted
  run must not die on, nor silently restart from scratch past, a half-written newest save.
  Returns (step, state, model config, its metadata, (bind, tx, shardings), resume event).
  """
  set_aside = []
  for step in sorted(ck.all_steps(), reverse=True):
    try:
      meta = ck.meta(step)
    except (UserError, ValueError, OSError) as e:
      set_aside.append(_set_aside(ck, step, e))
      continue
    changed = {k: (meta["stream"].get(k), v) for k, v in stream.items()
               if meta["stream"].get(k) != v}
    if changed:
      what = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
      raise UserError(f"{workdir}: resuming needs the same data stream; changed since step "
                      f"{step}: {what}")
    cfg = ModelConfig.from_dict(meta["model"])
    abs_state, bind, tx, shardings = step_lib.abstract_train(cfg, tcfg, mesh)
    try:
      state, data_pos = ck.restore(step, abs_state)
    except Exception as e:  # pylint: disable=broad-except  # tensorstore raises many kinds
      set_aside.append(_set_aside(ck, step, e))
      continue
    if data_pos.get("batches_consumed") != step:
      raise UserError(f"{workdir}: checkpoint {step} has an inconsistent data position")
    logging.info("resumed from step %d (%s)", step, ck.dir / str(step))
    return step, state, cfg, meta, (bind, tx, shardings), {
        "event": "resume", "restored_step": step,
        "batches_consumed": data_pos["batches_consumed"],
        "tokens_seen": data_pos.get("tokens_seen"), "iterator": data_pos.get("iterator"),
        "set_aside": set_aside}
  if set_aside:
    raise UserError(f"{ck.dir}: no checkpoint could be read (set aside: {', '.join(set_aside)})")
  return None


def _set_aside(ck, step: int, err: Exception) -> str:
  bad = ck.dir / str(step)
  aside = ck.dir / f"{step}.unreadable"
  first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
  logging.warning("checkpoint %s is unreadable (%s); renamed to %s, trying the one before",
                  bad, first, aside.name)
  if jax.process_index() == 0:
    rmtree(aside)
    try:
      bad.rename(aside)
    except Exception as e:  # pylint: disable=broad-except  # e.g. a store that cannot rename
      raise UserError(f"checkpoint {bad} is unreadable ({first}) and could not be moved aside "
                      f"({e}); move or delete it, then rerun") from None
  _sync(f"set_aside_{step}")
  ck.reload()
  return str(bad)


def _export_fingerprint(export_dir) -> str:
  from brd_jax.data import exported
  return exported.read_info(export_dir)["fingerprint"]


def run(workdir, mesh, tcfg: TrainConfig | None = None, dcfg=None,
          scfg: StudentConfig | None = None, progress: bool = True) -> dict:
  """Trains (or resumes) in WORKDIR; returns a summary. Every setting comes from gin by default."""
  from brd_jax.data import tasks  # TF: only here
  tcfg, dcfg, scfg = tcfg or TrainConfig(), dcfg or tasks.DataConfig(), scfg or StudentConfig()
  tasks.check(dcfg)
  workdir = as_path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  ck = orbax.Checkpoints(workdir, tcfg.checkpoint_every, tcfg.keep_checkpoints,
                         tcfg.async_checkpoints, ocdbt=tcfg.checkpoint_ocdbt)
  stream = {**{k: getattr(dcfg, k) for k in _STREAM_KEYS if hasattr(dcfg, k)},
            "batch_size": tcfg.batch_size, "hosts": jax.process_count(),
            "kd": tcfg.kd_weight > 0, "feed": FEED,
            # the content of the data, not just its size: a resume must see the same examples
            "data": [dir_fingerprint(dcfg.paragraphs_dir or "-"),
                     dir_fingerprint(dcfg.ledger_dir or "-")]
            + ([_export_fingerprint(dcfg.export_dir)] if dcfg.export_dir else [])}
  resumed = _resume(ck, workdir, stream, tcfg, mesh)
  if resumed is None:
    model, cfg, tok, prov = student.init(scfg, mesh, tcfg.seed)
    _save_tokenizer(tok, workdir)
    # The state-building half (no weights, no data): what `brd plan` compiles against too.
    _, bind, tx, shardings = step_lib.abstract_train(cfg, tcfg, mesh)
    params, _ = build.functional(model)
    del model
    state = step_lib.init_state(tx, params, shardings, mesh)
    start, event, seen = 0, {"event": "start"}, 0
  else:
    start, state, cfg, old_meta, (bind, tx, shardings), event = resumed
    prov, seen = old_meta["provenance"], event["tokens_seen"]
    from brd_jax import tokenizer as tkz
    tok = tkz.from_dir(local_copy(workdir / "tokenizer"))
  if start >= tcfg.steps:
    ck.close()
    return {"steps": start, "resumed_from": start, "workdir": str(workdir),
            **_data_summary(old_meta["data"], seen)}

  reg = tasks.register(tok, dcfg, kd=tcfg.kd_weight > 0, workdir=workdir, progress=progress)
  meta = {"model": cfg.to_dict(), "provenance": prov, "stream": stream,
          "data": {"paragraphs_dir": dcfg.paragraphs_dir, "ledger_dir": dcfg.ledger_dir,
                   **({"export_dir": dcfg.export_dir} if dcfg.export_dir else {}),
                   "mixture": dcfg.mixture, "level": dcfg.level, "counts": reg.counts,
                   "rates": reg.rates, "tokens": reg.tokens},
          "tokenizer": "tokenizer", "gin": gin.config_str()}
  batches = tasks.dataset(reg, tcfg.batch_size, dcfg)
  if start:
    states = event.get("iterator")
    if states:  # where each host's stream stood: no replay, whatever the step
      batches.restore(states[jax.process_index()])
    else:
      batches.skip(start)
  step_fn = step_lib.make_train_step(bind, tx, tcfg, mesh, shardings)
  schedule = optim.schedule(tcfg)
  writer = metrics_lib.Writer(workdir, tcfg.tensorboard)
  writer.event(start, event)  # what a resume restored is on record, not only in a log line
  flops_tok = metrics_lib.flops_per_token(cfg, dcfg.seq_len)
  peak = metrics_lib.peak_flops(override=tcfg.peak_flops_per_device) * mesh.size

  from tqdm import tqdm
  bar = tqdm(total=tcfg.steps, initial=start, desc="train", unit="step",
             disable=not progress or jax.process_index() != 0, dynamic_ncols=True)
  first, t_last, step_last, s, stopping = True, time.perf_counter(), start, start, False
  pending = None
  with SigtermFlag() as stop:
    for s in range(start + 1, tcfg.steps + 1):
      try:
        local = step_lib.normalize_batch(next(batches))
      except StopIteration:
        raise UserError("the training data ran out (the mixture is empty?)") from None
      batch = {k: sharding.global_batch(v, mesh) for k, v in local.items()}
      state, m = step_fn(state, batch)
      # Summed on the device between fetches (so counting never waits for a step), and on the
      # host across them (float32 counts exactly to 2^24; a host int does not overflow).
      pending = m["tokens"] if pending is None else pending + m["tokens"]
      stopping = _any_host(stop.requested)
      saving = s % tcfg.checkpoint_every == 0 or s == tcfg.steps or stopping
      if s % tcfg.log_every == 0 or s == tcfg.steps or first or tcfg.log_example_ids or saving:
        m, got = jax.device_get((m, pending))  # waits for the step
        m, pending = {k: float(v) for k, v in m.items()}, None
        seen = None if seen is None else seen + int(round(float(got)))
        # A non-finite loss poisons the parameters for good: never save it, stop with the last
        # good checkpoint on disk. (Checked whenever the loss is fetched, and before every save.)
        if not (np.isfinite(m["loss"]) and np.isfinite(m["grad_norm"])):
          ck.wait()
          good = ck.latest_step()
          ck.close()
          writer.close()
          raise UserError(f"step {s}: the loss is {m['loss']} and the gradient norm "
                          f"{m['grad_norm']}; training stopped, the last good checkpoint is "
                          f"{f'step {good}' if good is not None else 'none'} in {ck.dir}")
        now = time.perf_counter()
        step_time = (now - t_last) / (s - step_last)
        # Packed batches hold nearly the same number of tokens every step.
        record = {**m, "learning_rate": float(schedule(s - 1)), "step_time_s": step_time,
                  "tokens_per_s": m["tokens"] / step_time,
                  "tokens_seen": seen}
        if first:
          record["includes_compile"] = True
        elif peak:
          record["mfu"] = record["tokens_per_s"] * flops_tok / peak
        if tcfg.log_example_ids:
          record["example_ids"] = example_ids(local)
        writer.write(s, record)
        bar.set_postfix(loss=f"{m['loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
        t_last, step_last, first = time.perf_counter(), s, False
      bar.update(1)
      if saving:
        # `saving` steps always fetch the metrics above, so tokens_seen is current here.
        ck.save(s, state, {"batches_consumed": s, "tokens_seen": record["tokens_seen"],
                           "iterator": _gather_text(batches.state())}, meta, force=True)
      if stopping:
        logging.warning("SIGTERM: saved step %d, exiting", s)
        break
  bar.close()
  batches.close()
  ck.wait()
  ck.close()
  writer.close()
  if jax.process_index() == 0:
    metrics_lib.plot(workdir)
  return {"steps": s, "workdir": str(workdir), "preempted": stopping,
          "resumed_from": start if event["event"] == "resume" else None,
          **_data_summary(meta["data"], seen)}


def prepare_only(workdir, tcfg: TrainConfig | None = None, dcfg=None,
                 scfg: StudentConfig | None = None, progress: bool = True,
                 beam: str | None = None) -> dict:
  """Builds (or finds) the prepared examples a `brd train` with these settings reads, without
  a model: the student's tokenizer is all it loads. beam: Apache Beam pipeline options; the
  build then runs on that runner (`data/prepare_beam.py`) and data.prepared_dir may be a URL."""
  from brd_jax.data import prepare, tasks
  tcfg, dcfg, scfg = tcfg or TrainConfig(), dcfg or tasks.DataConfig(), scfg or StudentConfig()
  tasks.check(dcfg)
  spec, tok = _student_tokenizer(scfg)
  kd = tcfg.kd_weight > 0
  if beam is not None:
    from brd_jax.data import prepare_beam
    url = dcfg.prepared_dir if dcfg.prepared_dir and is_url(dcfg.prepared_dir) else None
    out = prepare_beam.build(dcfg, spec, kd, url or prepare.prepared_root(dcfg, as_path(workdir)),
                             shlex.split(beam))
    if url:  # to be copied to (or mounted on) the hosts: train reads shards from a disk
      man = prepare.read_manifest(out)
      return {"prepared": str(out), "counts": {t: i["examples"] for t, i in man["tasks"].items()}}
  reg = tasks.register(tok, dcfg, kd=kd, workdir=as_path(workdir),
                       progress=progress)
  return {"prepared": str(reg.prepared), "counts": reg.counts, "rates": reg.rates}


def _student_tokenizer(scfg: StudentConfig):
  """(spec, tokenizer) of the tokenizer `student.init` ends with: the model's own, else
  student.tokenizer."""
  from brd_jax.checkpoints import resolve
  if scfg.init != "scratch":
    try:
      return scfg.init, resolve.load_tokenizer(scfg.init)
    except UserError:
      if not scfg.tokenizer:
        raise
  if not scfg.tokenizer:
    raise UserError("a scratch student needs student.tokenizer ('bytes' or a model spec)")
  return scfg.tokenizer, resolve.load_tokenizer(scfg.tokenizer)


def _data_summary(data: dict, tokens_seen: int | None) -> dict:
  """What a run trained on: the mixture, its unique text and how often it was seen."""
  tokens = data.get("tokens") or {}
  unique = sum(kept for kept, _ in tokens.values()) if tokens else None
  return {"mixture": data.get("mixture"), "level": data.get("level"),
          "examples": {t: data["counts"][t] for t in data.get("rates", {})},
          "unique_tokens": unique, "tokens_cut": sum(cut for _, cut in tokens.values()) or 0,
          "tokens_seen": tokens_seen,
          "epochs": tokens_seen / unique if tokens_seen is not None and unique else None}
