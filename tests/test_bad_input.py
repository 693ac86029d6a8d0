"""Generated bad input (hypothesis) through `brd` itself: flag values, gin bindings and files,
corpus files, evaluation files, JSONL requests and model files. Each must end with exit code 2 and
one line on stderr that names what and where, no traceback, and nothing written.

The oracles (what is valid) are written from the documented formats, not from the parsers."""
import contextlib
import io
import json
import math
import pathlib
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from brd_jax import cli, cli_args

SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def run_cli(argv) -> tuple[object, str]:
  """(exit code, stderr) of `brd ARGV` in this process; an escaping exception is 'traceback'."""
  err = io.StringIO()
  with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
    try:
      code = cli.main([str(a) for a in argv])
    except SystemExit as e:
      code = e.code
    except Exception as e:  # pylint: disable=broad-except  # what a user would see as a trace
      code = f"traceback: {type(e).__name__}: {e}"
  return code, err.getvalue()


def clean(code, err, command: str) -> bool:
  lines = [l for l in err.splitlines() if l.strip()]
  return code == 2 and len(lines) == 1 and lines[0].startswith(f"brd {command}")


@pytest.fixture
def scratch():
  d = pathlib.Path(tempfile.mkdtemp(prefix="brd-bad-"))
  yield d
  shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def fresh(scratch):
  """A new empty directory per hypothesis example."""
  d = pathlib.Path(tempfile.mkdtemp(dir=scratch))
  try:
    yield d
  finally:
    shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- flag values

def _numeric_flags():
  """(argv prefix with the required arguments filled, flag, kind) for every numeric flag."""
  # (type, lowest, lowest excluded, highest): the ranges the flags' help texts give
  a = cli_args
  kinds = {a.POS_INT: (int, 1, False, None), a.NONNEG_INT: (int, 0, False, None),
           a.NONNEG_FLOAT: (float, 0, False, None), a.POS_FLOAT: (float, 0, True, None),
           a.PROB: (float, 0, True, 1)}
  out = []

  def walk(parser, prefix):
    for act in parser._actions:  # pylint: disable=protected-access
      if act.choices and isinstance(act.choices, dict):  # sub-commands
        for name, sub in act.choices.items():
          walk(sub, prefix + [name])
    need = []
    for act in parser._actions:  # pylint: disable=protected-access
      if act.required and act.option_strings:
        need.append(f"{act.option_strings[0]}=x")
      elif not act.option_strings and act.nargs not in ("?", "*") and \
          not isinstance(act.choices, dict):
        need.append(list(act.choices)[0] if act.choices else "x")  # e.g. `bench decode`
    for act in parser._actions:  # pylint: disable=protected-access
      if act.type in kinds:
        out.append((prefix + need, act.option_strings[0], kinds[act.type]))
  walk(cli.build_parser(), [])
  return out


NUMERIC = _numeric_flags()


def _valid_number(text: str, kind) -> bool:
  typ, low, low_open, high = kind
  try:
    v = typ(text)
  except ValueError:
    return False
  if not math.isfinite(v):
    return False
  return (v > low if low_open else v >= low) and (high is None or v <= high)


def test_every_numeric_flag_is_found():
  flags = {f for _, f, _ in NUMERIC}
  assert len(NUMERIC) >= 20 and {"--top_p", "--batch_size", "--limit", "--temperature"} <= flags


@settings(max_examples=80, **SETTINGS)
@given(which=st.integers(0, len(NUMERIC) - 1),
       value=st.one_of(st.text(max_size=12), st.integers(-10**6, 10**6).map(str),
                       st.floats(allow_nan=True, allow_infinity=True).map(repr),
                       st.sampled_from(["nan", "inf", "-inf", "1e309", "-0", "0.0", "1_0",
                                        " 3 ", "0x10", "", "١", "2\n", "1.5", "-1"])))
def test_invalid_flag_values_are_refused_by_name(which, value, trust):
  prefix, flag, kind = NUMERIC[which]
  assume(not _valid_number(value, kind))
  err = io.StringIO()
  with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
    cli.build_parser().parse_args([*prefix, f"{flag}={value}"])
  lines = [l for l in err.getvalue().splitlines() if l.strip()]
  ok = e.value.code == 2 and len(lines) == 1 and flag in lines[0]
  trust.bad_input(ok)
  assert ok, (prefix, flag, value, err.getvalue())


# ---------------------------------------------------------------- gin bindings and files

_GIN_JUNK = st.sampled_from(["(", "[1,", "@nothing", "%MACRO", "'unterminated", "1e999", "None",
                             "{'a': }", "@corpus()", "\"x\" \"", "(1, 2", "]", "= =", "\\",
                             "import os", "__import__('os')"])
_GIN = st.one_of(
    st.text(max_size=60),
    st.builds(lambda c, p, v: f"{c}.{p} = {v}",
              st.sampled_from(["corpus", "train", "eval", "data", "model", "no_such", "mesh",
                               "corpus.inputs", "generate"]),
              st.one_of(st.sampled_from(["inputs", "min_sentences", "steps", "nope", "seed"]),
                        st.text(alphabet="abcxyz_.", max_size=10)),
              st.one_of(_GIN_JUNK, st.text(max_size=20))))


@settings(max_examples=40, **SETTINGS)
@given(binding=_GIN, as_file=st.booleans())
def test_malformed_gin_is_one_line_and_writes_nothing(binding, as_file, scratch, trust):
  with fresh(scratch) as d:
    gin_args = ["--gin", binding]
    if as_file:
      (d / "bad.gin").write_text(binding, encoding="utf-8", errors="surrogatepass")
      gin_args = ["--gin_file", d / "bad.gin"]
    code, err = run_cli(["corpus", "--workdir", d / "w", "--input", d / "missing.txt",
                         "--no_progress", *gin_args])
    ok = clean(code, err, "corpus") and not (d / "w" / "paragraphs").exists()
    trust.bad_input(ok)
    assert ok, (binding, code, err)


# ---------------------------------------------------------------- corpus files

_BYTES = st.one_of(
    st.binary(max_size=4000),
    st.just(b""),
    st.integers(10**5, 2 * 10**6).map(lambda n: b"x" * n),  # one huge line
    st.lists(st.one_of(st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
                       st.binary(max_size=30)), max_size=40).map(b"\n".join),
)


@settings(max_examples=30, **SETTINGS)
@given(data=_BYTES, suffix=st.sampled_from([".txt", ".jsonl", ".xz", ".gz", ".parquet"]))
def test_corpus_files_of_any_bytes_end_cleanly(data, suffix, scratch, trust):
  """Either a counted-skip success with readable paragraphs, or one line and no paragraphs."""
  from brd_jax.corpus import paragraphs
  with fresh(scratch) as d:
    (d / f"in{suffix}").write_bytes(data)
    code, err = run_cli(["corpus", "--workdir", d / "w", "--input", d / f"in{suffix}",
                         "--no_progress", "--gin", "corpus.decontaminate=()"])
    if code == 0:
      paras = list(paragraphs.read_paragraphs(d / "w" / "paragraphs"))
      ok = bool(paras) and all(isinstance(p["text"], str) and p["text"] for p in paras)
    else:
      ok = clean(code, err, "corpus") and not (d / "w" / "paragraphs").exists()
    trust.bad_input(ok)
    assert ok, (data[:100], suffix, code, err)


# ---------------------------------------------------------------- evaluation files

# What the official files hold (their documented schemas), per task: the fields and the labels.
_EVAL = {"rte": (("premise", "hypothesis"), ["entailment", "not_entailment"]),
         "cb": (("premise", "hypothesis"), ["entailment", "contradiction", "neutral"]),
         "boolq": (("passage", "question"), [True, False])}
_JSON_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False),
                        st.text(max_size=15), st.lists(st.integers(), max_size=2))


@settings(max_examples=40, **SETTINGS)
@given(task=st.sampled_from(sorted(_EVAL)), n=st.integers(1, 6), data=st.data())
def test_eval_files_with_bad_rows_name_the_file_and_example(task, n, data, scratch, trust):
  fields, labels = _EVAL[task]
  rows = [{**{f: f"{f} {i}" for f in fields}, "label": labels[i % len(labels)]} for i in range(n)]
  bad_row = data.draw(st.integers(0, n - 1))
  how = data.draw(st.sampled_from(["drop_field", "label", "not_an_object", "broken_json"]))
  lines = [json.dumps(r) for r in rows]
  if how == "drop_field":
    del rows[bad_row][data.draw(st.sampled_from([*fields, "label"]))]
    lines[bad_row] = json.dumps(rows[bad_row])
  elif how == "label":
    label = data.draw(_JSON_VALUE)
    # Valid: a label name, or its index (as a number, or digits in text; bools for boolq).
    ok_label = label in labels or (isinstance(label, (int, float)) and not isinstance(label, bool)
                                   and label in range(len(labels))) or \
        (isinstance(label, str) and label.strip().isdigit() and int(label) < len(labels)) or \
        (task == "boolq" and isinstance(label, bool)) or \
        (task == "boolq" and isinstance(label, str) and label.strip().lower() in ("true", "false"))
    assume(not ok_label)
    lines[bad_row] = json.dumps({**rows[bad_row], "label": label})
  elif how == "not_an_object":
    lines[bad_row] = json.dumps(data.draw(st.one_of(st.lists(st.text(max_size=5), max_size=3),
                                                    st.integers(), st.text(max_size=8))))
  else:
    lines[bad_row] = lines[bad_row][:data.draw(st.integers(1, len(lines[bad_row]) - 1))]
  with fresh(scratch) as d:
    (d / "data" / task).mkdir(parents=True)
    (d / "data" / task / "val.jsonl").write_text("\n".join(lines) + "\n")
    code, err = run_cli(["eval", "--model", d / "no_model", "--tasks", task, "--data_dir",
                         d / "data", "--out", d / "out", "--no_progress"])
    ok = clean(code, err, "eval") and str(d / "data" / task) in err and "no_model" not in err \
        and not (d / "out" / "results.json").exists()
    trust.bad_input(ok)
    assert ok, (how, lines[bad_row], err)


# ---------------------------------------------------------------- JSONL requests

_LINE = st.one_of(
    st.builds(lambda c, k: json.dumps({"context": c, "continuation": k}), st.text(max_size=20),
              st.text(max_size=10)),
    st.text(max_size=30),
    st.builds(json.dumps, _JSON_VALUE),
    st.builds(lambda c: json.dumps({"context": c}), st.text(max_size=10)),
    st.builds(lambda k: json.dumps({"context": 3, "continuation": k}), st.text(max_size=5)))


@settings(max_examples=30, **SETTINGS)
@given(lines=st.lists(_LINE, min_size=1, max_size=6), junk=st.binary(max_size=8))
def test_loglik_requests_with_broken_lines_name_the_file(lines, junk, scratch, trust):
  def good(line):
    try:
      r = json.loads(line)
    except ValueError:
      return not line.strip()  # blank lines are allowed
    return isinstance(r, dict) and isinstance(r.get("context"), str) and \
        isinstance(r.get("continuation"), str)
  with fresh(scratch) as d:
    body = "\n".join(lines).encode("utf-8", "surrogatepass") + b"\n" + junk
    (d / "req.jsonl").write_bytes(body)
    try:
      all_good = all(good(l) for l in body.decode("utf-8").splitlines())
    except UnicodeDecodeError:
      all_good = False
    code, err = run_cli(["loglik", "--model", d / "no_model", "--requests", d / "req.jsonl",
                         "--out", d / "out.jsonl"])
    names = str(d / ("no_model" if all_good else "req.jsonl"))
    ok = clean(code, err, "loglik") and names in err and not (d / "out.jsonl").exists()
    trust.bad_input(ok)
    assert ok, (lines, junk, err)


# ---------------------------------------------------------------- model files

_MODEL = st.one_of(
    st.binary(max_size=3000),
    st.builds(lambda n, b: n.to_bytes(8, "little") + b, st.integers(0, 2**40),
              st.binary(max_size=200)),  # a safetensors-like header length, then junk
    st.builds(lambda h: len(h).to_bytes(8, "little") + h,
              st.builds(lambda d: json.dumps(d).encode(),
                        st.dictionaries(st.text(max_size=8), _JSON_VALUE, max_size=3))),
    st.builds(lambda b: b"GGUF" + b, st.binary(max_size=300)))


@settings(max_examples=30, **SETTINGS)
@given(layout=st.sampled_from(["safetensors", "safetensors+config", "gguf", "bin", "config_only",
                               "file"]), blob=_MODEL, config=_JSON_VALUE)
def test_model_files_that_are_not_models_are_one_line(layout, blob, config, scratch, trust):
  with fresh(scratch) as d:
    m = d / "m"
    m.mkdir()
    if layout.startswith("safetensors"):
      (m / "model.safetensors").write_bytes(blob)
      if layout.endswith("config"):
        (m / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": config}))
    elif layout == "gguf":
      m = d / "m.gguf"
      m.write_bytes(blob)
    elif layout == "bin":
      (m / "pytorch_model.bin").write_bytes(blob)
      (m / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    elif layout == "config_only":
      (m / "config.json").write_bytes(blob)
    else:
      m = d / "m.txt"
      m.write_bytes(blob)
    code, err = run_cli(["convert", "--model", m, "--to", d / "out"])
    ok = clean(code, err, "convert") and not (d / "out").exists()
    trust.bad_input(ok)
    assert ok, (layout, blob[:60], err)
