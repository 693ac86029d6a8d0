"""Tokenizers from tokenizer.json, GGUF metadata or sentencepiece models, with chat templates."""
from __future__ import annotations

import json
import pathlib
import shutil

from brd_jax.errors import UserError
from brd_jax.io_utils import atomic_write_text

# Vicuna v1.1 (for teachers whose tokenizer has no template of its own).
VICUNA_V11_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + ' ' }}"
    "{% set loop_messages = messages[1:] %}{% else %}"
    "{{ 'A chat between a curious user and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user\\'s questions. ' }}"
    "{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}{% if message['role'] == 'user' %}"
    "{{ 'USER: ' + message['content'] + ' ' }}{% else %}"
    "{{ 'ASSISTANT: ' + message['content'] + eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}")

# Pre-tokenizer per GGUF `tokenizer.ggml.pre` (llama.cpp's names) for byte-level BPE vocabularies.
_DIGITS_THEN_BYTES = ("smollm", "starcoder", "refact")


class Tokenizer:
  """Text <-> ids, special ids, chat template. Backed by `tokenizers` or sentencepiece."""

  def __init__(self, backend, bos_token=None, eos_token=None, pad_token=None, unk_token=None,
               chat_template=None, add_bos=False, sp_path=None):
    self._tok = backend            # tokenizers.Tokenizer or sentencepiece.SentencePieceProcessor
    self._sp_path = sp_path
    self.bos_token, self.eos_token = bos_token, eos_token
    self.pad_token, self.unk_token = pad_token, unk_token
    self.chat_template = chat_template
    self.add_bos = add_bos

  # --- ids -------------------------------------------------------------------------------------
  @property
  def is_sentencepiece(self) -> bool:
    return self._sp_path is not None

  def token_to_id(self, token):
    if token is None:
      return None
    if self.is_sentencepiece:
      i = self._tok.piece_to_id(token)
      return None if i == self._tok.unk_id() and token != self.unk_token else i
    return self._tok.token_to_id(token)

  @property
  def bos_id(self):
    return self.token_to_id(self.bos_token)

  @property
  def eos_id(self):
    return self.token_to_id(self.eos_token)

  @property
  def pad_id(self):
    pid = self.token_to_id(self.pad_token)
    return self.eos_id if pid is None else pid

  @property
  def vocab_size(self) -> int:
    if self.is_sentencepiece:
      return self._tok.get_piece_size()
    return self._tok.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
    """Token ids; special-token strings in text are recognised (as HF tokenizers do)."""
    add_bos = self.add_bos if add_bos is None else add_bos
    if self.is_sentencepiece:
      ids = self._tok.encode(text)
    else:
      ids = self._tok.encode(text, add_special_tokens=False).ids
    if add_bos and self.bos_id is not None:
      ids = [self.bos_id] + ids
    return ids

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    """`encode(t, add_bos=False)` of each text; HF tokenizers encode the batch on all cores."""
    if self.is_sentencepiece:
      return [self._tok.encode(t) for t in texts]
    return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

  def decode(self, ids, skip_special_tokens: bool = False) -> str:
    ids = [int(i) for i in ids]
    if self.is_sentencepiece:
      return self._tok.decode(ids)
    return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)

  def fingerprint(self) -> str:
    """Content hash of the whole tokenizer (model, merges, special tokens): equal tokenizers give
    equal ids for every text."""
    import hashlib
    h = hashlib.sha256()
    if self.is_sentencepiece:
      h.update(pathlib.Path(self._sp_path).read_bytes())
    else:
      h.update(self._tok.to_str().encode())
    h.update(repr((self.bos_token, self.eos_token, self.pad_token, self.unk_token)).encode())
    return h.hexdigest()[:16]

  # --- chat --------------------------------------------------------------------------------------
  def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True,
                          template: str | None = None) -> str:
    template = template or self.chat_template
    if not template:
      raise UserError("this tokenizer has no chat template; set one in gin "
                      "(e.g. chat.template = 'vicuna_v1.1')")
    if template == "vicuna_v1.1":
      template = VICUNA_V11_TEMPLATE
    import jinja2
    from jinja2 import sandbox

    def raise_exception(msg):
      raise UserError(f"chat template: {msg}")

    env = sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                undefined=jinja2.ChainableUndefined)
    env.globals["raise_exception"] = raise_exception
    try:
      return env.from_string(template).render(
          messages=messages, add_generation_prompt=add_generation_prompt,
          bos_token=self.bos_token or "", eos_token=self.eos_token or "")
    except jinja2.TemplateError as e:  # syntax errors, and what the sandbox refused
      first = str(e).splitlines()[0] if str(e) else ""
      raise UserError(f"chat template: {type(e).__name__}: {first}") from None

  # --- persistence -----------------------------------------------------------------------------
  def save(self, out_dir: str | pathlib.Path) -> None:
    """Writes tokenizer.json (or tokenizer.model) + tokenizer_config.json for `transformers`."""
    out = pathlib.Path(out_dir)
    cfg = {"bos_token": self.bos_token, "eos_token": self.eos_token,
           "pad_token": self.pad_token, "unk_token": self.unk_token,
           "add_bos_token": self.add_bos, "clean_up_tokenization_spaces": False,
           "model_max_length": 1 << 30}
    if self.is_sentencepiece:
      shutil.copyfile(self._sp_path, out / "tokenizer.model")
      cfg["tokenizer_class"] = "LlamaTokenizer"
    else:
      atomic_write_text(out / "tokenizer.json", self._tok.to_str())
      cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    if self.chat_template:
      cfg["chat_template"] = self.chat_template
    atomic_write_text(out / "tokenizer_config.json",
                      json.dumps({k: v for k, v in cfg.items() if v is not None}, indent=2))
    specials = {k: getattr(self, k) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    atomic_write_text(out / "special_tokens_map.json",
                      json.dumps({k: v for k, v in specials.items() if v}, indent=2))


def _token_str(v):
  return v.get("content") if isinstance(v, dict) else v


def from_dir(model_dir: str | pathlib.Path) -> Tokenizer:
  """tokenizer.json (preferred) or tokenizer.model, with tokenizer_config.json for specials."""
  d = pathlib.Path(model_dir)
  cfg = {}
  if (d / "tokenizer_config.json").exists():
    cfg = json.loads((d / "tokenizer_config.json").read_text())
  if not cfg.get("chat_template") and (d / "chat_template.jinja").exists():
    cfg["chat_template"] = (d / "chat_template.jinja").read_text()
  if (d / "special_tokens_map.json").exists():
    for k, v in json.loads((d / "special_tokens_map.json").read_text()).items():
      cfg.setdefault(k, v)
  kw = dict(bos_token=_token_str(cfg.get("bos_token")), eos_token=_token_str(cfg.get("eos_token")),
            pad_token=_token_str(cfg.get("pad_token")), unk_token=_token_str(cfg.get("unk_token")),
            chat_template=cfg.get("chat_template"), add_bos=bool(cfg.get("add_bos_token", False)))
  if (d / "tokenizer.json").exists():
    import tokenizers
    tok = tokenizers.Tokenizer.from_file(str(d / "tokenizer.json"))
    # Specials the HF post-processor would add are added by us (add_bos) instead.
    tok.post_processor = None
    return Tokenizer(tok, **kw)
  for name in ("tokenizer.model", "sentencepiece.bpe.model", "spiece.model"):
    if (d / name).exists():
      return from_sentencepiece(d / name, **kw)
  raise UserError(f"{d}: no tokenizer.json or sentencepiece model")


def from_sentencepiece(path: str | pathlib.Path, **kw) -> Tokenizer:
  import sentencepiece as spm
  sp = spm.SentencePieceProcessor(model_file=str(path))
  kw.setdefault("bos_token", sp.id_to_piece(sp.bos_id()) if sp.bos_id() >= 0 else None)
  kw.setdefault("eos_token", sp.id_to_piece(sp.eos_id()) if sp.eos_id() >= 0 else None)
  kw.setdefault("unk_token", sp.id_to_piece(sp.unk_id()) if sp.unk_id() >= 0 else None)
  kw.setdefault("add_bos", True)
  return Tokenizer(sp, sp_path=str(path), **kw)


def from_gguf_metadata(meta: dict) -> Tokenizer:
  """Byte-level BPE vocabularies (`tokenizer.ggml.model = gpt2`) from GGUF metadata."""
  import tokenizers
  from tokenizers import decoders, models, pre_tokenizers
  kind = meta.get("tokenizer.ggml.model")
  if kind != "gpt2":
    raise UserError(f"GGUF tokenizer model {kind!r} is not supported (byte-level BPE 'gpt2' only)")
  tokens = list(meta["tokenizer.ggml.tokens"])
  types = list(meta.get("tokenizer.ggml.token_type") or [1] * len(tokens))
  merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
  vocab = {t: i for i, t in enumerate(tokens)}
  tok = tokenizers.Tokenizer(models.BPE(vocab, merges, fuse_unk=False, byte_fallback=False))
  pre = meta.get("tokenizer.ggml.pre", "gpt2")
  byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
  if pre in _DIGITS_THEN_BYTES:
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), byte_level])
  else:
    tok.pre_tokenizer = byte_level
  tok.decoder = decoders.ByteLevel()
  # GGUF token types: 3 = control, 4 = user-defined; both match as whole strings.
  specials = [tokenizers.AddedToken(t, special=True, normalized=False)
              for t, ty in zip(tokens, types) if ty in (3, 4)]
  tok.add_special_tokens(specials)
  name = lambda key: tokens[meta[key]] if meta.get(key) is not None else None
  return Tokenizer(tok, bos_token=name("tokenizer.ggml.bos_token_id"),
                   eos_token=name("tokenizer.ggml.eos_token_id"),
                   pad_token=name("tokenizer.ggml.padding_token_id"),
                   unk_token=name("tokenizer.ggml.unknown_token_id"),
                   chat_template=meta.get("tokenizer.chat_template"),
                   add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", False)))


def byte_level() -> Tokenizer:
  """A merge-free byte-level tokenizer for tiny from-scratch students and tests.

  258 ids: 0 `<pad>` (seqio's padding id), 1 `<|endoftext|>` (BOS and EOS), then the 256 bytes.
  """
  import tokenizers
  from tokenizers import decoders, models, pre_tokenizers
  vocab = {"<pad>": 0, "<|endoftext|>": 1}
  for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
    vocab[ch] = len(vocab)
  tok = tokenizers.Tokenizer(models.BPE(vocab, [], fuse_unk=False))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  tok.decoder = decoders.ByteLevel()
  tok.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False)
                          for t in ("<pad>", "<|endoftext|>")])
  return Tokenizer(tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<pad>")
