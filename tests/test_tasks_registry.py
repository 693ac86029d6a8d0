"""The evaluation task registry: one record per task, read by every loader."""
import dataclasses
import json

import pytest

from brd_jax.errors import UserError
from brd_jax.evaluation import tasks


def test_the_public_tables_are_views_of_the_registry():
  assert tasks.TASKS == ("xnli", "rte", "cb", "pawsx", "boolq", "sst2")
  assert tuple(tasks.REGISTRY) == tasks.TASKS == tuple(tasks.ROWS)
  assert all(t.name == n and t.input_fields and "label" not in t.input_fields
             for n, t in tasks.REGISTRY.items())
  assert [n for n, t in tasks.REGISTRY.items() if t.tfds is None] == ["xnli", "pawsx"]


def test_one_record_is_a_whole_task(tmp_path, monkeypatch):
  toy = tasks.Task("toy", ("no", "yes"), ("q",), ("dev.jsonl",), tasks._jsonl,
                   tasks._answer("{q}\nAnswer:", "no", "yes"), ("toy", "en", "test"))
  monkeypatch.setitem(tasks.REGISTRY, "toy", toy)
  (tmp_path / "toy").mkdir()
  rows = [{"q": "Is it?", "label": "yes"}, {"q": "Not?", "label": 0}]
  (tmp_path / "toy" / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  assert tasks.is_known("toy")
  assert tasks.load("toy", tmp_path) == [tasks.Doc("Is it?\nAnswer:", [" no", " yes"], 1),
                                         tasks.Doc("Not?\nAnswer:", [" no", " yes"], 0)]
  assert tasks.inputs("toy", tmp_path) == [["Is it?"], ["Not?"]]
  with pytest.raises(UserError, match="toy: no TFDS builder"):
    tasks.load("toy", "tfds")
  with pytest.raises(dataclasses.FrozenInstanceError):
    toy.name = "other"


def test_load_and_inputs_share_one_dispatch_and_its_errors(tmp_path):
  for fn in (tasks.load, tasks.inputs):
    with pytest.raises(UserError, match=r"^unknown task 'mnli'; known: xnli, rte, cb, pawsx, "
                                        r"boolq, sst2, bigbench:NAME$"):
      fn("mnli", tmp_path)
    with pytest.raises(UserError, match=r"^task cb: none of val.jsonl under "):
      fn("cb", tmp_path)
  (tmp_path / "rte").mkdir()
  (tmp_path / "rte" / "val.jsonl").write_text('{"premise": "a", "hypothesis": "b", "label": 0}\n'
                                              "{broken\n")
  for fn in (tasks.load, tasks.inputs):  # the project's JSONL reader names the line
    with pytest.raises(UserError, match=r"rte/val\.jsonl:2: not a UTF-8 JSON line"):
      fn("rte", tmp_path)
