"""The Prompt parameter and each initializer's statistics and sources."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning import model, prompts
from prompt_tuning.checkpoints import prompts_io
from prompt_tuning.t5 import config as t5_config

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
EMBEDDINGS = FIXTURES / "tiny_embeddings_32128x4.npy"
SPM = FIXTURES / "t5_sentencepiece.model"
TINY_T5X = FIXTURES / "t5x_t5_1_1_tiny_checkpoint_3"
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared/fixtures absent")
RNG = jax.random.PRNGKey(0)


@pytest.fixture(scope="module")
def table():
  return jnp.asarray(np.load(EMBEDDINGS))


@pytest.fixture(scope="module")
def vocab():
  seqio = pytest.importorskip("seqio")
  return seqio.SentencePieceVocabulary(str(SPM))


def row_ids(table, rows):
  """The table id of each prompt row (rows must be exact copies of table rows)."""
  table, rows = np.asarray(table), np.asarray(rows)
  hits = [np.flatnonzero((table == r).all(axis=1)) for r in rows]
  assert all(len(h) == 1 for h in hits), "a row is not a unique table row"
  return np.array([h[0] for h in hits])


# ---- the parameter ---------------------------------------------------------------------------


def test_prompt_parameter_is_float32_with_prompt_axes_under_bfloat16():
  m = model.PromptedT5Model(t5_config.get_config("t5_1_1_tiny"), prompt_length=7,
                            activation_dtype="bfloat16")
  shapes = m.abstract_params()
  assert shapes["prompt"]["prompt"].shape == (7, 4)
  assert shapes["prompt"]["prompt"].dtype == jnp.float32
  assert m.param_axes()["prompt"]["prompt"] == ("prompt", "prompt_embed")
  assert m.module.config.dtype == jnp.bfloat16


@pytest.mark.parametrize("length", [0, -3, 2.5, None])
def test_prompt_length_must_be_positive(length):
  with pytest.raises(ValueError, match=f"PROMPT_LENGTH={length!r}"):
    model.PromptedT5Model(t5_config.get_config("t5_1_1_tiny"), prompt_length=length)


# ---- random uniform ------------------------------------------------------------------------------


def test_random_uniform_fills_minus_scale_to_scale():
  value = np.asarray(prompts.random_uniform()(RNG, None, (100, 64)))
  assert value.dtype == np.float32 and value.shape == (100, 64)
  assert value.min() >= -0.5 and value.max() <= 0.5
  # Both halves are used (the reference code drew [0, 0.5) only); mean 0, std 1/sqrt(12).
  assert value.min() < -0.49 and value.max() > 0.49
  assert abs(value.mean()) < 0.01 and abs(value.std() - 1 / np.sqrt(12)) < 0.01
  small = np.asarray(prompts.random_uniform(scale=0.1)(RNG, None, (10, 8)))
  assert np.abs(small).max() <= 0.1


def test_random_uniform_scale_must_be_positive():
  with pytest.raises(ValueError, match="scale=0"):
    prompts.random_uniform(scale=0)


# ---- sampled vocab -------------------------------------------------------------------------------


@needs_fixtures
def test_sampled_vocab_draws_distinct_rows_of_the_top_5000_tokens(table):
  init = prompts.sampled_vocab()
  value = init(RNG, table, (100, 4))
  assert value.dtype == jnp.float32
  ids = row_ids(table, value)
  assert len(set(ids)) == 100                       # without replacement
  assert ids.min() >= 3 and ids.max() < 3 + 5000    # specials skipped, top-K only
  assert ids.max() > 2500                           # spread over the population
  other = row_ids(table, init(jax.random.PRNGKey(1), table, (100, 4)))
  assert set(other) != set(ids)


@needs_fixtures
def test_sampled_vocab_population_size_and_too_long_prompt(table):
  ids = row_ids(table, prompts.sampled_vocab(population_size=10)(RNG, table, (10, 4)))
  assert sorted(ids) == list(range(3, 13))
  with pytest.raises(ValueError, match="cannot draw 11 distinct rows"):
    prompts.sampled_vocab(population_size=10)(RNG, table, (11, 4))


# ---- class labels --------------------------------------------------------------------------------


@needs_fixtures
def test_class_label_rows_are_the_mean_of_their_pieces(table, vocab):
  labels = ["positive", "entailment", "not_entailment"]  # 1, 4 and 5 pieces
  value = np.asarray(prompts.class_labels(labels, vocab)(RNG, table, (10, 4)))
  for i, label in enumerate(labels):
    pieces = vocab.encode(label)
    np.testing.assert_allclose(value[i], np.asarray(table)[pieces].mean(axis=0), rtol=1e-6)
  assert len(vocab.encode("entailment")) > 1
  rest = row_ids(table, value[3:])                  # the remaining rows: sampled vocab
  assert len(set(rest)) == 7 and rest.min() >= 3 and rest.max() < 5003


@needs_fixtures
def test_class_labels_vocabulary_from_a_path(table, vocab):
  by_path = prompts.class_labels(["negative"], str(SPM))(RNG, table, (2, 4))
  by_object = prompts.class_labels(["negative"], vocab)(RNG, table, (2, 4))
  np.testing.assert_array_equal(by_path, by_object)


@needs_fixtures
def test_more_class_labels_than_rows(table, vocab):
  with pytest.raises(ValueError, match="3 labels but PROMPT_LENGTH=2"):
    prompts.class_labels(["a", "b", "c"], vocab)(RNG, table, (2, 4))
  with pytest.raises(ValueError, match="3 labels but PROMPT_LENGTH=2"):  # before any loading
    model.PromptedT5Model(t5_config.get_config("t5_1_1_tiny"), prompt_length=2,
                          prompt_initializer=prompts.class_labels(["a", "b", "c"]))


@pytest.mark.parametrize("labels", [[], "positive", ["ok", 3]])
def test_class_labels_must_be_a_list_of_strings(labels):
  with pytest.raises(ValueError, match="CLASS_LABELS="):
    prompts.class_labels(labels)


# ---- from text -----------------------------------------------------------------------------------


@needs_fixtures
def test_from_text_tiles_or_cuts_the_text_pieces(table, vocab):
  text = "Classify this:"
  ids = list(vocab.encode(text))
  assert len(ids) == 4
  tiled = prompts.from_text(text, vocab)(RNG, table, (10, 4))
  np.testing.assert_array_equal(row_ids(table, tiled), (ids * 3)[:10])
  cut = prompts.from_text(text, vocab)(RNG, table, (3, 4))
  np.testing.assert_array_equal(row_ids(table, cut), ids[:3])


@pytest.mark.parametrize("text", ["", "   ", None])
def test_from_text_rejects_empty_text(text):
  with pytest.raises(ValueError, match="PROMPT_TEXT=.* is empty"):
    prompts.from_text(text)


# ---- from file / T5X checkpoint ------------------------------------------------------------------


def test_from_file_round_trip(tmp_path):
  value = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
  path = str(tmp_path / "prompts" / "step_3.npy")
  prompts_io.save_prompt(path, value)
  np.testing.assert_array_equal(prompts.from_file(path)(RNG, None, (5, 4)), value)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((5, 3), np.float32), r"shape \(5, 3\) but the model needs \(5, 4\)"),
    (np.zeros((5, 4), np.int32), "dtype int32"),
    (np.full((5, 4), np.nan, np.float32), "20 non-finite values"),
])
def test_from_file_rejects_bad_prompts(tmp_path, bad, match):
  path = tmp_path / "bad.npy"
  np.save(path, bad)
  with pytest.raises(ValueError, match=match):
    prompts.from_file(str(path))(RNG, None, (5, 4))


def test_from_file_missing(tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    prompts.from_file(str(tmp_path / "nope.npy"))(RNG, None, (5, 4))


@needs_fixtures
def test_from_t5x_checkpoint_variable():
  t5x = pytest.importorskip("prompt_tuning.checkpoints.t5x")
  variable = "target/decoder/layers_0/mlp/wi_0/kernel"  # [4, 8]: a stand-in prompt
  value = prompts.from_t5x_checkpoint(str(TINY_T5X), variable)(RNG, None, (4, 8))
  np.testing.assert_array_equal(value, t5x.read_t5x_variable(str(TINY_T5X), variable))
  with pytest.raises(ValueError, match=r"shape \(4, 8\) but the model needs \(100, 8\)"):
    prompts.from_t5x_checkpoint(str(TINY_T5X), variable)(RNG, None, (100, 8))


def test_initializers_run_under_jit():
  # The jobs jit `init_params`, so the table is a tracer; tokenization happens at trace time.
  init = prompts.class_labels(["x"], _FakeVocab(), prompts.sampled_vocab(10))
  table = jnp.ones((50, 4)) * jnp.arange(50.0)[:, None]
  value = jax.jit(lambda r, t: init(r, t, (6, 4)))(RNG, table)
  np.testing.assert_allclose(value[0], [2.0] * 4)  # mean of ids 1 and 3


class _FakeVocab:
  def encode(self, text):
    return [1, 3]
