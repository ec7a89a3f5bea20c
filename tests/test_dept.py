"""DePT (prompts/dept.py): the split of PROMPT_LENGTH, the input update by position, the two
learning rates (optim.per_part), the prompt file and its errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from prompt_tuning import model, optim, prompts, train
from prompt_tuning.checkpoints import prompts_io
from prompt_tuning.prompts import dept
from prompt_tuning.t5 import config as t5_config

import batch_helpers

TINY = t5_config.get_config("t5_1_1_tiny").replace(vocab_size=64)
D, L = 4, 6
RIGHT = np.array([[5, 6, 7, 8, 1, 0], [9, 10, 1, 0, 0, 0], [11, 1, 0, 0, 0, 0]], np.int32)
LEFT = np.array([[0, 5, 6, 7, 8, 1], [0, 0, 0, 9, 10, 1], [0, 0, 0, 0, 11, 1]], np.int32)
TARGETS = np.array([[3, 4, 1, 0], [5, 6, 7, 1], [8, 1, 0, 0]], np.int32)


def batch(inputs=RIGHT):
  return batch_helpers.teacher_forced(inputs, TARGETS)


def dept_model(**kwargs):
  """PROMPT_LENGTH 5 -> p' 3 (60%), rank 2 * 4 // (6 + 4) = 0, so the rank is given."""
  return model.PromptedT5Model(TINY, prompt_length=5, prompt_initializer=prompts.random_uniform(),
                               method=dept.method(L, rank=2), **kwargs)


@pytest.fixture(scope="module")
def trained():
  """The DePT model and params with a nonzero B (at init B = 0, so A . B = 0)."""
  m = dept_model()
  params = m.random_params(jax.random.PRNGKey(0))
  b = np.random.default_rng(1).normal(size=(2, D)).astype(np.float32)
  return m, {**params, "prompt": {**params["prompt"], "low_rank_b": b}}


def test_split_keeps_the_plain_prompts_parameter_count():
  assert dept.split(100, 768, 256) == (60, 30)  # the paper's T5-Base setting, exactly 76,800
  assert 60 * 768 + 30 * (256 + 768) == 100 * 768
  short, rank = dept.split(20, 256, 48)         # the mini T5 demo
  assert (short, rank) == (12, 6) and short * 256 + rank * (48 + 256) <= 20 * 256
  assert short * 256 + (rank + 1) * (48 + 256) > 20 * 256  # the largest rank that fits
  assert dept.split(20, 256, 48, short_length=8, rank=3) == (8, 3)
  with pytest.raises(ValueError, match="PROMPT_LENGTH=2 .*raise PROMPT_LENGTH"):
    dept.split(2, 4, 512)


def test_parameters_and_initialisation():
  m = dept_model()
  params = m.random_params(jax.random.PRNGKey(0))["prompt"]
  assert {k: v.shape for k, v in params.items()} == {
      "prompt": (3, D), "low_rank_a": (L, 2), "low_rank_b": (2, D)}
  np.testing.assert_array_equal(params["low_rank_b"], 0.0)
  a = np.asarray(params["low_rank_a"])
  assert np.abs(a).max() <= 1 / np.sqrt(2) and a.std() > 0.1
  trainable, _ = optim.partition(m.random_params(jax.random.PRNGKey(0)), optim.PROMPT_REGEX)
  assert list(trainable) == ["prompt"]


def test_with_a_zero_update_it_is_the_plain_prompt_of_the_shorter_length():
  m = dept_model()
  params = m.random_params(jax.random.PRNGKey(0))  # B = 0
  plain = model.PromptedT5Model(TINY, prompt_length=3)
  plain_params = {**params, "prompt": {"prompt": params["prompt"]["prompt"]}}
  np.testing.assert_array_equal(jax.jit(m.score)(params, batch()),
                                jax.jit(plain.score)(plain_params, batch()))


def test_update_lands_on_each_rows_tokens_whatever_the_padding():
  update = np.arange(L * D, dtype=np.float32).reshape(L, D) + 1
  embedded = np.zeros((3, L, D), np.float32)
  for tokens in (RIGHT, LEFT):
    out = np.asarray(dept.add_by_position(jnp.asarray(update), embedded, tokens))
    for row in range(3):
      real = np.flatnonzero(tokens[row])
      np.testing.assert_array_equal(out[row, real], update[:len(real)])
      np.testing.assert_array_equal(out[row, tokens[row] == 0], 0.0)
  with pytest.raises(ValueError, match="covers 6 input positions .* length 7"):
    dept.add_by_position(jnp.asarray(update), np.zeros((1, 7, D)), np.ones((1, 7), np.int32))


def test_model_scores_do_not_depend_on_padding_side_and_the_update_matters(trained):
  m, params = trained
  score = jax.jit(m.score)
  right = score(params, batch(RIGHT))
  np.testing.assert_allclose(score(params, batch(LEFT)), right, atol=1e-5)
  zero_b = {**params, "prompt": {**params["prompt"], "low_rank_b": np.zeros((2, D))}}
  assert not np.allclose(score(zero_b, batch(RIGHT)), right, atol=1e-3)


def test_each_part_gets_its_own_learning_rate():
  tree = {"prompt": {"prompt": jnp.ones((3, D)), "low_rank_a": jnp.ones((L, 2)),
                     "low_rank_b": jnp.ones((2, D))}}
  grads = jax.tree.map(lambda x: jnp.full_like(x, 2.0), tree)
  sgd = optim.per_part(optax.sgd(0.1), {"prompt/low_rank_.*": optax.sgd(0.01)})
  updates, _ = sgd.update(grads, sgd.init(tree), tree)
  np.testing.assert_allclose(updates["prompt"]["prompt"], -0.2)       # -0.1 * 2
  np.testing.assert_allclose(updates["prompt"]["low_rank_a"], -0.02)  # -0.01 * 2
  np.testing.assert_allclose(updates["prompt"]["low_rank_b"], -0.02)
  # Adafactor: each part's update is what its own optimizer does to that part alone.
  per_part = optim.per_part(optim.adafactor(0.3), {"prompt/low_rank_.*": optim.adafactor(0.005)})
  state = per_part.init(tree)
  assert float(optim.learning_rate(state)) == pytest.approx(0.3)
  updates, _ = per_part.update(grads, state, tree)
  for name, rate in [("prompt", 0.3), ("low_rank_a", 0.005), ("low_rank_b", 0.005)]:
    alone = optim.adafactor(rate)
    leaf = {name: tree["prompt"][name]}
    expected, _ = alone.update({name: grads["prompt"][name]}, alone.init(leaf), leaf)
    np.testing.assert_allclose(updates["prompt"][name], expected[name], rtol=1e-6)
  with pytest.raises(ValueError, match="part 'prompt/low_rank_.\\*' matches no trainable"):
    per_part.init({"prompt": {"prompt": jnp.ones((3, D))}})


def test_a_resumed_run_takes_this_runs_learning_rates():
  tree = {"prompt": {"prompt": jnp.ones((3, D)), "low_rank_a": jnp.ones((L, 2))}}
  make = lambda a, b: optim.per_part(optim.adafactor(a), {"prompt/low_rank_.*":
                                                          optim.adafactor(b)})
  old = make(0.3, 0.005).init(tree)
  fresh = optim.with_fresh_hyperparams(old, make(0.1, 0.02).init(tree))
  rates = {label: float(s.inner_state.hyperparams["learning_rate"])
           for label, s in fresh.inner_states.items()}
  assert rates == pytest.approx({"default": 0.1, "prompt/low_rank_.*": 0.02})
  plain = optim.with_fresh_hyperparams(optim.adafactor(0.3).init(tree),
                                       optim.adafactor(0.1).init(tree))
  assert float(optim.learning_rate(plain)) == pytest.approx(0.1)


def test_one_train_step_moves_every_part(trained):
  m, params = trained
  trainable, frozen = optim.partition(params, optim.PROMPT_REGEX)
  optimizer = optim.per_part(optim.adafactor(0.3), {"prompt/low_rank_.*": optim.adafactor(0.01)})
  state = train._initial_state(optimizer, trainable)
  step = jax.jit(functools.partial(train.train_step, m, optimizer))
  state, metrics = step(state, frozen, batch(), jax.random.PRNGKey(2))
  assert float(metrics["learning_rate"]) == pytest.approx(0.3)
  for name in dept.FIELDS:
    assert not np.allclose(state["trainable"]["prompt"][name], trainable["prompt"][name]), name


def test_prompt_file_round_trip_and_wrong_kinds(trained, tmp_path):
  m, params = trained
  path = str(tmp_path / "step_1.npy")
  prompts_io.save_prompt(path, m.export_prompt({"prompt": params["prompt"]}))
  value = np.load(path, allow_pickle=False)
  assert value.dtype.names == dept.FIELDS and value["low_rank_a"].shape == (L, 2)
  frozen = {k: v for k, v in params.items() if k != "prompt"}
  assert m.serving_model() is m
  read = m.with_prompt_file(frozen, value, path)
  np.testing.assert_array_equal(jax.jit(m.score)(read, batch()),
                                jax.jit(m.score)(params, batch()))
  plain = model.PromptedT5Model(TINY, prompt_length=3)
  with pytest.raises(ValueError, match=r"step_1.npy.* DePT prompt file .*methods/dept.gin"):
    plain.with_prompt_file(frozen, value, f"file {path!r}")
  with pytest.raises(ValueError, match=r"file 'p.npy' has shape \(3, 4\) .*needs a DePT prompt"):
    m.with_prompt_file(frozen, np.zeros((3, D), np.float32), "file 'p.npy'")
  other = model.PromptedT5Model(TINY, prompt_length=5, method=dept.method(L, rank=1))
  with pytest.raises(ValueError, match=r"low_rank_a \(6, 2\).*needs .*low_rank_a \(6, 1\)"):
    other.with_prompt_file(frozen, value, f"file {path!r}")
  with pytest.raises(ValueError, match="PROMPTS and PROMPT_ENSEMBLE serve plain prompt files"):
    m.with_prompt_table(frozen, [value])


def test_gin_reads_the_input_length_from_task_feature_lengths():
  assert dept.method({"inputs": 48, "targets": 4}).max_input_length == 48
  with pytest.raises(ValueError, match="has no 'inputs'"):
    dept.method({"targets": 4})
  with pytest.raises(ValueError, match="DEPT_RANK=0"):
    dept.method(48, rank=0)


def test_dept_gin_sets_the_method_and_each_parts_adafactor():
  import gin
  from pathlib import Path
  gin.clear_config()
  gin.add_config_file_search_path(str(Path(__file__).resolve().parents[1] / "gin_configs"))
  try:
    gin.parse_config_files_and_bindings(
        ["runs/cpu_demo.gin", "methods/dept.gin"],
        ["MODEL_DIR = '/tmp/unused'", "LEARNING_RATE = 0.1",
         "DEPT_LOW_RANK_LEARNING_RATE = 0.02"])
    built = gin.query_parameter("MODEL/macro.value").scoped_configurable_fn()
    optimizer = gin.query_parameter("train.train.optimizer").scoped_configurable_fn()
  finally:
    gin.clear_config()
  assert built.method == dept.DePT(48) and built.prompt_length == 20  # wordnet_topic's inputs
  shapes = jax.tree.map(lambda x: x.shape, built.abstract_params()["prompt"])
  assert shapes == {"prompt": (12, 256), "low_rank_a": (48, 6), "low_rank_b": (6, 256)}
  tree = jax.tree.map(jnp.ones, shapes, is_leaf=lambda x: isinstance(x, tuple))
  hyperparams = {label: s.inner_state.hyperparams
                 for label, s in optimizer.init({"prompt": tree}).inner_states.items()}
  assert {k: float(v["learning_rate"]) for k, v in hyperparams.items()} == pytest.approx(
      {"default": 0.1, "prompt/low_rank_.*": 0.02})
  assert [float(v["decay_rate"]) for v in hyperparams.values()] == pytest.approx([0.8, 0.8])
