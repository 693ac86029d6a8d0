"""`brd bench generate`'s agreement: the share of rows whose engine tokens equal the peer's."""
import pytest

from brd_jax.benchmarks import generate as bench

PARAGRAPHS = ["The old mill was rebuilt in spring. Its wheel turned again after the storm.",
              "Zora walked home along the river. The ferry had stopped for the night."]


def test_agreement_counts_rows_with_identical_tokens():
  peer = {("ner", 0): [5, 6, 7], ("ner", 1): [8], ("qra", 0): [], ("qra", 1): [9, 9]}
  assert bench.agreement({k: list(v) for k, v in peer.items()}, peer) == 1.0
  one_token = {**peer, ("ner", 0): [5, 6, 8]}
  assert bench.agreement(one_token, peer) == 0.75
  stopped_early = {**peer, ("qra", 1): [9]}  # a prefix of the peer's row is not the same row
  assert bench.agreement(stopped_early, peer) == 0.75
  assert bench.agreement({k: [1] for k in peer}, peer) == 0.0


def test_bench_reports_agreement_below_one_when_one_peer_row_differs(tmp_path, monkeypatch):
  """The whole bench on the tiny teacher, greedy: transformers decodes the engine's tokens on
  every row; then one peer row gets a different last token and the figure is (n - 1) / n."""
  import tiny_teacher
  from brd_jax.benchmarks import split as split_bench
  monkeypatch.setattr(split_bench, "_paragraphs", lambda _: PARAGRAPHS)  # no asset download
  seen = {}
  real_ours, real_peer = bench._ours, bench._peer

  def ours(*a):
    seen["ours"] = real_ours(*a)
    return seen["ours"]

  def peer(*a):  # called for a warm-up, then for the timed run: the last call is the figure's
    out = real_peer(*a)
    seen["peer"] = dict(out)
    k = min(out)
    out[k] = [*out[k][:-1], out[k][-1] + 1] if out[k] else [7]
    return out

  monkeypatch.setattr(bench, "_ours", ours)
  monkeypatch.setattr(bench, "_peer", peer)
  res = bench.run(str(tiny_teacher.make(tmp_path / "t")), sentences=2, batch=2,
                  max_new_tokens=8, ablation=False, json_path=str(tmp_path / "b.json"))
  n = len(seen["ours"])
  assert n == 4 and seen["peer"] == seen["ours"]  # both sides decode the same tokens
  assert res["agreement"] == pytest.approx((n - 1) / n)
