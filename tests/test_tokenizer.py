"""Tokenizers from tokenizer.json / sentencepiece, chat templates, against `transformers`."""
import pytest
import transformers

from brd_jax import tokenizer
from brd_jax.errors import UserError

TEXTS = ["Hello world", "  leading spaces\tand tabs", "digits 1234567 and café ünïcode", ""]


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
  """A small byte-level BPE tokenizer trained here, saved the way HF model dirs hold it."""
  import tokenizers
  from tokenizers import decoders, models, pre_tokenizers, trainers
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>",
                                                                "<|im_end|>"],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(["The quick brown fox jumps over the lazy dog. " * 20] + TEXTS, trainer)
  d = tmp_path_factory.mktemp("bpe")
  fast = transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
      pad_token="<|endoftext|>")
  fast.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>"
                        "assistant\n{% endif %}")
  fast.save_pretrained(d)
  return d


def test_tokenizer_json_matches_transformers(bpe_dir, tmp_path):
  ours = tokenizer.from_dir(bpe_dir)
  theirs = transformers.AutoTokenizer.from_pretrained(bpe_dir)
  for t in TEXTS + ["<|im_start|>user\nhi<|im_end|>"]:
    assert ours.encode(t) == theirs(t, add_special_tokens=False).input_ids
    assert ours.decode(ours.encode(t)) == t
  msgs = [{"role": "user", "content": "Hi there"}]
  assert ours.apply_chat_template(msgs) == theirs.apply_chat_template(
      msgs, tokenize=False, add_generation_prompt=True)
  assert (ours.bos_id, ours.eos_id, ours.pad_id) == (1, 2, 0)
  ours.save(tmp_path)
  again = transformers.AutoTokenizer.from_pretrained(tmp_path)
  assert again("Hello world", add_special_tokens=False).input_ids == ours.encode("Hello world")
  assert again.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == \
      ours.apply_chat_template(msgs)


def test_sentencepiece_model(tmp_path):
  import sentencepiece as spm
  corpus = tmp_path / "c.txt"
  corpus.write_text("\n".join(["the cat sat on the mat", "a dog ran in the park"] * 50))
  spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "sp"),
                                 vocab_size=40, model_type="bpe")
  tok = tokenizer.from_sentencepiece(tmp_path / "sp.model")
  ref = spm.SentencePieceProcessor(model_file=str(tmp_path / "sp.model"))
  assert tok.encode("the cat ran") == [ref.bos_id()] + ref.encode("the cat ran")
  assert tok.decode(tok.encode("the cat ran", add_bos=False)) == "the cat ran"


def test_vicuna_template():
  tok = tokenizer.Tokenizer(None, eos_token="</s>")
  text = tok.apply_chat_template([{"role": "user", "content": "Who is Ada?"}],
                                 template="vicuna_v1.1")
  assert text.endswith("USER: Who is Ada? ASSISTANT:")
  assert text.startswith("A chat between a curious user")
  with pytest.raises(UserError, match="no chat template"):
    tok.apply_chat_template([{"role": "user", "content": "x"}])
