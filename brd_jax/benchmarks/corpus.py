"""`brd bench corpus`: `brd corpus` throughput and peak memory on generated CC-100-style input.

The input is built from real English (the `english-botchan` asset's sentences, recombined into
paragraphs of 2-7 sentences and documents of 1-6 paragraphs, with web-style debris lines and
repeated paragraphs mixed in), written as CC-100 `.txt` files. The stage runs as
`--processes` OS processes (`brd corpus --num_processes P --process_index i`), timed end to end;
the peer is the same stage with the pysbd splitter (`--peer_mb` of the same input, since it is
~50x slower). Reported: input MB/s, kept sentences/s, the minutes the paper's 5M-sentence corpus
would take at that rate, and each process's peak RSS.
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
from brd_jax.io_utils import atomic_write_text

DEBRIS = ["Home", "Contact us", "Share this:", "Read more", "Posted by admin", "Tags: news, events",
          "Click here to subscribe to our newsletter.", "© 2019 All rights reserved.",
          "Previous post", "Next post", "Leave a comment", "Search for:"]


def make_input(out_dir: pathlib.Path, mb: float, files: int, seed: int = 0) -> int:
  """Writes `files` CC-100-style files totalling about `mb` MB; returns the bytes written."""
  from brd_jax import assets
  from brd_jax.benchmarks.split import _paragraphs
  from brd_jax.corpus import split
  sents = sorted({s for p in _paragraphs(str(assets.fetch("english-botchan")))
                  for s in split.make("blingfire")(p) if len(s) > 20})
  rng = random.Random(seed)
  out_dir.mkdir(parents=True, exist_ok=True)
  target, written = mb * 1e6 / files, 0
  for f in range(files):
    size, docs, recent = 0, [], []
    while size < target:
      pars = []
      for _ in range(rng.randint(1, 6)):
        r = rng.random()
        if r < 0.15:
          pars.append(rng.choice(DEBRIS))
        elif r < 0.2 and recent:
          pars.append(rng.choice(recent))  # the same paragraph again (a duplicate page)
        else:
          p = " ".join(rng.sample(sents, rng.randint(2, 7)))
          pars.append(p)
          recent = (recent + [p])[-200:]
      doc = "\n".join(pars) + "\n\n"
      docs.append(doc)
      size += len(doc.encode())
    atomic_write_text(out_dir / f"en-{f:03d}.txt", "".join(docs))
    written += size
  return written


def _run_stage(inp, work, processes: int, gin: list[str]) -> dict:
  cmd = [sys.executable, "-c", "import resource, sys; from brd_jax.cli import main; rc = main("
         "sys.argv[1:]); print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
         "file=sys.stderr); sys.exit(rc)", "corpus", "--workdir", str(work), "--input", str(inp),
         "--no_progress", "--num_processes", str(processes)]
  for g in gin:
    cmd += ["--gin", g]
  t0 = time.perf_counter()
  procs = [subprocess.Popen(cmd + ["--process_index", str(i)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(processes)]
  rss = []
  for p in procs:
    _, err = p.communicate()
    if p.returncode != 0:
      raise RuntimeError(f"brd corpus failed: {err[-2000:]}")
    rss.append(int(next(l.split()[1] for l in err.splitlines() if l.startswith("MAXRSS_KB"))))
  seconds = time.perf_counter() - t0
  manifest = json.loads((pathlib.Path(work) / "paragraphs" / "manifest.json").read_text())
  return {"seconds": seconds, "peak_rss_mb": [r / 1024 for r in rss], "manifest": manifest}


def run(mb: float = 50, processes: int = 2, peer_mb: float = 2, json_path: str | None = None,
        keep: str | None = None) -> dict:
  with tempfile.TemporaryDirectory(dir=keep) as tmp:
    tmp = pathlib.Path(tmp)
    n_bytes = make_input(tmp / "in", mb, files=max(processes * 4, 4))
    gin = ["corpus.decontaminate=()"]
    mine = _run_stage(tmp / "in", tmp / "w", processes, gin)
    peer_bytes = make_input(tmp / "peer_in", peer_mb, files=processes, seed=1)
    peer = _run_stage(tmp / "peer_in", tmp / "peer_w", processes,
                      gin + ["corpus.splitter='pysbd'"])
  rows, extra = [], {"input_mb": n_bytes / 1e6, "processes": processes}
  for name, r, b in (("blingfire (project)", mine, n_bytes), ("pysbd (peer)", peer, peer_bytes)):
    m = r["manifest"]
    mbps = b / 1e6 / r["seconds"]
    sps = m["sentences"] / r["seconds"]
    extra[name.split()[0]] = {
        "input_mb": b / 1e6, "seconds": r["seconds"], "mb_per_s": mbps,
        "kept_sentences_per_s": sps, "minutes_for_5M_sentences": 5e6 / sps / 60,
        "kept": m["kept"], "sentences": m["sentences"], "dropped": m["dropped"],
        "peak_rss_mb": r["peak_rss_mb"]}
    rows.append((name, f"{b / 1e6:.1f} MB in {r['seconds']:.1f} s = {mbps:.2f} MB/s; "
                 f"{sps:.0f} kept sentences/s -> 5M sentences in {5e6 / sps / 60:.1f} min; "
                 f"peak RSS {max(r['peak_rss_mb']):.0f} MB"))
  return report("input MB/s", extra["blingfire"]["mb_per_s"], extra["pysbd"]["mb_per_s"], extra,
                rows, json_path)
