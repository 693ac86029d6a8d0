"""This host's endless stream of packed batches from prepared shards (Grain over ArrayRecord).

Per task, the host opens its own shards only (shard i is host i % hosts's; a task with fewer
shards than hosts is read by index, every host taking every hosts-th example), shuffles them by
index anew each epoch, and Grain's `MapDataset.mix` interleaves the tasks in exact proportion
to their rates; examples are first-fit packed into rows of seq_len. The order depends only on
the seed, the data and the host count, and the iterator's state is a few integers: saved with
each checkpoint, it resumes step 19,000 as fast as step 10.
"""
from __future__ import annotations

import json
import logging
import pathlib
import weakref

import numpy as np

from brd_jax.data.config import DataConfig
from brd_jax.data.prepare import decode_example
from brd_jax.errors import UserError

log = logging.getLogger(__name__)
READ_THREADS = 0


def host_share(manifest: dict, task: str, host: int, n_hosts: int) -> tuple[list[str], bool]:
  """(the shard files this host opens, whether it reads every n_hosts-th example of them)."""
  files = manifest["tasks"][task]["shards"]
  counts = manifest["tasks"][task]["counts"]
  files = [f for f, n in zip(files, counts) if n]
  if len(files) >= n_hosts:
    return files[host::n_hosts], False
  return files, n_hosts > 1


class Feed:
  """Iterator of host batches: decoder_* int32 [rows, seq_len] (+ teacher_topk_* with KD)."""

  def __init__(self, prepared: pathlib.Path, manifest: dict, rates: dict, batch_size: int,
               cfg: DataConfig, bos: int, host: int = 0, n_hosts: int = 1):
    import grain
    self.k, self.seq_len, self.bos = manifest["k"] if manifest["kd"] else 0, cfg.seq_len, bos
    self.rows = batch_size // n_hosts
    self.opened: list[str] = []  # the files this host reads (what the sharding tests check)
    parts, weights = [], []
    for i, (task, rate) in enumerate(sorted(rates.items())):
      files, strided = host_share(manifest, task, host, n_hosts)
      paths = [str(prepared / task / f) for f in files]
      if not paths:
        continue
      ds = grain.MapDataset.source(grain.sources.ArrayRecordDataSource(paths))
      if strided:
        ds = ds[host::n_hosts]
      if not len(ds):
        log.warning("task %s has no examples on host %d; it mixes without them", task, host)
        continue
      self.opened += paths
      parts.append(ds.shuffle(seed=(cfg.seed * 1_000_003 + i) % 2**32).repeat()
                   .map(self._features))
      weights.append(rate)
    if not parts:
      raise UserError(f"host {host} of {n_hosts} has no example of the mixture's tasks "
                      f"({', '.join(rates)}): fewer examples than hosts")
    it = grain.MapDataset.mix(parts, weights).to_iter_dataset(
        grain.ReadOptions(num_threads=READ_THREADS, prefetch_buffer_size=64))
    lengths = {f: self.seq_len for f in self._feature_names()}
    if cfg.pack:
      it = grain.experimental.FirstFitPackIterDataset(
          it, length_struct=lengths, num_packing_bins=self.rows, seed=cfg.seed,
          shuffle_bins=False)
    else:
      it = it.map(self._pad)
    it = it.batch(self.rows, drop_remainder=True).map(self._decoder_features)
    # Examples are read on the thread that packs them (a pool of readers only fights over the
    # GIL: 0.8x), whole batches made ahead on one thread, so a step overlaps the next batch.
    self._it = iter(grain.experimental.ThreadPrefetchIterDataset(it, prefetch_buffer_size=2))
    # A prefetch thread still reading at interpreter exit aborts it: closed then at the latest.
    self.close = weakref.finalize(self, self._it.close)

  def _feature_names(self):
    return ("targets", "topk_ids", "topk_logprobs", "topk_weights") if self.k else ("targets",)

  def _features(self, raw: bytes) -> dict:
    ex = decode_example(raw)
    if not self.k:
      return {"targets": ex["targets"]}
    n, pos = len(ex["targets"]), ex["positions"]
    ids = np.zeros((n, self.k), np.int32)
    lps = np.zeros((n, self.k), np.float32)
    w = np.zeros(n, np.float32)
    ids[pos], lps[pos], w[pos] = ex["ids"], ex["logprobs"], 1.0
    return {"targets": ex["targets"], "topk_ids": ids, "topk_logprobs": lps, "topk_weights": w}

  def _pad(self, ex: dict) -> dict:
    out = {}
    for f, v in ex.items():
      pad = np.zeros((self.seq_len,) + v.shape[1:], v.dtype)
      pad[:len(v)] = v
      out[f] = pad
    n = len(ex["targets"])
    out["targets_segment_ids"] = (np.arange(self.seq_len) < n).astype(np.int32)
    out["targets_positions"] = np.where(np.arange(self.seq_len) < n, np.arange(self.seq_len),
                                        0).astype(np.int32)
    return out

  def _decoder_features(self, b: dict) -> dict:
    """seqio's DecoderFeatureConverter's features, in numpy (inputs: targets shifted right
    within each segment, BOS first)."""
    tgt, seg = b["targets"].astype(np.int32), b["targets_segment_ids"].astype(np.int32)
    inputs = np.concatenate([np.full_like(tgt[:, :1], self.bos), tgt[:, :-1]], axis=1)
    prev = np.concatenate([np.zeros_like(seg[:, :1]), seg[:, :-1]], axis=1)
    out = {"decoder_target_tokens": tgt,
           "decoder_input_tokens": np.where(seg != prev, self.bos, inputs).astype(np.int32),
           "decoder_loss_weights": (tgt != 0).astype(np.int32),
           "decoder_segment_ids": seg,
           "decoder_positions": b["targets_positions"].astype(np.int32)}
    if self.k:
      out["teacher_topk_ids"] = b["topk_ids"]
      out["teacher_topk_logprobs"] = b["topk_logprobs"]
      out["teacher_topk_weights"] = b["topk_weights"]
    return out

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    return next(self._it)

  def state(self) -> str:
    """The position of the stream (JSON): what the next batch is."""
    return json.dumps(self._it.get_state(), sort_keys=True)

  def restore(self, state: str) -> None:
    self._it.set_state(json.loads(state))

  def skip(self, batches: int) -> None:
    """Moves on by replaying (for checkpoints saved before iterator states were)."""
    for _ in range(batches):
      next(self._it)
