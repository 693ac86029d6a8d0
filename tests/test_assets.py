"""Registry assets: a release the registry withdrew is named as such, and a local copy of its
archive is taken when, and only when, its bytes are the pinned ones."""
import dataclasses
import functools
import hashlib
import http.server
import io
import json
import tarfile
import threading

import pytest

from brd_jax import assets, cli
from brd_jax.errors import UserError


def _sdist(path, tasks):
  with tarfile.open(path, "w:gz") as tar:
    for name, data in tasks.items():
      raw = json.dumps(data).encode()
      info = tarfile.TarInfo(f"pkg-1.0/pkg/benchmark_tasks/{name}/task.json")
      info.size = len(raw)
      tar.addfile(info, io.BytesIO(raw))
  return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def pinned(tmp_path, monkeypatch):
  """A `bigbench-tasks`-like asset pinned to an archive this test builds."""
  monkeypatch.setenv("BRD_CACHE", str(tmp_path / "cache"))
  archive = tmp_path / "pkg-1.0.tar.gz"
  task = {"examples": [{"input": "2 + 2?", "target_scores": {"4": 1, "5": 0}}]}
  sha = _sdist(archive, {"sums": task, "nested/more": task})
  a = dataclasses.replace(assets.get("bigbench-tasks"), name="pkg-tasks", requirement="pkg==1.0",
                          archive_sha256=sha, member="pkg-1.0/pkg/benchmark_tasks/")
  monkeypatch.setitem(assets.ASSETS, a.name, a)
  return a, archive


def test_a_local_archive_is_taken_only_with_the_pinned_bytes(pinned, tmp_path, capsys):
  a, archive = pinned
  other = tmp_path / "other.tar.gz"
  _sdist(other, {"sums": {"examples": []}})
  with pytest.raises(UserError, match="!= pinned .*not the archive of pkg==1.0"):
    assets.fetch(a.name, archive=other)
  assert not assets.is_fetched(a.name)
  assert cli.main(["assets", "fetch", a.name, "--archive", str(tmp_path / "missing.tar.gz")]) == 2
  assert "no such file" in capsys.readouterr().err
  assert cli.main(["assets", "path", a.name, "--archive", str(archive)]) == 2
  assert cli.main(["assets", "fetch", a.name, "--archive", str(archive)]) == 0
  out = assets.path(a.name)
  assert capsys.readouterr().out.strip() == str(out)
  assert sorted(p.relative_to(out).as_posix() for p in out.rglob("task.json")) == [
      "nested/more/task.json", "sums/task.json"]


def test_a_withdrawn_release_is_named_with_the_way_to_give_a_copy(pinned, tmp_path, monkeypatch,
                                                                   capsys):
  a, _ = pinned
  root = tmp_path / "index"
  (root / "pkg").mkdir(parents=True)
  (root / "pkg" / "index.html").write_text('<a href="pkg-0.1.tar.gz">pkg-0.1.tar.gz</a>')
  class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
      pass
  handler = functools.partial(Quiet, directory=str(root))
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  try:
    monkeypatch.setenv("BRD_PYPI_SIMPLE", f"http://127.0.0.1:{server.server_port}")
    with pytest.raises(assets.Withdrawn, match=f"pkg-1.0.tar.gz is not in the index"):
      assets.fetch(a.name, quiet=True)
    assert cli.main(["assets", "fetch", a.name]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("fetching pkg-1.0.tar.gz")  # the progress line, then one error line
    assert len(err) == 2 and f"--archive pkg-1.0.tar.gz (sha256 {a.archive_sha256})" in err[1]
    monkeypatch.setenv("BRD_PYPI_SIMPLE", f"http://127.0.0.1:{server.server_port}/nowhere")
    with pytest.raises(UserError) as e:  # a server that does not answer is not a withdrawal
      assets.fetch(a.name, quiet=True)
    assert not isinstance(e.value, assets.Withdrawn)
  finally:
    server.shutdown()
