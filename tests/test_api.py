"""The notebook API: load a frozen model, add a prompt, score and decode."""

from pathlib import Path

import jax
import numpy as np
import pytest

from prompt_tuning import api, model, prompts
from prompt_tuning.t5 import config as t5_config
from prompt_tuning.t5 import network
from prompt_tuning.prompts import deep

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
SPM = FIXTURES / "t5_sentencepiece.model"
TINY_T5X = FIXTURES / "t5x_t5_1_1_tiny_checkpoint_3"
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared/fixtures absent")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  """A random tiny Hugging Face T5 1.1 (d_model 32, 2+2 layers, vocab 100) on disk."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  config = transformers.T5Config(vocab_size=100, d_model=32, d_kv=8, num_heads=4, d_ff=64,
                                 num_layers=2, feed_forward_proj="gated-gelu",
                                 tie_word_embeddings=False, dropout_rate=0.0)
  torch.manual_seed(0)
  directory = tmp_path_factory.mktemp("hf")
  transformers.T5ForConditionalGeneration(config).save_pretrained(directory)
  return str(directory)


def test_make_batch_from_ids():
  batch = api.make_batch([[5, 6], [7]], [[8], [9, 10, 11]])
  np.testing.assert_array_equal(batch["encoder_input_tokens"], [[5, 6, 1], [7, 1, 0]])
  np.testing.assert_array_equal(batch["decoder_target_tokens"], [[8, 1, 0, 0], [9, 10, 11, 1]])
  np.testing.assert_array_equal(batch["decoder_input_tokens"], [[0, 8, 1, 0], [0, 9, 10, 11]])
  np.testing.assert_array_equal(batch["decoder_loss_weights"], [[1, 1, 0, 0], [1, 1, 1, 1]])
  assert batch["encoder_input_tokens"].dtype == np.int32


@needs_fixtures
def test_make_batch_from_text():
  seqio = pytest.importorskip("seqio")
  vocab = seqio.SentencePieceVocabulary(str(SPM))
  batch = api.make_batch(["positive"], ["entailment"], str(SPM))
  np.testing.assert_array_equal(batch["encoder_input_tokens"][0], vocab.encode("positive") + [1])
  np.testing.assert_array_equal(batch["decoder_target_tokens"][0],
                                vocab.encode("entailment") + [1])


def test_make_batch_errors():
  with pytest.raises(ValueError, match="needs a vocabulary"):
    api.make_batch(["text"])
  with pytest.raises(ValueError, match="2 inputs but 1 targets"):
    api.make_batch([[5], [6]], [[7]])


def test_load_prompt_score_logits_generate(hf_dir):
  frozen_model, frozen = api.load_frozen(hf_dir)
  assert type(frozen_model) is model.T5Model and frozen_model.config.emb_dim == 32
  m, params = api.add_prompt(frozen_model, frozen, prompt_length=4,
                             initializer=prompts.sampled_vocab(population_size=50))
  assert params["prompt"]["prompt"].shape == (4, 32)
  inputs, targets = [[5, 6, 7], [8]], [[9], [10, 11]]
  scores = api.log_likelihood(m, params, inputs, targets)
  expected = jax.jit(m.score)(params, api.make_batch(inputs, targets))
  np.testing.assert_allclose(scores, expected, rtol=1e-5)
  logits = api.logits(m, params, inputs, targets)
  assert logits.shape == (2, 3, 100)
  log_p = jax.nn.log_softmax(logits)
  np.testing.assert_allclose(scores[0], log_p[0, 0, 9] + log_p[0, 1, 1], rtol=1e-5)
  out = api.generate(m, params, inputs, max_length=5)
  assert len(out) == 2 and all(isinstance(t, int) and t not in (0, 1) for r in out for t in r)


def test_several_prompts_one_per_example(hf_dir):
  frozen_model, frozen = api.load_frozen(hf_dir)
  rng = np.random.default_rng(0)
  prompts_ = [rng.normal(size=(n, 32)).astype(np.float32) for n in (4, 2)]
  m, table = api.add_prompts(frozen_model, frozen, prompts_)
  inputs, targets = [[5, 6, 7], [8], [9, 9]], [[9], [10, 11], [12]]
  scores = api.log_likelihood(m, table, inputs, targets, prompt_ids=[1, 0, 1])
  out = api.generate(m, table, inputs, max_length=4, prompt_ids=[1, 0, 1])
  for row, i in enumerate([1, 0, 1]):
    single, params = api.add_prompt(frozen_model, frozen, prompt_length=len(prompts_[i]))
    params["prompt"]["prompt"] = prompts_[i]
    np.testing.assert_allclose(
        scores[row], api.log_likelihood(single, params, inputs[row:row + 1],
                                        targets[row:row + 1])[0], rtol=1e-5, atol=1e-5)
    assert out[row] == api.generate(single, params, inputs[row:row + 1], max_length=4)[0]
  with pytest.raises(ValueError, match=r"prompt_ids \[2\] are not in the prompt table"):
    api.log_likelihood(m, table, inputs, targets, prompt_ids=[0, 2, 1])
  with pytest.raises(ValueError, match="2 prompt_ids for 3 inputs"):
    api.generate(m, table, inputs, prompt_ids=[0, 1])


def test_deep_prompts_one_per_example(hf_dir):
  frozen_model, frozen = api.load_frozen(hf_dir)
  single, params = api.add_prompt(frozen_model, frozen, prompt_length=2,
                                  method=deep.method())
  assert params["prompt"]["prompt"].shape == (2, 2, 32)  # [encoder layers, p, d_model]
  rng = np.random.default_rng(1)
  deep_prompts = [rng.normal(size=(2, n, 32)).astype(np.float32) for n in (3, 2)]
  m, table = api.add_prompts(frozen_model, frozen, deep_prompts, method=deep.method())
  inputs, targets = [[5, 6, 7], [8]], [[9], [10, 11]]
  scores = api.log_likelihood(m, table, inputs, targets, prompt_ids=[1, 0])
  for row, i in enumerate([1, 0]):
    single, params = api.add_prompt(frozen_model, frozen, prompt_length=deep_prompts[i].shape[1],
                                    method=deep.method())
    params["prompt"]["prompt"] = deep_prompts[i]
    np.testing.assert_allclose(
        scores[row], api.log_likelihood(single, params, inputs[row:row + 1],
                                        targets[row:row + 1])[0], rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match=r"has shape \(2, 3, 32\): a deep prompt"):
    api.add_prompts(frozen_model, frozen, deep_prompts)  # without method=deep.method()


@needs_fixtures
def test_load_t5x_by_size_name():
  m, frozen = api.load_frozen(str(TINY_T5X), "t5_1_1_tiny")
  assert frozen["token_embedder"]["embedding"].shape == (32128, 4)
  prompted, params = api.add_prompt(m, frozen, prompt_length=2,
                                    initializer=prompts.random_uniform())
  assert np.isfinite(api.log_likelihood(prompted, params, [[5, 6]], [[7]])).all()


# ---- empty and malformed inputs ---------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_prompted():
  """A random tiny T5 (vocabulary 32128) with a 2-row prompt; no checkpoint, no torch."""
  config = t5_config.get_config("t5_1_1_tiny")
  frozen = network.init_params(config, jax.random.PRNGKey(0))
  return api.add_prompt(model.T5Model(config), frozen, prompt_length=2,
                        initializer=prompts.random_uniform())


def test_no_inputs_give_empty_results(tiny_prompted):
  m, params = tiny_prompted
  scores = api.log_likelihood(m, params, [], [], api.MINI_VOCABULARY)
  assert scores.shape == (0,) and scores.dtype == np.float32
  assert api.logits(m, params, [], []).shape == (0, 0, 32128)
  assert api.generate(m, params, [], prompt_ids=None) == []
  with pytest.raises(ValueError, match="^0 inputs but 1 targets; give one each.$"):
    api.log_likelihood(m, params, [], [[5]])
  with pytest.raises(ValueError, match="^inputs is empty: a batch needs at least one input.$"):
    api.make_batch([])


def test_malformed_inputs_get_one_clear_error(tiny_prompted):
  m, params = tiny_prompted
  with pytest.raises(ValueError, match=r"^inputs is one string \('great fun'\); give a list "
                     r"with one text per example, e.g. \['great fun'\].$"):
    api.log_likelihood(m, params, "great fun", "positive", api.MINI_VOCABULARY)
  with pytest.raises(ValueError, match="^targets=None is not a list"):
    api.logits(m, params, [[5]], None)
  with pytest.raises(ValueError, match=r"^targets\[1\] holds token id 32128, outside the "
                     r"model's vocabulary \[0, 32128\)"):
    api.log_likelihood(m, params, [[5], [6]], [[7], [8, 32128]])
  with pytest.raises(ValueError, match=r"^inputs\[0\] holds token id -3"):
    api.generate(m, params, [[-3, 5]])
  with pytest.raises(ValueError, match="^max_length=0 must be a positive integer"):
    api.generate(m, params, [[5]], max_length=0)
  with pytest.raises(ValueError, match="^path='' is empty"):
    api.load_frozen("")
