"""Task distillation: the teacher's zero-shot answers to unlabeled task inputs become training text;
the labels are never read (the examples do not change when they are shuffled or removed) and the
answers are the ones `brd eval` ranks first for the same teacher."""
import json
import random

import numpy as np

from cli_run import brd
from test_pipeline import bigbench_task
from brd_jax.behaviors import task_distill
from brd_jax.evaluation.harness import samples_path


def _rte(d, rows):
  (d / "rte").mkdir(parents=True)
  (d / "rte" / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  return d


def _kept(out, task):
  """What a task's examples say, without the id (which names the task file's path)."""
  return [(r["index"], r["text"], r["choice"], r["loglik"], r["n_tokens"])
          for r in map(json.loads, task_distill.task_file(out, task).open())]


def test_the_examples_do_not_read_labels_and_hold_the_teachers_eval_answers(reading_teacher,
                                                                           tmp_path):
  rng = random.Random(3)
  words = "Zora walked home a girl in the story the museum was painted at dawn".split()
  rte = [{"premise": " ".join(rng.sample(words, 6)), "hypothesis": " ".join(rng.sample(words, 3)),
          "label": rng.choice(["entailment", "not_entailment"])} for _ in range(24)]
  labels = [r["label"] for r in rte]
  shuffled_labels = labels[::-1]
  assert sum(a != b for a, b in zip(labels, shuffled_labels)) >= 6
  bb = bigbench_task(tmp_path / "bb", n=30)
  data = json.loads(bb.read_text())
  moved = json.loads(bb.read_text())
  for ex in moved["examples"]:  # each example's best answer moves to another candidate
    keys = list(ex["target_scores"])
    vals = list(ex["target_scores"].values())
    ex["target_scores"] = dict(zip(keys, vals[1:] + vals[:1]))
  flat = json.loads(bb.read_text())
  for ex in flat["examples"]:  # no answer is marked
    ex["target_scores"] = {k: 0 for k in ex["target_scores"]}
  variants = {
      "labelled": (rte, data),
      "shuffled": ([{**r, "label": l} for r, l in zip(rte, shuffled_labels)], moved),
      "unlabelled": ([{k: v for k, v in r.items() if k != "label"} for r in rte], flat),
  }
  kept = {}
  for name, (rows, task_json) in variants.items():
    d = _rte(tmp_path / name, rows)
    (d / "bb").mkdir()
    (d / "bb" / "task.json").write_text(json.dumps(task_json))
    tasks = ("rte", f"bigbench:{d / 'bb' / 'task.json'}")
    out = tmp_path / f"out_{name}"
    manifest = task_distill.run(str(reading_teacher), tasks, out, data_dir=d, progress=False)
    assert manifest["tasks"] == {"rte": 24, tasks[1]: 30}
    kept[name] = [_kept(out, t) for t in tasks]
  assert kept["shuffled"] == kept["labelled"] == kept["unlabelled"]

  # the answers are what `brd eval` of the same teacher ranks first under the paper's rule
  bb = tmp_path / "labelled" / "bb" / "task.json"
  r = brd("eval", "--model", reading_teacher, "--tasks", f"rte,bigbench:{bb}", "--data_dir",
          tmp_path / "labelled", "--workdir", tmp_path / "eval", "--log_samples", "--no_progress")
  assert r.returncode == 0, r.stderr[-3000:]
  for task, examples in zip(("rte", f"bigbench:{bb}"), kept["labelled"]):
    docs = [json.loads(l) for l in samples_path(tmp_path / "eval", task).open()]
    assert len(docs) == len(examples)
    golds, picks = [], []
    for doc, (i, text, choice, loglik, n_tokens) in zip(docs, examples):
      mean = np.array(doc["loglik"]) / np.array(doc["n_tokens"])
      assert choice == int(np.argmax(mean)), (task, i)
      assert text == doc["context"] + doc["choices"][choice]
      np.testing.assert_allclose(loglik, doc["loglik"], rtol=1e-4, atol=1e-4)
      golds.append(doc["gold"])
      picks.append(choice)
    # not the labels in disguise: the teacher disagrees with the gold answer somewhere
    assert picks != golds, task
  bb_texts = [text for _, text, *_ in kept["labelled"][1]]
  assert len({t.rsplit("\nA: ", 1)[1] for t in bb_texts}) > 3  # answers differ document to document
  texts = [e["text"] for e in task_distill.read(tmp_path / "out_labelled")]
  assert texts == [text for ex in kept["labelled"] for _, text, *_ in ex]
