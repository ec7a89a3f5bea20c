"""The jobs: what trains, end-to-end runs from the command line, and their bad-input errors."""

import functools
import json
import shutil

import jax
import numpy as np
import pytest

from prompt_tuning import model as model_lib
from prompt_tuning import optim, train
from prompt_tuning.data import demo
from prompt_tuning.t5 import config as t5_config
from subprocess_helpers import run_fast_job as run_job

TINY = t5_config.get_config("t5_1_1_tiny", vocab_size=64)


def _batch(rng, batch=4, inputs=6, targets=3):
  enc = rng.integers(2, 64, size=(batch, inputs)).astype(np.int32)
  enc[:, -2:] = 0  # padding
  tgt = rng.integers(2, 64, size=(batch, targets)).astype(np.int32)
  dec = np.concatenate([np.zeros((batch, 1), np.int32), tgt[:, :-1]], axis=1)
  return {"encoder_input_tokens": enc, "decoder_input_tokens": dec,
          "decoder_target_tokens": tgt, "decoder_loss_weights": np.ones_like(tgt)}


def _run_steps(model, regex, steps=3):
  params = model.random_params(jax.random.PRNGKey(0))
  before = jax.tree.map(np.array, params)
  trainable, frozen = optim.partition(params, regex)
  optimizer = optim.adafactor()
  state = train._initial_state(optimizer, trainable)
  step = jax.jit(functools.partial(train.train_step, model, optimizer))
  rng = np.random.default_rng(0)
  for _ in range(steps):
    state, metrics = step(state, frozen, _batch(rng), jax.random.PRNGKey(1))
  return before, state, frozen, metrics


def test_prompt_tuning_changes_only_the_prompt_and_keeps_only_its_slots():
  model = model_lib.PromptedT5Model(TINY, prompt_length=5)
  before, state, frozen, metrics = _run_steps(model, optim.PROMPT_REGEX)
  assert int(state["step"]) == 3 and np.isfinite(float(metrics["loss"]))
  for path, value in optim.flat(frozen).items():
    np.testing.assert_array_equal(value, optim.flat(before)[path], err_msg=path)
  assert not np.allclose(state["trainable"]["prompt"]["prompt"], before["prompt"]["prompt"])
  # Optimizer slots: sized by the [5, 4] prompt alone (or scalars), none for the frozen T5.
  slot_sizes = [x.size for x in jax.tree.leaves(state["opt_state"])]
  assert max(slot_sizes) <= 5 * 4 and sum(slot_sizes) < 5 * 4 * 3


def test_model_tuning_trains_every_leaf():
  model = model_lib.T5Model(TINY)
  before, state, frozen, _ = _run_steps(model, optim.ALL_REGEX)
  assert frozen == {}
  changed = {p for p, v in optim.flat(state["trainable"]).items()
             if not np.array_equal(v, optim.flat(before)[p])}
  assert changed == set(optim.flat(before))
  assert len(jax.tree.leaves(state["opt_state"])) > len(changed)


# ---- command line ---------------------------------------------------------------------------
# The launches share compiled programs (shared_compilation_cache, FAST_COMPILE): no test here
# compares a number with one computed elsewhere.
pytestmark = pytest.mark.usefixtures("shared_compilation_cache")

TINY_PROMPT = ["--gin_file=models/t5_1_1_tiny_prompt.gin", "--gin_file=prompts/class_labels.gin"]


def _jsonl_task(tmp_path):
  """A JSONL task from the demo's sentences; test lines without targets."""
  files = {}
  for split in ("train", "validation", "test"):
    lines = open(demo.FILES[split]).read().splitlines()[:24]
    if split == "test":
      lines = [json.dumps({"inputs": json.loads(l)["inputs"]}) for l in lines]
    files[split] = tmp_path / f"{split}.jsonl"
    files[split].write_text("\n".join(lines) + "\n")
  return ["--gin_file=data/jsonl.gin", f"--gin.JSONL_TRAIN={files['train']}",
          f"--gin.JSONL_VALIDATION={files['validation']}", f"--gin.JSONL_TEST={files['test']}",
          "--gin.CLASS_LABELS=['positive', 'negative']",
          f"--gin.VOCABULARY_PATH={demo.vocabulary_path()}",
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 4}"]


def _train_flags(model_dir, *extra):
  return [*TINY_PROMPT, "--gin_file=runs/prompt_finetune.gin", "--gin_file=data/demo.gin",
          "--gin.INITIAL_CHECKPOINT_PATH=None", f"--gin.MODEL_DIR={model_dir}",
          "--gin.PROMPT_LENGTH=6", "--gin.BATCH_SIZE=8", "--gin.TRAIN_STEPS=6",
          "--gin.CHECKPOINT_PERIOD=3", "--gin.EVAL_PERIOD=None", *extra]


@pytest.fixture(scope="module")
def six_step_run(tmp_path_factory, shared_compilation_cache):
  """The MODEL_DIR of a finished `_train_flags` run (checkpoints and prompts at 3 and 6), for
  tests that only read it or copy it."""
  del shared_compilation_cache  # its environment, for this run too
  model_dir = tmp_path_factory.mktemp("six_step_run") / "run"
  run_job("train", *_train_flags(model_dir))
  return model_dir


def test_train_eval_infer_on_a_jsonl_task(tmp_path):
  data = _jsonl_task(tmp_path)
  model_dir = tmp_path / "run"
  run_job("train", *TINY_PROMPT, "--gin_file=runs/prompt_finetune.gin", *data,
          "--gin.INITIAL_CHECKPOINT_PATH=None", f"--gin.MODEL_DIR={model_dir}",
          "--gin.PROMPT_LENGTH=6", "--gin.BATCH_SIZE=8", "--gin.TRAIN_STEPS=4",
          "--gin.CHECKPOINT_PERIOD=2", "--gin.EVAL_PERIOD=4", "--gin.USE_RANK_CLASSIFICATION=True")
  prompts = sorted(p.name for p in (model_dir / "prompts").iterdir())
  assert prompts == ["step_2.npy", "step_4.npy"]
  prompt = np.load(model_dir / "prompts" / "step_4.npy")
  assert prompt.shape == (6, 4) and prompt.dtype == np.float32
  assert {"loss", "learning_rate", "examples_per_second"} <= _summary_tags(model_dir / "train")
  assert {"jsonl/accuracy", "jsonl/macro_f1"} <= _summary_tags(model_dir / "eval")

  common = [*TINY_PROMPT, *data, "--gin.INITIAL_CHECKPOINT_PATH=None", "--gin.PROMPT_LENGTH=6",
            "--gin.BATCH_SIZE=8"]
  ev = run_job("eval", *common[:2], "--gin_file=runs/prompt_eval.gin", *common[2:],
               f"--gin.MODEL_DIR={model_dir}", "--gin.USE_RANK_CLASSIFICATION=True")
  assert "jsonl/accuracy" in ev.stderr

  out = {}
  for mode in ("prompt_infer", "prompt_score"):
    out[mode] = tmp_path / mode
    run_job("infer", *common[:2], f"--gin_file=runs/{mode}.gin", *common[2:],
            f"--gin.PROMPT_FILE={model_dir / 'prompts' / 'step_4.npy'}",
            f"--gin.INFER_OUTPUT_DIR={out[mode]}", "--gin.INFER_SPLIT='validation'")
  predictions = [json.loads(l) for l in (out["prompt_infer"] / "jsonl.jsonl").open()]
  scores = [json.loads(l) for l in (out["prompt_score"] / "jsonl.jsonl").open()]
  inputs = [json.loads(l)["inputs"] for l in (tmp_path / "validation.jsonl").open()]
  assert [p["inputs"] for p in predictions] == inputs == [s["inputs"] for s in scores]
  assert all(isinstance(p["prediction"], str) and p["targets"] for p in predictions)
  assert all(s["score"] < 0 for s in scores)


def _summary_tags(folder):
  from tensorboard.backend.event_processing import event_accumulator
  events = event_accumulator.EventAccumulator(str(folder), size_guidance={"tensors": 0})
  events.Reload()
  return set(events.Tags()["tensors"])


def test_prompt_file_and_model_dir_give_the_same_scores(tmp_path, six_step_run):
  model_dir = six_step_run
  common = [*TINY_PROMPT, "--gin_file=runs/prompt_score.gin", "--gin_file=data/demo.gin",
            "--gin.INITIAL_CHECKPOINT_PATH=None", "--gin.PROMPT_LENGTH=6", "--gin.BATCH_SIZE=8",
            "--gin.INFER_SPLIT='validation'"]
  run_job("infer", *common, f"--gin.MODEL_DIR={model_dir}", f"--gin.INFER_OUTPUT_DIR={tmp_path/'a'}")
  run_job("infer", *common, f"--gin.PROMPT_FILE={model_dir / 'prompts' / 'step_6.npy'}",
          f"--gin.INFER_OUTPUT_DIR={tmp_path / 'b'}")
  a = [json.loads(l)["score"] for l in (tmp_path / "a" / "demo_sentiment.jsonl").open()]
  b = [json.loads(l)["score"] for l in (tmp_path / "b" / "demo_sentiment.jsonl").open()]
  assert len(a) == 50 and a == b


@pytest.mark.parametrize("flags, message", [
    (["--gin.MIXTURE_OR_TASK_NAME='demo_sentimnt'"], "demo_sentiment"),
    (["--gin.BATCH_SIZE=6", "--gin.NUM_PARTITIONS=2"], "BATCH_SIZE=6 must be divisible"),
    (["--gin.INITIAL_CHECKPOINT_PATH=/no/such/checkpoint"], "/no/such/checkpoint"),
    (["--gin.TRAIN_STEPZ=3"], "did you mean TRAIN_STEPS?"),
    (["--gin.train.train.train_stepz=3"], "train_stepz"),
    (["--gin.LEARNING_RATE=1e999"], "The updated weights are not finite at step 1"),
    (["--gin_file=runs/no_such_run.gin"], "runs/no_such_run.gin was not found"),
])
def test_bad_input_gets_one_clear_error(tmp_path, flags, message):
  proc = run_job("train", *_train_flags(tmp_path / "run"), *flags, devices=8, check=False)
  assert proc.returncode != 0
  assert message in proc.stderr
  assert "Traceback" not in proc.stderr
  # Nothing was trained, so the MODEL_DIR is not bound to these settings.
  assert not (tmp_path / "run" / "run_config.json").exists()


def test_model_dir_of_another_run_is_refused(tmp_path, six_step_run):
  shutil.copytree(six_step_run, tmp_path / "run")
  proc = run_job("train", *_train_flags(tmp_path / "run", "--gin.PROMPT_LENGTH=7"), check=False)
  assert proc.returncode != 0 and "prompt_length: 6 there, 7 now" in proc.stderr


def test_divergence_keeps_the_last_good_checkpoint_latest(tmp_path, six_step_run):
  model_dir = tmp_path / "run"
  shutil.copytree(six_step_run, model_dir)  # good checkpoints at steps 3 and 6
  proc = run_job("train", *_train_flags(model_dir, "--gin.LEARNING_RATE=1e999",
                                        "--gin.TRAIN_STEPS=9", "--gin.CHECKPOINT_PERIOD=1"),
                 check=False)
  assert proc.returncode != 0
  assert "Resuming from the checkpoint at step 6." in proc.stderr
  assert "The updated weights are not finite at step 7" in proc.stderr
  assert "latest checkpoint (step 6)" in proc.stderr
  assert sorted(p.name for p in (model_dir / "checkpoints").iterdir()) == ["3", "6"]
  assert sorted(p.name for p in (model_dir / "prompts").iterdir()) == ["step_3.npy",
                                                                         "step_6.npy"]


def test_model_tuning_run_then_prompt_tuning_on_its_checkpoint(tmp_path):
  tuned = tmp_path / "model_tuned"
  run_job("train", "--gin_file=models/t5_1_1_tiny.gin", "--gin_file=runs/model_finetune.gin",
          "--gin_file=data/demo.gin", "--gin.INITIAL_CHECKPOINT_PATH=None",
          f"--gin.MODEL_DIR={tuned}", "--gin.BATCH_SIZE=8", "--gin.TRAIN_STEPS=2",
          "--gin.CHECKPOINT_PERIOD=2", "--gin.EVAL_PERIOD=None")
  assert not (tuned / "prompts").exists()
  assert json.loads((tuned / "run_config.json").read_text())["trainable_regex"] == ".*"
  # The model-tuned weights are a frozen starting point for prompt tuning.
  prompted = tmp_path / "prompted"
  proc = run_job("train", *_train_flags(prompted, "--gin.TRAIN_STEPS=1",
                                        "--gin.CHECKPOINT_PERIOD=1",
                                        f"--gin.INITIAL_CHECKPOINT_PATH={tuned / 'checkpoints'}"))
  assert "the frozen model is RANDOM" not in proc.stderr
  assert np.load(prompted / "prompts" / "step_1.npy").shape == (6, 4)
