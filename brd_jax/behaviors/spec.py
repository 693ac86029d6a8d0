"""Behaviours defined in files: a versioned YAML (or JSON) file declares what the teacher is
asked, how its answer is read and how the student sees it; the parser and `render` follow from
the declaration. NER, QRA and SKD are three such files in `builtin/`.

  behavior: relation            # the name: tasks are brd_<name>, keys carry it
  version: 1                    # part of every template id (name-style@version), so of unit keys
  unit: sentence                # sentence | paragraph (what one teacher call reads)
  styles: [chat, inline]        # chat: demonstrations as earlier turns; inline: one message
  instruction: ...
  demonstrations: [{input: ..., output: ...}, ...]
  output:                       # kind lines: one record per line, fields split by a separator
    kind: lines                 #   (none: whole answers meaning "nothing here", a valid empty
    fields: [subject, relation, object]   # reading); kind pairs: two labelled lines per record
    separator: "|"              #   (labels, errors missing/unpaired); kind text: the answer
  rules:                        # checks on a parsed record, each naming its rejection reason
    - {check: in_unit, field: subject, error: subject_not_in_sentence}
  render: {header: "Relations:", record: "{subject} {relation} {object}", empty: "Relations: none"}

A behaviour loaded from a path is registered under its name for this process; a ledger's
manifest keeps every behaviour's declaration, so training renders a ledger without the file.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import re

from brd_jax.errors import UserError
from brd_jax.io_utils import content_digest

BUILTIN_DIR = pathlib.Path(__file__).parent / "builtin"
BUILTINS = ("ner", "qra", "skd")
STYLES = ("chat", "inline", "plain")
CHECKS = ("in_unit", "grounded")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)])\s*")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
# the most common English words (parse.not_english counts them), and with more, the stop list
# of `grounded`
EN_WORDS = frozenset("the a an of and to in is was are were for on with as by at from that this "
                     "it what who when where why how which did does do".split())
_STOP = EN_WORDS | frozenset("not but had has have his her him she they them their there then "
                             "than very also just about into onto over some any all one two its "
                             "our your you".split())


def _norm(s: str) -> str:
  return " ".join(s.lower().split())


def _content(text: str) -> set[str]:
  """Content-word stems: words of 3+ letters outside a short stop list, cut to 5 characters so
  that "pickled" meets "pickle"."""
  return {w[:5] for w in re.findall(r"[^\W\d_]{3,}", text.lower()) if w not in _STOP}


def grounded(answer: str, source: str) -> bool:
  """At least half of the answer's content words come from the source."""
  words = _content(answer)
  return not words or len(words & _content(source)) >= 0.5 * len(words)


@dataclasses.dataclass(frozen=True)
class Rule:
  check: str                 # in_unit: the field is written in the unit; grounded: see above
  field: str
  error: str
  source: tuple = ("unit",)  # grounded: the unit and/or other fields of the record

  def fails(self, rec: dict, unit_text: str) -> bool:
    value = rec[self.field]
    if self.check == "in_unit":
      return _norm(value).strip("\"'“”") not in _norm(unit_text)
    if not unit_text:  # nothing to ground in (a unit read without its sentence)
      return False
    src = " ".join(unit_text if s == "unit" else rec[s] for s in self.source)
    return not grounded(value, src)


@dataclasses.dataclass(frozen=True)
class Behavior:
  """One behaviour as declared in its file (see the module docstring)."""
  name: str
  version: int
  unit: str
  styles: tuple
  instruction: str
  demos: tuple                  # ((input, output), ...)
  query: str                    # the unit as asked: {instruction}, {text}
  context_query: str            # the same with {context} (earlier sentences)
  kind: str                     # lines | pairs | text
  fields: tuple = ()
  separator: str = "|"
  none: tuple = ()
  lower: tuple = ()
  labels: tuple = ()            # pairs: (labels of field 0, labels of field 1)
  missing_error: str = ""
  unpaired_error: str = ""
  rules: tuple = ()
  render_header: str = ""
  render_record: str = ""
  render_empty: str = ""
  render_joiner: str = "\n"
  declared: str = ""            # the declaration as JSON (kept in ledger manifests)

  @property
  def digest(self) -> str:
    return content_digest(self.declared)

  @property
  def errors(self) -> tuple:
    """The rejection reasons this behaviour's parser can give (besides the shared ones)."""
    own = ("missing_fields",) if self.kind == "lines" else \
        (self.missing_error, self.unpaired_error) if self.kind == "pairs" else ()
    return own + tuple(r.error for r in self.rules)

  # ---- parsing -------------------------------------------------------------------------------
  def parse(self, text: str, unit_text: str):
    """(parsed, error) from the teacher's answer, shared checks already passed."""
    if self.kind == "lines":
      return self._parse_lines(text, unit_text)
    if self.kind == "pairs":
      return self._parse_pairs(text, unit_text)
    return text.strip(), None

  def _record(self, values) -> dict:
    return {f: v.lower() if f in self.lower else v for f, v in zip(self.fields, values)}

  def _parse_lines(self, text, unit_text):
    lines = [_BULLET.sub("", l).strip() for l in text.strip().splitlines() if l.strip()]
    if len(lines) == 1 and lines[0].rstrip(".").lower() in self.none:
      return [], None
    out = []
    for line in lines:
      parts = [p.strip() for p in line.split(self.separator)]
      if len(parts) != len(self.fields) or not all(parts):
        return None, "missing_fields"
      rec = self._record(parts)
      for r in self.rules:
        if r.fails(rec, unit_text):
          return None, r.error
      out.append(rec)
    return out, None

  def _patterns(self):
    return [re.compile(r"^\s*(?:" + "|".join(map(re.escape, ls)) + r")\s*[:：]\s*(.*)$", re.I)
            for ls in self.labels]

  def _parse_pairs(self, text, unit_text):
    first_re, second_re = self._patterns()
    pairs, first = [], None
    for line in text.strip().splitlines():
      if m := first_re.match(line):
        if first is not None:
          return None, self.unpaired_error
        first = m.group(1).strip()
      elif (m := second_re.match(line)) and first is not None:
        second = m.group(1).strip()
        if not second:
          return None, self.unpaired_error
        pairs.append(self._record((first, second)))
        first = None
    if first is not None:
      return None, self.unpaired_error
    if not pairs or not all(p[self.fields[0]] for p in pairs):
      return None, self.missing_error
    for r in self.rules:
      if any(r.fails(p, unit_text) for p in pairs):
        return None, r.error
    return pairs, None

  # ---- rendering -----------------------------------------------------------------------------
  def render(self, parsed, text: str = "") -> str:
    """The training text of one valid reading, as the student sees it."""
    if self.kind == "text":
      return (text or "").strip()
    if not parsed:
      return self.render_empty
    recs = [self.render_record.format(**r) for r in parsed]
    return self.render_joiner.join(([self.render_header] if self.render_header else []) + recs)


def _need(d: dict, key: str, typ, where: str):
  if key not in d:
    raise UserError(f"{where}: missing {key!r}")
  if not isinstance(d[key], typ):
    raise UserError(f"{where}: {key!r} must be {getattr(typ, '__name__', typ)}, got {d[key]!r}")
  return d[key]


def from_dict(d: dict, where: str) -> Behavior:
  """Checks a declaration and builds its Behavior; every fault is one line naming `where`."""
  if not isinstance(d, dict):
    raise UserError(f"{where}: a behaviour file holds one mapping (behavior, version, ...)")
  known = {"behavior", "version", "unit", "styles", "instruction", "demonstrations", "query",
           "context_query", "output", "rules", "render", "description"}
  extra = sorted(set(d) - known)
  if extra:
    raise UserError(f"{where}: unknown key(s) {extra}; known: {', '.join(sorted(known))}")
  name = _need(d, "behavior", str, where)
  if not _NAME.match(name):
    raise UserError(f"{where}: behavior {name!r} must be lower-case letters, digits and _")
  version = _need(d, "version", int, where)
  unit = d.get("unit", "sentence")
  if unit not in ("sentence", "paragraph"):
    raise UserError(f"{where}: unit {unit!r} must be 'sentence' or 'paragraph'")
  styles = tuple(d.get("styles", ["chat", "inline"]))
  if not styles or any(s not in STYLES for s in styles):
    raise UserError(f"{where}: styles {list(styles)} must be some of {', '.join(STYLES)}")
  instruction = _need(d, "instruction", str, where)
  demos = []
  for i, x in enumerate(d.get("demonstrations") or []):
    if not isinstance(x, dict) or not isinstance(x.get("input"), str) or \
        not isinstance(x.get("output"), str):
      raise UserError(f"{where}: demonstrations[{i}] needs string 'input' and 'output'")
    demos.append((x["input"], x["output"]))
  word = unit.capitalize()
  query = d.get("query", f"{word}: {{text}}")
  context_query = d.get("context_query", f"Context: {{context}}\n{query}")
  out = _need(d, "output", dict, where)
  kind = _need(out, "kind", str, f"{where} output")
  kw: dict = {}
  if kind in ("lines", "pairs"):
    fields = tuple(_need(out, "fields", list, f"{where} output"))
    if not fields or len(set(fields)) != len(fields) or not all(
        isinstance(f, str) and _NAME.match(f) for f in fields):
      raise UserError(f"{where}: output.fields must be distinct lower-case names, got "
                      f"{list(fields)}")
    kw["fields"] = fields
    kw["lower"] = tuple(out.get("lower", []))
    if set(kw["lower"]) - set(fields):
      raise UserError(f"{where}: output.lower names fields not in output.fields")
  if kind == "lines":
    kw["separator"] = str(out.get("separator", "|"))
    if not kw["separator"].strip():
      raise UserError(f"{where}: output.separator must not be blank")
    kw["none"] = tuple(str(x).lower() for x in out.get("none", []))
  elif kind == "pairs":
    if len(kw["fields"]) != 2:
      raise UserError(f"{where}: output kind pairs takes exactly two fields")
    labels = out.get("labels") or {}
    kw["labels"] = tuple(tuple(labels.get(f) or [f.capitalize()]) for f in kw["fields"])
    a, b = kw["fields"]
    errs = out.get("errors") or {}
    kw["missing_error"] = str(errs.get("missing", f"no_{a}"))
    kw["unpaired_error"] = str(errs.get("unpaired", f"{a}_without_{b}"))
  elif kind != "text":
    raise UserError(f"{where}: output.kind {kind!r} must be lines, pairs or text")
  rules = []
  for i, r in enumerate(d.get("rules") or []):
    at = f"{where} rules[{i}]"
    check, field = _need(r, "check", str, at), _need(r, "field", str, at)
    if check not in CHECKS:
      raise UserError(f"{at}: check {check!r} must be one of {', '.join(CHECKS)}")
    if field not in kw.get("fields", ()):
      raise UserError(f"{at}: field {field!r} is not one of output.fields")
    source = tuple(r.get("source", ["unit"]))
    if any(s != "unit" and s not in kw["fields"] for s in source):
      raise UserError(f"{at}: source {list(source)} must name 'unit' or output fields")
    rules.append(Rule(check, field, str(r.get("error", f"{field}_not_{check}")), source))
  rend = d.get("render") or {}
  if kind != "text":
    record = _need(rend, "record", str, f"{where} render")
    try:
      record.format(**{f: "" for f in kw["fields"]})
    except (KeyError, IndexError, ValueError) as e:
      raise UserError(f"{where}: render.record {record!r} names no such field ({e})") from None
    kw.update(render_record=record, render_header=str(rend.get("header", "")),
              render_empty=str(rend.get("empty", "")),
              render_joiner=str(rend.get("joiner", "\n")))
  for q in (query, context_query):
    try:
      q.format(instruction="", text="", context="")
    except (KeyError, IndexError, ValueError) as e:
      raise UserError(f"{where}: query {q!r} may name only {{instruction}}, {{text}}, "
                      f"{{context}} ({e})") from None
  return Behavior(name, version, unit, styles, instruction, tuple(demos), query, context_query,
                  kind, rules=tuple(rules), declared=json.dumps(d, sort_keys=True), **kw)


def read_file(path) -> Behavior:
  p = pathlib.Path(path)
  try:
    raw = p.read_text(encoding="utf-8")
  except OSError as e:
    raise UserError(f"behaviour file {p}: {e.strerror or e}") from None
  if p.suffix == ".json":
    try:
      d = json.loads(raw)
    except ValueError as e:
      raise UserError(f"behaviour file {p}: not JSON ({e})") from None
  else:
    import yaml
    try:
      d = yaml.safe_load(raw)
    except yaml.YAMLError as e:
      raise UserError(f"behaviour file {p}: not YAML ({str(e).splitlines()[0]})") from None
  return from_dict(d, f"behaviour file {p}")


_LOADED: dict[str, Behavior] = {}


def register(b: Behavior, where: str) -> Behavior:
  """Makes `b` known by its name here; the same name declared twice, differently, is refused."""
  cur = _LOADED.get(b.name)
  if cur is not None and cur.declared != b.declared:
    raise UserError(f"{where}: behaviour {b.name!r} is already declared differently (a built-in "
                    "name, or a second file of that name); rename it")
  _LOADED[b.name] = b
  return b


def get(name: str) -> Behavior:
  """A behaviour by name: built in, or registered from a file or a ledger manifest."""
  if name not in _LOADED and name in BUILTINS:
    register(read_file(BUILTIN_DIR / f"{name}.yaml"), name)
  if name not in _LOADED:
    raise UserError(f"unknown behaviour {name!r} (built in: {', '.join(BUILTINS)}; or give a "
                    "behaviour file's path)")
  return _LOADED[name]


def load(name_or_path: str) -> Behavior:
  """`generate.behaviors` entry -> Behavior: a known name, or a .yaml / .yml / .json path."""
  s = str(name_or_path)
  if s.endswith((".yaml", ".yml", ".json")) or "/" in s:
    for b in BUILTINS:
      get(b)  # a file may not take a built-in's name
    return register(read_file(s), f"behaviour file {s}")
  return get(s)


def known() -> list[str]:
  for b in BUILTINS:
    get(b)
  return sorted(_LOADED)


def from_manifest(manifest: dict | None) -> None:
  """Registers the behaviours a ledger was generated with (manifest `behavior_specs`)."""
  for name, declared in ((manifest or {}).get("behavior_specs") or {}).items():
    if name in BUILTINS and name not in _LOADED:
      get(name)
    if name in _LOADED and _LOADED[name].declared == declared:
      continue
    register(from_dict(json.loads(declared), f"ledger manifest behaviour {name}"),
             f"ledger manifest behaviour {name}")
