"""Model batches: seqio.EncDecFeatureConverter(pack=False) semantics, cuts, order, shards."""

import collections
import logging

import numpy as np
import pytest
import seqio

from prompt_tuning.data import demo, errors, features

TASK = demo.TASK_NAME
SHORT = {"inputs": 8, "targets": 4}  # cuts most demo inputs


def _concat(batches):
  batches = list(batches)
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def test_batches_match_seqio_enc_dec_converter():
  task = seqio.get_mixture_or_task(TASK)
  ds = task.get_dataset(SHORT, split="validation", shuffle=False)
  ds = seqio.EncDecFeatureConverter(pack=False)(ds, SHORT)
  expected = {k: np.stack([ex[k] for ex in ds.as_numpy_iterator()])
              for k in ("encoder_input_tokens", "decoder_input_tokens",
                        "decoder_target_tokens", "decoder_loss_weights")}
  got = _concat(features.get_batches(TASK, "validation", SHORT, 16, shuffle=False, seed=None,
                                     num_epochs=1, drop_remainder=False))
  assert set(got) == set(expected)
  for key, value in expected.items():
    np.testing.assert_array_equal(got[key], value, err_msg=key)
    assert got[key].dtype == np.int32
  # Cut inputs keep their final EOS.
  assert (got["encoder_input_tokens"][:, -1] == 1).any()


def test_to_model_batch_shifts_targets_right():
  batch = features.to_model_batch(np.array([[5, 6, 1]]), np.array([[7, 8, 1, 0]]))
  np.testing.assert_array_equal(batch["decoder_input_tokens"], [[0, 7, 8, 1]])
  np.testing.assert_array_equal(batch["decoder_loss_weights"], [[1, 1, 1, 0]])


def test_cut_examples_are_counted_and_logged_once(caplog):
  vocab = seqio.get_mixture_or_task(TASK).output_features["inputs"].vocabulary
  examples = features.get_examples(TASK, "test", {"inputs": 32, "targets": 4})
  lengths = {"inputs": 9, "targets": 4}  # a length no other test uses: logs afresh
  expected = sum(len(vocab.encode(ex["inputs_pretokenized"])) + 1 > 9 for ex in examples)
  assert 0 < expected < len(examples)
  with caplog.at_level(logging.INFO, logger="absl"):
    cut = features.get_examples(TASK, "test", lengths)
    features.get_examples(TASK, "test", lengths)
  messages = [r.getMessage() for r in caplog.records if "were cut" in r.getMessage()]
  assert messages == [f"{TASK}/test: {expected} of 50 examples were longer than "
                      f"TASK_FEATURE_LENGTHS={lengths} and were cut."]
  assert all(len(ex["inputs"]) <= 9 and ex["inputs"][-1] == 1 for ex in cut)


def test_training_stream_logs_cuts_after_its_first_epoch(caplog):
  lengths = {"inputs": 10, "targets": 4}
  with caplog.at_level(logging.INFO, logger="absl"):
    batches = features.get_batches(TASK, "validation", lengths, 7, shuffle=True, seed=3,
                                   num_epochs=None)
    for _ in range(9):  # 63 rows > 50: the second epoch has begun
      next(batches)
  messages = [r.getMessage() for r in caplog.records if "were cut" in r.getMessage()]
  assert len(messages) == 1 and " of 50 examples" in messages[0]


def test_get_examples_in_file_order_with_text_fields():
  examples = features.get_examples(TASK, "validation", {"inputs": 32, "targets": 4})
  with open(demo.FILES["validation"], encoding="utf-8") as f:
    lines = f.read().splitlines()
  assert [f'{{"inputs": "{ex["inputs_pretokenized"]}", "targets": '
          f'"{ex["targets_pretokenized"]}"}}' for ex in examples] == lines
  assert examples[0]["targets"].dtype == np.int32 and examples[0]["targets"][-1] == 1


def test_shuffled_epochs_are_permutations_and_reproducible():
  def rows(seed):
    batches = features.get_batches(TASK, "train", {"inputs": 32, "targets": 4}, 32,
                                   shuffle=True, seed=seed, num_epochs=2, drop_remainder=False)
    got = _concat(batches)["encoder_input_tokens"]
    return [tuple(r) for r in got]

  first = rows(7)
  assert first == rows(7)
  unshuffled = _concat(features.get_batches(TASK, "train", {"inputs": 32, "targets": 4}, 32,
                                            shuffle=False, seed=None, num_epochs=1,
                                            drop_remainder=False))["encoder_input_tokens"]
  plain = [tuple(r) for r in unshuffled]
  assert len(first) == 400
  assert collections.Counter(first[:200]) == collections.Counter(plain)  # epoch 1: all once
  assert collections.Counter(first) == collections.Counter(plain * 2)
  assert first[:200] != plain and first[:200] != first[200:]  # reshuffled each epoch


def test_skipped_batches_resume_the_same_shuffled_stream():
  def stream(skip):
    return features.get_batches(TASK, "train", {"inputs": 32, "targets": 4}, 16, shuffle=True,
                                seed=3, num_epochs=None, skip_batches=skip)
  full, resumed = stream(0), stream(17)  # 17 batches of 16 cross the 200-example epoch
  expected = [next(full) for _ in range(20)][17:]
  for want in expected:
    got = next(resumed)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


def test_shards_are_disjoint_and_cover_the_split():
  lengths = {"inputs": 32, "targets": 4}
  every = [ex["inputs_pretokenized"] for ex in features.get_examples(TASK, "test", lengths)]
  shards = [[ex["inputs_pretokenized"] for ex in features.get_examples(
      TASK, "test", lengths, shard_index=i, num_shards=3)] for i in range(3)]
  assert sorted(sum(shards, [])) == sorted(every)
  assert all(abs(len(s) - 50 / 3) < 1 for s in shards)
  batches = [next(features.get_batches(TASK, "train", lengths, 4, shuffle=False, seed=None,
                                       num_epochs=1, shard_index=i, num_shards=2))
             for i in range(2)]
  assert not np.array_equal(batches[0]["encoder_input_tokens"],
                            batches[1]["encoder_input_tokens"])


def test_batch_examples_pads_the_last_batch_with_a_masked_real_row():
  examples = features.get_examples(TASK, "test", {"inputs": 32, "targets": 4})[:5]
  out = list(features.batch_examples(examples, 2, {"inputs": 32, "targets": 4}))
  assert [real.tolist() for _, real in out] == [[True, True], [True, True], [True, False]]
  last, _ = out[-1]
  np.testing.assert_array_equal(last["encoder_input_tokens"][1], last["encoder_input_tokens"][0])
  np.testing.assert_array_equal(last["encoder_input_tokens"][0][:len(examples[4]["inputs"])],
                                examples[4]["inputs"])
  assert last["decoder_target_tokens"].shape == (2, 4)
  with pytest.raises(errors.DataError, match=r"'inputs' has \d+ tokens, more than"):
    next(features.batch_examples(examples, 2, {"inputs": 3, "targets": 4}))


@pytest.mark.parametrize("lengths", [{"inputs": 8}, {"inputs": 8, "targets": 0}, None,
                                     {"inputs": 8, "targets": 2.5}])
def test_bad_feature_lengths(lengths):
  with pytest.raises(errors.DataError, match="TASK_FEATURE_LENGTHS"):
    features.get_batches(TASK, "train", lengths, 2, shuffle=False, seed=None, num_epochs=1)


def test_mixture_examples_are_refused_and_bad_shards():
  with pytest.raises(errors.DataError, match="is a mixture"):
    features.get_examples("super_glue_proportional", "validation", SHORT)
  with pytest.raises(errors.DataError, match="shard_index=2"):
    features.get_examples(TASK, "test", SHORT, shard_index=2, num_shards=2)
