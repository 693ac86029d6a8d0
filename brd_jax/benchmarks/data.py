"""`brd bench data --readings N`: the training input at scale, on a synthetic corpus and ledger in
the project's own formats (5 sentences a paragraph, an NER and a QRA reading of each: N / 10
paragraphs; records of ~900 bytes, ~2.5 KB with top-k).

Measured, each in a fresh process so peak RSS is its own: preparation (`data/prepare.py`), then
as host 0 of `--hosts` (8): time to the first batch, peak RSS, input tokens/s over `--batches`
batches of 16 x 1024, and resume (a new iterator restored from the state saved at step 10 and at
the last step, to its first batch), with and without KD top-k; and `brd generate`'s restart
(build the units, read which are done) with the ledger's key indexes and without them. The peer is seqio's own cache
format read as seqio reads it: the same examples as TFRecord files of tf.Example, file-sharded
by host, shuffled through a buffer, packed by seqio and batched by tf.data; its resume is
`skip()` (tf.data has no saved position without its shuffle buffer).
"""
from __future__ import annotations

import json
import pathlib
import random
import subprocess
import sys
import tempfile
import time

from brd_jax.benchmarks import report

WORDS = ("river city market museum harbour library tower garden council railway festival school "
         "century winter summer northern southern bridge island valley mountain church castle "
         "village report season station company history founded built opened named after the of "
         "in and was is by for with on at from its first largest old new").split()
NAMES = ("Paris Lima Oslo Cairo Quito Hanoi Perth Accra Dakar Riga Turin Leeds Porto Kyoto "
         "Mosul Tartu Ghent Split Basel Cork").split()
SEQ_LEN, ROWS, K = 1024, 16, 4


def _sentence(rng) -> str:
  w = [rng.choice(WORDS) for _ in range(rng.randint(14, 26))]
  w[rng.randrange(len(w))] = rng.choice(NAMES)
  return " ".join(w).capitalize() + "."


def make(root: pathlib.Path, readings: int, kd: bool, tokenizer_fp: str = "", seed: int = 0):
  """root/paragraphs and root/ledger with `readings` valid readings (a ledger written by the
  tokenizer of fingerprint `tokenizer_fp`, for KD); returns both dirs."""
  from brd_jax.behaviors import ledger, templates
  from brd_jax.behaviors.config import GenerateConfig
  from brd_jax.corpus.paragraphs import ShardWriter
  import numpy as np
  rng = random.Random(seed)
  gcfg = GenerateConfig()  # records keyed as `brd generate` keys them: a restart finds them done
  chosen, decode = templates.chosen(gcfg.templates, ("ner", "qra")), gcfg.decode()
  pars, led = root / "paragraphs", root / "ledger"
  pars.mkdir(parents=True)
  pw = ShardWriter(pars, 10_000)
  lw = ledger.Writer(led, 0)
  manifest = {"context_sentences": 0, "topk": K if kd else 0, "tokenizer": tokenizer_fp}
  for i in range(readings // 10):
    sents = [_sentence(rng) for _ in range(5)]
    pid = f"p{i:08d}"
    pw.add({"id": pid, "doc_id": f"d{i // 5}", "text": " ".join(sents), "sentences": sents})
    for j, s in enumerate(sents):
      for b in ("ner", "qra"):
        if b == "ner":
          parsed = [{"entity": n, "type": "location", "description": f"a {rng.choice(WORDS)} "
                     f"of {rng.choice(WORDS)}"} for n in rng.sample(NAMES, 2)]
        else:
          parsed = [{"question": f"What was {rng.choice(WORDS)} {rng.choice(NAMES)}?",
                     "answer": f"The {rng.choice(WORDS)} {rng.choice(WORDS)}."}
                    for _ in range(2)]
        text = json.dumps(parsed)
        sk = ledger.sentence_key(b, s)
        tid = templates.get(chosen[b], b).id
        unit = ledger.unit_key(sk, tid, "teacher", decode)
        rec = {"key": ledger.record_key(unit, 0), "unit": unit, "sentence_key": sk,
               "attempt": 0, "paragraph_id": pid, "sentence_index": j, "behavior": b,
               "template": tid, "teacher": "teacher", "sentence": s, "context": "",
               "text": text, "parsed": parsed, "valid": True, "error": None,
               "n_tokens": 0, "prompt_tokens": 180}
        if kd:
          toks = [rng.randrange(300, 40000) for _ in range(len(text) // 4)]
          lps = np.sort(-np.abs(np.asarray([[rng.gauss(0, 3) for _ in range(K)]
                                            for _ in toks])), axis=1)[:, ::-1]
          rec.update(n_tokens=len(toks), tokens=ledger.pack_tokens(toks), topk=ledger.pack_topk(
              [[(t if c == 0 else t + c, float(lps[r, c])) for c in range(K)]
               for r, t in enumerate(toks)]))
        lw.add(rec)
    if len(lw.buffer) >= 20_000:
      lw.commit()
  pw.flush()
  lw.commit()
  (led / "manifest.json").write_text(json.dumps(manifest))
  return pars, led


_CHILD = r"""
import json, resource, sys, time, itertools
o = json.loads(sys.argv[1])
t0 = time.perf_counter()
from brd_jax.benchmarks import data as bench
print("RESULT", json.dumps({**bench.child(o, t0),
      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _in_child(o: dict) -> dict:
  import os
  # host-side work only: no accelerator is initialised (libtpu would probe for a TPU)
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  p = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(o)], capture_output=True,
                     text=True, env=env)
  if p.returncode:
    raise RuntimeError(f"bench data child failed: {p.stderr[-3000:]}")
  return json.loads(next(l for l in p.stdout.splitlines() if l.startswith("RESULT"))[7:])


def _cfg(o: dict):
  from brd_jax.data.config import DataConfig
  return DataConfig(paragraphs_dir=o["pars"], ledger_dir=o["led"], prepared_dir=o["prep"],
                    seq_len=SEQ_LEN, mixture="brd_mix", seed=0)


def child(o: dict, t0: float) -> dict:
  """One measurement, in its own process (see `_CHILD`)."""
  import itertools
  import numpy as np
  from brd_jax import tokenizer
  from brd_jax.data import prepare, tasks
  from brd_jax.data.feed import Feed
  tok = tokenizer.from_dir(o["tokenizer"])  # as a resumed `brd train` loads WORKDIR/tokenizer
  cfg = _cfg(o)
  if o["what"] == "prepare":
    t = time.perf_counter()
    d = prepare.prepare(cfg, tok, o["kd"], pathlib.Path(o["prep"]), progress=False)
    return {"seconds": time.perf_counter() - t, "dir": str(d),
            "tasks": prepare.read_manifest(d)["tasks"]}
  if o["what"] == "restart":
    return _generate_restart(o)
  if o["what"] == "peer_write":
    return _peer_write(pathlib.Path(o["dir"]), pathlib.Path(o["peer"]))
  if o["what"] == "peer_read":
    return _peer_read(pathlib.Path(o["peer"]), o)
  reg = tasks.register(tok, cfg, kd=o["kd"])
  feed = Feed(reg.prepared, reg.manifest, reg.rates, ROWS * o["hosts"], cfg, tok.bos_id or 0,
              0, o["hosts"])
  if o["what"] == "resume":
    feed.restore(o["state"])
    next(feed)
    return {"seconds": time.perf_counter() - t0}
  first = next(feed)
  out = {"first_batch_s": time.perf_counter() - t0}
  tokens, states, t = int((first["decoder_target_tokens"] != 0).sum()), {}, time.perf_counter()
  for i, b in enumerate(itertools.islice(feed, o["batches"] - 1), 2):
    tokens += int(np.count_nonzero(b["decoder_target_tokens"]))
    if i in (10, o["batches"]):
      states[i] = feed.state()
  out.update(tokens_per_s=tokens / (time.perf_counter() - t + 1e-9), states=states,
             fill=tokens / (o["batches"] * ROWS * SEQ_LEN))
  return out


def _generate_restart(o: dict) -> dict:
  """What `brd generate` does before its teacher's first batch on a restart: build the units,
  read which are done."""
  from brd_jax.behaviors import generate
  from brd_jax.behaviors.config import GenerateConfig
  from brd_jax.corpus.paragraphs import read_paragraphs
  t = time.perf_counter()
  units = generate.build_units(read_paragraphs(o["pars"]), GenerateConfig(), "teacher")
  state = generate.ledger_state(o["led"])
  remaining = sum(not state.get(u.unit, (0, False))[1] for u in units)
  return {"seconds": time.perf_counter() - t, "units": len(units), "remaining": remaining}


def _peer_write(prepared: pathlib.Path, out: pathlib.Path) -> dict:
  """The prepared examples as seqio's cache stores them: TFRecord files of tf.Example."""
  from brd_jax.data._tf import tf
  from brd_jax.data.prepare import read_manifest, read_shard
  t = time.perf_counter()
  m = read_manifest(prepared)
  for task, info in m["tasks"].items():
    (out / task).mkdir(parents=True, exist_ok=True)
    for f in info["shards"]:
      with tf.io.TFRecordWriter(str(out / task / (f + ".tfrecord"))) as w:
        for ex in read_shard(prepared / task / f):
          w.write(tf.train.Example(features=tf.train.Features(feature={"targets": tf.train.Feature(
              int64_list=tf.train.Int64List(value=ex["targets"]))})).SerializeToString())
  (out / "counts.json").write_text(json.dumps({t: i["examples"] for t, i in m["tasks"].items()}))
  return {"seconds": time.perf_counter() - t}


def _peer_dataset(peer: pathlib.Path, o: dict):
  from brd_jax.data._tf import seqio, tf
  counts = json.loads((peer / "counts.json").read_text())
  parts, rates = [], []
  for task, n in sorted(counts.items()):
    if not n:
      continue
    files = sorted(str(p) for p in (peer / task).glob("*.tfrecord"))
    ds = tf.data.Dataset.from_tensor_slices(files)
    ds = ds.shard(o["hosts"], 0) if len(files) >= o["hosts"] else ds
    ds = ds.shuffle(len(files), seed=0).interleave(tf.data.TFRecordDataset, cycle_length=4)
    if len(files) < o["hosts"]:
      ds = ds.shard(o["hosts"], 0)
    ds = ds.map(lambda r: tf.io.parse_single_example(
        r, {"targets": tf.io.VarLenFeature(tf.int64)}), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(lambda x: {"targets": tf.cast(tf.sparse.to_dense(x["targets"]), tf.int32)})
    parts.append(ds.repeat().shuffle(10_000, seed=0))
    rates.append(float(n))
  ds = tf.data.Dataset.sample_from_datasets(parts, [r / sum(rates) for r in rates], seed=0)
  ds = seqio.utils.trim_and_pack_dataset(ds, {"targets": SEQ_LEN})
  return ds.batch(ROWS, drop_remainder=True).prefetch(2)


def _peer_read(peer: pathlib.Path, o: dict) -> dict:
  import numpy as np
  t0 = time.perf_counter()
  it = _peer_dataset(peer, o).skip(o.get("skip", 0)).as_numpy_iterator()
  first = next(it)
  out = {"first_batch_s": time.perf_counter() - t0}
  if o.get("skip"):
    return out
  tokens, t = int(np.count_nonzero(first["targets"])), time.perf_counter()
  for b in __import__("itertools").islice(it, o["batches"] - 1):
    tokens += int(np.count_nonzero(b["targets"]))
  out["tokens_per_s"] = tokens / (time.perf_counter() - t)
  return out


def run(readings: int = 100_000, hosts: int = 8, batches: int = 2000, model: str = "",
        json_path: str | None = None, keep: str | None = None) -> dict:
  model = model or "asset:smollm2-135m-instruct"
  extra: dict = {"readings": readings, "hosts": hosts, "batch": [ROWS, SEQ_LEN]}
  rows = []
  from brd_jax.checkpoints import resolve
  with tempfile.TemporaryDirectory(dir=keep) as tmp:
    tmp = pathlib.Path(tmp)
    tok = resolve.load_tokenizer(model)
    tok.save(tmp / "tokenizer")
    tok_fp = tok.fingerprint()
    for kd in (False, True):
      name = "kd" if kd else "text"
      root = tmp / name
      t = time.perf_counter()
      pars, led = make(root, readings, kd, tok_fp)
      ledger_mb = sum(p.stat().st_size for p in led.glob("*.jsonl")) / 1e6
      o = {"pars": str(pars), "led": str(led), "prep": str(root / "prepared"), "kd": kd,
           "hosts": hosts, "batches": batches, "tokenizer": str(tmp / "tokenizer")}
      prep = _in_child({**o, "what": "prepare"})
      read = _in_child({**o, "what": "read"})
      early = _in_child({**o, "what": "resume", "state": read["states"]["10"]})
      late = _in_child({**o, "what": "resume", "state": read["states"][str(batches)]})
      restart = _in_child({**o, "what": "restart"})
      for f in led.glob("*.index.json"):  # the same restart parsing every record (the old way)
        f.unlink()
      parse_all = _in_child({**o, "what": "restart"})
      extra[name] = {
          "make_s": time.perf_counter() - t, "ledger_mb": ledger_mb,
          "prepare_s": prep["seconds"], "prepare_peak_rss_mb": prep["peak_rss_mb"],
          "examples": {t: i["examples"] for t, i in prep["tasks"].items()},
          "first_batch_s": read["first_batch_s"], "host_peak_rss_mb": read["peak_rss_mb"],
          "tokens_per_s": read["tokens_per_s"], "fill": read["fill"],
          "resume_step_10_s": early["seconds"], f"resume_step_{batches}_s": late["seconds"],
          "resume_peak_rss_mb": late["peak_rss_mb"],
          "generate_restart_s": restart["seconds"], "generate_restart_remaining":
          restart["remaining"], "generate_restart_units": restart["units"],
          "generate_restart_parsing_records_s": parse_all["seconds"],
          "generate_restart_peak_rss_mb": restart["peak_rss_mb"]}
      e = extra[name]
      rows += [(f"{name}: prepare", f"{e['ledger_mb']:.0f} MB ledger in {e['prepare_s']:.1f} s, "
                f"peak RSS {e['prepare_peak_rss_mb']:.0f} MB"),
               (f"{name}: host 0 of {hosts}", f"first batch {e['first_batch_s']:.1f} s, peak RSS "
                f"{e['host_peak_rss_mb']:.0f} MB, {e['tokens_per_s']:,.0f} tokens/s "
                f"(rows {e['fill']:.0%} full)"),
               (f"{name}: resume", f"step 10 {e['resume_step_10_s']:.1f} s, step {batches} "
                f"{e[f'resume_step_{batches}_s']:.1f} s"),
               (f"{name}: generate restart", f"{e['generate_restart_s']:.1f} s with key "
                f"indexes ({e['generate_restart_remaining']} of {e['generate_restart_units']} "
                f"units left), {e['generate_restart_parsing_records_s']:.1f} s parsing records")]
      if not kd:
        peer = tmp / "peer"
        _in_child({**o, "what": "peer_write", "dir": prep["dir"], "peer": str(peer)})
        pr = _in_child({**o, "what": "peer_read", "peer": str(peer)})
        pskip = _in_child({**o, "what": "peer_read", "peer": str(peer), "skip": batches})
        extra["seqio_cache_peer"] = {"tokens_per_s": pr["tokens_per_s"],
                                     "first_batch_s": pr["first_batch_s"],
                                     "host_peak_rss_mb": pr["peak_rss_mb"],
                                     f"resume_step_{batches}_s": pskip["first_batch_s"]}
        rows.append(("seqio cache (peer)", f"{pr['tokens_per_s']:,.0f} tokens/s, peak RSS "
                     f"{pr['peak_rss_mb']:.0f} MB, resume at step {batches} (skip) "
                     f"{pskip['first_batch_s']:.1f} s"))
  return report("input tokens/s (host 0, text)", extra["text"]["tokens_per_s"],
                extra["seqio_cache_peer"]["tokens_per_s"], extra, rows, json_path)
