"""Log-likelihood of continuations given contexts (lm-eval's `loglikelihood` request).

Tokenisation follows lm-eval: context and continuation are encoded together and split at the
context's token count; trailing context spaces move to the continuation; an empty context is
replaced by the prefix token (BOS, else EOS). The vocabulary projection runs only at the scored
positions.

Requests whose inputs share a token prefix (the candidates of one multiple-choice question) form a
unit: the prefix once, then each candidate's remaining tokens as a branch that attends to the
prefix and to itself, with positions continuing from the prefix. Units are packed into rows
(`pack`: widest first, row length a bucket of powers of two and their midpoints, gaps filled with
the narrowest) and scored in jitted batches under a token budget, optionally sharded over the mesh.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from brd_jax import sharding
from brd_jax.inference.engine import bucket

COMPILES = {"score": 0}


@dataclasses.dataclass
class LogLik:
  loglik: float
  n_tokens: int
  is_greedy: bool


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
  n_spaces = len(context) - len(context.rstrip())
  if n_spaces:
    continuation = context[-n_spaces:] + continuation
    context = context[:-n_spaces]
  whole = tokenizer.encode(context + continuation, add_bos=False)
  ctx = tokenizer.encode(context, add_bos=False)
  return ctx, whole[len(ctx):]


def length_bucket(n: int) -> int:
  """16, 24, 32, 48, 64, 96, ...: powers of two and their midpoints (less padding, few shapes)."""
  b = 16
  while True:
    if n <= b:
      return b
    if n <= b * 3 // 2:
      return b * 3 // 2
    b *= 2


def tree_mask(unit_BT, branch_BT):
  """Causal mask over rows packed with units [prefix | branch | branch ...]: unit 0 = padding;
  branch 0 = the unit's prefix, and a branch sees its prefix and itself. A padding query sees
  only itself (no empty softmax rows)."""
  T = unit_BT.shape[1]
  slots = jnp.arange(T)
  causal = slots[None, :] <= slots[:, None]
  same = (unit_BT[:, :, None] == unit_BT[:, None, :]) & (unit_BT[:, None, :] != 0)
  qb, kb = branch_BT[:, :, None], branch_BT[:, None, :]
  allowed = causal & same & ((kb == qb) | (kb == 0))
  return (allowed | (slots[None, :] == slots[:, None]))[:, None]


@functools.partial(jax.jit, static_argnums=(0,))
def _score(graphdef, state, tokens_BT, unit_BT, branch_BT, positions_BT, pos_BC, targets_BC,
           valid_BC):
  """log p(target) and whether it is the argmax, at each of the C scored slots of each row.

  A slot is a (position, target) pair; the requests sharing a row put their slots side by side.
  The vocabulary projection runs only at the scored positions (usually a handful per row).
  """
  COMPILES["score"] += 1  # trace time only
  model = nnx.merge(graphdef, state)
  hidden, _ = model(tokens_BT, positions_BT=positions_BT, return_hidden=True,
                    mask_B1TS=tree_mask(unit_BT, branch_BT))
  hidden = jnp.take_along_axis(hidden, pos_BC[..., None], axis=1)
  logits = model.logits(hidden)
  lse = jax.nn.logsumexp(logits, -1)
  tgt = jnp.take_along_axis(logits, targets_BC[..., None], -1)[..., 0]
  lp = jnp.where(valid_BC, tgt - lse, 0.0)
  greedy = jnp.where(valid_BC, jnp.argmax(logits, -1) == targets_BC, True)
  return lp, greedy


def _common(a, b, n) -> int:
  i = 0
  while i < n and a[i] == b[i]:
    i += 1
  return i


def share_prefixes(inputs, max_len: int, min_shared: int = 4, max_branches: int = 16):
  """Unique inputs -> units [(prefix length, members)]: neighbours in sorted order join a unit
  while they share >= min_shared leading tokens and at least a third of the joining input, and the
  unit (prefix + branches) fits max_len and twice its longest member. The last two bounds keep
  inputs that share only a task preamble (BIG-bench) from becoming one huge row whose attention
  costs more than the shared tokens save."""
  units = []
  for inp in sorted(inputs):
    if units:
      P, members = units[-1]
      p = _common(members[0], inp, min(P, len(inp)))
      length = p + sum(len(m) - p for m in members) + len(inp) - p
      longest = max(len(inp), max(map(len, members)))
      if (p >= min_shared and 3 * p >= len(inp) and len(members) < max_branches
          and length <= max_len and length <= 2 * longest):
        units[-1] = (p, members + [inp])
        continue
    units.append((len(inp), [inp]))
  return units


def rows_per_batch(T: int, token_budget: int, rows_multiple: int = 1) -> int:
  """Rows of length T under the token budget, a multiple of rows_multiple (the mesh's batch)."""
  return max(rows_multiple, token_budget // T // rows_multiple * rows_multiple)


def _fill(widths, i: int, j: int, T: int, B: int):
  """Up to B rows of length T from units i.. (best fit, in order, until one fits no row), then
  the narrowest remaining units (from j down) into the gaps -> (rows, i, j)."""
  rows, free = [], []
  while i < j:
    fits = [r for r in range(len(rows)) if free[r] >= widths[i]]
    if fits:
      r = min(fits, key=free.__getitem__)
    elif len(rows) < B:
      rows.append([])
      free.append(T)
      r = len(rows) - 1
    else:
      break
    rows[r].append(i)
    free[r] -= widths[i]
    i += 1
  for r in range(len(rows)):
    while i < j and widths[j - 1] <= free[r]:
      j -= 1
      rows[r].append(j)
      free[r] -= widths[j]
  return rows, i, j


def padded_rows(n_rows: int, T: int, token_budget: int, rows_multiple: int = 1) -> int:
  """The rows a batch of n_rows is padded to: a power of two (>= the mesh's batch), at most
  rows_per_batch (few shapes, so few compilations)."""
  b = max(rows_multiple, 1)
  while b < n_rows:
    b *= 2
  return min(b, rows_per_batch(T, token_budget, rows_multiple))


def pack(widths: Sequence[int], token_budget: int, rows_multiple: int = 1, min_len: int = 128,
         attn_len: int = 1024):
  """Unit widths, sorted descending -> batches [(T, rows)], each row a list of unit indices whose
  widths sum to <= T; a batch has up to token_budget // T rows (a multiple of rows_multiple).
  T is one of the three length buckets from the batch's widest unit (>= min_len): the one whose
  padded batch does the real tokens at the least cost, a row costing T (1 + T / attn_len) (the
  tree-masked attention grows with T squared). Units of ~0.6 T fill a row of T badly and two to
  a row of 2T well: whole-sentence candidates, e.g. PAWS-X."""
  batches, i, j = [], 0, len(widths)
  while i < j:
    first = max(length_bucket(widths[i]), min_len)
    options = [first]
    while len(options) < 3:
      options.append(length_bucket(options[-1] + 1))
    best = None
    for T in options:
      B = rows_per_batch(T, token_budget, rows_multiple)
      rows, i2, j2 = _fill(widths, i, j, T, B)
      real = sum(widths[k] for row in rows for k in row)
      fill = real / (padded_rows(len(rows), T, token_budget, rows_multiple) * T *
                     (1 + T / attn_len))
      if best is None or fill > best[0] + 1e-9:
        best = (fill, T, rows, i2, j2)
    _, T, rows, i, j = best
    batches.append((T, rows))
  return batches


class Scorer:
  """Scores (context ids, continuation ids) pairs with one model."""

  def __init__(self, model, tokenizer=None, mesh=None, max_len: int | None = None,
               token_budget: int = 4096, share_prefix: bool = True):
    self.model, self.tokenizer, self.mesh = model, tokenizer, mesh
    self.share_prefix = share_prefix
    self.max_len = max_len or model.cfg.max_len
    self.token_budget = token_budget
    self._graphdef, self._state = nnx.split(model)
    self._rows = sharding.batch_multiple(mesh)

  def prefix_id(self) -> int:
    tok = self.tokenizer
    for i in (getattr(tok, "bos_id", None), getattr(tok, "eos_id", None), self.model.cfg.bos_id,
              self.model.cfg.eos_id):
      if i is not None:
        return int(i)
    return 0

  def loglik(self, requests: Sequence[tuple[str, str]], progress=None) -> list[LogLik]:
    pairs = []
    for ctx, cont in requests:
      c, k = encode_pair(self.tokenizer, ctx, cont) if ctx else (
          [self.prefix_id()], self.tokenizer.encode(cont, add_bos=False))
      pairs.append((c or [self.prefix_id()], k))
    return self.loglik_ids(pairs, progress)

  def loglik_ids(self, pairs: Sequence[tuple[list[int], list[int]]], progress=None) -> list[LogLik]:
    """Requests with an identical model input (context + continuation minus its last token),
    e.g. the one-token answers of a question, share its slots; inputs sharing a prefix share a
    row (`share_prefixes`)."""
    reqs: dict[tuple, list] = {}  # model input -> [(request index, first position, targets)]
    for j, (ctx, cont) in enumerate(pairs):
      if not cont:
        raise ValueError("empty continuation")
      whole = (list(ctx) + list(cont))[-(self.max_len + 1):]
      inp, n = tuple(whole[:-1]), min(len(cont), len(whole) - 1)
      reqs.setdefault(inp, []).append((j, len(inp) - n, whole[-n:]))
    if self.share_prefix:
      units = share_prefixes(reqs, self.max_len)
    else:
      units = [(len(inp), [inp]) for inp in reqs]
    width = lambda unit: unit[0] + sum(len(m) - unit[0] for m in unit[1])
    units.sort(key=width, reverse=True)
    out: list[LogLik | None] = [None] * len(pairs)
    for T, rows in pack([width(u) for u in units], self.token_budget, self._rows):
      batch = padded_rows(len(rows), T, self.token_budget, self._rows)
      # scored slots per row: whole-sentence continuations (XNLI, PAWS-X) score dozens of
      # positions per request, so the finer length buckets waste less vocabulary projection
      C = max(sum(len(t) for k in row for m in units[k][1] for _, _, t in reqs[m]) for row in rows)
      C = bucket(C, 4) if C <= 16 else length_bucket(C)
      tokens, unit_id, branch, positions = (np.zeros((batch, T), np.int32) for _ in range(4))
      pos, targets = np.zeros((batch, C), np.int32), np.zeros((batch, C), np.int32)
      valid = np.zeros((batch, C), bool)
      slots = []  # (request, row, first slot, n)
      for r, row in enumerate(rows):
        at, c = 0, 0
        for u, k in enumerate(row, 1):
          P, members = units[k]
          tokens[r, at:at + P], unit_id[r, at:at + P] = members[0][:P], u
          positions[r, at:at + P] = np.arange(P)
          start_of = at  # the unit's first slot
          at += P
          for b, inp in enumerate(members, 1):
            rest = len(inp) - P
            tokens[r, at:at + rest], unit_id[r, at:at + rest] = inp[P:], u
            branch[r, at:at + rest], positions[r, at:at + rest] = b, np.arange(P, len(inp))
            for j, start, tgt in reqs[inp]:
              n = len(tgt)
              q = np.arange(start, start + n)
              pos[r, c:c + n] = np.where(q < P, start_of + q, at + q - P)
              targets[r, c:c + n] = tgt
              valid[r, c:c + n] = True
              slots.append((j, r, c, n))
              c += n
            at += rest
      lp, greedy = _score(self._graphdef, self._state, *map(
          self._place, (tokens, unit_id, branch, positions, pos, targets, valid)))
      lp, greedy = np.asarray(lp), np.asarray(greedy)
      for j, r, c, n in slots:
        out[j] = LogLik(float(lp[r, c:c + n].sum()), n, bool(greedy[r, c:c + n].all()))
      if progress is not None:
        progress(len(slots))
    return out

  def _place(self, arr):
    if self.mesh is None:
      return jnp.asarray(arr)
    with sharding.use_mesh(self.mesh):
      return jax.device_put(arr, sharding.named_sharding(self.mesh, ("batch", "length")))
