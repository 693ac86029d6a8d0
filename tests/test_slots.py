"""The teacher's engine (`inference/slots.py`): continuous batching, the shared-prefix cache and
prompt-lookup speculation each give the plain engine's greedy tokens; speculative sampling keeps
the model's distribution; compilations stay within bounds while prompts of many lengths stream;
the top-k and chosen log-probs of both engines are those `transformers` computes."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from brd_jax import models
from brd_jax.inference import engine, speculate
from brd_jax.inference.engine import Engine
from brd_jax.inference.sampling import Sampling
from brd_jax.inference.slots import SlotEngine, common_prefix

SWITCHES = {  # each alone, all together, none
    "continuous": dict(continuous=True, prefix_cache=False, speculate_k=0),
    "prefix_cache": dict(continuous=False, prefix_cache=True, speculate_k=0),
    "speculate": dict(continuous=False, prefix_cache=False, speculate_k=4),
    "all": dict(continuous=True, prefix_cache=True, speculate_k=4),
    "none": dict(continuous=False, prefix_cache=False, speculate_k=0),
}


@pytest.fixture(scope="module")
def tiny():
  cfg = models.ModelConfig(vocab_size=32, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                           head_dim=8, d_ff=64, eos_id=None)
  model = models.create(cfg, seed=11)
  model.lm_head[...] = model.lm_head[...] * 20.0  # peaked: greedy loops, drafts get accepted
  return model


def _prompts(n=20, seed=0, vocab=32, longest=30):
  """A shared preamble, then each prompt's own tokens: lengths 1..longest, with repeats."""
  rng = np.random.default_rng(seed)
  preamble = rng.integers(2, vocab, 24).tolist()
  out = []
  for i in range(n):
    own = rng.integers(2, vocab, int(rng.integers(1, longest + 1))).tolist()
    if i % 3 == 0:
      own = own + own[:6]  # a copied span, as an entity copied from the sentence
    out.append(preamble + own)
  return out


def _eos_for(reference) -> int:
  """A token that ends about half the rows early: the outputs get different lengths."""
  counts = {}
  for g in reference:
    for t in set(g.tokens[2:]):
      counts[t] = counts.get(t, 0) + 1
  return min(counts, key=lambda t: abs(counts[t] - len(reference) / 2))


@pytest.fixture(scope="module")
def case(tiny):
  prompts = _prompts()
  free = Engine(tiny, max_batch=8).generate(prompts, 24, Sampling(), eos_ids=())
  eos = _eos_for(free)
  ref = Engine(tiny, max_batch=8).generate(prompts, 24, Sampling(), eos_ids=(eos,),
                                           return_logprobs=True)
  assert len({len(g.tokens) for g in ref}) >= 4  # varied lengths: refills happen mid-decode
  return prompts, eos, ref


@pytest.mark.parametrize("switch", list(SWITCHES))
def test_each_switch_gives_the_plain_engines_greedy_tokens(tiny, case, switch):
  prompts, eos, ref = case
  eng = SlotEngine(tiny, max_batch=8, **SWITCHES[switch])
  got = eng.generate(prompts, 24, Sampling(), eos_ids=(eos,), return_logprobs=True)
  assert [g.tokens for g in got] == [g.tokens for g in ref]
  assert [g.finish_reason for g in got] == [g.finish_reason for g in ref]
  for a, b in zip(got, ref):
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=2e-4)
  # Each switch did what it says, so equality above is not the plain path in disguise.
  if SWITCHES[switch]["continuous"]:
    assert eng.stats["refills"] > 0
  if SWITCHES[switch]["speculate_k"]:
    assert eng.stats["accepted"] > 0 and eng.stats["drafted"] > eng.stats["accepted"]
  else:
    assert eng.stats["accepted"] == 0
  assert eng.stats["prefix_tokens"] == (24 if SWITCHES[switch]["prefix_cache"] else 0)


def test_switches_give_the_same_tokens_on_the_8_device_mesh(tiny, case, mesh8):
  prompts, eos, ref = case
  state = models.flat_params(tiny)
  shardings = models.param_shardings(tiny.cfg, mesh8)
  sharded = models.build.map_params(
      models.create(tiny.cfg), lambda p, _: jax.device_put(state[p], shardings[p]))
  for switch in ("all", "continuous", "speculate"):
    eng = SlotEngine(sharded, mesh=mesh8, max_batch=8, **SWITCHES[switch])
    got = eng.generate(prompts, 24, Sampling(), eos_ids=(eos,))
    assert [g.tokens for g in got] == [g.tokens for g in ref], switch


def test_stop_strings_cut_where_the_plain_engine_cuts(byte_teacher):
  tok = byte_teacher.tokenizer
  prompts = [tok.encode("Sentence: " + s) for s in
             ["a b c a b c", "the longest prompt of them all, by far", "mid", "xyz " * 5]] * 5
  plain = Engine(byte_teacher.model, tok, max_batch=4)
  free = plain.generate(prompts[:4], 20, Sampling(), eos_ids=())
  stop = tuple(g.text[6:8] for g in free[:2] if len(g.text) >= 8)   # strings these outputs hold
  kw = dict(eos_ids=(), stop=stop, return_logprobs=True)
  ref = plain.generate(prompts, 20, Sampling(), **kw)
  assert stop and {g.finish_reason for g in ref} == {"stop", "length"}
  got = SlotEngine(byte_teacher.model, tok, max_batch=4, speculate_k=3).generate(
      prompts, 20, Sampling(), **kw)
  assert [(g.tokens, g.text, g.finish_reason) for g in got] == \
      [(g.tokens, g.text, g.finish_reason) for g in ref]


@pytest.fixture(scope="module")
def byte_teacher(tmp_path_factory):
  import tiny_teacher
  from brd_jax.checkpoints import resolve
  return resolve.load(str(tiny_teacher.make(tmp_path_factory.mktemp("bt"))))


def test_sampling_without_speculation_draws_what_the_plain_engine_draws(tiny, case):
  prompts, eos, _ = case
  s = Sampling(temperature=1.0, top_k=8)
  ref = Engine(tiny, max_batch=8).generate(prompts, 16, s, seed=3, eos_ids=(eos,))
  got = SlotEngine(tiny, max_batch=8, speculate_k=0).generate(prompts, 16, s, seed=3,
                                                               eos_ids=(eos,))
  assert [g.tokens for g in got] == [g.tokens for g in ref]


def test_a_rows_sample_does_not_depend_on_its_batch(tiny, case):
  """Speculation on: a row's draws depend on its key and its own tokens only."""
  prompts, eos, _ = case
  s = Sampling(temperature=1.0)
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(9), i))(jnp.arange(len(prompts)))
  full = SlotEngine(tiny, max_batch=8).generate(prompts, 16, s, keys=keys, eos_ids=(eos,))
  pick = [5, 0, 13]
  alone = SlotEngine(tiny, max_batch=2).generate([prompts[i] for i in pick], 16, s,
                                                 keys=keys[np.asarray(pick)], eos_ids=(eos,))
  assert [g.tokens for g in alone] == [full[i].tokens for i in pick]


def _exact_sequence_probs(model, prompt, length, temperature, top_k):
  """p(sequence) for every sequence of `length` tokens, by teacher forcing (numpy softmax and
  top-k, independent of the engine's samplers)."""
  V = model.cfg.vocab_size
  seqs = np.array(list(itertools.product(range(V), repeat=length)))
  ids = np.concatenate([np.tile(prompt, (len(seqs), 1)), seqs], 1)
  logits, _ = model(jnp.asarray(ids))
  logits = np.asarray(logits, np.float64)[:, len(prompt) - 1:-1] / temperature   # N,length,V
  if top_k:
    kth = np.sort(logits, -1)[..., -top_k][..., None]
    logits = np.where(logits < kth, -np.inf, logits)
  logp = logits - np.logaddexp.reduce(logits, -1, keepdims=True)
  chosen = np.take_along_axis(logp, seqs[..., None], -1)[..., 0]
  return seqs, np.exp(chosen.sum(1))


@pytest.mark.parametrize("temperature, top_k", [(1.0, 0), (0.8, 4)])
def test_speculative_sampling_keeps_the_distribution(temperature, top_k):
  """Chi-square of 3-token continuations drawn with speculation vs their exact probabilities."""
  cfg = models.ModelConfig(vocab_size=6, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1,
                           head_dim=8, d_ff=32, eos_id=None)
  model = models.create(cfg, seed=4)
  model.lm_head[...] = model.lm_head[...] * 25.0
  prompt = [1, 2, 3, 4, 5, 1, 2, 3, 0, 4]   # repeated n-grams: drafts are proposed
  seqs, probs = _exact_sequence_probs(model, prompt, 3, temperature, top_k)
  n = 6000
  eng = SlotEngine(model, max_batch=256, speculate_k=3, ngram=2)
  gens = eng.generate([prompt] * n, 3, Sampling(temperature, top_k), seed=1, eos_ids=())
  assert eng.stats["accepted"] > 0.1 * n and eng.stats["drafted"] > eng.stats["accepted"]
  index = {tuple(s): i for i, s in enumerate(seqs.tolist())}
  observed = np.bincount([index[tuple(g.tokens)] for g in gens], minlength=len(seqs))
  expected = probs / probs.sum() * n
  big = expected >= 5
  obs = np.append(observed[big], observed[~big].sum())
  exp = np.append(expected[big], expected[~big].sum())
  assert big.sum() >= 10
  p = stats.chisquare(obs, exp).pvalue
  assert p > 1e-3, (p, obs, exp.round(1))


def test_draft_proposes_what_followed_the_latest_earlier_ngram():
  hist = jnp.asarray([[5, 6, 7, 8, 9, 5, 6, 0, 0], [1, 2, 3, 4, 0, 0, 0, 0, 0]])
  last = jnp.asarray([6, 3])  # row 0 ends "5 6" (seen at 0..1), row 1 ends "4" (not seen before)
  drafts, valid = speculate.draft(hist, last, 4, 3)
  assert drafts[0].tolist() == [7, 8, 9, 5] and valid[0].all()
  assert not valid[1].any()


def test_common_prefix_leaves_every_prompt_a_token():
  assert common_prefix([[1] * 10 + [2], [1] * 10 + [3, 4]]) == 10
  assert common_prefix([[1] * 10, [1] * 12]) == 9
  assert common_prefix([[1, 2, 3], [1, 2, 4]]) == 0   # too short to be worth a prefix


def test_compilations_stay_within_bounds_while_prompts_stream():
  # A model of its own shapes, so no earlier test has compiled these programs already.
  cfg = models.ModelConfig(vocab_size=16, d_model=24, n_layers=1, n_heads=2, n_kv_heads=1,
                           head_dim=12, d_ff=40, eos_id=None)
  model = models.create(cfg, seed=3)
  model.lm_head[...] = model.lm_head[...] * 20.0
  eng = SlotEngine(model, max_batch=8, speculate_k=2)
  rng = np.random.default_rng(0)
  preamble = rng.integers(1, 16, 20).tolist()

  def prompts():
    own = [rng.integers(1, 16, int(rng.integers(1, 61))).tolist() for _ in range(30)]
    own[0] = rng.integers(1, 16, 60).tolist()   # the same slot width (S) in every call
    return [preamble + o for o in own]

  # Rows end at varied steps (refills, shrinks): an end token half the free outputs contain.
  eos = (_eos_for(Engine(model, max_batch=8).generate(prompts(), 12, Sampling(), eos_ids=())),)
  before = dict(engine.COMPILES)
  lengths, ends = set(), set()
  for call in range(4):
    batch = prompts()
    lengths.update(-(-(len(p) - 20) // 16) for p in batch)
    ends.update(len(g.tokens) for _, g in eng.stream(batch, 12, Sampling(), eos_ids=eos))
    if call == 0:
      first = {k: engine.COMPILES[k] - before[k] for k in engine.COMPILES}
  new = {k: engine.COMPILES[k] - before[k] for k in engine.COMPILES}
  assert lengths == {1, 2, 3, 4} and len(ends) >= 4
  # Lower bounds: one prefix program; inserts of several lengths; the batch shrank at least once.
  assert new["prefix"] == 1
  assert first["insert"] >= 3 and first["step"] >= 2 and first["compact"] >= 1
  # Upper bounds: group sizes {1,2,4,8} x lengths {16,32,48,64}; batch sizes {8,4,2,1}; shrinks
  # between them. Four calls of 30 prompts compile no more than that.
  assert new["insert"] <= 4 * 4 and new["step"] <= 4 and new["compact"] <= 6
  assert new["prefill"] == 0 and new["decode"] == 0


@pytest.fixture(scope="module")
def byte_teacher_hf(tmp_path_factory):
  """The tiny byte-level teacher: its HF dir, as the engines load it and as `transformers` does."""
  import tiny_teacher
  import torch
  import transformers
  from brd_jax.checkpoints import resolve
  path = tiny_teacher.make(tmp_path_factory.mktemp("bt_hf"))
  ref = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
  return resolve.load(str(path)), ref


def _torch_logprobs(ref, prompt, tokens):
  """log p(. | prompt + tokens[:j]) at each generated position j, from `transformers`."""
  import torch
  with torch.no_grad():
    logits = ref(torch.tensor([list(prompt) + list(tokens)])).logits[0].double()
  return torch.log_softmax(logits, -1).numpy()[len(prompt) - 1:len(prompt) - 1 + len(tokens)]


@pytest.mark.parametrize("kind", ["slots", "slots_sampled", "plain"])
def test_top_logprobs_are_the_models_as_transformers_computes_them(byte_teacher_hf, kind):
  """Every generated position's top-k ids and log-probs, and the chosen token's log-prob, are
  those of teacher-forcing prompt + output through `transformers` (fp32, 1e-4)."""
  loaded, ref = byte_teacher_hf
  tok, K = loaded.tokenizer, 4
  preamble = "Read the sentence and name its entities, one per line.\nSentence: "
  texts = ["Town 3 has a river.", "It floods in May, in May.", "a b c a b c a b c",
           "The longest sentence of them all, by a long way, has no end.", "Hi.", "xyz " * 6]
  prompts = [tok.encode(preamble + t) for t in texts]
  kw = dict(eos_ids=(), top_logprobs=K, return_logprobs=True)
  if kind == "plain":
    out = Engine(loaded.model, tok, max_batch=4, chunk=4).generate(prompts, 16, Sampling(), **kw)
  elif kind == "slots_sampled":
    # Sampled tokens are not the top-1: the chosen token's log-prob is checked on its own.
    eng = SlotEngine(loaded.model, tok, max_batch=2, speculate_k=3)
    out = eng.generate(prompts, 16, Sampling(temperature=1.0), seed=5, **kw)
    assert eng.stats["prefix_tokens"] > 0
    assert sum(t != row[0][0] for g in out for t, row in zip(g.tokens, g.top_logprobs)) > 20
  else:
    # Rows end at varied steps (an end token about half the outputs hold): slots are refilled
    # mid-decode, the preamble is prefilled once, drafts are verified several tokens a step.
    free = Engine(loaded.model, tok, max_batch=8).generate(prompts, 16, Sampling(), eos_ids=())
    kw["eos_ids"] = (_eos_for(free),)
    eng = SlotEngine(loaded.model, tok, max_batch=2, speculate_k=3)
    out = eng.generate(prompts, 16, Sampling(), **kw)
    assert eng.stats["refills"] > 0 and eng.stats["prefix_tokens"] > 0
    assert eng.stats["accepted"] > 0 and len({len(g.tokens) for g in out}) >= 3
  for p, g in zip(prompts, out):
    assert g.tokens and len(g.top_logprobs) == len(g.logprobs) == len(g.tokens)
    lp = _torch_logprobs(ref, p, g.tokens)
    ids = np.asarray([[i for i, _ in row] for row in g.top_logprobs])
    vals = np.asarray([[v for _, v in row] for row in g.top_logprobs])
    # Each stored (id, log-prob) is the model's, and the stored values are its K largest (a
    # near-tie may order two ids either way; the values pin the set).
    np.testing.assert_allclose(vals, np.take_along_axis(lp, ids, -1), atol=1e-4)
    np.testing.assert_allclose(vals, -np.sort(-lp, -1)[:, :K], atol=1e-4)
    np.testing.assert_allclose(g.logprobs, lp[np.arange(len(g.tokens)), g.tokens], atol=1e-4)
    # Distinct ids, and the values far enough apart that a copied value would show.
    assert all(len(set(row)) == K for row in ids.tolist())
    assert np.min(vals[:, 0] - vals[:, -1]) > 1e-2
