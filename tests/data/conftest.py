"""Shared fixtures of the data tests: quiet TF, the shared fixtures folder, TFDS mock data."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # pylint: disable=g-import-not-at-top

# ../shared/fixtures beside the repository; absent in a user's fresh clone.
FIXTURES = Path(__file__).parents[2].parent / "shared" / "fixtures"
T5_SPM = FIXTURES / "t5_sentencepiece.model"


def needs_t5_vocabulary():
  return pytest.mark.skipif(not T5_SPM.is_file(), reason=f"{T5_SPM} is absent")


def write_lines(path: Path, lines) -> str:
  path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
  return str(path)
