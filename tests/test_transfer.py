"""SPoT's prompt similarity and source ranking (prompt_tuning/transfer.py), Spearman's rank
correlation, and the command, against hand-computed values."""

import math

import numpy as np
import pytest

from prompt_tuning import transfer
from prompt_tuning.checkpoints import prompts_io
from prompt_tuning.prompts import dept

TARGET = np.array([[1.0, 0.0], [1.0, 0.0], [3.0, 0.0]])        # mean (5/3, 0): direction (1, 0)
SOURCES = {"a": np.array([[1.0, 1.0], [1.0, -1.0]]),            # mean (1, 0)
           "b": np.array([[0.0, 1.0]]),                          # orthogonal to the target
           "c": np.array([[2.0, 1.0]])}                          # cos = 2 / sqrt(5)


def test_both_measures_by_hand():
  r = 1 / math.sqrt(2)
  assert transfer.similarity(SOURCES["a"], TARGET, "average") == pytest.approx(1.0)
  assert transfer.similarity(SOURCES["a"], TARGET, "per_token") == pytest.approx(r)
  assert transfer.similarity(SOURCES["b"], TARGET, "average") == pytest.approx(0.0)
  assert transfer.similarity(SOURCES["c"], TARGET, "per_token") == pytest.approx(2 / math.sqrt(5))
  # per_token: every pair of rows counts, so a row against itself does not make it 1.
  both = np.array([[1.0, 0.0], [0.0, 1.0]])
  assert transfer.similarity(both, both, "per_token") == pytest.approx(0.5)
  assert transfer.similarity(both, both, "average") == pytest.approx(1.0)


def test_average_equals_inspects_mean_vector_cosine():
  from prompt_tuning import inspect
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(5, 8)), rng.normal(size=(3, 8))
  assert transfer.similarity(a, b) == pytest.approx(inspect.prompt_similarity(a, b)["mean_vector"])


def test_ranking_best_first_and_the_measures_can_disagree():
  ranked = transfer.rank_sources(TARGET, SOURCES, "average")
  assert [name for name, _ in ranked] == ["a", "c", "b"]
  assert [s for _, s in ranked] == pytest.approx([1.0, 2 / math.sqrt(5), 0.0])
  ranked = transfer.rank_sources(TARGET, SOURCES, "per_token")
  assert [name for name, _ in ranked] == ["c", "a", "b"]
  assert [s for _, s in ranked] == pytest.approx([2 / math.sqrt(5), 1 / math.sqrt(2), 0.0])


def test_deep_prompts_compare_layer_by_layer():
  target = np.stack([TARGET[:2], [[0.0, 1.0], [0.0, 1.0]]])          # [2 layers, 2, 2]
  source = np.stack([SOURCES["a"], [[1.0, 1.0], [1.0, 1.0]]])
  # layer 0: cos((1, 0), (1, 0)) = 1; layer 1: cos((1, 1), (0, 1)) = 1/sqrt(2).
  expected = (1 + 1 / math.sqrt(2)) / 2
  assert transfer.similarity(source, target, "average") == pytest.approx(expected)
  assert transfer.rank_sources(target, {"s": source})[0][1] == pytest.approx(expected)


def test_spearman_by_hand():
  assert transfer.spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
  assert transfer.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
  # Ties take their average rank: y ranks [1, 2, 3.5, 5, 3.5]; centred, x . y = 8,
  # |x|^2 = 10, |y|^2 = 9.5.
  np.testing.assert_array_equal(transfer.ranks([5, 6, 7, 8, 7]), [1, 2, 3.5, 5, 3.5])
  assert transfer.spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / math.sqrt(95))
  scipy_stats = pytest.importorskip("scipy.stats")
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=9), np.round(rng.normal(size=9), 0)  # y has ties
  assert transfer.spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).statistic)
  for x, y, match in (([1, 2], [1], "paired values"), ([1], [2], "at least 2 pairs"),
                      ([1, 2, 3], [4, 4, 4], "all values equal"),
                      ([1, float("nan")], [1, 2], "finite")):
    with pytest.raises(ValueError, match=match):
      transfer.spearman(x, y)


def test_bad_prompts_are_refused_naming_them():
  with pytest.raises(ValueError, match=r"wide has shape \(1, 3\), width 3, but the target "
                                       r"has shape \(3, 2\), width 2"):
    transfer.rank_sources(TARGET, {"wide": np.ones((1, 3))})
  with pytest.raises(ValueError, match=r"deep is a deep prompt \[layers, p, d_model\] of shape "
                                       r"\(2, 1, 2\) but the target is a prompt \[p, d_model\]"):
    transfer.rank_sources(TARGET, {"deep": np.ones((2, 1, 2))})
  with pytest.raises(ValueError, match=r"s is a deep prompt .*\(3, 1, 2\) but the target is a "
                                       r"deep prompt .*\(2, 1, 2\)"):
    transfer.rank_sources(np.ones((2, 1, 2)), {"s": np.ones((3, 1, 2))})
  record = dept.pack({"prompt": np.ones((2, 2)), "low_rank_a": np.ones((3, 1)),
                      "low_rank_b": np.ones((1, 2))})
  with pytest.raises(ValueError, match=r"d is a record of fields .*DePT or MPT"):
    transfer.rank_sources(TARGET, {"d": record})
  with pytest.raises(ValueError, match=r"v has shape \(4,\)"):
    transfer.rank_sources(TARGET, {"v": np.ones(4)})
  with pytest.raises(ValueError, match="n has non-finite values"):
    transfer.rank_sources(TARGET, {"n": np.array([[np.nan, 1.0]])})
  with pytest.raises(ValueError, match="measure='max'"):
    transfer.rank_sources(TARGET, SOURCES, "max")
  with pytest.raises(ValueError, match="No source prompts"):
    transfer.rank_sources(TARGET, {})


def test_command_prints_the_table_and_the_correlation(tmp_path, capsys):
  paths = {}
  for name, value in {"target": TARGET, **SOURCES}.items():
    paths[name] = str(tmp_path / f"{name}.npy")
    prompts_io.save_prompt(paths[name], value.astype(np.float32))
  sources = [f"--source={name}={paths[name]}" for name in SOURCES]
  gains = ["--gain=a=3.0", "--gain=b=-1.0", "--gain=c=2.0"]
  assert transfer.main([f"--target={paths['target']}", *sources, *gains]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == f"Sources ranked by average cosine similarity to {paths['target']}:"
  assert [line.split()[:2] for line in lines[2:5]] == [["1", "a"], ["2", "c"], ["3", "b"]]
  assert lines[2].split()[2:] == ["1.0000", "3.000"]
  assert lines[5] == "Spearman's rank correlation of similarity and gain: 1.000 (3 sources)"
  # Bad input: one clear line on stderr, exit status 2.
  wide = str(tmp_path / "wide.npy")
  prompts_io.save_prompt(wide, np.ones((2, 3), np.float32))
  for argv, message in (
      ([*sources, f"--source=w={wide}"], rf"source 'w' \({wide}\) has shape \(2, 3\), width 3"),
      ([*sources, "--gain=a=1"], r"--gain names \['a'\] but the sources are"),
      ([*sources[:1], "--source=a=x.npy"], "names 'a' twice"),
      (["--source=a"], "must be NAME=VALUE"),
      ([f"--source=z={tmp_path / 'none.npy'}"], r"--source=z=.*none.npy' does not exist")):
    assert transfer.main([f"--target={paths['target']}", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and len(err.strip().splitlines()) == 1
    assert __import__("re").search(message, err), err
