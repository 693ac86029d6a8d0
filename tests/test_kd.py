"""KD from the ledger: top-k written by `brd generate` are the teacher's as `transformers` computes
them and reach the train step aligned with the teacher's tokens, the KD term is what numpy
computes and is in the gradient the step applies, and a student with another tokenizer is
refused."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tiny_teacher
from brd_jax import sharding, tokenizer
from brd_jax.behaviors import generate, ledger, templates
from brd_jax.behaviors.config import GenerateConfig
from brd_jax.data import tasks
from brd_jax.data.config import DataConfig
from brd_jax.errors import UserError
from brd_jax.models import build
from brd_jax.models import config as mc
from brd_jax.training import optim
from brd_jax.training import step as step_lib
from brd_jax.training.config import TrainConfig

K = 4


@pytest.fixture(scope="module")
def kd_corpus(tmp_path_factory):
  root = tmp_path_factory.mktemp("kd")
  teacher = tiny_teacher.make(root / "teacher")
  pars = root / "paragraphs"
  pars.mkdir()
  rows = [{"id": f"p{i}", "doc_id": "d", "text": f"Town {i} has a river. It floods in May.",
           "sentences": [f"Town {i} has a river.", "It floods in May."]} for i in range(6)]
  (pars / "shard-00000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  cfg = GenerateConfig(teacher=str(teacher), behaviors=("ner",), max_new_tokens=10, topk=K,
                       max_attempts=1, num_processes=1, process_index=0)
  generate.run(cfg, pars, root / "ledger", progress=False)
  # The random teacher's text never parses; mark its readings valid so they train (validity is
  # not what these tests are about: the tokens and top-k are the teacher's own).
  for shard in ledger.shards(root / "ledger"):
    recs = [json.loads(l) for l in shard.read_text().splitlines()]
    for r in recs:
      r.update(valid=True, error=None, parsed=[])
    shard.write_text("".join(json.dumps(r) + "\n" for r in recs))
  return pars, root / "ledger"


def test_teacher_topk_are_aligned_with_the_teacher_tokens(kd_corpus):
  pars, led = kd_corpus
  tok = tokenizer.byte_level()
  dcfg = DataConfig(paragraphs_dir=str(pars), ledger_dir=str(led), mixture="brd_mix",
                    seq_len=64, pack=True)
  reg = tasks.register(tok, dcfg, kd=True)
  assert reg.manifest["k"] == K and reg.counts["brd_ner"] == 6
  batch = step_lib.normalize_batch(next(tasks.dataset(reg, 8, dcfg)))
  assert batch["teacher_topk_ids"].shape == batch["decoder_target_tokens"].shape + (K,)
  taught = batch["teacher_topk_weights"] > 0
  assert taught.sum() > 20
  # Greedy decoding emitted each token as the teacher's top-1: at every taught position the
  # training target is the top-1 id stored for it.
  np.testing.assert_array_equal(batch["decoder_target_tokens"][taught],
                                batch["teacher_topk_ids"][..., 0][taught])
  assert np.all(batch["decoder_loss_weights"][taught] == 1)
  assert np.all(np.diff(batch["teacher_topk_logprobs"][taught], axis=-1) <= 1e-3)


def test_stored_topk_are_the_teachers_as_transformers_computes_them(kd_corpus):
  """The ledger's top-k (written by `brd generate` through the slot engine, prefix cache on) are,
  at every generated position, the teacher's K most likely ids and their log-probs as
  `transformers` computes them by teacher-forcing the prompt + output, to float16 storage."""
  import torch
  import transformers
  pars, led = kd_corpus
  teacher = pars.parent / "teacher"
  hf_tok = transformers.AutoTokenizer.from_pretrained(teacher)
  ref = transformers.AutoModelForCausalLM.from_pretrained(teacher, dtype=torch.float32).eval()
  recs = list(ledger.read(led))
  assert len(recs) == 7 and sum(r["n_tokens"] for r in recs) > 20
  for r in recs:
    # The prompt as generate builds it, rendered and encoded by `transformers` from the record.
    msgs = templates.get(r["template"]).messages(r["sentence"], r["context"])
    prompt = hf_tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    prompt = prompt if isinstance(prompt, list) else prompt["input_ids"]
    assert len(prompt) == r["prompt_tokens"]
    tokens = ledger.unpack_tokens(r["tokens"])
    ids, lps = ledger.unpack_topk(r["topk"])
    assert ids.shape == (len(tokens), K)
    with torch.no_grad():
      logits = ref(torch.tensor([prompt + tokens])).logits[0].double()
    lp = torch.log_softmax(logits, -1).numpy()[len(prompt) - 1:len(prompt) - 1 + len(tokens)]
    # float16 keeps 11 significant bits: half an ulp is at most 2**-11 of the value.
    tol = 2.0 ** -11 * np.abs(lp).max() + 1e-4
    np.testing.assert_allclose(lps, np.take_along_axis(lp, ids, -1), rtol=0, atol=tol)
    np.testing.assert_allclose(lps, -np.sort(-lp, -1)[:, :K], rtol=0, atol=tol)
    assert all(len(set(row)) == K for row in ids.tolist())
    assert np.min(lps[:, 0] - lps[:, -1]) > 10 * tol  # a copied value would show


def kd_batch(pars, led) -> dict:
  """The first packed batch of 8 with the teacher's top-k, as the train step receives it."""
  dcfg = DataConfig(paragraphs_dir=str(pars), ledger_dir=str(led), seq_len=64, pack=True)
  reg = tasks.register(tokenizer.byte_level(), dcfg, kd=True)
  return step_lib.normalize_batch(next(tasks.dataset(reg, 8, dcfg)))


def test_one_kd_step_gives_the_loss_numpy_predicts(kd_corpus):
  pars, led = kd_corpus
  local = kd_batch(pars, led)
  cfg = mc.named_config("llama_tiny").replace(vocab_size=320)
  params, bind = build.functional(build.create(cfg, seed=0))
  logits = np.asarray(bind(params)(jnp.asarray(local["decoder_input_tokens"]),
                                   positions_BT=jnp.asarray(local["decoder_positions"]),
                                   segment_ids_BT=jnp.asarray(local["decoder_segment_ids"]))[0],
                      np.float64)
  tcfg = TrainConfig(kd_weight=0.5, steps=1, warmup_steps=0)
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  tx = optim.optimizer(tcfg)
  shardings = step_lib.state_shardings(cfg, tx, params, mesh)
  state = step_lib.init_state(tx, params, shardings, mesh)
  step = step_lib.make_train_step(bind, tx, tcfg, mesh, shardings)
  batch = {k: sharding.global_batch(v, mesh) for k, v in local.items()}
  _, m = step(state, batch)
  # numpy: mean next-token NLL and forward KL(teacher top-k renormalised || student) over
  # taught tokens, both per real target token.
  w = local["decoder_loss_weights"].astype(np.float64)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  nll = -np.take_along_axis(logp, local["decoder_target_tokens"][..., None], -1)[..., 0]
  t = local["teacher_topk_logprobs"].astype(np.float64)
  pt = np.exp(t) / np.exp(t).sum(-1, keepdims=True)
  kl = (pt * (np.log(pt) - np.take_along_axis(logp, local["teacher_topk_ids"], -1))).sum(-1)
  want_nll = (nll * w).sum() / w.sum()
  want_kd = (kl * w * local["teacher_topk_weights"]).sum() / w.sum()
  assert float(m["loss"]) == pytest.approx(want_nll, rel=1e-4)
  assert float(m["kd"]) == pytest.approx(want_kd, rel=1e-4)
  assert want_kd > 0.1


def test_kd_weight_enters_the_update_as_plain_jax_grad_predicts(kd_corpus):
  """The KD term is in the differentiated objective, not only in the metrics: with a plain SGD
  (lr 1, so update = -grad) the step's update is the gradient of LM CE + w * forward KL to the
  renormalised top-k, written out below, for w = 0 and w > 0, and w visibly changes it."""
  pars, led = kd_corpus
  local = kd_batch(pars, led)
  assert local["teacher_topk_weights"].sum() > 20
  cfg = mc.named_config("llama_tiny").replace(vocab_size=320)
  params, bind = build.functional(build.create(cfg, seed=0))
  host = jax.device_get(params)  # the step donates its state: every run starts from this copy
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  tx = optax.sgd(1.0)
  batch = {k: sharding.global_batch(v, mesh) for k, v in local.items()}

  def update(kd_weight):
    tcfg = TrainConfig(kd_weight=kd_weight, steps=1, warmup_steps=0)
    shardings = step_lib.state_shardings(cfg, tx, host, mesh)
    state = step_lib.init_state(tx, jax.device_put(host, shardings["params"]), shardings, mesh)
    new, _ = step_lib.make_train_step(bind, tx, tcfg, mesh, shardings)(state, batch)
    return np.concatenate([(np.asarray(a, np.float64) - b).ravel() for a, b in zip(
        jax.tree.leaves(jax.device_get(new["params"])), jax.tree.leaves(host))])

  # The reference: per-token CE and KL(teacher top-k renormalised || student) from log_softmax,
  # summed over real targets (KL only where taught), divided by the real target count.
  x = {k: jnp.asarray(v) for k, v in local.items()}
  w = x["decoder_loss_weights"].astype(jnp.float32)

  def reference(p, kd_weight):
    logits = bind(p)(x["decoder_input_tokens"], positions_BT=x["decoder_positions"],
                     segment_ids_BT=x["decoder_segment_ids"])[0]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    ce = -jnp.take_along_axis(logp, x["decoder_target_tokens"][..., None], -1)[..., 0]
    pt = jnp.exp(x["teacher_topk_logprobs"])
    pt = pt / pt.sum(-1, keepdims=True)
    kl = jnp.sum(pt * (jnp.log(pt) - jnp.take_along_axis(logp, x["teacher_topk_ids"], -1)), -1)
    return (jnp.sum(ce * w) + kd_weight * jnp.sum(kl * w * x["teacher_topk_weights"])) / \
        jnp.sum(w)

  ref_grad = jax.jit(jax.grad(reference))

  def grad(kd_weight):
    g = ref_grad(jax.device_put(host), jnp.float32(kd_weight))
    return np.concatenate([np.asarray(a, np.float64).ravel() for a in jax.tree.leaves(g)])

  kd_weight = 0.5
  g0, gw = grad(0.0), grad(kd_weight)
  u0, uw = update(0.0), update(kd_weight)
  scale = np.abs(gw).max()
  np.testing.assert_allclose(u0, -g0, rtol=0, atol=1e-4 * scale)
  np.testing.assert_allclose(uw, -gw, rtol=0, atol=1e-4 * scale)
  # The difference the weight makes is no rounding effect.
  assert np.linalg.norm(uw - u0) > 0.05 * np.linalg.norm(u0)


def test_kd_is_refused_for_another_tokenizer_or_a_ledger_without_topk(kd_corpus, tmp_path):
  pars, led = kd_corpus
  other = tokenizer.byte_level()
  other.eos_token = "<pad>"  # other special ids: another tokenizer as far as ids go
  dcfg = DataConfig(paragraphs_dir=str(pars), ledger_dir=str(led))
  with pytest.raises(UserError, match="needs a student with the teacher's tokenizer"):
    tasks.register(other, dcfg, kd=True)
  bare = tmp_path / "ledger"
  bare.mkdir()
  for shard in ledger.shards(led):
    (bare / shard.name).write_text(shard.read_text())
  m = json.loads((led / "manifest.json").read_text())
  (bare / "manifest.json").write_text(json.dumps({**m, "topk": 0}))
  with pytest.raises(UserError, match="--topk"):
    tasks.register(tokenizer.byte_level(), DataConfig(paragraphs_dir=str(pars),
                                                      ledger_dir=str(bare)), kd=True)


def test_brd_train_refuses_kd_with_another_tokenizer_in_one_line(kd_corpus, tmp_path):
  import subprocess
  import sys
  pars, led = kd_corpus
  other = tokenizer.byte_level()
  other.eos_token = "<pad>"
  (tmp_path / "tok").mkdir()
  other.save(tmp_path / "tok")
  r = subprocess.run([sys.executable, "-m", "brd_jax.cli", "train", "--workdir", tmp_path / "w",
                      "--gin_file", "models/llama_tiny", "--gin",
                      f"student.tokenizer='{tmp_path / 'tok'}'", "--gin", "model.vocab_size=320",
                      "--gin", "train.kd_weight=0.5", "--gin", "train.steps=2",
                      "--gin", f"data.paragraphs_dir='{pars}'", "--gin",
                      f"data.ledger_dir='{led}'", "--no_progress"],
                     capture_output=True, text=True)
  assert r.returncode == 2, r.stderr[-3000:]
  lines = [l for l in r.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and "teacher's tokenizer" in lines[0], r.stderr[-3000:]
