"""One frozen model, many prompts: mixed-prompt batches equal single-prompt runs row by row."""

import jax
import numpy as np
import pytest

from prompt_tuning import combine, model
from prompt_tuning.t5 import config as t5_config

TINY = t5_config.get_config("t5_1_1_tiny").replace(vocab_size=64)
LENGTHS = (3, 1, 5)  # three prompts of different lengths
# Ragged rows, one left-padded; targets of different lengths.
INPUTS = np.array([[5, 6, 7, 8, 1], [0, 0, 9, 10, 1], [11, 1, 0, 0, 0], [12, 13, 1, 0, 0]],
                  np.int32)
TARGETS = np.array([[3, 4, 1, 0], [5, 6, 7, 1], [8, 1, 0, 0], [9, 9, 1, 0]], np.int32)
IDS = np.array([2, 0, 1, 2], np.int32)


def make_batch(inputs, targets):
  return {"encoder_input_tokens": inputs,
          "decoder_input_tokens": np.pad(targets[:, :-1], ((0, 0), (1, 0))),
          "decoder_target_tokens": targets,
          "decoder_loss_weights": (targets > 0).astype(np.int32)}


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
