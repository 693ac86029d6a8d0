"""A seqio Vocabulary over the student's `brd_jax.tokenizer.Tokenizer`."""
from __future__ import annotations

import numpy as np

from brd_jax.data._tf import seqio, tf


class TokenizerVocabulary(seqio.Vocabulary):
  """Wraps the project tokenizer; tf-side encoding calls the Rust / sentencepiece tokenizer.

  seqio treats id 0 as padding, which holds for the families used here (XGLM's <s>, GPT-2's '!'
  rarely matters); a tokenizer whose EOS is 0 gets no loss on its EOS tokens.
  """

  def __init__(self, tokenizer, name: str = "student"):
    self.tokenizer = tokenizer
    self._name = name
    super().__init__(extra_ids=0)

  @property
  def eos_id(self):
    return self.tokenizer.eos_id

  @property
  def unk_id(self):
    return self.tokenizer.token_to_id(self.tokenizer.unk_token)

  @property
  def _base_vocab_size(self) -> int:
    return self.tokenizer.vocab_size

  def _encode(self, s):
    return self.tokenizer.encode(s, add_bos=False)

  def _decode(self, ids):
    return self.tokenizer.decode([i for i in ids if i >= 0])

  def _encode_tf(self, s):
    def enc(x):
      return np.asarray(self._encode(x.decode("utf-8")), np.int32)
    ids = tf.numpy_function(enc, [s], tf.int32, stateful=False)
    ids.set_shape([None])
    return ids

  def _decode_tf(self, ids):
    def dec(x):
      return np.bytes_(self._decode(x.tolist()).encode("utf-8"))
    out = tf.numpy_function(dec, [ids], tf.string, stateful=False)
    out.set_shape([])
    return out

  def __eq__(self, other):
    return isinstance(other, TokenizerVocabulary) and other.tokenizer is self.tokenizer
