"""Prompt initializers and prompt inspection on a decoder-only model: a tiny random Gemma (its
input is scaled by sqrt(d_model)) with a Llama-like tokenizer.json whose 120 tokens are fewer
than the table's 128 rows. Expected rows come from the table and the `tokenizers` library
directly."""

import shutil

import gin
import jax
import numpy as np
import pytest

from prompt_tuning import decoder_model, prompts
from prompt_tuning import inspect as inspect_lib
from prompt_tuning.causal_lm import config as decoder_config
from prompt_tuning.causal_lm import network
from prompt_tuning.checkpoints import hf_causal_lm
from prompt_tuning.data import decoder_features
from prompt_tuning.data.hf_tokenizers import SpecialIds
from tests.data import decoder_tokenizers

EOS = 2  # the Llama-like tokenizer: <unk> 0, <s> 1, </s> 2
TOKENIZER_SIZE = 120


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
  """(directory, config, frozen params) of a random gemma_tiny written as a Hugging Face
  directory, with the Llama-like tokenizer's files beside it."""
  root = tmp_path_factory.mktemp("decoder_prompts")
  config = decoder_config.get_config("gemma_tiny")
  params = network.init_params(config, jax.random.PRNGKey(0))
  hf_causal_lm.write_hf_causal_lm(params, config, str(root / "gemma"))
  decoder_tokenizers.llama_like(root / "tokenizer")
  for name in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(root / "tokenizer" / name, root / "gemma" / name)
  return root / "gemma", config, hf_causal_lm.load_params(str(root / "gemma"))


def encode(directory, text):
  """The ids of `text` without special tokens, from the `tokenizers` library itself."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  tokenizer = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
  return tokenizer.encode(text, add_special_tokens=False).ids


def init_prompt(gemma_dir, initializer, length, seed=0):
  _, config, frozen = gemma_dir
  model = decoder_model.PromptedDecoderModel(config, length, initializer, eos_id=EOS)
  params = model.init_params(jax.random.PRNGKey(seed), frozen)
  return np.asarray(params["prompt"]["prompt"]), np.asarray(frozen["token_embedder"]["embedding"])


def test_class_labels_are_the_raw_embedding_rows_of_the_label_tokens(gemma_dir):
  directory = gemma_dir[0]
  labels = ["positive", "negative", "the plot"]
  ids = [encode(directory, label) for label in labels]
  assert len(ids[0]) > 1  # '▁pos', 'itive': a label of several pieces is their rows' mean
  prompt, table = init_prompt(gemma_dir, prompts.class_labels(labels, str(directory)), 5)
  assert prompt.shape == (5, gemma_dir[1].d_model)
  for row, label_ids in zip(prompt, ids):
    np.testing.assert_allclose(row, table[label_ids].mean(0), rtol=0, atol=1e-7)
  # Rows 3-4 come from the fallback (sampled_vocab over the same tokenizer): table rows of
  # ordinary tokens, never <unk>/<s>/</s> nor a row past the tokenizer's 120 ids.
  for row in prompt[3:]:
    [match] = np.flatnonzero((table == row).all(1))
    assert 3 <= match < TOKENIZER_SIZE


def test_from_text_rows_mean_the_text_on_gemma(gemma_dir):
  """The prompt is not scaled by sqrt(d_model) at init: the network scales it with the
  tokens, so a prompt of the text's raw rows scores the targets exactly as the text itself."""
  directory, config, frozen = gemma_dir
  text = "the movie was great"
  ids = encode(directory, text)
  prompt, table = init_prompt(gemma_dir, prompts.from_text(text, str(directory)), len(ids))
  np.testing.assert_array_equal(prompt, table[ids])
  prompted = decoder_model.PromptedDecoderModel(config, len(ids), eos_id=EOS)
  params = prompted.with_prompt_file(frozen, prompt, "from_text prompt")
  no_bos = SpecialIds(bos_id=None, eos_id=EOS, pad_id=0)
  lengths = {"inputs": len(ids), "targets": 4}
  targets = [[7, 8, EOS], [9, EOS]]
  with_prompt = prompted.score(params, decoder_features.to_model_batch(
      [[], []], targets, lengths, no_bos))
  with_text = decoder_model.DecoderModel(config, eos_id=EOS).score(
      frozen, decoder_features.to_model_batch([ids, ids], targets, lengths, no_bos))
  np.testing.assert_allclose(with_prompt, with_text, rtol=0, atol=1e-5)


def test_sampled_vocab_draws_ordinary_tokens_of_the_tokenizer(gemma_dir):
  directory = gemma_dir[0]
  pool = prompts.ordinary_token_ids(prompts._resolve_vocabulary(str(directory)), 1000, 128)
  np.testing.assert_array_equal(pool, np.arange(3, TOKENIZER_SIZE))  # no specials, no padding
  everything = TOKENIZER_SIZE - 3
  prompt, table = init_prompt(gemma_dir, prompts.sampled_vocab(1000, vocabulary=str(directory)),
                              everything)
  drawn = sorted(int(np.flatnonzero((table == row).all(1))[0]) for row in prompt)
  assert drawn == list(range(3, TOKENIZER_SIZE))  # each ordinary token once
  with pytest.raises(ValueError, match=r"cannot draw 118 distinct rows from 117 tokens"):
    init_prompt(gemma_dir, prompts.sampled_vocab(1000, vocabulary=str(directory)), everything + 1)
  # Without a vocabulary: T5's rule, ids from 3 on (here past the tokenizer too).
  prompt, table = init_prompt(gemma_dir, prompts.sampled_vocab(1000), 125)
  assert {int(np.flatnonzero((table == row).all(1))[0]) for row in prompt} == set(range(3, 128))


def test_random_uniform_on_a_decoder(gemma_dir):
  prompt, _ = init_prompt(gemma_dir, prompts.random_uniform(0.25), 6)
  assert prompt.shape == (6, gemma_dir[1].d_model) and prompt.dtype == np.float32
  assert np.abs(prompt).max() <= 0.25 and np.unique(prompt).size == prompt.size


# ---- inspect ------------------------------------------------------------------------------------


def parse_decoder_gin(directory):
  """A decoder model as the command reads it: the architecture, table and tokenizer of one
  Hugging Face directory."""
  gin.clear_config()
  gin.parse_config(f"""
from __gin__ import dynamic_registration
from prompt_tuning.causal_lm import config
INITIAL_CHECKPOINT_PATH = '{directory}'
VOCABULARY_PATH = %INITIAL_CHECKPOINT_PATH
MODEL_CONFIG = @config.config_from_hf()
config.config_from_hf.source = %INITIAL_CHECKPOINT_PATH
""")


def test_inspect_reports_the_tokens_a_prompt_was_built_from(gemma_dir, tmp_path):
  directory, _, frozen = gemma_dir
  import tokenizers  # pylint: disable=g-import-not-at-top
  tokenizer = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
  table = np.asarray(frozen["token_embedder"]["embedding"])
  chosen = [encode(directory, "great")[0], 5, 40, 119, 125]  # 125: a row past the tokenizer
  np.save(tmp_path / "p.npy", table[chosen] * np.array([[1.0], [3.0], [0.5], [2.0], [1.0]],
                                                       np.float32))
  parse_decoder_gin(directory)
  try:
    report = inspect_lib.inspect_command([str(tmp_path / "p.npy")], k=2, as_json=True,
                                         class_labels=["great"])
  finally:
    gin.clear_config()
  import json  # pylint: disable=g-import-not-at-top
  report = json.loads(report)
  assert report["embedding_shape"] == [128, 32]
  rows = report["prompts"][0]["rows"]
  assert [row["neighbors"][0]["id"] for row in rows] == chosen
  assert [row["neighbors"][0]["token"] for row in rows] == [
      tokenizer.id_to_token(i) for i in chosen[:4]] + ["<unused_125>"]
  assert all(row["neighbors"][0]["similarity"] == pytest.approx(1.0, abs=1e-6) for row in rows)
  assert rows[0]["class_labels"] == [{"label": "great",
                                      "found": [tokenizer.id_to_token(chosen[0])],
                                      "num_pieces": len(encode(directory, "great"))}]
  np.save(tmp_path / "narrow.npy", table[:2, :16])
  parse_decoder_gin(directory)
  try:
    with pytest.raises(ValueError, match=r"narrow.npy has width 16 .* has width 32"):
      inspect_lib.inspect_command([str(tmp_path / "narrow.npy")])
  finally:
    gin.clear_config()
