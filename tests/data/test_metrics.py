"""Metrics against values computed by hand (in the comments), and postprocessor edge cases."""

import math

import pytest

from prompt_tuning.data import metrics, postprocessors


def test_accuracy_counts_invalid_as_wrong():
  assert metrics.accuracy([0, 1, 1, 0], [0, 1, 0, -1]) == {"accuracy": 50.0}


def test_f1_and_accuracy():
  # tp=2 (rows 0, 5), fn=2 (row 1, invalid row 4 -> 0), fp=1 (row 2), tn=1 (row 3):
  # F1 = 2*2 / (2*2 + 1 + 2) = 4/7; accuracy = 3/6.
  got = metrics.f1_and_accuracy([1, 1, 0, 0, 1, 1], [1, 0, 1, 0, -1, 1])
  assert got == pytest.approx({"f1": 400 / 7, "accuracy": 50.0})


def test_matthews_corr():
  # tp=2, fn=1, tn=2, fp=1: (2*2 - 1*1) / sqrt(3*3*3*3) = 1/3.
  got = metrics.matthews_corr([1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 1])
  assert got["matthews_corr"] == pytest.approx(100 / 3)
  # Invalid predictions are the opposite of their target: fully wrong -> -1.
  assert metrics.matthews_corr([1, 0], [-1, 7])["matthews_corr"] == pytest.approx(-100.0)
  assert metrics.matthews_corr([1, 1], [1, 1])["matthews_corr"] == 0.0  # undefined -> 0


def test_cb_macro_f1_and_accuracy():
  # class 0: tp 1, fp 1, fn 1 -> 1/2; class 1: tp 1, fp 1 -> 2/3; class 2: tp 1, fn 2 -> 1/2.
  got = metrics.macro_f1_and_accuracy([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, -1, 0], num_classes=3)
  assert got == pytest.approx({"macro_f1": 100 * (0.5 + 2 / 3 + 0.5) / 3, "accuracy": 50.0})


def test_pearson_and_spearman():
  # t=[1,2,3], p=[1,3,2]: centred dot 1, norms 2 and 2 -> 0.5; ranks equal values -> 0.5.
  assert metrics.pearson_and_spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(
      {"pearson": 50.0, "spearman": 50.0})
  # Ties: ranks t=[0,1.5,1.5,3], p=[.5,.5,2,3] -> 3.75/4.5; raw Pearson 2/sqrt(2*2.75).
  got = metrics.pearson_and_spearman([1, 2, 2, 3], [1, 1, 2, 3])
  assert got == pytest.approx({"pearson": 100 * 2 / math.sqrt(5.5), "spearman": 100 * 3.75 / 4.5})


def test_stsb_unparsable_prediction_is_the_worst_score():
  # NaN -> 5 for targets 0 and 1: p=[5,4,5]; centred t=[-2,3,-1], p=[1/3,-2/3,1/3]
  # -> -3 / sqrt(14 * 2/3).
  got = metrics.pearson_and_spearman([0.0, 5.0, 1.0], [math.nan, 4.0, math.nan])
  assert got["pearson"] == pytest.approx(-300 / math.sqrt(14 * 2 / 3))


def test_multirc_groups_by_question_not_by_position():
  q1, q2 = (0, 0), (0, 1)
  targets = [{"group": q1, "label": 1}, {"group": q2, "label": 0}, {"group": q1, "label": 0},
             {"group": q2, "label": 1}, {"group": q1, "label": 1}]
  predictions = [1, 0, 0, 0, 1]  # q1 all right; q2 misses its true answer
  # tp=2, fn=1, fp=0 -> F1 4/5; exact match 1 of 2 questions.
  assert metrics.multirc(targets, predictions) == pytest.approx({"f1a": 80.0,
                                                                  "exact_match": 50.0})
  # An invalid prediction makes its question wrong.
  assert metrics.multirc(targets, [1, 0, -1, 1, 1])["exact_match"] == 50.0


def test_record_max_over_answers():
  targets = [["Barack Obama", "Obama"], ["the United States"], []]
  predictions = ["obama.", "United States of America", "anything"]
  # 1: EM and F1 1 (via "Obama"); 2: EM 0, F1 = 2*(2/4)*(2/2)/(2/4+1) = 2/3; 3: no answer, 0.
  assert metrics.record(targets, predictions) == pytest.approx(
      {"exact_match": 100 / 3, "f1": 100 * (1 + 2 / 3) / 3})


def test_squad_normalize():
  assert metrics.squad_normalize("The  Cat's, hat!") == "cats hat"
  assert metrics.token_f1("a the", "the") == 0.0  # both empty after normalisation


def test_length_mismatch_raises():
  with pytest.raises(ValueError, match="2 targets but 1 predictions"):
    metrics.accuracy([0, 1], [0])


@pytest.mark.parametrize("text,expected", [
    ("True", 1), (" true\n", 1), ("TRUE", 1), (b"False", 0), ("  False  ", 0),
    ("", -1), ("maybe", -1), ("True False", -1), (None, -1), (b"\xff", -1)])
def test_label_index(text, expected):
  assert postprocessors.label_index(text, label_names=("False", "True")) == expected


@pytest.mark.parametrize("text,expected", [("3.8", 3.8), (" 4 ", 4.0), (b"0.0", 0.0)])
def test_to_float(text, expected):
  assert postprocessors.to_float(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "nan", "inf", "3.8.1", None])
def test_to_float_invalid_is_nan(text):
  assert math.isnan(postprocessors.to_float(text))


def test_multirc_and_record_postprocessors_use_the_example():
  example = {"idx": {"paragraph": 3, "question": 7, "answer": 1}, "answers": [b"A", "B"]}
  assert postprocessors.multirc(" TRUE", example=example, is_target=True) == {
      "group": (3, 7), "label": 1}
  assert postprocessors.multirc("nonsense", example=example) == -1
  assert postprocessors.record("x", example=example, is_target=True) == ["A", "B"]
  assert postprocessors.record("  B ", example=example) == "B"


@pytest.mark.parametrize("prediction,expected", [
    ("The city councilmen", 1), ("councilmen.", 1), ("the city councilmen of Ohio", 1),
    ("The demonstrators", 0), ("", 0), ("the", 0)])
def test_wsc_simple_referent_match(prediction, expected):
  example = {"targets_pretokenized": b"The city councilmen", "label": 1}
  assert postprocessors.wsc_simple(prediction, example=example) == expected
  assert postprocessors.wsc_simple("ignored", example=example, is_target=True) == 1
