"""The package's import layers, read from the source (every import, inside functions too).

Data flows one way (corpus -> generate -> train -> eval) and the layers above the stages are
`pipeline` (runs them), `config` (registers every configurable) and `cli` (binds flags). A stage that
imports one of those, or any import circle, is the tangle these tests keep out.
"""
from __future__ import annotations

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "brd_jax"

# module -> the only modules that may import it (the layers above the stages)
UPPER = {
    "brd_jax.cli": (),
    "brd_jax.config": ("brd_jax.cli",),
    "brd_jax.pipeline": ("brd_jax.cli",),
}


def import_graph(package: pathlib.Path) -> dict[str, set[str]]:
  """module -> the package's modules it imports (absolute and relative, at any depth)."""
  names = {}
  for p in package.rglob("*.py"):
    parts = p.relative_to(package.parent).with_suffix("").parts
    names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
  graph = {}
  for name, p in names.items():
    pkg = name if p.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(p.read_text(), str(p))):
      if isinstance(node, ast.Import):
        found.update(a.name for a in node.names)
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          up = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
          base = ".".join(up + ([base] if base else []))
        found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in names else base
                     for a in node.names)
    graph[name] = {m for m in found if m in names and m != name}
  return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components of more than one module (Tarjan, iterative)."""
  index, low, stack, on_stack, out = {}, {}, [], set(), []
  for root in sorted(graph):
    if root in index:
      continue
    work = [(root, iter(sorted(graph[root])))]
    index[root] = low[root] = len(index)
    stack.append(root)
    on_stack.add(root)
    while work:
      v, it = work[-1]
      w = next(it, None)
      if w is None:
        work.pop()
        if work:
          low[work[-1][0]] = min(low[work[-1][0]], low[v])
        if low[v] == index[v]:
          comp = []
          while True:
            x = stack.pop()
            on_stack.discard(x)
            comp.append(x)
            if x == v:
              break
          if len(comp) > 1:
            out.append(sorted(comp))
      elif w not in index:
        index[w] = low[w] = len(index)
        stack.append(w)
        on_stack.add(w)
        work.append((w, iter(sorted(graph[w]))))
      elif w in on_stack:
        low[v] = min(low[v], index[w])
  return out


def test_the_package_has_no_import_circle():
  assert cycles(import_graph(PACKAGE)) == []


def test_no_module_imports_cli_config_or_pipeline_from_below():
  graph = import_graph(PACKAGE)
  upward = sorted(f"{m} -> {top}" for m, deps in graph.items() for top in deps & UPPER.keys()
                  if m not in UPPER[top])
  assert upward == []


def test_the_checks_find_a_circle_and_an_upward_import(tmp_path):
  """The graph reader itself: a planted circle (relative imports, inside a function) and an
  upward import are found."""
  pkg = tmp_path / "brd_jax"
  (pkg / "models").mkdir(parents=True)
  for f in ("__init__.py", "config.py", "models/__init__.py"):
    (pkg / f).write_text("")
  (pkg / "models" / "a.py").write_text("def f():\n  from . import b\n")
  (pkg / "models" / "b.py").write_text("from brd_jax.models.a import f\nimport brd_jax.config\n")
  graph = import_graph(pkg)
  assert cycles(graph) == [["brd_jax.models.a", "brd_jax.models.b"]]
  assert graph["brd_jax.models.b"] & UPPER.keys() == {"brd_jax.config"}


def test_every_curated_break_still_applies_to_the_tree():
  """tests/mutations.py breaks code by exact text: a refactor that moves that text must move the
  entry with it, or the break silently tests nothing."""
  import mutations
  root = PACKAGE.parent
  stale = [f"{b.name}: {(root / b.file).read_text().count(b.old)} times in {b.file}"
           for b in mutations.BREAKS if (root / b.file).read_text().count(b.old) != 1]
  assert stale == []


def _third_party_imports(package: pathlib.Path) -> dict[str, str]:
  """Top-level module -> a file importing it unguarded: not through `optional_import`, not
  inside a `try` that catches ImportError, not in `benchmarks/` (the bench extra)."""
  import sys
  out = {}
  for p in package.rglob("*.py"):
    if "benchmarks" in p.parts or p.name.endswith("_test.py"):
      continue
    tree = ast.parse(p.read_text(), str(p))
    guarded = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Try) and any(
          isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
          for h in node.handlers):
        guarded.update(id(n) for b in node.body for n in ast.walk(b))
    for node in ast.walk(tree):
      if id(node) in guarded:
        continue
      mods = []
      if isinstance(node, ast.Import):
        mods = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and not node.level:
        mods = [node.module]
      for m in mods:
        top = m.split(".")[0]
        if top != "brd_jax" and top not in sys.stdlib_module_names:
          out.setdefault(top, str(p.relative_to(package.parent)))
  return out


def _runtime_closure() -> set[str]:
  """The distributions setup.py's install_requires brings, transitively (no extras)."""
  import importlib.metadata as md
  from packaging.requirements import Requirement
  from packaging.utils import canonicalize_name
  setup = next(n for n in ast.walk(ast.parse((PACKAGE.parent / "setup.py").read_text()))
               if isinstance(n, ast.keyword) and n.arg == "install_requires")
  todo = [Requirement(e.value) for e in setup.value.elts]
  seen = set()
  while todo:
    r = todo.pop()
    name = canonicalize_name(r.name)
    if name in seen or (r.marker and not r.marker.evaluate({"extra": ""})):
      continue
    seen.add(name)
    for q in map(Requirement, md.requires(r.name) or ()):
      if q.marker and any(q.marker.evaluate({"extra": e}) for e in r.extras):
        q.marker = None  # asked for through an extra, e.g. datasketch[bloom]
      todo.append(q)
  return seen


def test_the_lean_install_holds_every_unguarded_import_and_no_test_reference():
  """`./launch/quickstart.sh` installs install_requires only: whatever the package imports
  outside `optional_import` must come with it, and the tests' references must not."""
  import importlib.metadata as md
  from packaging.utils import canonicalize_name
  closure = _runtime_closure()
  dists = md.packages_distributions()
  missing = {m: f for m, f in _third_party_imports(PACKAGE).items()
             if not {canonicalize_name(d) for d in dists.get(m, [m])} & closure}
  assert not missing, f"imported but not in the lean install (module: a file): {missing}"
  assert not closure & {"torch", "lm-eval", "libtpu", "transformers", "pytest"}, sorted(closure)
