"""Shared test helpers: the fixtures folder beside the repo, subprocesses with many devices."""

import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"


@pytest.fixture
def fixtures_dir() -> pathlib.Path:
  """../shared/fixtures, read in place; tests using it skip where it is absent."""
  if not FIXTURES.is_dir():
    pytest.skip(f"fixtures folder {FIXTURES} is absent")
  return FIXTURES
