"""runs/pretrain.gin and runs/lm_adapt.gin: the train job on text, from scratch and on."""

import numpy as np
import pytest

from prompt_tuning.checkpoints import job as job_ckpt
from prompt_tuning.pretrained import MINI_VOCABULARY_PATH
from subprocess_helpers import run_fast_job as run_job

# The runs compare with each other only (straight against resumed), so they share compiled
# programs and compile with less optimization.
pytestmark = pytest.mark.usefixtures("shared_compilation_cache")


def _corpus(tmp_path):
  path = tmp_path / "corpus.txt"
  path.write_text("".join(f"word {i}: a short gloss number {i} about the {i % 7}th thing\n"
                          for i in range(300)), encoding="utf-8")
  return path


def _flags(run_gin, model_dir, corpus, *extra):
  return ["--gin_file=models/t5_1_1_tiny.gin", f"--gin_file=runs/{run_gin}.gin",
          f"--gin.PRETRAIN_TEXT_FILES=['{corpus}']", f"--gin.VOCABULARY_PATH={MINI_VOCABULARY_PATH}",
          f"--gin.MODEL_DIR={model_dir}", "--gin.BATCH_SIZE=4", "--gin.CHECKPOINT_PERIOD=2",
          "--gin.PRETRAIN_CHUNK_LENGTH=16", *extra]


def _leaves(model_dir):
  return job_ckpt.read_trainable_leaves(str(model_dir / "checkpoints"))


def test_pretrain_resumes_exactly_then_lm_adapts(tmp_path):
  corpus = _corpus(tmp_path)
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  run_job("train", *_flags("pretrain", straight, corpus, "--gin.TRAIN_STEPS=4"))
  run_job("train", *_flags("pretrain", resumed, corpus, "--gin.TRAIN_STEPS=2"))
  proc = run_job("train", *_flags("pretrain", resumed, corpus, "--gin.TRAIN_STEPS=4"))
  assert "Resuming from the checkpoint at step 2" in proc.stderr
  a, b = _leaves(straight), _leaves(resumed)
  assert set(a) == set(b) and len(a) > 20  # every weight trains
  for path in a:
    np.testing.assert_array_equal(a[path], b[path], err_msg=path)

  adapted = tmp_path / "adapted"
  run_job("train", *_flags("lm_adapt", adapted, corpus, "--gin.TRAIN_STEPS=2",
                           f"--gin.INITIAL_CHECKPOINT_PATH={straight / 'checkpoints'}"))
  c = _leaves(adapted)
  assert any(not np.array_equal(a[p], c[p]) for p in a)


@pytest.mark.parametrize("extra,message", [
    (["--gin.NOISE_DENSITY=1.5"], "NOISE_DENSITY=1.5 must be in (0, 1)"),
    (["--gin.PRETRAIN_TEXT_FILES=['{empty}']"], "has no text"),
])
def test_pretrain_bad_input_gets_one_clear_error(tmp_path, extra, message):
  empty = tmp_path / "empty.txt"
  empty.write_text("")
  extra = [e.format(empty=empty) for e in extra]
  proc = run_job("train", *_flags("pretrain", tmp_path / "run", _corpus(tmp_path),
                                  "--gin.TRAIN_STEPS=2", *extra), check=False)
  assert proc.returncode != 0 and message in proc.stderr
  assert "Traceback" not in proc.stderr
