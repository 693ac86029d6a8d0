"""HF model directories: import (config.json + weights) into sharded Flax params, and export back."""
from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
from jax.sharding import Mesh

from brd_jax.errors import UserError
from brd_jax.io_utils import atomic_write_text
from brd_jax.models import build, families
from brd_jax.models.config import ModelConfig
from brd_jax.models.layers import Decoder

MAX_SHARD_BYTES = 4 << 30


def read_config(model_dir: str | pathlib.Path) -> dict:
  path = pathlib.Path(model_dir) / "config.json"
  try:
    return json.loads(path.read_text())
  except FileNotFoundError:
    raise UserError(f"{model_dir}: no config.json") from None
  except (ValueError, UnicodeDecodeError) as e:
    raise UserError(f"{path}: invalid JSON ({e})") from None


def config_from_hf(hf: dict) -> ModelConfig:
  if "model_type" not in hf:
    raise UserError("config.json has no model_type")
  try:
    return families.for_model_type(hf["model_type"]).config_from_hf(hf)
  except KeyError as e:
    raise UserError(f"config.json lacks {e.args[0]!r} for model_type {hf['model_type']}") from None


def iter_tensors(cfg: ModelConfig, source):
  """Yields (our path, host array) from anything with `get(hf_name)`; layers are stacked."""
  for ours, name, to_ours, _ in families.BY_FAMILY[cfg.family].tensor_map(cfg):
    if "{i}" in name:
      arr = np.stack([to_ours(source.get(name.format(i=i))) for i in range(cfg.n_layers)])
    else:
      arr = to_ours(source.get(name))
    yield ours, arr


def import_dir(model_dir: str | pathlib.Path, mesh: Mesh | None = None,
               overrides: dict | None = None) -> tuple[Decoder, ModelConfig]:
  from brd_jax.checkpoints.tensors import HFWeights
  cfg = config_from_hf(read_config(model_dir))
  if overrides:
    cfg = cfg.replace(**overrides)
  weights = HFWeights(model_dir)
  return build.load(cfg, iter_tensors(cfg, weights), mesh, source=str(model_dir)), cfg


def _host(x: jax.Array) -> np.ndarray:
  if not x.is_fully_addressable:
    from jax.experimental import multihost_utils
    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(jax.device_get(x), dtype=np.float32)


def export_tensors(model: Decoder) -> dict[str, np.ndarray]:
  """Our params -> HF-named host arrays (fp32)."""
  cfg = model.cfg
  flat = build.flat_params(model)
  host = {}
  get = lambda p: host.setdefault(p, _host(flat[p]))
  out = {}
  for ours, name, _, to_hf in families.BY_FAMILY[cfg.family].tensor_map(cfg):
    if to_hf is None:
      continue
    arr = get(ours)
    if "{i}" in name:
      for i in range(cfg.n_layers):
        out[name.format(i=i)] = to_hf(arr[i])
    else:
      out[name] = to_hf(arr)
  for name, (ours_list, join) in families.export_joins(cfg).items():
    arrs = [get(o) for o in ours_list]
    for i in range(cfg.n_layers):
      out[name.format(i=i)] = join(*(a[i] for a in arrs))
  return {k: np.ascontiguousarray(v) for k, v in out.items()}


def export_dir(model: Decoder, out_dir: str | pathlib.Path, tokenizer=None,
               dtype: str = "float32") -> pathlib.Path:
  """Writes config.json, model*.safetensors (+ index when sharded) and tokenizer files."""
  from safetensors.numpy import save_file
  import ml_dtypes
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  if jax.process_index() != 0:
    export_tensors(model)  # all hosts join the gathers
    return out
  np_dtype = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}[dtype]
  tensors = {k: v.astype(np_dtype) for k, v in export_tensors(model).items()}
  shards, cur, size = [], {}, 0
  for k, v in tensors.items():
    if cur and size + v.nbytes > MAX_SHARD_BYTES:
      shards.append(cur)
      cur, size = {}, 0
    cur[k] = v
    size += v.nbytes
  shards.append(cur)
  if len(shards) == 1:
    names = ["model.safetensors"]
  else:
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
  for name, shard in zip(names, shards):
    tmp = out / f".{name}.tmp"
    save_file(shard, str(tmp), metadata={"format": "pt"})
    tmp.replace(out / name)
  if len(shards) > 1:
    index = {"metadata": {"total_size": sum(v.nbytes for v in tensors.values())},
             "weight_map": {k: n for n, s in zip(names, shards) for k in s}}
    atomic_write_text(out / "model.safetensors.index.json", json.dumps(index, indent=2))
  hf_cfg = families.BY_FAMILY[model.cfg.family].config_to_hf(model.cfg)
  hf_cfg["torch_dtype"] = dtype
  atomic_write_text(out / "config.json", json.dumps(hf_cfg, indent=2) + "\n")
  if tokenizer is not None:
    tokenizer.save(out)
  return out
