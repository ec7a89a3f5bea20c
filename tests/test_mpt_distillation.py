"""MPT's prompt distillation (prompts/mpt.py, `model.PromptedT5Model.loss`): the weight 0 is
plain MPT, a student equal to its teachers has nothing to learn, the KL and MSE terms by hand
with numpy from separately run plain-prompt models, bad teachers, and the train job through
methods/mpt.gin with teacher files."""

import json

import jax
import numpy as np
import mpt_helpers
import pytest
from flax import linen as nn

from prompt_tuning import gin_utils, optim, prompts, train
from prompt_tuning import model as model_lib
from prompt_tuning.checkpoints import prompts_io
from prompt_tuning.prompts import mpt

TINY, P, D, TASKS = mpt_helpers.TINY, mpt_helpers.P, mpt_helpers.D, mpt_helpers.TASKS
INPUTS, TARGETS = mpt_helpers.INPUTS, mpt_helpers.TARGETS
BATCH = {**mpt_helpers.BATCH, "prompt_ids": np.array([1, 0, 1], np.int32)}
RNG = np.random.default_rng(3)
TEACHERS = {"task_a": RNG.normal(size=(2, D)).astype(np.float32),  # lengths 2 and 5, not P:
            "task_b": RNG.normal(size=(5, D)).astype(np.float32)}  # the table pads them


def mpt_model(teachers=None, weight=mpt.DISTILLATION_WEIGHT):
  method = mpt.MultiTask(TASKS, mpt.teachers_from(teachers, TASKS), weight)
  return model_lib.PromptedT5Model(TINY, prompt_length=P, method=method,
                                   prompt_initializer=prompts.random_uniform())


@pytest.fixture(scope="module")
def params():
  """Random u and v (ones would make every P_k equal P*)."""
  params = mpt_model().random_params(jax.random.PRNGKey(0))
  u = RNG.normal(size=(2, P)).astype(np.float32)
  v = RNG.normal(size=(2, D)).astype(np.float32)
  return {**params, "prompt": {**params["prompt"], "task_rows": u, "task_cols": v}}


def task_prompt(params, k):
  p = {n: np.asarray(x, np.float64) for n, x in params["prompt"].items()}
  return (p["prompt"] * np.outer(p["task_rows"][k], p["task_cols"][k])).astype(np.float32)


def prompt_grads(model, params, batch, rng=None):
  trainable, frozen = optim.partition(params, optim.PROMPT_REGEX)
  loss_fn = lambda t: model.loss(optim.merge(t, frozen), batch, dropout_rng=rng)
  return jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(trainable)


def test_weight_zero_is_plain_mpt(params):
  rng = jax.random.PRNGKey(5)
  (plain_loss, plain_metrics), plain_grads = prompt_grads(mpt_model(), params, BATCH, rng)
  (loss, metrics), grads = prompt_grads(mpt_model(TEACHERS, 0.0), params, BATCH, rng)
  assert "distill_kl" not in plain_metrics
  np.testing.assert_allclose(loss, plain_loss, rtol=1e-6)
  np.testing.assert_allclose(metrics["task_loss"], plain_loss, rtol=1e-6)
  assert metrics["distill_kl"] > 1e-3 and metrics["distill_mse"] > 1e-3  # computed, weighed 0
  for path, grad in optim.flat(grads).items():
    np.testing.assert_allclose(grad, optim.flat(plain_grads)[path], rtol=1e-5, atol=1e-7)
  # A weight > 0 moves the gradients of every part (P*, u, v of the tasks in the batch).
  _, distilled = prompt_grads(mpt_model(TEACHERS, 1.0), params, BATCH, rng)
  for path, grad in optim.flat(distilled).items():
    assert not np.allclose(grad, optim.flat(plain_grads)[path], rtol=1e-3), path


def test_teachers_equal_to_the_student_prompts_give_zero_terms(params):
  same = {task: task_prompt(params, k) for k, task in enumerate(TASKS)}
  loss, metrics = jax.jit(mpt_model(same, 0.9).loss)(params, BATCH)
  assert abs(float(metrics["distill_kl"])) < 1e-6 and float(metrics["distill_mse"]) < 1e-10
  np.testing.assert_allclose(loss, metrics["task_loss"], rtol=1e-6)


def logits_and_hidden(model, params, batch):
  """A model's logits and its decoder's last norm output, by Flax's own capture."""
  logits, state = model.module.apply(
      {"params": params}, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
      batch["decoder_target_tokens"], mutable=["intermediates"],
      capture_intermediates=lambda m, name: isinstance(m.parent, nn.Module)
      and type(m.parent).__name__ == "Decoder" and m.name == "decoder_norm")
  return np.asarray(logits, np.float64), np.asarray(
      state["intermediates"]["decoder"]["decoder_norm"]["__call__"][0], np.float64)


def test_kl_and_mse_by_hand_from_each_tasks_plain_models(params):
  """Student rows from plain models with P_k alone, teacher rows from plain models with the
  teacher's file alone (no prompt table, no routing): the terms follow by numpy."""
  weight = 0.7
  loss, metrics = jax.jit(mpt_model(TEACHERS, weight).loss)(params, BATCH)
  plain = model_lib.PromptedT5Model(TINY, prompt_length=P)
  frozen = {k: v for k, v in params.items() if k != "prompt"}
  ids = BATCH["prompt_ids"]
  plain_batch = {k: v for k, v in BATCH.items() if k != "prompt_ids"}
  student, teacher = {}, {}
  for k, task in enumerate(TASKS):
    student[k] = logits_and_hidden(plain, {**frozen, "prompt": {"prompt": task_prompt(params, k)}},
                                   plain_batch)
    with_teacher = model_lib.PromptedT5Model(TINY, prompt_length=TEACHERS[task].shape[0])
    teacher[k] = logits_and_hidden(with_teacher, {**frozen, "prompt": {"prompt": TEACHERS[task]}},
                                   plain_batch)
  rows = lambda outputs, i: np.stack([outputs[ids[b]][i][b] for b in range(len(ids))])
  s_logits, t_logits, s_hidden, t_hidden = (rows(student, 0), rows(teacher, 0),
                                            rows(student, 1), rows(teacher, 1))
  kernel = np.asarray(frozen["decoder"]["logits_dense"]["kernel"], np.float64)
  np.testing.assert_allclose(s_hidden @ kernel, s_logits, rtol=1e-4, atol=1e-5)  # the last state
  log_softmax = lambda x: x - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1,
                                     keepdims=True)) - x.max(-1, keepdims=True)
  log_s, log_t = log_softmax(s_logits), log_softmax(t_logits)
  weights = BATCH["decoder_loss_weights"].astype(np.float64)
  kl_tokens = (np.exp(log_t) * (log_t - log_s)).sum(-1)
  mse_tokens = ((s_hidden - t_hidden) ** 2).mean(-1)
  kl = (kl_tokens * weights).sum() / weights.sum()
  mse = (mse_tokens * weights).sum() / weights.sum()
  targets = BATCH["decoder_target_tokens"]
  task_loss = -(np.take_along_axis(log_s, targets[..., None], -1)[..., 0] * weights).sum() / \
      weights.sum()
  assert kl > 1e-3 and mse > 1e-3
  np.testing.assert_allclose(metrics["distill_kl"], kl, rtol=1e-4)
  np.testing.assert_allclose(metrics["distill_mse"], mse, rtol=1e-4)
  np.testing.assert_allclose(metrics["task_loss"], task_loss, rtol=1e-5)
  np.testing.assert_allclose(loss, task_loss + weight * (kl + mse), rtol=1e-5)


# ---- entry points and the job, on two registered JSONL tasks --------------------------------

LENGTHS = {"inputs": 16, "targets": 4}
MIXTURE = "mpt_distill_test_mixture"
TASK_LINES = {
    "mpt_distill_colors": [("the sky is", "blue"), ("grass is", "green"), ("snow is", "white")],
    "mpt_distill_moods": [("a great day", "positive"), ("a sad movie", "negative")],
}


@pytest.fixture(scope="module")
def mixture(tmp_path_factory):
  return mpt_helpers.register_mixture(tmp_path_factory.mktemp("mpt_distill_tasks"), MIXTURE, TASK_LINES)


def save(path, value):
  np.save(path, value, allow_pickle=False)
  return str(path)


def test_bad_teachers_are_refused_where_they_enter(mixture, tmp_path):
  colors, moods = mixture
  good = {colors: save(tmp_path / "c.npy", TEACHERS["task_a"]),
          moods: save(tmp_path / "m.npy", TEACHERS["task_b"])}
  built = mpt.method(MIXTURE, good, 0.5)
  assert [t.task for t in built.teachers] == mixture and built.distills
  assert built == mpt.method(MIXTURE, dict(reversed(list(good.items()))), 0.5)  # by task
  assert not mpt.method(MIXTURE, {}, 0.5).distills
  with pytest.raises(ValueError, match=r"MPT_TEACHERS names \['demo_sentiment'\], not among "
                                       r"MPT_TASKS \['mpt_distill_colors'"):
    mpt.method(MIXTURE, {**good, "demo_sentiment": good[colors]})
  with pytest.raises(ValueError, match=r"no teacher for \['mpt_distill_moods'\]"):
    mpt.method(MIXTURE, {colors: good[colors]})
  with pytest.raises(ValueError, match=r"MPT_DISTILLATION_WEIGHT=-0.1 must be a number >= 0"):
    mpt.method(MIXTURE, good, -0.1)
  with pytest.raises(ValueError, match=r"MPT_DISTILLATION_WEIGHT=True must be a number"):
    mpt.method(MIXTURE, {}, True)
  with pytest.raises(ValueError, match=r"MPT_TEACHERS=\['c.npy'\] must be a dict"):
    mpt.method(MIXTURE, ["c.npy"])
  with pytest.raises(ValueError, match=r"MPT_TEACHERS\['mpt_distill_moods'\]='.*nowhere.npy' "
                                       r"does not exist"):
    mpt.method(MIXTURE, {**good, moods: str(tmp_path / "nowhere.npy")})
  deep = save(tmp_path / "deep.npy", np.zeros((2, 3, D), np.float32))
  with pytest.raises(ValueError, match=r"Teacher MPT_TEACHERS\['mpt_distill_moods'\] \(file "
                                       r"'.*deep.npy'\) is of shape \(2, 3, 4\) \(a deep prompt"):
    mpt.method(MIXTURE, {**good, moods: deep})
  record = mpt.pack(np.ones((P, D)), np.ones((2, P)), np.ones((2, D)), mixture)
  with pytest.raises(ValueError, match=r"is an MPT file \(tasks \['mpt_distill_colors', "
                                       r"'mpt_distill_moods'\]\), but a teacher is a plain"):
    mpt.method(MIXTURE, {**good, colors: save(tmp_path / "mpt.npy", record)})
  with pytest.raises(ValueError, match=r"has 1 non-finite values"):
    mpt.method(MIXTURE, {**good, colors: np.array([[np.nan, 0, 0, 0]], np.float32)})
  wide = {**good, moods: save(tmp_path / "wide.npy", np.zeros((3, 8), np.float32))}
  with pytest.raises(ValueError, match=r"Teacher MPT_TEACHERS\['mpt_distill_moods'\] \(file "
                                       r"'.*wide.npy'\) has shape \(3, 8\) but this model's "
                                       r"d_model is 4"):
    model_lib.PromptedT5Model(TINY, prompt_length=P, method=mpt.method(MIXTURE, wide))


def test_train_job_through_mpt_gin_with_teachers(mixture, tmp_path):
  """methods/mpt.gin with MPT_TEACHERS and a weight: the job logs the loss's parts, exports the
  same kinds of file as plain MPT, and keeps the teachers out of its checkpoint."""
  import gin
  from pathlib import Path
  teachers = {name: save(tmp_path / f"{name}.npy", TEACHERS[task])
              for name, task in zip(mixture, TASKS)}
  model_dir = tmp_path / "run"
  gin.clear_config()
  gin.add_config_file_search_path(str(Path(__file__).resolve().parents[1] / "gin_configs"))
  try:
    gin.parse_config_files_and_bindings(
        ["models/t5_1_1_tiny_prompt.gin", "prompts/random_uniform.gin",
         "runs/prompt_finetune.gin", "methods/mpt.gin"],
        [f"MODEL_DIR = '{model_dir}'", f"MIXTURE_OR_TASK_NAME = '{MIXTURE}'",
         f"TASK_FEATURE_LENGTHS = {LENGTHS}", "INITIAL_CHECKPOINT_PATH = None",
         "PROMPT_LENGTH = 4", "TRAIN_STEPS = 3", "BATCH_SIZE = 4", "CHECKPOINT_PERIOD = 3",
         "EVAL_PERIOD = None", f"MPT_TEACHERS = {teachers}", "MPT_DISTILLATION_WEIGHT = 0.5"])
    model = gin.query_parameter("MODEL/macro.value").scoped_configurable_fn()
    metrics = gin_utils.call_configured(train.train, "runs/prompt_finetune.gin")
  finally:
    gin.clear_config()
  assert model.method.distills and model.method.distillation_weight == 0.5
  assert [t.source for t in model.method.teachers] == [
      f"MPT_TEACHERS[{name!r}] (file {teachers[name]!r})" for name in mixture]
  assert metrics["step"] == 3
  assert metrics["distill_kl"] > 0 and metrics["distill_mse"] > 0
  np.testing.assert_allclose(
      metrics["loss"], metrics["task_loss"] + 0.5 * (metrics["distill_kl"] +
                                                     metrics["distill_mse"]), rtol=1e-5)
  parts = mpt.unpack(prompts_io.read_prompt_file(str(model_dir / "prompts" / "step_3.npy")),
                     "step_3")
  assert parts["tasks"] == mixture and parts["shared"].shape == (4, TINY.emb_dim)
  for k, name in enumerate(mixture):
    value = prompts_io.load_prompt(str(model_dir / "prompts" / "step_3" / f"{name}.npy"))
    np.testing.assert_allclose(
        value, parts["shared"] * np.outer(parts["task_rows"][k], parts["task_cols"][k]),
        rtol=1e-6, atol=1e-7)
  assert (model_dir / "prompts" / "step_3" / "shared.npy").exists()
  assert set(model.abstract_params()["prompt"]) == {"prompt", "task_rows", "task_cols"}
  assert json.loads((model_dir / "run_config.json").read_text())["prompt_method"] == "mpt"
