"""Teacher-student agreement over task texts: cross-entropy and KL of the next-token distributions.

For each real next-token position of `context + gold continuation`:
CE = -sum_v p_T(v) log p_S(v), KL = CE - H(p_T), and the student's NLL of the actual token. The
paper reports that BRD lowers the student-to-teacher cross-entropy.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from brd_jax.errors import UserError
from brd_jax.models import build

PROBE = "The quick brown fox, 1234 Zürich; naïve ¿qué?"


def check_compatible(student, s_tok, teacher, t_tok) -> None:
  if student.cfg.vocab_size != teacher.cfg.vocab_size or s_tok.encode(PROBE) != t_tok.encode(PROBE):
    raise UserError("--reference_model must share the student's tokenizer and vocabulary "
                    f"(vocab {teacher.cfg.vocab_size} vs {student.cfg.vocab_size})")


def _stats_fn(bind_s, bind_t):
  @jax.jit
  def stats(ps, pt, tokens_BT, seg_BT):
    ls = jax.nn.log_softmax(bind_s(ps)(tokens_BT, segment_ids_BT=seg_BT)[0][:, :-1], -1)
    lt = jax.nn.log_softmax(bind_t(pt)(tokens_BT, segment_ids_BT=seg_BT)[0][:, :-1], -1)
    p_t = jnp.exp(lt)
    ce = -jnp.sum(p_t * ls, -1)
    ent = -jnp.sum(p_t * lt, -1)
    nll = -jnp.take_along_axis(ls, tokens_BT[:, 1:, None], -1)[..., 0]
    m = (seg_BT[:, 1:] != 0).astype(jnp.float32)
    return jnp.stack([jnp.sum(ce * m), jnp.sum((ce - ent) * m), jnp.sum(nll * m), jnp.sum(m)])
  return stats


class Divergence:
  """Scores texts with a student and a reference (teacher) model sharing one tokenizer."""

  def __init__(self, student, teacher, tokenizer, token_budget: int = 4096):
    self.tok = tokenizer
    self.budget = token_budget
    self.ps, bind_s = build.functional(student)
    self.pt, bind_t = build.functional(teacher)
    self._stats = _stats_fn(bind_s, bind_t)
    self.max_len = min(student.cfg.max_len, teacher.cfg.max_len)

  def score(self, texts: list[str], progress=None) -> dict:
    ids = [self.tok.encode(t, add_bos=None)[-self.max_len:] for t in texts]
    ids = [x for x in ids if len(x) >= 2]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    total = np.zeros(4)
    i = 0
    while i < len(order):
      T = max(16, 1 << (len(ids[order[i]]) - 1).bit_length())
      rows = []
      while i < len(order) and len(ids[order[i]]) <= T and (len(rows) + 1) * T <= max(
          self.budget, T):
        rows.append(ids[order[i]])
        i += 1
      toks = np.zeros((len(rows), T), np.int32)
      seg = np.zeros((len(rows), T), np.int32)
      for r, x in enumerate(rows):
        toks[r, :len(x)] = x
        seg[r, :len(x)] = 1
      total += np.asarray(self._stats(self.ps, self.pt, toks, seg), np.float64)
      if progress:
        progress(len(rows))
    n = max(total[3], 1.0)
    return {"ref_ce": total[0] / n, "ref_kl": total[1] / n, "student_nll": total[2] / n,
            "ref_tokens": int(total[3])}
