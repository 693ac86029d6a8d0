"""The generation engine on tiny models: sampling statistics, filters, keys, compile counts."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from brd_jax import models
from brd_jax.inference import engine, sampling
from brd_jax.inference.engine import Engine
from brd_jax.inference.sampling import Sampling


@pytest.fixture(scope="module")
def tiny():
  cfg = models.ModelConfig(vocab_size=16, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                           head_dim=8, d_ff=64, eos_id=None)
  model = models.create(cfg, seed=7)
  # Scale the output head so the first-token distribution is far from uniform.
  model.lm_head[...] = model.lm_head[...] * 60.0
  return model


PROMPT = [3, 5, 7, 2, 9]


def _first_token_probs(model, temperature):
  logits, _ = model(jnp.asarray([PROMPT]))
  return np.asarray(jax.nn.softmax(logits[0, -1] / temperature))


def _first_tokens(model, sampling_, n, seed=0):
  eng = Engine(model, max_batch=n)
  gens = eng.generate([PROMPT] * n, 1, sampling_, seed=seed, eos_ids=())
  return np.array([g.tokens[0] for g in gens])


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_frequencies_match_softmax(tiny, temperature):
  probs = _first_token_probs(tiny, temperature).astype(np.float64)
  probs /= probs.sum()
  assert probs.max() < 0.9 and probs.max() > 2 / 16  # a non-trivial distribution
  draws = _first_tokens(tiny, Sampling(temperature=temperature), 2000)
  counts = np.bincount(draws, minlength=16)
  keep = probs * 2000 >= 5  # pool rare tokens so the chi-square approximation holds
  obs = np.append(counts[keep], counts[~keep].sum())
  exp = np.append(probs[keep], probs[~keep].sum()) * 2000
  obs, exp = obs[exp > 0], exp[exp > 0]
  p = stats.chisquare(obs, exp).pvalue
  assert p > 0.001, (p, obs, exp)


def test_top_k_and_top_p_never_leave_the_allowed_set(tiny):
  probs = _first_token_probs(tiny, 1.0)
  order = np.argsort(-probs)
  draws = _first_tokens(tiny, Sampling(temperature=1.0, top_k=3), 500)
  assert set(draws) <= set(order[:3].tolist())
  assert len(set(draws)) > 1
  cum = np.cumsum(probs[order])
  nucleus = set(order[:int(np.searchsorted(cum, 0.6) + 1)].tolist())
  draws = _first_tokens(tiny, Sampling(temperature=1.0, top_p=0.6), 500)
  assert set(draws) <= nucleus


def test_filter_logits_directly():
  logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
  kept = np.isfinite(np.asarray(sampling.filter_logits(logits, top_p=0.8))) & (
      np.asarray(sampling.filter_logits(logits, top_p=0.8)) > -1e30)
  assert kept.tolist() == [[True, True, False, False]]
  k2 = np.asarray(sampling.filter_logits(logits, top_k=2)) > -1e30
  assert k2.tolist() == [[True, True, False, False]]


def test_same_key_same_output_and_row_independence(tiny):
  eng = Engine(tiny, max_batch=8)
  s = Sampling(temperature=1.0)
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(1), i))(jnp.arange(8))
  prompts = [PROMPT[:i + 1] for i in range(5)] + [PROMPT] * 3
  a = eng.generate(prompts, 12, s, keys=keys, eos_ids=())
  b = eng.generate(prompts, 12, s, keys=keys, eos_ids=())
  assert [g.tokens for g in a] == [g.tokens for g in b]
  # Row 2 alone, with its own key, samples exactly what it sampled inside the batch.
  alone = Engine(tiny, max_batch=1).generate([prompts[2]], 12, s, keys=keys[2:3], eos_ids=())
  assert alone[0].tokens == a[2].tokens
  c = eng.generate(prompts, 12, s, seed=99, eos_ids=())
  assert [g.tokens for g in a] != [g.tokens for g in c]


def test_compiles_exactly_once_per_length_bucket():
  # A model of its own shapes, so no earlier test has compiled these programs already.
  cfg = models.ModelConfig(vocab_size=16, d_model=24, n_layers=1, n_heads=2, n_kv_heads=1,
                           head_dim=12, d_ff=40, eos_id=None)
  eng = Engine(models.create(cfg, seed=3), max_batch=4)
  rng = np.random.default_rng(0)
  before = dict(engine.COMPILES)
  buckets = set()
  for _ in range(10):
    n = int(rng.integers(1, 60))
    prompts = [rng.integers(0, 16, int(rng.integers(1, n + 1))).tolist() for _ in range(4)]
    prompts[0] = rng.integers(0, 16, n).tolist()
    buckets.add(engine.bucket(n))
    eng.generate(prompts, 10, Sampling(), eos_ids=())
  assert len(buckets) >= 3
  # Once per bucket: not more (a shape leaks past the buckets), not less (the counter is dead).
  assert engine.COMPILES["prefill"] - before["prefill"] == len(buckets)
  assert engine.COMPILES["decode"] - before["decode"] == len(buckets)


def test_eos_and_logprobs(tiny):
  eng = Engine(tiny, max_batch=2)
  g = eng.generate([PROMPT], 6, Sampling(), eos_ids=(), return_logprobs=True, top_logprobs=3)[0]
  first_eos = g.tokens[2]
  g2 = eng.generate([PROMPT], 6, Sampling(), eos_ids=(first_eos,))[0]
  assert g2.tokens == g.tokens[:g.tokens.index(first_eos)] and g2.finish_reason == "eos"
  probs = _first_token_probs(tiny, 1.0)
  assert np.isclose(g.logprobs[0], np.log(probs[g.tokens[0]]), atol=1e-5)
  assert g.top_logprobs[0][0][0] == int(np.argmax(probs))
  assert len(g.top_logprobs) == len(g.tokens) == 6


def test_sharded_engine_gives_same_tokens(tiny, mesh8):
  prompts = [PROMPT[:i + 1] * 2 for i in range(5)]
  ref = Engine(tiny, max_batch=8).generate(prompts, 10, Sampling(), eos_ids=())
  state = models.flat_params(tiny)
  shardings = models.param_shardings(tiny.cfg, mesh8)
  sharded = models.build.map_params(
      models.create(tiny.cfg), lambda p, _: jax.device_put(state[p], shardings[p]))
  got = Engine(sharded, mesh=mesh8, max_batch=8).generate(prompts, 10, Sampling(), eos_ids=())
  assert [g.tokens for g in got] == [g.tokens for g in ref]


def test_split_and_stacked_layers_give_the_same_generation(tiny):
  """Accelerators decode with the stacked (scanned) weights, CPU with per-layer buffers."""
  prompts = [PROMPT[:i + 1] * 3 for i in range(4)]
  kw = dict(eos_ids=(), return_logprobs=True)
  split = Engine(tiny, max_batch=4, split_layers=True).generate(prompts, 8, Sampling(), **kw)
  stacked = Engine(tiny, max_batch=4, split_layers=False).generate(prompts, 8, Sampling(), **kw)
  assert [g.tokens for g in split] == [g.tokens for g in stacked]
  np.testing.assert_allclose([g.logprobs for g in split], [g.logprobs for g in stacked], atol=1e-5)


@pytest.fixture(scope="module")
def byte_teacher(tmp_path_factory):
  import tiny_teacher
  from brd_jax.checkpoints import resolve
  return resolve.load(str(tiny_teacher.make(tmp_path_factory.mktemp("bt"))))


def test_stream_yields_every_row_once_as_generate_does(byte_teacher):
  tok = byte_teacher.tokenizer
  texts = ["a", "the longest prompt of them all, by far", "mid length one", "b c", "xyz " * 5]
  prompts = [tok.encode(t) for t in texts]
  eng = Engine(byte_teacher.model, tok, max_batch=2, chunk=4)
  full = eng.generate(prompts, 16, eos_ids=())
  stop = [full[0].text[2:4]]  # row 0 finishes early, while its batch decodes on
  want = eng.generate(prompts, 16, return_logprobs=True, top_logprobs=2, stop=stop, eos_ids=())
  pairs = list(eng.stream(prompts, 16, return_logprobs=True, top_logprobs=2, stop=stop,
                          eos_ids=()))
  got = dict(pairs)
  assert sorted(i for i, _ in pairs) == list(range(len(texts)))  # each row exactly once
  assert got[0].finish_reason == "stop"
  for i, g in enumerate(want):
    assert got[i].tokens == g.tokens and got[i].text == g.text
    np.testing.assert_allclose(got[i].logprobs, g.logprobs, atol=1e-5)


def test_stop_string_cuts_tokens_logprobs_and_text_at_the_same_place(byte_teacher):
  tok = byte_teacher.tokenizer
  prompts = [tok.encode(t) for t in ("once upon a time", "in a land far away", "hello")]
  eng = Engine(byte_teacher.model, tok, chunk=4)
  full = eng.generate(prompts, 24, return_logprobs=True, top_logprobs=3, eos_ids=())
  for g in full:
    assert len(g.text) > 6, g.text
    stop = g.text[5:7]  # a string this row is known to produce
    cut = eng.generate([prompts[full.index(g)]], 24, stop=[stop], return_logprobs=True,
                       top_logprobs=3, eos_ids=())[0]
    assert cut.finish_reason == "stop"
    assert stop not in cut.text and g.text.startswith(cut.text)
    assert tok.decode(cut.tokens, skip_special_tokens=True) == cut.text
    assert len(cut.logprobs) == len(cut.tokens) == len(cut.top_logprobs)
    assert cut.tokens == g.tokens[:len(cut.tokens)]
    np.testing.assert_allclose(cut.logprobs, g.logprobs[:len(cut.tokens)], atol=1e-5)
