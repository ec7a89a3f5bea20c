"""Decoder-only batches: the layout by hand (right/left padding, BOS or none, EOS after the
targets), truncation, and a JSONL task end to end through a decoder tokenizer."""

import json
import logging

import numpy as np
import pytest

from prompt_tuning.data import decoder_features, errors, hf_tokenizers, jsonl
from tests.data import decoder_tokenizers

BOS = hf_tokenizers.SpecialIds(bos_id=1, eos_id=2, pad_id=0)
NO_BOS = hf_tokenizers.SpecialIds(bos_id=None, eos_id=2, pad_id=9)
LENGTHS = {"inputs": 4, "targets": 3}


def test_right_and_left_padding_by_hand():
  inputs, targets = [[5, 6], [7], []], [[8, 2], [2], [3, 4, 2]]
  right = decoder_features.to_model_batch(inputs, targets, LENGTHS, BOS)
  np.testing.assert_array_equal(right["tokens"], [[1, 5, 6, 8, 2, 0, 0],
                                                  [1, 7, 2, 0, 0, 0, 0],
                                                  [1, 3, 4, 2, 0, 0, 0]])
  np.testing.assert_array_equal(right["mask"], [[1, 1, 1, 1, 1, 0, 0],
                                                [1, 1, 1, 0, 0, 0, 0],
                                                [1, 1, 1, 1, 0, 0, 0]])
  np.testing.assert_array_equal(right["positions"], [[0, 1, 2, 3, 4, 0, 0],
                                                     [0, 1, 2, 0, 0, 0, 0],
                                                     [0, 1, 2, 3, 0, 0, 0]])
  np.testing.assert_array_equal(right["target_mask"], [[0, 0, 0, 1, 1, 0, 0],
                                                       [0, 0, 1, 0, 0, 0, 0],
                                                       [0, 1, 1, 1, 0, 0, 0]])
  np.testing.assert_array_equal(right["inputs_length"], [3, 2, 1])
  left = decoder_features.to_model_batch(inputs, targets, LENGTHS, BOS, padding_side="left")
  np.testing.assert_array_equal(left["tokens"], [[0, 0, 1, 5, 6, 8, 2],
                                                 [0, 0, 0, 0, 1, 7, 2],
                                                 [0, 0, 0, 1, 3, 4, 2]])
  np.testing.assert_array_equal(left["positions"], [[0, 0, 0, 1, 2, 3, 4],
                                                    [0, 0, 0, 0, 0, 1, 2],
                                                    [0, 0, 0, 0, 1, 2, 3]])
  np.testing.assert_array_equal(left["target_mask"], [[0, 0, 0, 0, 0, 1, 1],
                                                      [0, 0, 0, 0, 0, 0, 1],
                                                      [0, 0, 0, 0, 1, 1, 1]])
  np.testing.assert_array_equal(left["mask"], left["tokens"] > 0)
  for key in decoder_features.BATCH_KEYS:
    assert right[key].dtype == left[key].dtype == (
        bool if "mask" in key else np.int32), key


def test_no_bos_pads_with_the_pad_id_and_may_score_the_first_token():
  batch = decoder_features.to_model_batch([[5, 6, 7, 3], []], [[2], [8, 8, 2]], LENGTHS, NO_BOS)
  np.testing.assert_array_equal(batch["tokens"], [[5, 6, 7, 3, 2, 9, 9],
                                                  [8, 8, 2, 9, 9, 9, 9]])
  np.testing.assert_array_equal(batch["target_mask"], [[0, 0, 0, 0, 1, 0, 0],
                                                       [1, 1, 1, 0, 0, 0, 0]])
  np.testing.assert_array_equal(batch["inputs_length"], [4, 0])


def test_prompt_batches_are_left_padded_inputs():
  batch = decoder_features.to_prompt_batch([[5, 6], [], [7, 7, 7]], 4, BOS)
  assert set(batch) == {"tokens", "mask", "positions", "inputs_length"}
  np.testing.assert_array_equal(batch["tokens"], [[0, 1, 5, 6], [0, 0, 0, 1], [1, 7, 7, 7]])
  np.testing.assert_array_equal(batch["positions"], [[0, 0, 1, 2], [0, 0, 0, 0], [0, 1, 2, 3]])
  np.testing.assert_array_equal(batch["inputs_length"], [3, 1, 4])
  with pytest.raises(errors.DataError, match=r"inputs are 5 tokens \(BOS included\), more than "
                     r"TASK_FEATURE_LENGTHS\['inputs'\]=4"):
    decoder_features.to_prompt_batch([[7, 7, 7, 7]], 4, BOS)


def test_rows_that_do_not_fit_and_bad_arguments_are_refused():
  with pytest.raises(errors.DataError, match=r"inputs are 5 tokens \(BOS included\)"):
    decoder_features.to_model_batch([[5, 6, 7, 8]], [[2]], LENGTHS, BOS)
  with pytest.raises(errors.DataError, match=r"targets are 4 tokens \(EOS included\)"):
    decoder_features.to_model_batch([[5]], [[3, 3, 3, 2]], LENGTHS, BOS)
  with pytest.raises(errors.DataError, match=r"targets \[3, 4\] do not end in EOS \(id 2\)"):
    decoder_features.to_model_batch([[5]], [[3, 4]], LENGTHS, BOS)
  with pytest.raises(errors.DataError, match="padding_side='middle' must be 'right'"):
    decoder_features.to_model_batch([[5]], [[2]], LENGTHS, BOS, padding_side="middle")
  with pytest.raises(errors.DataError, match="padding_side='up'"):
    decoder_features.layout(np.zeros((1, 2)), [1], [1], "up")


@pytest.fixture(scope="module")
def jsonl_task(tmp_path_factory):
  """A JSONL task tokenized with a Llama-like tokenizer (BOS added)."""
  base = tmp_path_factory.mktemp("decoder_jsonl")
  directory = decoder_tokenizers.llama_like(base / "tokenizer")
  lines = [{"inputs": "the movie was great", "targets": "positive"},
           {"inputs": "a terrible film, really bad", "targets": "negative"},
           {"inputs": "", "targets": "hello world"},
           {"inputs": "I loved it! the plot was thin but the actors were good",
            "targets": "positive"},
           {"inputs": "bad acting", "targets": "the plot was thin but the actors were good"}]
  path = base / "train.jsonl"
  path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
  vocab = hf_tokenizers.decoder_vocabulary(str(directory))
  task = jsonl.register_jsonl_task("decoder_jsonl_test", {"train": str(path),
                                                          "validation": str(path)},
                                   vocabulary=vocab.vocabulary)
  return task, lines, vocab, directory


def _expected_rows(lines, directory, lengths):
  """Rows by the contract, from transformers' own tokenizer: tokenizer(inputs) with its
  special tokens (BOS), tokenizer(targets) without, EOS after; cuts by hand."""
  import transformers  # pylint: disable=g-import-not-at-top
  auto = transformers.AutoTokenizer.from_pretrained(str(directory))
  rows = []
  for line in lines:
    inputs = auto(line["inputs"]).input_ids[:lengths["inputs"]]
    targets = auto(line["targets"], add_special_tokens=False).input_ids
    targets = targets[:lengths["targets"] - 1] + [auto.eos_token_id]
    rows.append((inputs, targets))
  return rows


def test_jsonl_task_end_to_end_right_and_left(jsonl_task):
  task, lines, vocab, directory = jsonl_task
  lengths = {"inputs": 32, "targets": 16}
  rows = _expected_rows(lines, directory, lengths)
  assert vocab.bos_id == 1 and all(x[0] == 1 for x, _ in rows)
  for side in ("right", "left"):
    batches = list(decoder_features.get_batches(
        task.name, "validation", lengths, 2, shuffle=False, seed=None, num_epochs=1,
        drop_remainder=False, padding_side=side))
    got = {k: np.concatenate([b[k] for b in batches]) for k in decoder_features.BATCH_KEYS}
    assert got["tokens"].shape == (5, 48)
    for i, (inputs, targets) in enumerate(rows):
      row = got["tokens"][i][got["mask"][i]]
      assert row.tolist() == inputs + targets
      assert got["tokens"][i][got["target_mask"][i]].tolist() == targets
      assert got["inputs_length"][i] == len(inputs)
      assert (got["tokens"][i][~got["mask"][i]] == vocab.pad_id).all()
      real = np.flatnonzero(got["mask"][i])
      assert real.tolist() == (list(range(len(row))) if side == "right"
                               else list(range(48 - len(row), 48)))
      assert got["positions"][i][real].tolist() == list(range(len(row)))
  # The eval/infer path gives the same batches.
  examples = decoder_features.get_examples(task.name, "validation", lengths)
  assert examples[2]["inputs"].tolist() == [] and examples[0]["inputs_pretokenized"] == (
      lines[0]["inputs"])
  batch, real = next(decoder_features.batch_examples(examples, 8, lengths,
                                                     vocab.special_ids, padding_side="left"))
  assert real.tolist() == [True] * 5 + [False] * 3
  for key in decoder_features.BATCH_KEYS:
    np.testing.assert_array_equal(batch[key][:5], got[key], err_msg=key)
  prompts, _ = next(decoder_features.batch_prompts(examples, 5, lengths, vocab.special_ids))
  for i, (inputs, _) in enumerate(rows):
    assert prompts["tokens"][i][prompts["mask"][i]].tolist() == inputs
    assert prompts["tokens"].shape == (5, 32) and prompts["mask"][i][-1]


def test_cut_examples_keep_bos_and_eos_and_are_logged(jsonl_task, caplog):
  task, lines, _, directory = jsonl_task
  lengths = {"inputs": 5, "targets": 3}
  rows = _expected_rows(lines, directory, lengths)
  cut = sum(len(x) > 5 or len(y) > 3 for x, y in _expected_rows(  # x has BOS
      lines, directory, {"inputs": 1000, "targets": 1000}))
  assert 0 < cut < len(lines)
  with caplog.at_level(logging.INFO, logger="absl"):
    examples = decoder_features.get_examples(task.name, "train", lengths)
  assert [([1] + ex["inputs"].tolist(), ex["targets"].tolist()) for ex in examples] == rows
  messages = [r.getMessage() for r in caplog.records if "were cut" in r.getMessage()]
  assert messages == [f"{task.name}/train: {cut} of 5 examples were longer than "
                      f"TASK_FEATURE_LENGTHS={lengths} and were cut."]
  batch = next(decoder_features.get_batches(task.name, "train", lengths, 5, shuffle=False,
                                            seed=None, num_epochs=1))
  assert batch["tokens"].shape == (5, 8)
  assert [batch["tokens"][i][batch["mask"][i]].tolist() for i in range(5)] == [
      x + y for x, y in rows]
