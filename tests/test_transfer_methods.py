"""The transfer benchmark (benchmarks/transfer_methods.py): its stored runs are found again by
their keys, docs/methods.md and docs/data.md hold the tables its stored runs draw, no source
run sees a target's data, a few-shot run trains on exactly the first N train examples, and the
ranking row is the hand-computed one."""

import dataclasses
import json
import re

import numpy as np
import pytest

from benchmarks import small_scale_methods as ssm
from benchmarks import transfer_methods as tm
from prompt_tuning.data import tasks


def _block(doc: str, name: str) -> str:
  return re.search(f"<!-- {name}:begin -->\n(.*?)\n<!-- {name}:end -->", doc, re.S).group(1)


def test_every_stored_run_is_found_by_its_key():
  for name, result in tm.load_results().items():
    assert ssm.Run(**result["run"]).key() == name


def test_docs_tables_are_the_stored_runs_tables():
  results = tm.load_results()
  stale = "is stale: run `python -m benchmarks.transfer_methods --draw_only`"
  for name, table in tm.tables(results, [0, 1, 2]).items():
    assert _block(ssm.DOC.read_text(), name).strip() == table.strip(), f"{name} {stale}"
  table = tm.task_table({**ssm.load_results(), **results}, [0, 1, 2])
  assert _block(tm.DATA_DOC.read_text(), "transfer_tasks").strip() == table.strip(), stale


def test_sources_never_see_a_target_and_every_start_is_planned():
  assert not set(tm.SOURCES) & set(tm.TARGETS)
  for kind in tm.SOURCE_KINDS:
    assert tm.source_run(kind).task == tm.SOURCE_MIXTURE
  for target in tm.TARGETS:  # a leave-one-out source sees every task but its target
    mixture = tm.source_run(tm.OTHERS, target).task
    assert set(tm.LEAVE_ONE_OUT[mixture]) == set(tm.TASKS) - {target}
    members = tasks.get_mixture_or_task(mixture).tasks
    assert sorted(t.name for t in members) == sorted(tm.LEAVE_ONE_OUT[mixture])
  few = [run for run, _ in tm.fewshot_plan([0, 1, 2])]
  assert len({r.key() for r in few}) == len(tm.TARGETS) * 3 * len(tm.STARTS) * len(tm.SHOTS)
  assert {r.init for r in few if r.task == "wordnet_hypernym_word"} == {
      "sampled_vocab", "from_spot", "from_mpt", "from_mpt_distilled",
      "from_wordnet_without_hypernym_word"}  # no class labels
  assert {r.steps for r in few} == {tm.FEW_SHOT_STEPS}
  ranking = [run for run, _ in tm.ranking_plan([0])]
  assert all(r.init[len("from_"):] != r.task for r in ranking)  # never from its own prompt
  assert len(ranking) == len(tm.TARGETS) * (len(tm.TASKS) - 1)


def test_deep_transfer_is_deep_from_source_to_target():
  (source, kept), *targets = tm.deep_plan([0, 1, 2])
  assert (source.task, source.method, kept) == (tm.SOURCE_MIXTURE, "deep", tm.DEEP_SPOT)
  assert {run.method for run, _ in targets} == {"deep"}
  assert {run.init for run, _ in targets if run.task == "wordnet_senses"} == {
      "class_labels", f"from_{tm.DEEP_SPOT}"}
  assert len({run.key() for run, _ in targets}) == len(tm.TARGETS) * 3 * 2 * 2


def test_long_runs_differ_from_the_short_ones_only_in_length_and_steps():
  (source, kept), *targets = tm.deep_long_plan([0, 1, 2])
  assert kept == tm.DEEP_LONG_SPOT
  assert source == dataclasses.replace(tm.source_run(tm.DEEP_SPOT), length=100)
  short = {run.key() for run, kept in tm.deep_plan([0, 1, 2])
           if run.train_examples is None and kept is None}
  renamed = {dataclasses.replace(run, length=20, init=run.init.replace(
      tm.DEEP_LONG_SPOT, tm.DEEP_SPOT)).key() for run, _ in targets}
  assert renamed == short and len(targets) == len(renamed)
  long_tuning = [run for run, _ in tm.model_tuning_long_plan([0, 1, 2])]
  assert [dataclasses.replace(r, steps=200) for r in long_tuning] == [
      run for run, _ in tm.model_tuning_plan([0, 1, 2])]
  assert {r.steps for r in long_tuning} == {1000}


def test_a_few_shot_run_trains_on_the_first_train_examples(tmp_path):
  run = ssm.Run(task="wordnet_senses", train_examples=5)
  name = ssm.train_task(run, str(tmp_path))
  assert name == "wordnet_senses_n5"
  with open(ssm.wordnet.task_files("wordnet_senses")["train"]) as f:
    first = [json.loads(next(f))["targets"] for _ in range(5)]
  task = tasks.get_mixture_or_task(name)
  vocabulary = task.output_features["targets"].vocabulary
  train = list(task.get_dataset(None, split="train", shuffle=False).as_numpy_iterator())
  assert [vocabulary.decode(list(ex["targets"][:-1])) for ex in train] == first
  full = tasks.get_mixture_or_task("wordnet_senses")
  assert task.source.num_input_examples("test") == full.source.num_input_examples("test")
  with pytest.raises(ValueError, match="fewer than train_examples=5000"):
    ssm.train_task(ssm.Run(task="wordnet_senses", train_examples=5000), str(tmp_path))


def _result(run: ssm.Run, accuracy: float) -> dict:
  return {"run": dict(run.__dict__), "curve": {str(run.steps): {"test": accuracy}}}


def test_ranking_row_is_the_hand_computed_one(tmp_path, monkeypatch):
  monkeypatch.setattr(tm, "SOURCE_PROMPTS_DIR", tmp_path)
  target = tm.TARGETS[0]
  others = [t for t in tm.TASKS if t != target]
  # Mean-pooled prompts at angles 0, 20, 50, 80 and 130 degrees from the target's.
  angle = dict(zip([target, *others], np.radians([0, 20, 50, 80, 130])))
  for task, a in angle.items():
    np.save(tmp_path / f"{task}.npy", np.array([[np.cos(a), np.sin(a)]] * 2, np.float32))
  gains = dict(zip(others, [3.0, 4.0, 1.0, -2.0]))  # the most similar is second best
  results = {}
  for run, accuracy in [(tm.target_run(target, 0, "plain", 128), 50.0)] + [
      (tm.target_run(target, 0, t, 128), 50.0 + g) for t, g in gains.items()]:
    results[run.key()] = _result(run, accuracy)
  table = tm.ranking_table(results, 0).splitlines()
  sims = [np.cos(angle[t]) for t in others]
  row = ", ".join(f"{t} {s:.2f} ({g:+.1f})" for t, s, g in zip(others, sims, gains.values()))
  # Similarity ranks 1, 2, 3, 4 against gain ranks 2, 1, 3, 4: rho = 1 - 6 * 2 / 60 = 0.8.
  assert table[2] == f"| {target} | {row} | 0.80 | yes |"
  assert table[-1] == "| all | | mean 0.80 | 1 of 1 |"
