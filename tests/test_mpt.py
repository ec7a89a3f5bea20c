"""Multi-task prompt tuning (prompts/mpt.py): P_k by hand, routing of mixed-task batches, the
exported files, the train job over a two-task mixture, and bad inputs."""

import functools
import itertools
import json

import jax
import numpy as np
import mpt_helpers
import pytest

from prompt_tuning import infer, optim, prompts, train
from prompt_tuning import model as model_lib
from prompt_tuning.checkpoints import prompts_io
from prompt_tuning.data import demo, errors, features, vocabularies
from prompt_tuning.prompts import mpt
from prompt_tuning.t5 import config as t5_config

TINY, P, D, TASKS = mpt_helpers.TINY, mpt_helpers.P, mpt_helpers.D, mpt_helpers.TASKS
INPUTS, TARGETS, BATCH = mpt_helpers.INPUTS, mpt_helpers.TARGETS, mpt_helpers.BATCH


def mpt_model(tasks=TASKS, **kwargs):
  return model_lib.PromptedT5Model(TINY, prompt_length=P, method=mpt.MultiTask(tasks),
                                   prompt_initializer=prompts.random_uniform(), **kwargs)


@pytest.fixture(scope="module")
def trained():
  """The MPT model and params whose u and v are random (at init they are ones, which would
  hide a swapped or missing factor)."""
  m = mpt_model()
  params = m.random_params(jax.random.PRNGKey(0))
  rng = np.random.default_rng(1)
  u = rng.normal(size=(2, P)).astype(np.float32)
  v = rng.normal(size=(2, D)).astype(np.float32)
  return m, {**params, "prompt": {**params["prompt"], "task_rows": u, "task_cols": v}}


def by_hand(p: dict, k: int) -> np.ndarray:
  """P_k[i, j] = P*[i, j] u_k[i] v_k[j], element by element."""
  shared, u, v = (np.asarray(p[n], np.float64) for n in ("prompt", "task_rows", "task_cols"))
  return np.array([[shared[i, j] * u[k, i] * v[k, j] for j in range(D)] for i in range(P)])


def test_task_prompts_are_the_shared_prompt_times_a_rank_one_update(trained):
  m, params = trained
  p = params["prompt"]
  table = m.prompt_module().apply({"params": p}, method="table")
  assert table.shape == (2, P, D)
  for k in range(2):
    np.testing.assert_allclose(table[k], by_hand(p, k), rtol=1e-6, atol=1e-7)
  rows = m.method.task_prompts(m.prompt_module(), p, np.array([1, 0, 1]))
  np.testing.assert_allclose(rows, np.stack([by_hand(p, 1), by_hand(p, 0), by_hand(p, 1)]),
                             rtol=1e-6, atol=1e-7)


def test_initial_updates_are_ones_and_the_shared_prompt_comes_from_the_initializer():
  m = model_lib.PromptedT5Model(TINY, prompt_length=P, method=mpt.MultiTask(TASKS),
                                prompt_initializer=lambda rng, emb, shape: np.full(shape, 0.25))
  params = m.random_params(jax.random.PRNGKey(0))
  assert jax.tree.map(np.shape, params["prompt"]) == {
      "prompt": (P, D), "task_rows": (2, P), "task_cols": (2, D)}
  np.testing.assert_array_equal(params["prompt"]["prompt"], 0.25)
  np.testing.assert_array_equal(params["prompt"]["task_rows"], 1.0)
  np.testing.assert_array_equal(params["prompt"]["task_cols"], 1.0)
  np.testing.assert_array_equal(
      m.prompt_module().apply({"params": params["prompt"]}, method="table"), 0.25)
  assert jax.tree.map(np.shape, m.abstract_params()) == jax.tree.map(np.shape, params)


def test_each_row_of_a_mixed_task_batch_scores_as_its_task_prompt_alone(trained):
  m, params = trained
  ids = np.array([1, 0, 1], np.int32)
  mixed = jax.jit(m.score)(params, {**BATCH, "prompt_ids": ids})
  plain = model_lib.PromptedT5Model(TINY, prompt_length=P)
  frozen = {k: v for k, v in params.items() if k != "prompt"}
  for k in range(2):
    alone = jax.jit(plain.score)({**frozen, "prompt": {"prompt": by_hand(params["prompt"], k)}},
                                 BATCH)
    np.testing.assert_allclose(mixed[ids == k], alone[ids == k], rtol=1e-5, atol=1e-5)
  other = jax.jit(m.score)(params, {**BATCH, "prompt_ids": 1 - ids})
  assert not np.allclose(mixed, other)  # the task's prompt matters
  loss, _ = jax.jit(m.loss)(params, {**BATCH, "prompt_ids": ids})
  weights = BATCH["decoder_loss_weights"].sum()
  np.testing.assert_allclose(loss, -mixed.sum() / weights, rtol=1e-5)


def test_only_prompt_leaves_train_and_each_task_gets_its_own_gradient(trained):
  m, params = trained
  trainable, frozen = optim.partition(params, optim.PROMPT_REGEX)
  assert list(trainable) == ["prompt"] and "prompt" not in frozen
  only_a = {**BATCH, "prompt_ids": np.zeros(3, np.int32)}
  grads = jax.grad(lambda t: m.loss(optim.merge(t, frozen), only_a)[0])(trainable)["prompt"]
  assert np.abs(grads["prompt"]).min() > 0
  assert np.abs(grads["task_rows"][0]).min() > 0 and np.abs(grads["task_cols"][0]).min() > 0
  # Task b had no example: its update gets no gradient.
  np.testing.assert_array_equal(grads["task_rows"][1], 0.0)
  np.testing.assert_array_equal(grads["task_cols"][1], 0.0)
  optimizer = optim.adafactor()
  step = jax.jit(functools.partial(train.train_step, m, optimizer))
  new, metrics = step(train._initial_state(optimizer, trainable), frozen, only_a,
                      jax.random.PRNGKey(2))
  assert np.isfinite(float(metrics["loss"]))
  for path, value in optim.flat(new["trainable"]).items():
    assert not np.allclose(value, optim.flat(trainable)[path]), path


def test_exported_files_score_like_the_mpt_model(trained, tmp_path):
  m, params = trained
  record = m.export_prompt(optim.partition(params, optim.PROMPT_REGEX)[0])
  assert record.dtype.names == mpt.FIELDS and record.shape == ()
  assert list(record["tasks"]) == list(TASKS)
  files = m.task_files(record)
  assert sorted(files) == ["shared", *TASKS]
  np.testing.assert_array_equal(files["shared"], params["prompt"]["prompt"])
  frozen = {k: v for k, v in params.items() if k != "prompt"}
  plain = model_lib.PromptedT5Model(TINY, prompt_length=P)
  for k, task in enumerate(TASKS):
    path = str(tmp_path / f"{task}.npy")
    prompts_io.save_prompt(path, files[task])
    value = prompts_io.load_prompt(path)
    assert value.shape == (P, D) and value.dtype == np.float32
    np.testing.assert_allclose(value, by_hand(params["prompt"], k), rtol=1e-6, atol=1e-7)
    served = plain.with_prompt_file(frozen, value, path)
    ids = np.full(3, k, np.int32)
    np.testing.assert_allclose(jax.jit(plain.score)(served, BATCH),
                               jax.jit(m.score)(params, {**BATCH, "prompt_ids": ids}),
                               rtol=1e-5, atol=1e-5)
  # The MPT file itself: an MPT model reads it back whole.
  path = str(tmp_path / "step_1.npy")
  prompts_io.save_prompt(path, record)
  again = m.with_prompt_file(frozen, prompts_io.read_prompt_file(path), path)
  for name in ("prompt", "task_rows", "task_cols"):
    np.testing.assert_array_equal(again["prompt"][name], params["prompt"][name])
  assert m.serving_model() is m


def test_bad_inputs(trained):
  m, params = trained
  frozen = {k: v for k, v in params.items() if k != "prompt"}
  with pytest.raises(ValueError, match=r"prompt_ids \[2\] are not tasks .*0..1 for \['task_a'"):
    m.score(params, {**BATCH, "prompt_ids": np.array([0, 2, 1], np.int32)})
  traced = np.asarray(jax.jit(m.score)(params, {**BATCH, "prompt_ids": np.array([0, 2, 1])}))
  assert np.isnan(traced[1]) and np.isfinite(traced[[0, 2]]).all()  # never another task's
  with pytest.raises(ValueError, match=r"give batch\['prompt_ids'\]"):
    m.score(params, BATCH)
  record = m.export_prompt({"prompt": params["prompt"]})
  wide = model_lib.PromptedT5Model(TINY.replace(emb_dim=8), prompt_length=P,
                                   method=mpt.MultiTask(TASKS))
  with pytest.raises(ValueError, match=r"'m.npy' is an MPT file whose shared prompt has shape "
                                       r"\(3, 4\) but the model needs \(3, 8\)"):
    wide.with_prompt_file({}, record, "file 'm.npy'")
  with pytest.raises(ValueError, match=r"MPT file of tasks \['task_a', 'task_b'\] but the "
                                       r"model's are \['task_b', 'task_a'\]"):
    mpt_model(TASKS[::-1]).with_prompt_file(frozen, record, "file 'm.npy'")
  with pytest.raises(ValueError, match=r"'p.npy' has shape \(3, 4\) .*reads the MPT file"):
    m.with_prompt_file(frozen, np.zeros((P, D), np.float32), "file 'p.npy'")
  plain = model_lib.PromptedT5Model(TINY, prompt_length=P)
  with pytest.raises(ValueError, match=r"'m.npy' is a multi-task \(MPT\) file of tasks "
                                       r"\['task_a', 'task_b'\]; a plain model reads one task"):
    plain.with_prompt_file(frozen, record, "file 'm.npy'")
  with pytest.raises(ValueError, match="PROMPTS and PROMPT_ENSEMBLE serve plain prompt files"):
    m.with_prompt_table(frozen, [np.zeros((P, D), np.float32)])
  with pytest.raises(ValueError, match=r"MIXTURE_OR_TASK_NAME='mix' names \['task_c'\], which "
                                       r"is not among the MPT model's tasks"):
    m.method.check_tasks(["task_a", "task_c"], "MIXTURE_OR_TASK_NAME='mix'")
  with pytest.raises(ValueError, match=r"has tasks \['task_b', 'task_a'\], not those of"):
    m.method.check_tasks(["task_b", "task_a"], "MIXTURE_OR_TASK_NAME='mix'")
  m.method.check_serving_tasks(["task_b"], "eval")  # a subset, any order, serves
  with pytest.raises(ValueError, match=r"repeat \['task_a'\]"):
    mpt.MultiTask(("task_a", "task_a"))
  with pytest.raises(ValueError, match=r"include \['shared'\]"):
    mpt.MultiTask(("task_a", "shared"))
  with pytest.raises(errors.UnknownTaskError, match="No task or mixture named 'no_such_task'"):
    mpt.method(["demo_sentiment", "no_such_task"])
  with pytest.raises(errors.UnknownTaskError, match="No task or mixture named 'no_such_mix'"):
    mpt.method("no_such_mix")


# ---- the jobs, in process, on a two-task mixture of the demo vocabulary ----------------------

LENGTHS = {"inputs": 16, "targets": 4}
MIXTURE = "mpt_test_mixture"
TASK_LINES = {  # two small tasks of different words, so their prompts learn different things
    "mpt_test_colors": [("the sky is", "blue"), ("grass is", "green"), ("snow is", "white")],
    "mpt_test_moods": [("a great day", "positive"), ("a sad movie", "negative"),
                       ("a fine film", "positive")],
}


@pytest.fixture(scope="module")
def mixture(tmp_path_factory):
  """Registers two JSONL tasks (train and validation) and their mixture, demo vocabulary."""
  return mpt_helpers.register_mixture(tmp_path_factory.mktemp("mpt_tasks"), MIXTURE, TASK_LINES)


def job_model(method=None):
  return model_lib.PromptedT5Model(t5_config.get_config("t5_1_1_tiny"), prompt_length=4,
                                   method=method, prompt_initializer=prompts.random_uniform())


def infer_scores(tmp_path, name, model, **where):
  paths = infer.infer(model=model, output_dir=str(tmp_path / name), initial_checkpoint_path=None,
                      mixture_or_task_name=MIXTURE, task_feature_lengths=LENGTHS, batch_size=4,
                      split="validation", mode="score", **where)
  return {p.split("/")[-1]: [json.loads(line)["score"] for line in open(p)] for p in paths}


def test_batches_carry_each_examples_task_index(mixture):
  vocabulary = vocabularies.get_vocabulary(demo.vocabulary_path())
  inputs = [{i for i, _ in TASK_LINES[name]} for name in mixture]
  batches = features.get_batches(MIXTURE, "train", LENGTHS, 8, shuffle=True, seed=0,
                                 num_epochs=None, task_ids=True)
  seen = set()
  for batch in itertools.islice(batches, 3):
    assert batch["prompt_ids"].dtype == np.int32 and batch["prompt_ids"].shape == (8,)
    for tokens, task_id in zip(batch["encoder_input_tokens"], batch["prompt_ids"]):
      assert vocabulary.decode([int(t) for t in tokens if t > 1]) in inputs[task_id]
      seen.add(int(task_id))
  assert seen == {0, 1}
  plain = next(features.get_batches(MIXTURE, "train", LENGTHS, 8, shuffle=False, seed=0,
                                    num_epochs=1))
  assert "prompt_ids" not in plain


def test_train_job_over_a_mixture_writes_each_tasks_file(mixture, tmp_path):
  method = mpt.method(MIXTURE)
  assert method.task_names == tuple(mixture)  # the mixture's order: sorted by name
  model = job_model(method)
  model_dir = tmp_path / "run"
  common = dict(initial_checkpoint_path=None, task_feature_lengths=LENGTHS, batch_size=4,
                optimizer=optim.adafactor(), checkpoint_period=3)
  with pytest.raises(ValueError, match=r"MIXTURE_OR_TASK_NAME='mpt_test_colors' has tasks "
                                       r"\['mpt_test_colors'\], not those of"):
    train.train(model=model, model_dir=str(tmp_path / "wrong"), train_steps=3,
                mixture_or_task_name="mpt_test_colors", **common)
  assert not (tmp_path / "wrong").exists()  # refused before anything was written
  train.train(model=model, model_dir=str(model_dir), train_steps=3,
              mixture_or_task_name=MIXTURE, **common)
  assert json.loads((model_dir / "run_config.json").read_text())["prompt_method"] == "mpt"
  record = prompts_io.read_prompt_file(str(model_dir / "prompts" / "step_3.npy"))
  parts = mpt.unpack(record, "step_3")
  assert parts["tasks"] == mixture
  # Both tasks had examples in 3 batches of 4: both updates moved from their ones.
  assert all(not np.allclose(row, 1.0) for row in parts["task_rows"])
  files = {}
  for k, name in enumerate([*mixture, "shared"]):
    value = prompts_io.load_prompt(str(model_dir / "prompts" / "step_3" / f"{name}.npy"))
    assert value.shape == (4, 4) and value.dtype == np.float32
    files[name] = str(model_dir / "prompts" / "step_3" / f"{name}.npy")
    want = (parts["shared"] if name == "shared"
            else parts["shared"] * np.outer(parts["task_rows"][k], parts["task_cols"][k]))
    np.testing.assert_allclose(value, want, rtol=1e-6, atol=1e-7)
  # The MODEL_DIR (routed by task) and each task's plain file (PROMPTS) score alike.
  from_dir = infer_scores(tmp_path, "dir", model, model_dir=str(model_dir))
  from_files = infer_scores(tmp_path, "files", job_model(),
                            prompts={name: files[name] for name in mixture})
  assert sorted(from_dir) == [f"{name}.jsonl" for name in mixture]
  for name in from_dir:
    np.testing.assert_allclose(from_dir[name], from_files[name], rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match=r"\['demo_sentiment'\], which is not among the MPT"):
    infer.infer(model=model, output_dir=str(tmp_path / "demo"), initial_checkpoint_path=None,
                mixture_or_task_name=demo.TASK_NAME, task_feature_lengths=LENGTHS,
                batch_size=4, split="validation", mode="score", model_dir=str(model_dir),
                vocabulary_path=demo.vocabulary_path())


def test_mpt_gin_builds_the_method_over_the_mixture(mixture):
  import gin
  from pathlib import Path
  gin.clear_config()
  gin.add_config_file_search_path(str(Path(__file__).resolve().parents[1] / "gin_configs"))
  try:
    gin.parse_config_files_and_bindings(
        ["runs/cpu_demo.gin", "methods/mpt.gin"],
        ["MODEL_DIR = '/tmp/unused'", f"MIXTURE_OR_TASK_NAME = '{MIXTURE}'"])
    built = gin.query_parameter("MODEL/macro.value").scoped_configurable_fn()
  finally:
    gin.clear_config()
  assert built.method == mpt.MultiTask(tuple(mixture)) and built.prompt_length == 20
  shapes = jax.tree.map(lambda x: x.shape, built.abstract_params()["prompt"])
  assert shapes == {"prompt": (20, 256), "task_rows": (2, 20), "task_cols": (2, 256)}
