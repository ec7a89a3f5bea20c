"""Prompt files: round trip, checks on what enters, T5X variables."""

from pathlib import Path

import numpy as np
import pytest

from prompt_tuning.checkpoints import prompts_io

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures"
PRETRAINED = FIXTURES / "pretrained_prompts_t5_1_1_lm100k_base"
TINY_T5X = FIXTURES / "t5x_t5_1_1_tiny_checkpoint_3"


def test_prompt_path():
  assert prompts_io.prompt_path("/runs/sst2", 300) == "/runs/sst2/prompts/step_300.npy"


def test_round_trip_is_exact_float32(tmp_path):
  value = np.random.default_rng(0).normal(size=(10, 6)).astype(np.float32)
  path = prompts_io.prompt_path(str(tmp_path), 7)
  prompts_io.save_prompt(path, value)
  assert sorted(p.name for p in (tmp_path / "prompts").iterdir()) == ["step_7.npy"]
  loaded = prompts_io.load_prompt(path, (10, 6))
  assert loaded.dtype == np.float32
  np.testing.assert_array_equal(loaded, value)
  np.testing.assert_array_equal(np.load(path), value)  # a plain .npy for other tools
  prompts_io.save_prompt(path, value + 1)  # overwrite
  np.testing.assert_array_equal(prompts_io.load_prompt(path), value + 1)


def test_other_float_widths_become_float32(tmp_path):
  np.save(tmp_path / "p.npy", np.ones((2, 3), np.float16))
  assert prompts_io.load_prompt(str(tmp_path / "p.npy"), (2, 3)).dtype == np.float32


@pytest.mark.parametrize("value, match", [
    (np.zeros((4, 3), np.float32), r"shape \(4, 3\) but the model needs \(5, 3\)"),
    (np.zeros((5,), np.float32), r"shape \(5,\)"),
    (np.zeros((5, 3), np.int64), "dtype int64"),
    (np.array([[np.inf] * 3] * 5, np.float32), "15 non-finite values"),
])
def test_bad_prompt_files(tmp_path, value, match):
  np.save(tmp_path / "p.npy", value)
  with pytest.raises(ValueError, match=match):
    prompts_io.load_prompt(str(tmp_path / "p.npy"), (5, 3))


def test_unreadable_and_missing_files(tmp_path):
  (tmp_path / "p.npy").write_bytes(b"not numpy")
  with pytest.raises(ValueError, match="not a readable .npy"):
    prompts_io.load_prompt(str(tmp_path / "p.npy"))
  np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
  with pytest.raises(ValueError, match="not a readable .npy"):  # never unpickles
    prompts_io.load_prompt(str(tmp_path / "o.npy"))
  with pytest.raises(ValueError, match="does not exist"):
    prompts_io.load_prompt(str(tmp_path / "missing.npy"))


def test_save_refuses_non_finite(tmp_path):
  with pytest.raises(ValueError, match="non-finite"):
    prompts_io.save_prompt(str(tmp_path / "p.npy"), np.full((2, 2), np.nan))


@pytest.mark.skipif(not PRETRAINED.is_dir(), reason="pretrained prompt fixtures absent")
def test_pretrained_prompts_read_in_place():
  for task in ["sst2", "mrpc", "rte"]:
    value = prompts_io.load_prompt(str(PRETRAINED / f"{task}.npy"), (100, 768))
    assert value.dtype == np.float32 and np.isfinite(value).all()


@pytest.mark.skipif(not TINY_T5X.is_dir(), reason="T5X fixture absent")
def test_t5x_variable_as_prompt():
  value = prompts_io.read_t5x_prompt(str(TINY_T5X), "target/encoder/layers_0/mlp/wo/kernel",
                                     (8, 4))
  assert value.shape == (8, 4) and value.dtype == np.float32
  with pytest.raises(ValueError, match=r"shape \(8, 4\) but the model needs \(100, 4\)"):
    prompts_io.read_t5x_prompt(str(TINY_T5X), "encoder/layers_0/mlp/wo/kernel", (100, 4))
