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


@pytest.fixture(scope="module")
def shared_compilation_cache(tmp_path_factory):
  """Jobs a module starts reuse each other's compiled programs (launches about 3x faster).

  For modules whose runs compare with each other (resume, restart, files), never with other
  numbers; they also compile with `subprocess_helpers.FAST_COMPILE`. Use it with
  `pytestmark = pytest.mark.usefixtures("shared_compilation_cache")`.
  """
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "jax_cache"))
    patch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    yield
