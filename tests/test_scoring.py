"""Log-likelihood scoring against a direct `transformers` computation."""
import numpy as np
import pytest
import torch

import hf_tiny
from brd_jax.checkpoints import hf
from brd_jax.inference.scoring import Scorer, pack, share_prefixes


def _torch_loglik(model, ctx, cont):
  ids = torch.tensor([ctx + cont])
  with torch.no_grad():
    logits = model(ids).logits[0, :-1].float()
  lp = torch.log_softmax(logits, -1)
  tgt = ids[0, 1:]
  tail = slice(len(ctx) - 1, len(ctx) + len(cont) - 1)
  ll = lp[tail].gather(-1, tgt[tail, None]).sum().item()
  greedy = bool((logits[tail].argmax(-1) == tgt[tail]).all())
  return ll, greedy


def test_loglik_ids_match_transformers(tmp_path, mesh8):
  ref = hf_tiny.llama(tmp_path)
  model, _ = hf.import_dir(tmp_path)
  rng = np.random.default_rng(0)
  pairs = [(rng.integers(3, 128, int(rng.integers(1, 40))).tolist(),
            rng.integers(3, 128, int(rng.integers(1, 6))).tolist()) for _ in range(37)]
  # Multiple-choice requests: one-token answers share one row (same model input), a two-token
  # answer whose input differs does not; a duplicate request shares too.
  shared_ctx = rng.integers(3, 128, 25).tolist()
  pairs += [(shared_ctx, [a]) for a in (5, 9, 77)] + [(shared_ctx, [9, 14]), (shared_ctx, [5])]
  # XNLI-shaped: one-token context, candidates "premise, right? Yes|Also|No, hypothesis" share
  # the premise inside the continuation; one input is a prefix of another.
  premise, hyp = rng.integers(3, 128, 20).tolist(), rng.integers(3, 128, 9).tolist()
  pairs += [([1], premise + [m] + hyp) for m in (40, 41, 42)] + [([1], premise[:12])]
  pairs += [([1], premise[:12] + [7])]
  got = Scorer(model, token_budget=256).loglik_ids(pairs)
  unshared = Scorer(model, token_budget=256, share_prefix=False).loglik_ids(pairs)
  np.testing.assert_allclose([g.loglik for g in got], [g.loglik for g in unshared], atol=1e-5)
  for (ctx, cont), g in zip(pairs, got):
    ll, greedy = _torch_loglik(ref, ctx, cont)
    assert abs(g.loglik - ll) < 1e-4 and g.n_tokens == len(cont) and g.is_greedy == greedy
  inputs = {tuple((c + k)[:-1]) for c, k in pairs}
  shared = [r for r in share_prefixes(inputs, 2048) if len(r[1]) > 1]
  # shared_ctx (+ [9]); four premise inputs (a fifth would make the unit wider than twice its
  # longest member).
  assert sorted(len(m) for _, m in shared) == [2, 4]
  # Inputs sharing only a short preamble stay apart.
  preamble = tuple(range(3, 9))
  apart = [preamble + tuple(rng.integers(10, 128, 30).tolist()) for _ in range(4)]
  assert len(share_prefixes(apart, 2048)) == 4
  # A greedy continuation is recognised as such.
  ctx = pairs[0][0]
  with torch.no_grad():
    nxt = int(ref(torch.tensor([ctx])).logits[0, -1].argmax())
  assert Scorer(model).loglik_ids([(ctx, [nxt])])[0].is_greedy
  # Sharded scoring equals one device.
  model8, _ = hf.import_dir(tmp_path, mesh=mesh8)
  got8 = Scorer(model8, mesh=mesh8, token_budget=256).loglik_ids(pairs)
  np.testing.assert_allclose([g.loglik for g in got8], [g.loglik for g in got], atol=1e-5)
  assert [g.is_greedy for g in got8] == [g.is_greedy for g in got]


@pytest.mark.real_model
@pytest.mark.slow
def test_smollm2_loglik_of_200_requests(smollm2_gguf):
  import transformers
  from brd_jax.checkpoints import resolve
  from brd_jax.inference.scoring import encode_pair
  loaded = resolve.load(str(smollm2_gguf))
  theirs = transformers.AutoModelForCausalLM.from_pretrained(
      smollm2_gguf.parent, gguf_file=smollm2_gguf.name, dtype=torch.float32).eval()
  words = ("the cat sat on a mat while rain fell over Paris and 42 people sang loudly in "
           "the old hall . Question : is it true ? Answer : yes no maybe").split()
  rng = np.random.default_rng(1)
  reqs = [(" ".join(rng.choice(words, int(rng.integers(3, 30)))),
           " " + " ".join(rng.choice(words, int(rng.integers(1, 4))))) for _ in range(200)]
  got = Scorer(loaded.model, loaded.tokenizer).loglik(reqs)
  assert len(got) == len(reqs) == 200
  worst = 0.0
  for (c, k), g in zip(reqs, got):
    ctx, cont = encode_pair(loaded.tokenizer, c, k)
    ll, greedy = _torch_loglik(theirs, ctx, cont)
    worst = max(worst, abs(ll - g.loglik))
  assert worst < 2e-3, worst


def test_pack_places_every_unit_once_within_row_length_and_budget():
  rng = np.random.default_rng(3)
  widths = sorted(rng.integers(1, 300, 500).tolist(), reverse=True)
  batches = pack(widths, token_budget=1024, rows_multiple=2)
  placed = sorted(k for _, rows in batches for row in rows for k in row)
  assert placed == list(range(len(widths)))
  for T, rows in batches:
    assert len(rows) <= max(2, 1024 // T // 2 * 2)
    assert all(sum(widths[k] for k in row) <= T for row in rows)
  # Packing several units per row beats one unit per row by a wide margin on short units.
  rows_used = sum(len(rows) for _, rows in batches)
  assert rows_used < 0.8 * len(widths)


def test_pack_puts_two_units_of_sixty_percent_in_a_row_of_twice_the_length():
  """Whole-sentence candidates (PAWS-X: units of ~80 tokens) waste 40% of 128-token rows; the
  packer picks 192- or 256-token rows instead, unless attention's cost rules wider rows out."""
  from brd_jax.inference.scoring import padded_rows
  rng = np.random.default_rng(4)
  widths = sorted(rng.integers(70, 90, 400).tolist(), reverse=True)
  batches = pack(widths, token_budget=4096)
  assert sorted(k for _, rows in batches for row in rows for k in row) == list(range(400))
  padded = sum(padded_rows(len(rows), T, 4096) * T for T, rows in batches)
  assert sum(widths) / padded > 0.8 and all(T > 128 for T, _ in batches[:-1])
  assert all(sum(widths[k] for k in row) <= T for T, rows in batches for row in rows)
  # Long rows: three units fill 2048 best, but attention's T^2 makes two per 1536 cheaper.
  long = sorted(np.random.default_rng(5).integers(560, 720, 60).tolist(), reverse=True)
  assert {T for T, _ in pack(long, 16384, min_len=1024, attn_len=10 ** 9)} == {2048}
  assert {T for T, _ in pack(long, 16384, min_len=1024)} == {1536}
