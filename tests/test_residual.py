"""Residual prompts (prompts/residual.py): the MLP by hand, the exported plain prompt, training."""

import functools

import jax
import numpy as np
import pytest

from prompt_tuning import model, optim, prompts, train
from prompt_tuning.prompts import method as method_lib
from prompt_tuning.prompts import residual
from prompt_tuning.t5 import config as t5_config

import batch_helpers

TINY = t5_config.get_config("t5_1_1_tiny").replace(vocab_size=64)
P, D, BOTTLENECK = 3, 4, 5
INPUTS = np.array([[5, 6, 7, 8, 1], [9, 10, 1, 0, 0], [0, 0, 11, 12, 1]], np.int32)
TARGETS = np.array([[3, 4, 1, 0], [5, 6, 7, 1], [8, 1, 0, 0]], np.int32)
BATCH = batch_helpers.teacher_forced(INPUTS, TARGETS)


@pytest.fixture(scope="module")
def trained():
  """The residual model and params whose MLP leaves are all random (none at its init value:
  LayerNorm scale 1 and zero biases would hide mistakes in the hand computation)."""
  m = model.PromptedT5Model(TINY, prompt_length=P, prompt_initializer=prompts.random_uniform(),
                            method=residual.method(bottleneck=BOTTLENECK))
  params = m.random_params(jax.random.PRNGKey(0))
  rng = np.random.default_rng(1)
  mlp = {k: jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), v)
         for k, v in params["prompt"].items() if k != "prompt"}
  return m, {**params, "prompt": {**params["prompt"], **mlp}}


def by_hand(p: dict) -> np.ndarray:
  """P + LayerNorm(up(relu(down(P)))) in numpy."""
  prompt = np.asarray(p["prompt"], np.float64)
  hidden = np.maximum(prompt @ p["down"]["kernel"] + p["down"]["bias"], 0.0)
  update = hidden @ p["up"]["kernel"] + p["up"]["bias"]
  mean = update.mean(-1, keepdims=True)
  var = ((update - mean) ** 2).mean(-1, keepdims=True)
  normed = (update - mean) / np.sqrt(var + 1e-5)
  return prompt + normed * p["norm"]["scale"] + p["norm"]["bias"]


def test_every_parameter_is_under_prompt_and_trains(trained):
  m, params = trained
  shapes = {path: leaf.shape for path, leaf in optim.flat(params["prompt"]).items()}
  assert shapes == {"prompt": (P, D), "down/kernel": (D, BOTTLENECK), "down/bias": (BOTTLENECK,),
                    "up/kernel": (BOTTLENECK, D), "up/bias": (D,), "norm/scale": (D,),
                    "norm/bias": (D,)}
  trainable, frozen = optim.partition(params, optim.PROMPT_REGEX)
  assert list(trainable) == ["prompt"] and "prompt" not in frozen
  assert jax.tree.map(lambda s: s.shape, m.abstract_params()) == \
      jax.tree.map(lambda x: x.shape, params)
  optimizer = optim.adafactor()
  state = train._initial_state(optimizer, trainable)
  step = jax.jit(functools.partial(train.train_step, m, optimizer))
  state, metrics = step(state, frozen, BATCH, jax.random.PRNGKey(2))
  assert np.isfinite(float(metrics["loss"]))
  for path, value in optim.flat(state["trainable"]).items():
    assert not np.allclose(value, optim.flat(trainable)[path]), path


def test_initial_mlp_is_the_authors_and_the_raw_prompt_comes_from_the_initializer():
  m = model.PromptedT5Model(TINY, prompt_length=P, method=residual.method(bottleneck=BOTTLENECK),
                            prompt_initializer=lambda rng, emb, shape: np.full(shape, 0.25))
  params = m.random_params(jax.random.PRNGKey(0))["prompt"]
  np.testing.assert_array_equal(params["prompt"], 0.25)
  np.testing.assert_array_equal(params["norm"]["scale"], 1.0)
  for bias in (params["down"]["bias"], params["up"]["bias"], params["norm"]["bias"]):
    np.testing.assert_array_equal(bias, 0.0)
  assert np.std(params["down"]["kernel"]) > 0.1  # random, not zero


def test_exported_prompt_is_the_mlp_by_hand(trained):
  m, params = trained
  exported = m.export_prompt(optim.partition(params, optim.PROMPT_REGEX)[0])
  assert exported.shape == (P, D) and exported.dtype == np.float32
  host = jax.tree.map(np.asarray, params["prompt"])
  np.testing.assert_allclose(exported, by_hand(host), rtol=1e-5, atol=1e-6)


def test_plain_model_with_the_exported_file_scores_like_the_residual_model(trained, tmp_path):
  from prompt_tuning.checkpoints import prompts_io
  m, params = trained
  serving = m.serving_model()
  assert type(serving.method) is method_lib.Method and serving.prompt_length == P
  assert m.serving_model() is not m and type(m.method) is residual.Residual  # m unchanged
  path = str(tmp_path / "step_1.npy")
  prompts_io.save_prompt(path, m.export_prompt({"prompt": params["prompt"]}))
  frozen = {k: v for k, v in params.items() if k != "prompt"}
  plain = serving.with_prompt_file(frozen, prompts_io.load_prompt(path), path)
  assert set(plain["prompt"]) == {"prompt"}
  np.testing.assert_allclose(jax.jit(serving.score)(plain, BATCH),
                             jax.jit(m.score)(params, BATCH), rtol=1e-6, atol=1e-6)
  # ... and in a mixed-prompt batch, as any plain prompt.
  table = serving.with_prompt_table(frozen, [np.zeros((2, D)), prompts_io.load_prompt(path)])
  mixed = jax.jit(serving.score)(table, {**BATCH, "prompt_ids": np.ones(3, np.int32)})
  np.testing.assert_allclose(mixed, jax.jit(m.score)(params, BATCH), rtol=1e-5, atol=1e-5)


def test_bad_bottleneck_is_refused():
  with pytest.raises(ValueError, match="RESIDUAL_BOTTLENECK=0"):
    residual.method(bottleneck=0)
