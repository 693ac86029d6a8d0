"""Training data: paragraph-level formatting, mixture rates, packing, determinism, resume."""
import collections
import itertools
import json

import numpy as np
import pytest

import brd_corpus
from brd_jax import tokenizer
from brd_jax.behaviors import ledger, parse
from brd_jax.data import formatting
from brd_jax.data.config import DataConfig
from brd_jax.errors import UserError


def test_paragraph_and_sentence_level_formatting(tmp_path):
  par_dir, led_dir = brd_corpus.make(tmp_path, n_paragraphs=2)
  pars, readings = formatting.read_paragraphs(par_dir), formatting.read_ledger(led_dir)
  p = pars[0]
  ner = formatting.behavior_examples(pars, readings, "ner", sep=" <sep> ")
  s = p["sentences"]
  r = [parse.render(readings.get("ner", s, i)) for i in range(3)]
  assert r[0] == "Named entities:\n" + s[0].split(" in ")[1].split(" opened")[0] + \
      " (location): a city"
  assert ner[0]["text"] == " <sep> ".join([s[0], r[0], s[1], r[1], s[2], r[2]])
  # The invalid attempt for the first sentence did not replace the valid one.
  assert readings.get("ner", s, 0)["attempt"] == 0
  sent = formatting.behavior_examples(pars, readings, "qra", sep="\n", level="sentence")
  assert len(sent) == 6 and sent[0]["text"].startswith(s[0] + "\nQuestion: Where is it?")
  assert formatting.original_examples(pars)[0]["text"] == p["text"]


def test_sentence_without_reading_keeps_the_sentence(tmp_path):
  par_dir, led_dir = brd_corpus.make(tmp_path, n_paragraphs=1)
  pars = formatting.read_paragraphs(par_dir)
  readings = formatting.read_ledger(led_dir)
  s = pars[0]["sentences"]
  del readings.records[ledger.sentence_key("ner", s[1])]
  text = formatting.behavior_examples(pars, readings, "ner")[0]["text"]
  lines = text.split("\n")
  assert lines[3] == s[1] and lines[4] == s[2]
  # At sentence level a sentence without a reading makes no example of its own.
  sent = formatting.behavior_examples(pars, readings, "ner", level="sentence")
  assert [e["text"].split("\n")[0] for e in sent] == [s[0], s[2]]


def test_torn_lines_and_uncommitted_files_are_skipped_and_validity_is_explicit(tmp_path, caplog):
  par_dir, led_dir = brd_corpus.make(tmp_path, n_paragraphs=1)
  want = formatting.read_ledger(led_dir).records
  shard = next(led_dir.glob("shard-*.jsonl"))
  with open(shard, "a") as f:
    f.write('{"key": "torn", "unit"\n')
  no_valid = brd_corpus.record("qra", "A sentence seen nowhere else.", [])
  del no_valid["valid"]
  (led_dir / "shard-p0001-000000.jsonl").write_text(json.dumps(no_valid) + "\n")
  (led_dir / ".shard-p0002-000000.jsonl.x.tmp").write_text("{half a line")
  with caplog.at_level("WARNING"):
    got = formatting.read_ledger(led_dir).records
  assert got == want
  assert "torn or malformed" in caplog.text and "uncommitted" in caplog.text


def test_a_sentence_repeated_in_two_paragraphs_uses_one_reading(tmp_path):
  par_dir, led_dir = brd_corpus.make(tmp_path, n_paragraphs=2)
  pars = formatting.read_paragraphs(par_dir)
  shared = pars[0]["sentences"][0]
  pars[1]["sentences"][2] = shared
  readings = formatting.read_ledger(led_dir)
  ner = formatting.behavior_examples(pars, readings, "ner")
  reading = parse.render(readings.get("ner", [shared], 0))
  assert all(f"{shared}\n{reading}" in ex["text"] for ex in ner)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  return brd_corpus.make(tmp_path_factory.mktemp("corpus"), n_paragraphs=60)


def _register(corpus, **kw):
  from brd_jax.data import tasks
  par_dir, led_dir = corpus
  cfg = DataConfig(paragraphs_dir=str(par_dir), ledger_dir=str(led_dir), **kw)
  return tasks, tasks.register(tokenizer.byte_level(), cfg), cfg


def test_mixture_proportions_match_gin_rates(corpus):
  rates = {"brd_ori": 1.0, "brd_ner": 2.0, "brd_qra": 1.0}
  tasks, reg, cfg = _register(corpus, rates=rates, pack=False, seq_len=400, seed=3)
  assert reg.rates == rates
  tok = reg.tokenizer
  counts = collections.Counter()
  n = 0
  for batch in itertools.islice(tasks.dataset(reg, 50, cfg), 120):
    for row in batch["decoder_target_tokens"]:
      counts[brd_corpus.task_of(tok.decode(row[row > 1]))] += 1
      n += 1
  for t, r in rates.items():
    assert abs(counts[t] / n - r / sum(rates.values())) < 0.02, (t, counts, n)


def test_default_rates_follow_example_counts_and_ablations(corpus):
  _, reg, _ = _register(corpus)
  assert reg.counts == {"brd_ori": 60, "brd_ner": 60, "brd_qra": 60, "brd_skd": 0, "brd_tdist": 0}
  assert reg.rates == {"brd_ori": 60.0, "brd_ner": 60.0, "brd_qra": 60.0}
  _, reg, _ = _register(corpus, mixture="brd_mix_no_ner")
  assert set(reg.rates) == {"brd_ori", "brd_qra"}
  _, reg, _ = _register(corpus, mixture="brd_corpus_only")
  assert set(reg.rates) == {"brd_ori"}
  with pytest.raises(UserError, match="data.mixture"):
    _register(corpus, mixture="nope")


def test_packed_stream_is_deterministic_and_a_saved_state_resumes_exactly(corpus):
  tasks, reg, cfg = _register(corpus, seq_len=256, seed=7)
  a = list(itertools.islice(tasks.dataset(reg, 4, cfg), 6))
  feed = tasks.dataset(reg, 4, cfg)
  list(itertools.islice(feed, 3))
  state = feed.state()
  resumed = tasks.dataset(reg, 4, cfg)
  resumed.restore(state)
  replayed = tasks.dataset(reg, 4, cfg)
  replayed.skip(3)
  for b in (list(itertools.islice(resumed, 3)), list(itertools.islice(replayed, 3))):
    for x, y in zip(a[3:], b):
      assert x.keys() == y.keys()
      for k in x:
        np.testing.assert_array_equal(x[k], y[k])
  first = a[0]
  # Packing: several examples per row, EOS (id 1) closing each segment, inputs shifted per segment.
  rows = [(b["decoder_segment_ids"][i], b["decoder_target_tokens"][i], b["decoder_input_tokens"][i])
          for b in a for i in range(4)]
  seg, tgt, inp = max(rows, key=lambda r: r[0].max())
  assert seg.max() >= 2
  for s in range(1, seg.max() + 1):
    idx = np.flatnonzero(seg == s)
    assert tgt[idx[-1]] == 1 and inp[idx[0]] == 1
    np.testing.assert_array_equal(inp[idx[1:]], tgt[idx[:-1]])
  c = next(tasks.dataset(reg, 4, DataConfig(**{**cfg.__dict__, "seed": 8})))
  assert not np.array_equal(c["decoder_target_tokens"], first["decoder_target_tokens"])
  # The byte tokenizer's BOS is its EOS; with another BOS every segment still starts with it
  # (as seqio's make_autoregressive_inputs), not with the previous segment's last token.
  from brd_jax.data.feed import Feed
  b = next(Feed(reg.prepared, reg.manifest, reg.rates, 4, cfg, bos=7))
  seg, tgt, inp = (b[k] for k in ("decoder_segment_ids", "decoder_target_tokens",
                                  "decoder_input_tokens"))
  starts = (seg > 0) & (np.concatenate([np.zeros_like(seg[:, :1]), seg[:, :-1]], 1) != seg)
  assert starts.sum() > 4 and np.all(inp[starts] == 7)
  np.testing.assert_array_equal(inp[:, 1:][~starts[:, 1:] & (seg[:, 1:] > 0)],
                                tgt[:, :-1][~starts[:, 1:] & (seg[:, 1:] > 0)])


@pytest.mark.parametrize("per_shard", [4096, 10])
def test_each_host_reads_a_disjoint_share(corpus, monkeypatch, per_shard):
  """One shard (read by index, every other example) or six (three files a host)."""
  import jax
  from brd_jax.data import tasks
  seen, opened = [], []
  for host in (0, 1):
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda h=host: h)
    _, reg, cfg = _register(corpus, mixture="brd_corpus_only", pack=False, seq_len=256,
                            shard_paragraphs=per_shard)
    tok = reg.tokenizer
    texts = set()
    feed = tasks.dataset(reg, 8, cfg)
    for b in itertools.islice(feed, 30):
      assert b["decoder_target_tokens"].shape[0] == 4  # a host gets batch_size / hosts rows
      texts.update(tok.decode(r[r > 1]) for r in b["decoder_target_tokens"])
    seen.append(texts)
    opened.append(set(feed.opened))
  # Each host owns 30 of the 60 paragraphs; 120 draws, an epoch at a time, cover them all.
  assert not seen[0] & seen[1]
  assert len(seen[0]) == len(seen[1]) == 30
  assert (opened[0] == opened[1]) == (per_shard == 4096)
  assert len(opened[0]) == (1 if per_shard == 4096 else 3)


def test_the_seqio_view_serves_the_prepared_examples_at_the_same_rates(corpus):
  from brd_jax.data import prepare, seqio_tasks
  from brd_jax.data._tf import seqio
  _, reg, _ = _register(corpus, seq_len=256, mixture="brd_ori+brd_qra")
  name = seqio_tasks.register(reg)
  mix = seqio.get_mixture_or_task(name)
  assert name == "mix#brd_ori#brd_qra" and {t.name: mix.get_rate(t) for t in mix.tasks} == \
      reg.rates == {"brd_ori": 60.0, "brd_qra": 60.0}
  ds = seqio.get_mixture_or_task("brd_qra").get_dataset({"targets": 256}, shuffle=False)
  got = [x["targets"].tolist() for x in ds.as_numpy_iterator()]
  info = reg.manifest["tasks"]["brd_qra"]
  want = [e["targets"].tolist() for f in info["shards"]
          for e in prepare.read_shard(reg.prepared / "brd_qra" / f)]
  assert got == want and len(got) == 60
