"""Lazy readers of HF weight files: safetensors via mmap (bf16 through ml_dtypes), *.bin via
`torch.load(weights_only=True)` only."""
from __future__ import annotations

import json
import mmap
import pathlib
import struct

import ml_dtypes
import numpy as np

from brd_jax.errors import UserError, optional_import

_ST_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}


class SafetensorsFile:
  """One .safetensors file, memory-mapped; `get` copies out a single tensor."""

  def __init__(self, path: pathlib.Path):
    self.path = path
    try:
      self._f = open(path, "rb")
      (n,) = struct.unpack("<Q", self._f.read(8))
      if n > path.stat().st_size - 8:
        raise ValueError("header length exceeds the file size (truncated or not safetensors)")
      header = json.loads(self._f.read(n))
      self._mm = mmap.mmap(self._f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError, struct.error) as e:
      raise UserError(f"cannot read safetensors file {path}: {e}") from None
    self._base = 8 + n
    header.pop("__metadata__", None)
    self.index = header

  def names(self):
    return self.index.keys()

  def get(self, name: str) -> np.ndarray:
    info = self.index[name]
    if info["dtype"] not in _ST_DTYPES:
      raise UserError(f"{self.path}: tensor {name} has unsupported dtype {info['dtype']}")
    start, end = info["data_offsets"]
    dt = np.dtype(_ST_DTYPES[info["dtype"]])
    buf = self._mm[self._base + start:self._base + end]
    return np.frombuffer(buf, dtype=dt).reshape(info["shape"]).astype(np.float32)


class TorchBinFile:
  """A pytorch_model*.bin read with torch.load(weights_only=True): no arbitrary unpickling."""

  def __init__(self, path: pathlib.Path):
    torch = optional_import("torch", "torch", f"reading {path.name} (a PyTorch .bin)")
    try:
      self._sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError for anything but plain tensors
      raise UserError(f"refusing or unable to load {path} with weights_only=True: "
                      f"{str(e).splitlines()[0]}") from None

  def names(self):
    return self._sd.keys()

  def get(self, name: str) -> np.ndarray:
    return self._sd[name].float().numpy()


class HFWeights:
  """All weight files of an HF model directory behind one name -> array lookup."""

  def __init__(self, model_dir: str | pathlib.Path):
    d = pathlib.Path(model_dir)
    files = sorted(d.glob("*.safetensors"))
    if files:
      readers = [SafetensorsFile(f) for f in files]
    else:
      bins = sorted(d.glob("pytorch_model*.bin"))
      if not bins:
        raise UserError(f"{d}: no *.safetensors or pytorch_model*.bin weights found")
      readers = [TorchBinFile(f) for f in bins]
    self._where = {}
    for r in readers:
      for n in r.names():
        self._where[n] = r
    self.source = str(d)

  def __contains__(self, name: str) -> bool:
    return name in self._where or self._alias(name) in self._where

  def _alias(self, name: str) -> str:
    # Some exports omit the "model."/"transformer." prefix.
    return name.split(".", 1)[1] if name.startswith(("model.", "transformer.")) else name

  def get(self, name: str) -> np.ndarray:
    if name in self._where:
      return self._where[name].get(name)
    alias = self._alias(name)
    if alias in self._where:
      return self._where[alias].get(alias)
    raise UserError(f"{self.source}: tensor {name} not found in the checkpoint")
