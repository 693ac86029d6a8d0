"""Behaviours: parsing and validation of teacher text, render, templates, ledger keys and shards."""
import json

import numpy as np
import pytest

from brd_jax import tokenizer
from brd_jax.behaviors import ledger, parse, spec, templates

S = "Marie Curie moved to Paris in 1891 to study physics at the Sorbonne."


# ---------------------------------------------------------------- parsing NER


def test_ner_parses_entities_that_are_in_the_sentence():
  text = ("Marie Curie | person | a physicist\n- Paris | Location | the capital of France\n"
          "1891 | date | a year")
  got, err = parse.parse("ner", text, S)
  assert err is None
  assert got == [{"entity": "Marie Curie", "type": "person", "description": "a physicist"},
                 {"entity": "Paris", "type": "location", "description": "the capital of France"},
                 {"entity": "1891", "type": "date", "description": "a year"}]
  assert parse.parse("ner", "None", S) == ([], None)
  assert parse.render({"behavior": "ner", "parsed": got}).splitlines()[1] == \
      "Marie Curie (person): a physicist"
  assert parse.render({"behavior": "ner", "parsed": []}) == "Named entities: none"


@pytest.mark.parametrize("text, reason", [
    ("", "empty"),
    ("   \n ", "empty"),
    ("Marie Curie | person", "missing_fields"),
    ("Marie Curie | | a physicist", "missing_fields"),
    ("Marie Curie is a physicist who moved to Paris.", "missing_fields"),
    ("Albert Einstein | person | a physicist", "entity_not_in_sentence"),
    ("Paris | location | city\nParis | location | city\nParis | location | city",
     "runaway_repetition"),
    ("Marie Curie | persona | une physicienne et chimiste qui est née en Pologne et la "
     "première femme", "not_english"),
    ("Мария Кюри | человек | физик и химик", "not_english"),
])
def test_ner_rejections_have_one_reason(text, reason):
  parsed, err = parse.parse("ner", text, S)
  assert parsed is None and err == reason


def test_cut_at_max_tokens_is_truncated_even_when_it_parses():
  assert parse.parse("ner", "Marie Curie | person | a physicist", S, "length") == \
      (None, "truncated")
  assert parse.parse("qra", "Q: Who moved?\nA: Marie", S, "length") == (None, "truncated")


# ---------------------------------------------------------------- parsing QRA


def test_qra_parses_question_answer_pairs():
  got, err = parse.parse("qra", "Q: Why did Marie Curie move to Paris?\nA: To study physics.", S)
  assert err is None and got == [{"question": "Why did Marie Curie move to Paris?",
                                  "answer": "To study physics."}]
  assert parse.render({"behavior": "qra", "parsed": got}) == \
      "Question: Why did Marie Curie move to Paris?\nAnswer: To study physics."


@pytest.mark.parametrize("text, reason", [
    ("Q: Why did she move?", "question_without_answer"),
    ("Q: Why did she move?\nA:", "question_without_answer"),
    ("Q: Why?\nQ: When?\nA: 1891", "question_without_answer"),
    ("She moved to Paris to study physics.", "no_question"),
    ("Q: Who?\nA: Marie\n" * 3, "runaway_repetition"),
    ("Q: Pourquoi est-elle partie à Paris?\nA: Pour étudier la physique à la Sorbonne et "
     "pour les cours", "not_english"),
    ("Q: Why did she move?\nA: The Amazon River carries more water.", "answer_not_grounded"),
])
def test_qra_rejections(text, reason):
  assert parse.parse("qra", text, S) == (None, reason)


# ---------------------------------------------------------------- templates


def chat_tokenizer():
  tok = tokenizer.byte_level()
  tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}"
                       "{% if add_generation_prompt %}<assistant>{% endif %}")
  return tok


def test_templates_render_demonstrations_in_the_chat_format():
  tok = chat_tokenizer()
  ner, qra = spec.get("ner"), spec.get("qra")
  chat = templates.get("ner-chat@1", "ner").prompt(tok, S)
  assert chat.count("<user>") == len(ner.demos) + 1 == 5
  assert chat.count("<assistant>") == len(ner.demos) + 1  # + the generation prompt
  assert chat.endswith(f"<user>Sentence: {S}</s><assistant>")
  # The instruction opens the first demonstration, once.
  first_user = chat.split("<user>")[1]
  assert first_user.startswith(ner.instruction) and chat.count(ner.instruction) == 1
  inline = templates.get("qra-inline@1", "qra").prompt(tok, S, context="Earlier text.")
  assert inline.count("<user>") == 1 and "Context: Earlier text.\nSentence: " in inline
  with pytest.raises(Exception, match="is for ner"):
    templates.get("ner-chat@1", "qra")
  # Every demonstration parses as valid under its own behaviour's rules.
  for s, out in ner.demos:
    assert parse.parse("ner", out, s)[1] is None
  for s, out in qra.demos:
    assert parse.parse("qra", out, s)[1] is None


# ---------------------------------------------------------------- ledger


def test_keys_depend_on_content_not_position():
  a = ledger.sentence_key("ner", S)
  assert a == ledger.sentence_key("ner", S) != ledger.sentence_key("qra", S)
  assert a != ledger.sentence_key("ner", S, context="Before.")
  u = ledger.unit_key(a, "ner-chat@1", "t1", {"temperature": 0.0})
  assert u != ledger.unit_key(a, "ner-chat@2", "t1", {"temperature": 0.0})
  assert u != ledger.unit_key(a, "ner-chat@1", "t2", {"temperature": 0.0})
  assert u != ledger.unit_key(a, "ner-chat@1", "t1", {"temperature": 0.7})
  assert ledger.seed_of(ledger.record_key(u, 0)) != ledger.seed_of(ledger.record_key(u, 1))


def test_topk_round_trip_is_compact():
  rng = np.random.default_rng(0)
  top = [[(int(i), float(lp)) for i, lp in zip(rng.integers(0, 50000, 8), -rng.random(8) * 5)]
         for _ in range(20)]
  packed = ledger.pack_topk(top)
  ids, lps = ledger.unpack_topk(packed)
  assert ids.shape == (20, 8) and ids.tolist() == [[i for i, _ in r] for r in top]
  np.testing.assert_allclose(lps, [[lp for _, lp in r] for r in top], atol=5e-3)
  size = len(json.dumps(packed))
  assert size / 20 < 8 * 6 * 4 / 3 + 10  # ~64 bytes per token for k=8
  assert ledger.unpack_tokens(ledger.pack_tokens([5, 7, 9])) == [5, 7, 9]


def test_writer_commits_whole_numbered_shards(tmp_path):
  w = ledger.Writer(tmp_path, 3)
  assert w.commit() == 0
  for k in range(3):
    w.add({"key": f"u{k}-0", "unit": f"u{k}", "sentence_key": "s", "attempt": 0,
           "behavior": "ner", "valid": True})
  assert w.commit() == 3
  w2 = ledger.Writer(tmp_path, 3)  # a restarted process continues the numbering
  w2.add({"key": "u9-0", "unit": "u9", "sentence_key": "s", "attempt": 0, "behavior": "ner",
          "valid": False})
  w2.commit()
  assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == ["shard-p0003-000000.jsonl",
                                                              "shard-p0003-000001.jsonl"]
  assert [r["key"] for r in ledger.read(tmp_path)] == ["u0-0", "u1-0", "u2-0", "u9-0"]
  # Numbering follows this process's highest shard: another process's shards and a gap (a
  # shard moved away) never make it reuse a name, which would overwrite committed records.
  (tmp_path / "shard-p0001-000007.jsonl").write_text("")
  (tmp_path / "shard-p0003-000001.jsonl").rename(tmp_path / "shard-p0003-000004.jsonl")
  w3 = ledger.Writer(tmp_path, 3)
  w3.add({"key": "u8-0", "unit": "u8", "sentence_key": "s", "attempt": 0, "behavior": "ner",
          "valid": True})
  w3.commit()
  assert (tmp_path / "shard-p0003-000005.jsonl").exists()
  assert sorted(r["key"] for r in ledger.read(tmp_path)) == ["u0-0", "u1-0", "u2-0", "u8-0",
                                                             "u9-0"]


def test_the_key_index_says_what_the_records_say_and_a_stale_one_is_not_believed(tmp_path):
  """A restart reads each shard's key index instead of its records; an index left from before a
  shard changed (or a shard without one) is passed over for the records themselves."""
  w = ledger.Writer(tmp_path, 0)
  for k in range(5):
    w.add({"key": f"u{k}-0", "unit": f"u{k}", "sentence_key": "s", "attempt": k % 2,
           "behavior": "ner", "valid": k != 3, "error": "missing_fields" if k == 3 else None,
           "n_tokens": 10 + k, "text": "x" * k})
  w.commit()
  w.add({"key": "u7-0", "unit": "u7", "sentence_key": "s", "attempt": 0, "behavior": "qra",
         "valid": True})
  w.commit()
  plain = lambda: [{f: r.get(f) for f in ledger.INDEX_FIELDS}  # noqa: E731
                   for r in ledger.read(tmp_path)]
  assert list(ledger.read_index(tmp_path)) == plain() and len(plain()) == 6
  first = tmp_path / "shard-p0000-000000.jsonl"
  # the index is what the restart reads: a changed index changes the answer...
  index = json.loads(ledger.index_path(first).read_text())
  ledger.index_path(first).write_text(json.dumps({**index, "valid": [False] * 5}))
  assert [r["valid"] for r in ledger.read_index(tmp_path)][:5] == [False] * 5
  # ...until its shard is not the one it describes: then the records are read
  ledger.index_path(first).write_text(json.dumps(index))
  first.write_text(first.read_text().replace('"valid": false', '"valid": true '))
  assert [r["valid"] for r in ledger.read_index(tmp_path)] == [True] * 6
  ledger.index_path(first).unlink()
  assert list(ledger.read_index(tmp_path)) == plain()
