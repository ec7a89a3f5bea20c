"""What trains: the regex split, its inverse, and optimizer state only for trainable leaves."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning import optim


def _params():
  return {"prompt": {"prompt": jnp.ones((5, 4))},
          "token_embedder": {"embedding": jnp.ones((11, 4))},
          "encoder": {"layers_0": {"mlp": {"wi": {"kernel": jnp.ones((4, 8))}}}}}


def test_partition_by_prompt_regex_and_merge_round_trip():
  params = _params()
  trainable, frozen = optim.partition(params, optim.PROMPT_REGEX)
  assert list(trainable) == ["prompt"]
  assert set(frozen) == {"token_embedder", "encoder"}
  merged = optim.merge(trainable, frozen)
  assert jax.tree.structure(merged) == jax.tree.structure(params)


def test_model_tuning_regex_trains_everything():
  trainable, frozen = optim.partition(_params(), optim.ALL_REGEX)
  assert frozen == {}
  assert len(jax.tree.leaves(trainable)) == 3


def test_regex_errors_name_the_value():
  with pytest.raises(ValueError, match=r"PROMPT_REGEX='\['"):
    optim.partition(_params(), "[")
  with pytest.raises(ValueError, match="matches no parameter"):
    optim.partition(_params(), "nothing/.*")


@pytest.mark.parametrize("make", [optim.adafactor, optim.adam])
def test_optimizer_state_covers_only_trainable_leaves(make):
  trainable, _ = optim.partition(_params(), optim.PROMPT_REGEX)
  state = make().init(trainable)
  sizes = [x.size for x in jax.tree.leaves(state)]
  # Every slot is sized by the [5, 4] prompt (or a scalar count/hyperparameter), never by
  # the frozen [11, 4] embedding or [4, 8] kernel.
  assert max(sizes) == 20
  assert sum(sizes) <= 2 * 20 + 16
  assert float(optim.learning_rate(state)) == pytest.approx(
      0.3 if make is optim.adafactor else 1e-4)


def test_adafactor_step_moves_only_what_it_is_given():
  trainable, frozen = optim.partition(_params(), optim.PROMPT_REGEX)
  opt = optim.adafactor()
  grads = jax.tree.map(jnp.ones_like, trainable)
  updates, _ = opt.update(grads, opt.init(trainable), trainable)
  # Constant rate 0.3, no parameter scaling, RMS-clipped: |update| = 0.3, plus optax's weight
  # decay, added after the rate: 1e-5 * param (params are 1).
  np.testing.assert_allclose(np.abs(updates["prompt"]["prompt"]), 0.3 + 1e-5, rtol=1e-6)


@pytest.mark.parametrize("kind,expected", [
    ("constant", [0.3, 0.3, 0.3, 0.3]),
    ("linear", [0.3, 0.225, 0.15, 0.075]),  # 0.3 * (1 - step / 4)
    ("cosine", [0.3, 0.3 * (1 + np.cos(np.pi / 4)) / 2, 0.15, 0.3 * (1 + np.cos(3 * np.pi / 4)) / 2]),
])
def test_schedule_sets_each_steps_rate(kind, expected):
  trainable, _ = optim.partition(_params(), optim.PROMPT_REGEX)
  opt = optim.adafactor(0.3, learning_rate_schedule=kind, train_steps=4)
  grads = jax.tree.map(jnp.ones_like, trainable)
  state = opt.init(trainable)
  for rate in expected:  # the RMS-clipped unit update at this step's rate, + decay 1e-5 * 1
    updates, state = opt.update(grads, state, trainable)
    np.testing.assert_allclose(np.abs(updates["prompt"]["prompt"]), rate + 1e-5, rtol=1e-6)


def test_schedule_errors_name_the_value():
  with pytest.raises(ValueError, match="LEARNING_RATE_SCHEDULE='step'"):
    optim.adafactor(learning_rate_schedule="step", train_steps=4)
  with pytest.raises(ValueError, match="TRAIN_STEPS"):
    optim.adafactor(learning_rate_schedule="linear", train_steps=None)


def test_cpu_demo_decays_its_rate_and_the_paper_recipe_does_not():
  import gin  # pylint: disable=g-import-not-at-top
  from tests.test_model import REPO  # pylint: disable=g-import-not-at-top

  def optimizer_of(files):
    gin.clear_config()
    gin.add_config_file_search_path(str(REPO / "gin_configs"))
    try:
      gin.parse_config_files_and_bindings(files, ["MODEL_DIR = '/unused'",
                                                  "MIXTURE_OR_TASK_NAME = 'demo'"])
      schedule = gin.query_parameter("optim.adafactor.learning_rate_schedule")
      assert repr(schedule) == "%LEARNING_RATE_SCHEDULE"  # the optimizer reads the macro
      return gin.query_parameter("%LEARNING_RATE_SCHEDULE"), gin.query_parameter("%TRAIN_STEPS")
    finally:
      gin.clear_config()

  assert optimizer_of(["runs/cpu_demo.gin"]) == ("linear", 1000)
  assert optimizer_of(["models/t5_1_1_small_prompt.gin", "runs/prompt_finetune.gin"])[0] == \
      "constant"
