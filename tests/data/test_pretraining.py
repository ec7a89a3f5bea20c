"""Span corruption and the prefix-LM split, on hand-worked examples and over many draws."""

import numpy as np
import pytest
import seqio
import tensorflow as tf

from prompt_tuning.data import errors, features, pretraining
from prompt_tuning.pretrained import MINI_VOCABULARY_PATH

VOCAB = 1000  # sentinels are 999, 998, ...; test tokens stay below 900


def _np(x):
  return np.asarray(x).tolist()


def test_spans_to_sentinels_hand_worked():
  # "Thank you [for inviting] me to your party [last] week" with two noise spans.
  tokens = tf.constant([10, 11, 12, 13, 14, 15, 16, 17, 18])
  mask = tf.constant([0, 0, 1, 1, 0, 0, 0, 1, 0]) > 0
  assert _np(pretraining.spans_to_sentinels(tokens, mask, VOCAB)) == [10, 11, 999, 14, 15, 16,
                                                                      998, 18]
  assert _np(pretraining.spans_to_sentinels(tokens, ~mask, VOCAB)) == [999, 12, 13, 998, 17,
                                                                       997]


def _rebuild(inputs, targets):
  """The original tokens from corrupted inputs and targets (sentinels are >= 900 here)."""
  spans, current = {}, None
  for t in targets:
    if t >= 900:
      current = t
      spans[current] = []
    else:
      spans[current].append(t)
  out = []
  for t in inputs:
    out += spans[t] if t >= 900 else [t]
  return out


@pytest.mark.parametrize("length", [2, 3, 10, 64, 113])
def test_corruption_rebuilds_the_text_and_counts_noise(length):
  tokens = tf.range(3, 3 + length)
  noise, spans = pretraining.noise_counts(length, 0.15, 3.0)
  for draw in range(50):
    out = pretraining.corrupt(tokens, VOCAB, 0.15, 3.0, tf.constant([draw, 7]))
    inputs, targets = _np(out["inputs"]), _np(out["targets"])
    assert _rebuild(inputs, targets) == _np(tokens)
    sentinels = [t for t in inputs if t >= 900]
    assert sentinels == list(range(999, 999 - spans, -1))  # in order, one per span
    assert [t for t in targets if t >= 900] == sentinels
    assert len(targets) - spans == noise  # exactly the rounded noise count
    assert inputs[0] == 3  # the first token is always kept


def test_noise_fraction_and_span_length_over_many_draws():
  noise_total = spans_total = tokens_total = 0
  positions = np.zeros(64)
  for draw in range(300):
    mask = np.asarray(pretraining.random_spans_noise_mask(64, 0.15, 3.0, tf.constant([draw, 1])))
    noise_total += mask.sum()
    spans_total += np.sum(mask[1:] & ~mask[:-1])
    tokens_total += mask.size
    positions += mask
  assert noise_total / tokens_total == pytest.approx(0.15, abs=0.01)
  assert noise_total / spans_total == pytest.approx(3.0, abs=0.4)
  assert positions[0] == 0 and (positions[1:] > 0).all()  # spans land everywhere else


def test_prefix_lm_split_covers_every_point():
  ds = tf.data.Dataset.from_tensors({"targets": tf.range(5, 15)}).repeat(200)
  with seqio.utils.map_seed_manager(3):
    out = list(pretraining.prefix_lm(ds).as_numpy_iterator())
  splits = set()
  for ex in out:
    assert _np(ex["inputs"]) + _np(ex["targets"]) == list(range(5, 15))
    splits.add(len(ex["inputs"]))
  assert splits == set(range(1, 10))  # k in [1, n - 1], each seen


def test_prefix_lm_drops_texts_too_short_to_split():
  ds = tf.data.Dataset.from_tensor_slices({"targets": tf.ragged.constant([[4], [4, 5]])})
  ds = ds.map(lambda ex: {"targets": ex["targets"]})
  with seqio.utils.map_seed_manager(0):
    out = list(pretraining.prefix_lm(ds).as_numpy_iterator())
  assert [(_np(e["inputs"]), _np(e["targets"])) for e in out] == [([4], [5])]


def test_pack_tokens_concatenates_and_cuts():
  ds = tf.data.Dataset.from_tensor_slices({"targets": tf.ragged.constant([[1, 2, 3], [4], [5, 6, 7, 8, 9]])})
  out = [_np(e["targets"]) for e in pretraining.pack_tokens(ds, chunk_length=4).as_numpy_iterator()]
  assert out == [[1, 2, 3, 4], [5, 6, 7, 8]]


def test_feature_lengths_fit_exactly():
  assert pretraining.feature_lengths("span_corruption", 64) == {"inputs": 58, "targets": 14}
  assert pretraining.feature_lengths("prefix_lm", 48) == {"inputs": 48, "targets": 48}


@pytest.mark.parametrize("density", [0.0, 1.0, 1.5, -0.1])
def test_noise_density_outside_unit_interval(density):
  with pytest.raises(errors.DataError, match=r"NOISE_DENSITY=.*\(0, 1\)"):
    pretraining.feature_lengths("span_corruption", 64, noise_density=density)


def test_mean_span_length_below_one():
  with pytest.raises(errors.DataError, match="MEAN_NOISE_SPAN_LENGTH=0.5 must be >= 1"):
    pretraining.feature_lengths("span_corruption", 64, mean_noise_span_length=0.5)


def test_chunk_too_short_to_corrupt():
  with pytest.raises(errors.DataError, match="PRETRAIN_CHUNK_LENGTH=1 is too short to corrupt"):
    pretraining.feature_lengths("span_corruption", 1)


def test_unknown_objective():
  with pytest.raises(errors.DataError, match="PRETRAIN_OBJECTIVE='mlm'"):
    pretraining.feature_lengths("mlm", 64)


def test_empty_text_file(tmp_path):
  path = tmp_path / "empty.txt"
  path.write_text("\n  \n", encoding="utf-8")
  with pytest.raises(errors.DataError, match=f"{path}.* has no text"):
    pretraining.text_task("span_corruption", text_files=[str(path)],
                          vocabulary_path=MINI_VOCABULARY_PATH)


def test_text_file_not_utf8(tmp_path):
  path = tmp_path / "latin1.txt"
  path.write_bytes("caf\u00e9 au lait\n".encode("latin-1"))
  with pytest.raises(errors.DataError, match=f"{path}.* is not UTF-8 text \\(byte 3"):
    pretraining.text_task("prefix_lm", text_files=[str(path)],
                          vocabulary_path=MINI_VOCABULARY_PATH)


def test_missing_text_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="PRETRAIN_TEXT_FILES: .*nothing.txt"):
    pretraining.text_task("prefix_lm", text_files=[str(tmp_path / "nothing.txt")],
                          vocabulary_path=MINI_VOCABULARY_PATH)


def test_exactly_one_source():
  with pytest.raises(errors.DataError, match="exactly one pretraining text source"):
    pretraining.text_task("prefix_lm", vocabulary_path=MINI_VOCABULARY_PATH)


@pytest.mark.parametrize("objective,chunk", [("span_corruption", 32), ("prefix_lm", 24)])
def test_text_task_batches(tmp_path, objective, chunk):
  path = tmp_path / "corpus.txt"
  path.write_text("".join(f"dog {i}: a member of the genus Canis that barks\n"
                          for i in range(200)), encoding="utf-8")
  name = pretraining.text_task(objective, text_files=[str(path)],
                               vocabulary_path=MINI_VOCABULARY_PATH, chunk_length=chunk)
  lengths = pretraining.feature_lengths(objective, chunk)
  batch = next(features.get_batches(name, "train", lengths, 8, shuffle=True, seed=0,
                                    num_epochs=None))
  inputs, targets = batch["encoder_input_tokens"], batch["decoder_target_tokens"]
  assert inputs.shape == (8, lengths["inputs"]) and targets.shape == (8, lengths["targets"])
  real_inputs, real_targets = (inputs > 0).sum(1), (targets > 0).sum(1)
  # Every chunk is whole: kept + noise tokens + EOS on each side, sentinels twice.
  sentinels = (inputs >= 8092).sum(1)
  assert (real_inputs + real_targets - 2 * sentinels - 2 == chunk).all()
  if objective == "span_corruption":
    assert (real_inputs == lengths["inputs"]).all() and (real_targets == lengths["targets"]).all()
