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
    # per row (one document a row): the sums that make token-weighted means and their intervals
    return jnp.stack([jnp.sum(ce * m, 1), jnp.sum((ce - ent) * m, 1), jnp.sum(nll * m, 1),
                      jnp.sum(m, 1)])
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
    """Token-weighted means over all texts, and `per_doc`: each text's sums (ce, kl, nll,
    tokens), None for a text under two tokens."""
    ids = [self.tok.encode(t, add_bos=None)[-self.max_len:] for t in texts]
    order = sorted((i for i in range(len(ids)) if len(ids[i]) >= 2), key=lambda i: len(ids[i]))
    per_doc = [None] * len(ids)
    i = 0
    while i < len(order):
      T = max(16, 1 << (len(ids[order[i]]) - 1).bit_length())
      rows = []
      while i < len(order) and len(ids[order[i]]) <= T and (len(rows) + 1) * T <= max(
          self.budget, T):
        rows.append(order[i])
        i += 1
      toks = np.zeros((len(rows), T), np.int32)
      seg = np.zeros((len(rows), T), np.int32)
      for r, j in enumerate(rows):
        toks[r, :len(ids[j])] = ids[j]
        seg[r, :len(ids[j])] = 1
      sums = np.asarray(self._stats(self.ps, self.pt, toks, seg), np.float64)
      for r, j in enumerate(rows):
        per_doc[j] = [float(v) for v in sums[:, r]]
      if progress:
        progress(len(rows))
    total = np.sum([x for x in per_doc if x is not None], axis=0) if order else np.zeros(4)
    n = max(total[3], 1.0)
    return {"ref_ce": total[0] / n, "ref_kl": total[1] / n, "student_nll": total[2] / n,
            "ref_tokens": int(total[3]), "per_doc": per_doc}
