"""One frozen model, many prompts: mixed-prompt batches equal single-prompt runs row by row."""

import json

import jax
import numpy as np
import pytest

from prompt_tuning import combine, model
from prompt_tuning.t5 import config as t5_config

import batch_helpers

TINY = t5_config.get_config("t5_1_1_tiny").replace(vocab_size=64)
LENGTHS = (3, 1, 5)  # three prompts of different lengths
# Ragged rows, one left-padded; targets of different lengths.
INPUTS = np.array([[5, 6, 7, 8, 1], [0, 0, 9, 10, 1], [11, 1, 0, 0, 0], [12, 13, 1, 0, 0]],
                  np.int32)
TARGETS = np.array([[3, 4, 1, 0], [5, 6, 7, 1], [8, 1, 0, 0], [9, 9, 1, 0]], np.int32)
IDS = np.array([2, 0, 1, 2], np.int32)


make_batch = batch_helpers.teacher_forced


def prompt_tables(position="prefix", max_length=None):
  """(models, one per prompt, with their params; the table's model and params)."""
  rng = np.random.default_rng(0)
  prompts_ = [rng.uniform(-0.5, 0.5, (p, TINY.emb_dim)).astype(np.float32) for p in LENGTHS]
  base = model.PromptedT5Model(TINY, prompt_length=max(LENGTHS),
                               combine=combine.combiner(position, max_length))
  frozen = base.random_params(jax.random.PRNGKey(0))
  singles = []
  for prompt in prompts_:
    m = model.PromptedT5Model(TINY, prompt_length=len(prompt),
                              combine=combine.combiner(position, max_length))
    singles.append((m, {**frozen, "prompt": {"prompt": prompt}}))
  return singles, base, base.with_prompt_table(frozen, prompts_)


def alone(singles, fn):
  """fn(model, params, rows) for each prompt's rows of the batch, put back in batch order."""
  out = [None] * len(IDS)
  for i, (m, params) in enumerate(singles):
    rows = np.flatnonzero(IDS == i)
    for row, value in zip(rows, np.asarray(fn(m, params, rows))):
      out[row] = value
  return np.stack(out)


@pytest.mark.parametrize("position,max_length", [("prefix", None), ("suffix", None),
                                                 ("prefix_after_bos", None), ("prefix", 7)])
def test_mixed_batch_scores_equal_single_prompt_runs(position, max_length):
  singles, mixed, table = prompt_tables(position, max_length)
  batch = make_batch(INPUTS, TARGETS)
  got = mixed.score(table, {**batch, "prompt_ids": IDS})
  want = alone(singles, lambda m, p, rows: m.score(p, {k: v[rows] for k, v in batch.items()}))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_mixed_batch_decoding_and_candidates_equal_single_prompt_runs():
  singles, mixed, table = prompt_tables()
  batch = {**make_batch(INPUTS, TARGETS), "prompt_ids": IDS}
  candidates = {k: v for k, v in make_batch(INPUTS, TARGETS).items()
                if k != "encoder_input_tokens"}
  inputs = lambda rows: {"encoder_input_tokens": INPUTS[rows]}
  for method in ("greedy", "beam"):
    got = mixed.predict(table, batch, method=method, max_decode_length=6)
    want = alone(singles, lambda m, p, rows: m.predict(p, inputs(rows), method=method,
                                                       max_decode_length=6))
    np.testing.assert_array_equal(got, want)
  np.testing.assert_allclose(
      mixed.score_candidates(table, batch, candidates),
      alone(singles, lambda m, p, rows: m.score_candidates(p, inputs(rows), candidates)),
      rtol=1e-5, atol=1e-5)


def test_prompt_table_errors():
  _, mixed, table = prompt_tables()
  batch = make_batch(INPUTS, TARGETS)
  with pytest.raises(ValueError, match="prompt_ids"):
    mixed.score(table, batch)
  frozen = {k: v for k, v in table.items() if k != "prompt"}
  with pytest.raises(ValueError, match="d_model"):
    mixed.with_prompt_table(frozen, [np.zeros((2, TINY.emb_dim + 1))], names=["b.npy"])
  with pytest.raises(ValueError, match="b.npy"):
    mixed.with_prompt_table(frozen, [np.zeros((2, 3))], names=["b.npy"])
  with pytest.raises(ValueError, match="at least one"):
    mixed.with_prompt_table(frozen, [])
  single = {**frozen, "prompt": {"prompt": np.zeros((5, TINY.emb_dim), np.float32)}}
  with pytest.raises(ValueError, match="with_prompt_table"):
    mixed.score(single, {**batch, "prompt_ids": IDS})


# ---- the jobs: PROMPTS and PROMPT_ENSEMBLE ---------------------------------------------------

SERVED = t5_config.get_config("t5_1_1_tiny").replace(vocab_size=512)  # the demo vocabulary's

def _serving_setup(tmp_path):
  """Three prompt files of lengths 3, 1, 5 and a JSONL task whose test lines name them."""
  from prompt_tuning.checkpoints import prompts_io
  from prompt_tuning.data import demo, jsonl
  rng = np.random.default_rng(1)
  files = {}
  for name, length in zip("abc", LENGTHS):
    files[name] = str(tmp_path / f"{name}.npy")
    prompts_io.save_prompt(files[name], rng.uniform(-0.5, 0.5, (length, 4)).astype(np.float32))
  lines = [json.loads(l) for l in open(demo.FILES["validation"])][:6]
  for i, line in enumerate(lines):
    line["prompt"] = "abc"[i % 3]
  test = tmp_path / "test.jsonl"
  test.write_text("".join(json.dumps(line) + "\n" for line in lines))
  task = jsonl.jsonl_task(test=str(test), class_labels=["positive", "negative"],
                          vocabulary_path=demo.vocabulary_path(), name="served_jsonl")
  return files, lines, task


def _infer(task, out_dir, prompt_length=5, mode="score", **kwargs):
  from prompt_tuning import infer
  model_ = model.PromptedT5Model(SERVED, prompt_length=prompt_length)
  [path] = infer.infer(model=model_, initial_checkpoint_path=None, mixture_or_task_name=task,
                       task_feature_lengths={"inputs": 32, "targets": 4}, batch_size=6,
                       output_dir=str(out_dir), mode=mode, **kwargs)
  return [json.loads(l) for l in open(path)]


def test_infer_job_serves_each_jsonl_line_under_its_prompt(tmp_path):
  files, lines, task = _serving_setup(tmp_path)
  mixed = _infer(task, tmp_path / "mixed", prompts=files)
  assert [r["prompt"] for r in mixed] == [l["prompt"] for l in lines]
  for name, length in zip("abc", LENGTHS):
    alone = _infer(task, tmp_path / name, prompt_length=length, prompt_file=files[name])
    for got, want in zip(mixed, alone):
      if got["prompt"] == name:
        np.testing.assert_allclose(got["score"], want["score"], rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match=r"Example 2 of served_jsonl .* prompt 'b', which is "
                                       r"not in PROMPTS \['a', 'c'\]"):
    _infer(task, tmp_path / "bad", prompts={"a": files["a"], "c": files["c"]})


def test_ensemble_reports_each_member_and_the_vote(tmp_path):
  files, _, task = _serving_setup(tmp_path)
  members = [files["a"], files["b"], files["c"]]
  out = _infer(task, tmp_path / "ens", mode="rank", prompt_ensemble=members)
  singles = [_infer(task, tmp_path / n, prompt_length=l, mode="rank", prompt_file=files[n])
             for n, l in zip("abc", LENGTHS)]
  for i, record in enumerate(out):
    assert record["member_predictions"] == [s[i]["prediction"] for s in singles]
    votes = record["member_predictions"]
    if votes.count(max(set(votes), key=votes.count)) >= 2:  # a majority; no tie of 3 labels
      assert record["prediction"] == max(set(votes), key=votes.count)
  with pytest.raises(ValueError, match="at least two"):
    _infer(task, tmp_path / "one", mode="rank", prompt_ensemble=[files["a"]])
  with pytest.raises(ValueError, match="Both PROMPTS and PROMPT_ENSEMBLE"):
    _infer(task, tmp_path / "both", mode="rank", prompts=files, prompt_ensemble=members)


def test_vote_by_hand():
  labels = ["x", "y", "z"]
  tables = np.log(np.array([
      # example 0: votes x, x, y -> x.  example 1: x, y, z (a three-way tie) -> the label with
      # the highest summed log-likelihood (z).  example 2: y, y, y.
      [[.6, .3, .1], [.5, .2, .3], [.3, .4, .3]],
      [[.5, .1, .4], [.1, .5, .4], [.3, .3, .4]],
      [[.1, .8, .1], [.2, .7, .1], [.1, .6, .3]],
  ])).transpose(1, 0, 2)  # [members, examples, labels]
  from prompt_tuning import ensembles
  assert ensembles.vote_labels(tables, labels) == ["x", "z", "y"]
  # An exact tie of votes and summed scores goes to the earlier label.
  assert ensembles.vote_labels(np.log([[[.5, .5]], [[.5, .5]]]), ["p", "q"]) == ["p"]
  assert ensembles.vote_texts([["a", "b", "c"], ["a", "c", "d"], ["b", "c", "e"]]) == \
      ["a", "c", "c"]
  # Two strings with one vote each: the earliest member's.
  assert ensembles.vote_texts([["b"], ["a"]]) == ["b"]
  with pytest.raises(ValueError, match="at least two"):
    ensembles.check_members(["only.npy"])
  with pytest.raises(ValueError, match="one string"):
    ensembles.check_members("a.npy")
