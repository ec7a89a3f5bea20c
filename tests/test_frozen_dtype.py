"""FROZEN_DTYPE: the checkpoint's weights stored in bfloat16, the prompt and its optimizer in
float32; scores and the train step stay within bfloat16's rounding of the float32 run."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning import job_utils, optim, partitioning, pretrained, prompts, train
from prompt_tuning import model as model_lib
from prompt_tuning.t5 import config as t5_config

MINI = t5_config.get_config("t5_1_1_mini")


def _placed(frozen_dtype, checkpoint=None, prompt_length=20):
  """Random float32 mini-T5 weights (checkpoint None) or a checkpoint's, as the jobs place
  them."""
  model = model_lib.PromptedT5Model(MINI, prompt_length, prompts.sampled_vocab(),
                                    frozen_dtype=frozen_dtype)
  mesh = partitioning.make_mesh(1)
  with jax.set_mesh(mesh):
    params = job_utils.place_params(model, checkpoint, mesh, partitioning.DEFAULT_RULES,
                                    jax.random.PRNGKey(0), from_scratch=checkpoint is None)
  return model, params


def _batch(rng, batch=8, inputs=32, targets=6):
  tokens = lambda n: rng.integers(3, 8000, size=(batch, n)).astype(np.int32)
  tgt = tokens(targets)
  return {"encoder_input_tokens": tokens(inputs),
          "decoder_input_tokens": np.concatenate([np.zeros((batch, 1), np.int32),
                                                  tgt[:, :-1]], axis=1),
          "decoder_target_tokens": tgt, "decoder_loss_weights": np.ones_like(tgt)}


@pytest.fixture(scope="module")
def both():
  return _placed("float32"), _placed("bfloat16")


def test_frozen_leaves_are_bfloat16_and_half_the_bytes(both):
  (_, full), (_, half) = both
  nbytes = lambda tree: sum(x.nbytes for x in jax.tree.leaves(tree))
  frozen32 = {k: v for k, v in full.items() if k != "prompt"}
  frozen16 = {k: v for k, v in half.items() if k != "prompt"}
  assert {x.dtype for x in jax.tree.leaves(frozen16)} == {jnp.dtype(jnp.bfloat16)}
  assert nbytes(frozen16) * 2 == nbytes(frozen32)
  assert half["prompt"]["prompt"].dtype == jnp.float32


def test_scores_stay_within_bfloat16_rounding_of_float32(both):
  """Same prompt in both; log-likelihoods of random token targets."""
  (model, full), (_, half) = both
  half = {**half, "prompt": full["prompt"]}
  batch = _batch(np.random.default_rng(0))
  score32 = np.asarray(model.score(full, batch))
  score16 = np.asarray(model.score(half, batch))
  # bfloat16 keeps 8 significant bits (relative rounding 2^-9 = 0.2% per weight); measured
  # here on random mini-T5 weights: at most 0.042% (0.024 nats of about 56).
  np.testing.assert_allclose(score16, score32, rtol=2e-3)
  assert not np.array_equal(score16, score32)  # the weights really were rounded


def test_the_shipped_model_is_exact_in_bfloat16():
  """The mini T5 ships in bfloat16 (docs/mini_t5.md), so storing it so loses nothing."""
  (model, full), (_, half) = (_placed(d, pretrained.mini_checkpoint_path())
                              for d in ("float32", "bfloat16"))
  half = {**half, "prompt": full["prompt"]}
  batch = _batch(np.random.default_rng(0))
  np.testing.assert_array_equal(model.score(half, batch), model.score(full, batch))


def test_train_step_keeps_prompt_and_optimizer_in_float32(both):
  losses = {}
  for (model, params), name in zip(both, ("float32", "bfloat16")):
    trainable, frozen = optim.partition(params, optim.PROMPT_REGEX)
    optimizer = optim.adafactor()
    state = train._initial_state(optimizer, trainable)
    step = jax.jit(functools.partial(train.train_step, model, optimizer))
    rng = np.random.default_rng(1)
    for _ in range(2):
      state, metrics = step(state, frozen, _batch(rng), jax.random.PRNGKey(1))
    floats = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert {x.dtype for x in floats} == {jnp.dtype(jnp.float32)}, name
    losses[name] = float(metrics["loss"])
  np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=1e-2)


def test_training_bfloat16_weights_is_refused_before_loading(tmp_path):
  model = model_lib.T5Model(MINI, frozen_dtype="bfloat16")
  with pytest.raises(ValueError, match=r"FROZEN_DTYPE='bfloat16'.*PROMPT_REGEX='\.\*' trains "
                                       r"\d+ of them.*FROZEN_DTYPE='float32'"):
    train.train(model=model, model_dir=str(tmp_path / "run"), initial_checkpoint_path=None,
                mixture_or_task_name="unused", task_feature_lengths={"inputs": 8},
                train_steps=1, batch_size=1, optimizer=optim.adafactor(),
                checkpoint_period=1, trainable_regex=".*")
  assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.parametrize("bad", ["int8", "float16", "bf16x"])
def test_unsupported_frozen_dtype(bad):
  with pytest.raises(ValueError, match=f"FROZEN_DTYPE='{bad}' is not supported.*'bfloat16'"):
    model_lib.T5Model(MINI, frozen_dtype=bad)
