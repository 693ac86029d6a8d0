"""brd_jax as an lm-evaluation-harness model, `--model brd_jax`, on the project's scorer and engine.

  brd-lm-eval run --model brd_jax --model_args pretrained=SPEC,token_budget=4096,mesh=1x1x8 \\
      --tasks rte,cb ...

`brd-lm-eval` is lm-eval's own command line with this model registered: lm-eval 0.4 finds models
only in its own MODEL_MAPPING (no entry-point discovery), so a plain `lm_eval` process cannot see
it. In Python, importing this module registers it: `lm_eval.simple_evaluate(model="brd_jax", ...)`.
SPEC is any `--model` the project accepts: an HF directory, a .gguf file, asset:NAME or a `brd
train` work dir. Requests follow lm-eval's HFLM: no BOS added, the prefix token for an empty
context, contexts left-truncated to leave room for generation, rolling windows of the model's
max_len, generations cut at the first stop sequence.
"""
from __future__ import annotations

import sys

from brd_jax.errors import UserError, optional_import

lm_eval_api = optional_import("lm_eval.api.model", "lm_eval", "--model brd_jax")
lm_utils = optional_import("lm_eval.utils", "lm_eval", "--model brd_jax")
registry = optional_import("lm_eval.api.registry", "lm_eval", "--model brd_jax")


def _mesh(spec: str | None):
  from brd_jax import sharding
  if not spec:
    return sharding.multi_device(sharding.make_mesh())
  try:
    shape = [int(x) for x in str(spec).split("x")]
  except ValueError:
    shape = []
  if len(shape) != 3:
    raise UserError(f"mesh={spec!r}: give data x fsdp x tensor, e.g. mesh=1x1x8")
  return sharding.multi_device(sharding.make_mesh(shape))


@registry.register_model("brd_jax")
class BrdLM(lm_eval_api.LM):
  """lm-eval's three request types on the project's prefix-shared scorer and its engine."""

  def __init__(self, pretrained: str, token_budget: int = 4096, batch_size: int | str = 32,
               max_gen_toks: int = 256, mesh: str | None = None, **unused):
    super().__init__()
    from brd_jax.checkpoints import resolve
    from brd_jax.inference.engine import Engine
    from brd_jax.inference.scoring import Scorer
    self.mesh = _mesh(mesh)
    loaded = resolve.load(str(pretrained), self.mesh)
    if loaded.tokenizer is None:
      raise UserError(f"pretrained={pretrained}: no tokenizer")
    self.tok, self.max_length = loaded.tokenizer, int(loaded.model.cfg.max_len)
    self.max_gen_toks = int(max_gen_toks)
    rows = 32 if str(batch_size).startswith("auto") else int(batch_size)
    self.scorer = Scorer(loaded.model, self.tok, self.mesh, token_budget=int(token_budget))
    self.engine = Engine(loaded.model, self.tok, self.mesh, max_batch=rows)
    self.unused = unused

  def loglikelihood(self, requests, disable_tqdm: bool = False):
    from tqdm import tqdm
    with tqdm(total=len(requests), disable=disable_tqdm, desc="brd_jax loglikelihood") as bar:
      out = self.scorer.loglik([tuple(r.args) for r in requests], bar.update)
    return [(g.loglik, g.is_greedy) for g in out]

  def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
    from tqdm import tqdm
    windows, owner = [], []
    for i, r in enumerate(requests):
      ids = self.tok.encode(r.args[0], add_bos=False)
      for w in map(lm_utils.make_disjoint_window, lm_utils.get_rolling_token_windows(
          token_list=ids, prefix_token=self.scorer.prefix_id(), max_seq_len=self.max_length,
          context_len=1)):
        windows.append((list(w[0]), list(w[1])))
        owner.append(i)
    with tqdm(total=len(windows), disable=disable_tqdm, desc="brd_jax rolling") as bar:
      out = self.scorer.loglik_ids(windows, bar.update)
    sums = [0.0] * len(requests)
    for i, g in zip(owner, out):
      sums[i] += g.loglik
    return sums

  def generate_until(self, requests, disable_tqdm: bool = False):
    import jax
    from tqdm import tqdm
    from brd_jax.inference.sampling import Sampling
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(requests):  # one batch setting per distinct gen_kwargs, as HFLM does
      groups.setdefault(repr(sorted(r.args[1].items())), []).append(i)
    res: list[str | None] = [None] * len(requests)
    bar = tqdm(total=len(requests), disable=disable_tqdm, desc="brd_jax generate_until")
    for idx in groups.values():
      kw = dict(requests[idx[0]].args[1])
      until = kw.pop("until", None) or []
      until = [until] if isinstance(until, str) else list(until)
      max_new = int(kw.pop("max_gen_toks", self.max_gen_toks))
      sampled = kw.pop("do_sample", False) or float(kw.get("temperature", 0.0) or 0.0) > 0
      sampling = Sampling(float(kw.get("temperature", 1.0)) if sampled else 0.0,
                          int(kw.get("top_k", 0) or 0), float(kw.get("top_p", 1.0) or 1.0))
      keep = self.max_length - max_new
      if keep <= 0:
        raise UserError(f"max_gen_toks={max_new} leaves no room in max_len {self.max_length}")
      prompts = [self.tok.encode(requests[i].args[0], add_bos=False)[-keep:] for i in idx]
      keys = jax.vmap(lambda j: jax.random.fold_in(jax.random.key(int(kw.get("seed", 0))), j))(
          jax.numpy.asarray(idx))
      gens = self.engine.generate(prompts, max_new, sampling, keys=keys, stop=until,
                                  cut_at_stop=False)
      for i, g in zip(idx, gens):
        text = g.text
        for s in until:  # lm-eval's rule: the text before the first stop sequence
          text = text.split(s)[0] if s else text
        res[i] = text
        bar.update(1)
    bar.close()
    return res


def main(argv=None) -> None:
  """`brd-lm-eval`: lm-eval's command line, with `--model brd_jax` registered."""
  cli_evaluate = optional_import("lm_eval.__main__", "lm_eval", "brd-lm-eval").cli_evaluate
  if argv is not None:
    sys.argv = ["brd-lm-eval", *argv]
  cli_evaluate()


if __name__ == "__main__":
  main()
