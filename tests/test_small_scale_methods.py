"""The small-scale methods benchmark (benchmarks/small_scale_methods.py): its stored runs are
found again by their keys (so a rerun only redraws), the tables in docs/methods.md are the
ones its stored runs draw, and its statistics match a hand computation."""

import dataclasses
import re

import jax
import numpy as np
import pytest

from benchmarks import small_scale_methods as ssm


def _block(doc: str, name: str) -> str:
  return re.search(f"<!-- {name}:begin -->\n(.*?)\n<!-- {name}:end -->", doc, re.S).group(1)


def test_every_stored_run_is_found_by_its_key():
  results = ssm.load_results()
  assert results, "no stored runs in benchmarks/results/small_scale_methods/"
  for name, result in results.items():
    assert ssm.Run(**result["run"]).key() == name


def test_docs_tables_are_the_stored_runs_tables():
  results = ssm.load_results()
  drawn = ssm.result_tables(results)
  doc = ssm.DOC.read_text()
  for name in drawn:
    assert _block(doc, name).strip() == drawn[name].strip(), (
        f"docs/methods.md's {name} table is stale: run "
        "`python -m benchmarks.small_scale_methods --draw_only`")
  paper = _block(ssm.PAPER_DOC.read_text(), "paper_corrected")
  assert paper.strip() == ssm.paper_table(results).strip(), (
      "docs/paper_reproduction.md's paper_corrected table is stale: run "
      "`python -m benchmarks.small_scale_methods --draw_only`")
  inspection = _block(ssm.PAPER_DOC.read_text(), "paper_corrected_inspection")
  assert inspection.strip() == ssm.paper_inspection().strip()


def _result(seed: int, curve: dict[int, float], **run) -> dict:
  fields = dict(ssm.Run(seed=seed, **run).__dict__)
  return {"run": fields, "curve": {str(s): {"test": v} for s, v in curve.items()}}


def test_cells_and_curves_are_means_and_sds_of_the_seeds():
  results = {str(i): _result(i, c) for i, c in enumerate(
      [{0: 30.0, 1000: 70.0}, {0: 40.0, 1000: 74.0}, {0: 20.0, 1000: 72.0, 2000: 1.0}])}
  # mean 72, sd sqrt(((70-72)^2 + (74-72)^2 + 0) / 2) = 2
  assert ssm._cell(results, 1000, task="wordnet_topic", method="prompt") == "72.0 ± 2.0"
  assert ssm._cell(results, 2000, task="wordnet_topic") == "1.0 (1 seed)"
  assert ssm._cell(results, 1000, task="wordnet_pos") == "not run"
  steps, mean, sd = ssm.curves(results, "wordnet_topic", method="prompt")
  assert steps == [0, 1000]  # 2,000: only one seed has it
  assert mean == pytest.approx([30.0, 72.0]) and sd == pytest.approx([10.0, 2.0])


def test_a_prompt_shorter_than_the_labels_starts_from_the_first_labels():
  embedding = np.random.default_rng(0).normal(size=(32128, 4))  # >= any id.astype(np.float32)
  rng = jax.random.PRNGKey(0)
  six = ssm.initializer("class_labels", "wordnet_topic", 6)(rng, embedding, (6, 4))
  two = ssm.initializer("class_labels", "wordnet_topic", 2)(rng, embedding, (2, 4))
  np.testing.assert_allclose(two, six[:2])


def test_recipe_knobs_change_one_field_of_the_demo_recipe_each():
  demo = ssm.Run(schedule="linear")
  assert all(getattr(demo, k) == v for k, v in ssm.DECAYED_PROMPT.items())
  changed = []
  for run in ssm.recipe_knobs_plan([0]):
    fields = dataclasses.asdict(dataclasses.replace(demo, task=run.task))
    changed.append(tuple(k for k, v in dataclasses.asdict(run).items() if fields[k] != v))
  assert all(len(c) == 1 for c in changed)
  assert len(changed) == len(ssm.RECIPE_CHANGES) * len(ssm.TASKS)
