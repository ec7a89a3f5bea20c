"""Faults around a run: damaged checkpoints, two runs on one MODEL_DIR, unusable output paths,
and bad inputs that used to end in a traceback. Each ends in one clear line, or is repaired."""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from prompt_tuning import eval as eval_lib
from prompt_tuning import infer as infer_lib
from prompt_tuning import job_utils
from prompt_tuning.checkpoints import huggingface
from prompt_tuning.checkpoints import job as job_ckpt
from prompt_tuning.checkpoints import prompts_io
from prompt_tuning.checkpoints.base import CheckpointError
from prompt_tuning.data import demo, jsonl
from subprocess_helpers import FAST_COMPILE, REPO, job_command, job_env, run_fast_job

FLAGS = ["--gin_file=models/t5_1_1_tiny_prompt.gin", "--gin_file=prompts/class_labels.gin",
         "--gin_file=runs/prompt_finetune.gin", "--gin_file=data/demo.gin",
         "--gin.INITIAL_CHECKPOINT_PATH=None", "--gin.PROMPT_LENGTH=6", "--gin.BATCH_SIZE=8",
         "--gin.EVAL_PERIOD=None"]
RUN = [*FLAGS, "--gin.TRAIN_STEPS=6", "--gin.CHECKPOINT_PERIOD=2"]

pytestmark = pytest.mark.usefixtures("shared_compilation_cache")


def _truncate_a_data_file(step_dir):
  """Cuts in half the largest data file the 'trainable' item of a step reads."""
  data = max(glob.glob(os.path.join(step_dir, "trainable", "d", "*")), key=os.path.getsize)
  with open(data, "r+b") as f:
    f.truncate(os.path.getsize(data) // 2)


def _empty_the_manifest(step_dir):
  open(os.path.join(step_dir, "optimizer", "manifest.ocdbt"), "w").close()


DAMAGES = {"truncated data file": _truncate_a_data_file, "empty manifest": _empty_the_manifest}


# ---- damaged checkpoints, in process ---------------------------------------------------------

def _state(value, prompt_length=6):
  return {"step": jnp.int32(value),
          "trainable": {"prompt": {"prompt": jnp.full((prompt_length, 4), value, jnp.float32)}},
          "opt_state": {"v": jnp.full((prompt_length,), value, jnp.float32)}}


def _saved_steps(model_dir, steps):
  mgr = job_ckpt.manager(str(model_dir))
  for step in steps:
    job_ckpt.save(mgr, _state(step), {"step": step, "batch_size": 8})


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_latest_checkpoint_is_set_aside_and_the_newest_intact_restored(tmp_path,
                                                                               caplog, damage):
  _saved_steps(tmp_path, [2, 4])
  DAMAGES[damage](str(tmp_path / "checkpoints" / "4"))
  state, meta = job_ckpt.restore_latest(job_ckpt.manager(str(tmp_path)), _state(0))
  assert meta["step"] == 2 and float(state["trainable"]["prompt"]["prompt"][0, 0]) == 2.0
  aside = [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name != "2"]
  assert len(aside) == 1 and aside[0].startswith("4.damaged-")  # renamed, not deleted
  assert (tmp_path / "checkpoints" / aside[0] / "trainable").is_dir()
  warning = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
  assert f"{tmp_path / 'checkpoints' / '4'} is damaged" in warning
  assert str(tmp_path / "checkpoints" / aside[0]) in warning


def _saved_out_of_line(model_dir, steps):
  """Steps whose arrays are too large to sit inline in orbax's index (over 1 KB): each is
  read from its own data file under {item}/ocdbt.process_0/d/. Returns each step's state."""
  states = {}
  for step in steps:
    noise = np.random.default_rng(step).normal(size=(2, 6, 256)).astype(np.float32)
    states[step] = {"step": jnp.int32(step), "trainable": {"prompt": {"prompt": noise[0]}},
                    "opt_state": {"v": noise[1]}}
  mgr = job_ckpt.manager(str(model_dir))
  for step, state in states.items():
    job_ckpt.save(mgr, state, {"step": step, "batch_size": 8})
  return states


def _cut_array_data(step_dir, item):
  """Truncates the largest array data file of `item` (what orbax reads the values from)."""
  data = max(glob.glob(os.path.join(step_dir, item, "ocdbt.process_0", "d", "*")),
             key=os.path.getsize)
  assert os.path.getsize(data) > 1024
  with open(data, "r+b") as f:
    f.truncate(os.path.getsize(data) // 2)


@pytest.mark.parametrize("item", ["trainable", "optimizer"])
def test_a_truncated_array_data_file_is_damage_and_the_newest_intact_step_resumes(
    tmp_path, caplog, item):
  states = _saved_out_of_line(tmp_path, [2, 4])
  _cut_array_data(str(tmp_path / "checkpoints" / "4"), item)
  like = jax.tree.map(jnp.zeros_like, states[2])
  state, meta = job_ckpt.restore_latest(job_ckpt.manager(str(tmp_path)), like)
  assert meta["step"] == 2
  np.testing.assert_array_equal(state["opt_state"]["v"], states[2]["opt_state"]["v"])
  aside = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
  assert aside[0] == "2" and aside[1].startswith("4.damaged-") and len(aside) == 2
  warning = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
  assert (f"The checkpoint {tmp_path / 'checkpoints' / '4'} is damaged: OUT_OF_RANGE: Error "
          f'reading "') in warning and "Requested byte range" in warning
  assert "TensorStore(" not in warning and "\n" not in warning  # one line, not the spec


def test_eval_of_a_damaged_latest_step_names_it_and_the_newest_intact_one(tmp_path):
  states = _saved_out_of_line(tmp_path, [2, 4, 6])
  prompts_io.save_prompt(prompts_io.prompt_path(str(tmp_path), 2),
                         np.asarray(states[2]["trainable"]["prompt"]["prompt"]))
  for step in (6, 4):
    _cut_array_data(str(tmp_path / "checkpoints" / str(step)), "trainable")
  like = jax.tree.map(jnp.zeros_like, states[2]["trainable"])
  with pytest.raises(job_ckpt.DamagedCheckpointError) as error:
    job_ckpt.restore_trainable(str(tmp_path), like)
  message = str(error.value)
  assert message.startswith(f"The checkpoint {tmp_path / 'checkpoints' / '6'} is damaged: "
                            "OUT_OF_RANGE: ")
  assert message.endswith(
      "Step 4 is damaged too. The newest intact checkpoint is step 2: evaluate its prompt "
      f"with --gin.PROMPT_FILE={tmp_path / 'prompts' / 'step_2.npy'}, or restart the train "
      "job on this MODEL_DIR, which sets the damaged steps aside (renamed, not deleted) and "
      "resumes from step 2.")
  assert "\n" not in message
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2", "4", "6"]


def test_a_read_error_that_is_not_damage_passes_unchanged():
  """Orbax's plain Exception is damage only when what it was raised from says a file is cut
  or missing; an access error, or a bug, keeps its own type and message."""
  def failed_read(cause):
    with job_ckpt._reading("/run/checkpoints/4"):
      raise Exception("Encountered error while reading array index") from cause

  with pytest.raises(Exception, match="Encountered error") as error:
    failed_read(ValueError('PERMISSION_DENIED: Error reading "a" in file "b"'))
  assert type(error.value) is Exception
  with pytest.raises(Exception, match="Encountered error"):
    failed_read(TypeError("unsupported operand"))
  with pytest.raises(job_ckpt.DamagedCheckpointError, match=r"/run/checkpoints/4 is damaged: "
                     r'DATA_LOSS: Error reading "a" in file "b"\.$'):
    failed_read(ValueError('DATA_LOSS: Error reading "a" in file "b"'))


def test_a_checkpoint_of_other_shapes_is_a_mismatch_not_damage(tmp_path):
  _saved_steps(tmp_path, [2])
  with pytest.raises(job_ckpt.RunMismatchError, match=r"\[6, 4\].*set PROMPT_LENGTH=6"):
    job_ckpt.restore_latest(job_ckpt.manager(str(tmp_path)), _state(0, prompt_length=7))
  assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["2"]


def test_eval_with_another_prompt_length_is_told_the_runs(tmp_path):
  _saved_steps(tmp_path, [2])
  like = {"prompt": {"prompt": jax.ShapeDtypeStruct((7, 4), jnp.float32,
                                                    sharding=_state(0)["step"].sharding)}}
  with pytest.raises(job_ckpt.RunMismatchError) as error:
    job_ckpt.restore_trainable(str(tmp_path), like)
  assert str(error.value) == (f"prompt/prompt has shape [6, 4] in {tmp_path}/checkpoints/2 but "
                              "this job's model has [7, 4]; set PROMPT_LENGTH=6, the run's.")


def test_reading_a_missing_model_dir_creates_nothing(tmp_path):
  with pytest.raises(FileNotFoundError, match="MODEL_DIR=.*typo does not exist"):
    job_ckpt.restore_trainable(str(tmp_path / "typo"), {})
  assert not (tmp_path / "typo").exists()


# ---- one live run per MODEL_DIR, in process --------------------------------------------------

def _write_lock(model_dir, **holder):
  model_dir.mkdir(exist_ok=True)
  (model_dir / job_utils.LOCK_FILE).write_text(json.dumps(holder))


def test_a_live_run_on_this_host_holds_the_model_dir(tmp_path):
  other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    _write_lock(tmp_path, host=socket.gethostname(), pid=other.pid,
                start=job_utils._process_start(other.pid))
    with pytest.raises(job_utils.RunInUseError) as error:
      with job_utils.model_dir_lock(str(tmp_path)):
        pass
  finally:
    other.kill()
    other.wait()
  assert f"host {socket.gethostname()}, process {other.pid}" in str(error.value)
  assert (tmp_path / job_utils.LOCK_FILE).exists()  # still the other run's


def test_a_lock_of_another_host_is_respected(tmp_path):
  _write_lock(tmp_path, host="tpu-vm-7", pid=4242)
  with pytest.raises(job_utils.RunInUseError, match="host tpu-vm-7, process 4242.*delete"):
    with job_utils.model_dir_lock(str(tmp_path)):
      pass


@pytest.mark.parametrize("stale", ["process gone", "killed, not reaped", "pid reused",
                                   "garbled"])
def test_a_lock_left_by_a_killed_run_does_not_block_a_restart(tmp_path, stale):
  gone = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  gone.kill()
  if stale != "killed, not reaped":
    gone.wait()
  if stale in ("process gone", "killed, not reaped"):
    while stale != "process gone" and job_utils._process_stat(gone.pid)[0] != "Z":
      time.sleep(0.01)
    _write_lock(tmp_path, host=socket.gethostname(), pid=gone.pid)
  elif stale == "pid reused":  # our own pid, from an earlier life of the machine
    _write_lock(tmp_path, host=socket.gethostname(), pid=os.getpid(), start="1")
  else:
    (tmp_path / job_utils.LOCK_FILE).write_text('{"host": ')
  with job_utils.model_dir_lock(str(tmp_path)):
    holder = json.loads((tmp_path / job_utils.LOCK_FILE).read_text())
    assert (holder["host"], holder["pid"]) == (socket.gethostname(), os.getpid())
  assert not (tmp_path / job_utils.LOCK_FILE).exists()
  gone.wait()


# ---- output paths, in process ----------------------------------------------------------------

def test_output_dir_that_is_a_file_or_under_a_file_is_refused(tmp_path):
  (tmp_path / "file").write_text("x")
  with pytest.raises(job_utils.OutputPathError, match="MODEL_DIR=.*file is a file, not a dir"):
    job_utils.check_output_dir("MODEL_DIR", str(tmp_path / "file"))
  with pytest.raises(job_utils.OutputPathError,
                     match=f"INFER_OUTPUT_DIR=.*cannot be created: {tmp_path / 'file'} is a"):
    job_utils.check_output_dir("INFER_OUTPUT_DIR", str(tmp_path / "file" / "a" / "b"))


def test_output_dir_is_checked_not_created_and_then_made(tmp_path):
  job_utils.check_output_dir("MODEL_DIR", str(tmp_path / "new" / "run"))
  assert list(tmp_path.iterdir()) == []  # created only once every input is checked
  job_utils.make_output_dir(str(tmp_path / "new" / "run"))
  assert list((tmp_path / "new" / "run").iterdir()) == []


def test_a_dir_that_is_only_read_is_never_created(tmp_path):
  with pytest.raises(job_utils.OutputPathError, match="MODEL_DIR=.*typo does not exist"):
    job_utils.check_output_dir("MODEL_DIR", str(tmp_path / "typo"), create=False)
  assert not (tmp_path / "typo").exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into read-only directories")
def test_read_only_output_dir_is_refused(tmp_path):
  (tmp_path / "ro").mkdir(mode=0o555)
  with pytest.raises(job_utils.OutputPathError, match="MODEL_DIR=.*ro is not writable"):
    job_utils.check_output_dir("MODEL_DIR", str(tmp_path / "ro"))


def test_a_refused_write_is_reported_as_not_writable(tmp_path, monkeypatch):
  """What a read-only directory does to a non-root user (and to root on a read-only mount)."""
  def refuse(path, mode="r"):
    raise tf.errors.PermissionDeniedError(None, None, f"{path}; Permission denied")
  monkeypatch.setattr(tf.io.gfile, "GFile", refuse)
  with pytest.raises(job_utils.OutputPathError,
                     match="INFER_OUTPUT_DIR=.*out is not writable or cannot be reached"):
    job_utils.check_output_dir("INFER_OUTPUT_DIR", str(tmp_path / "out"))


def test_eval_and_infer_check_their_paths_before_any_compute(tmp_path):
  """Nothing but the paths is given: the check comes first, before a model is needed."""
  (tmp_path / "file").write_text("x")
  with pytest.raises(job_utils.OutputPathError, match="MODEL_DIR=.*typo does not exist"):
    eval_lib.evaluate(model=None, initial_checkpoint_path=None, mixture_or_task_name="none",
                      task_feature_lengths={}, batch_size=8, model_dir=str(tmp_path / "typo"))
  assert not (tmp_path / "typo").exists()
  with pytest.raises(job_utils.OutputPathError, match="INFER_OUTPUT_DIR=.*file is a file"):
    infer_lib.infer(model=None, initial_checkpoint_path=None, mixture_or_task_name="none",
                    task_feature_lengths={}, batch_size=8,
                    output_dir=str(tmp_path / "file" / "out"))


def test_hugging_face_config_that_is_not_json_names_the_file(tmp_path):
  (tmp_path / "config.json").write_text('{"d_model": 32,')
  with pytest.raises(CheckpointError, match=f"{tmp_path / 'config.json'}.*not valid JSON"):
    huggingface.config_from_hf(str(tmp_path))


# ---- what eval scores, in process -----------------------------------------------------------
# model=None: each refusal comes before anything would be computed.

LENGTHS = {"inputs": 32, "targets": 4}


def _demo_jsonl(tmp_path, name, with_targets=8, **task_kwargs):
  """A JSONL task of 8 demo sentences as its 'test' split, the first `with_targets` with
  their targets."""
  lines = [json.loads(line) for line in open(demo.FILES["validation"]).read().splitlines()[:8]]
  for i, line in enumerate(lines):
    if i >= with_targets:
      del line["targets"]
  (tmp_path / "test.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
  return jsonl.jsonl_task(test=str(tmp_path / "test.jsonl"), name=name,
                          vocabulary_path=demo.vocabulary_path(), **task_kwargs)


def _evaluate(task, **kwargs):
  return eval_lib.evaluate(model=None, initial_checkpoint_path=None, mixture_or_task_name=task,
                           task_feature_lengths=LENGTHS, batch_size=8, split="test", **kwargs)


def test_eval_refuses_rank_classification_without_class_labels(tmp_path):
  task = _demo_jsonl(tmp_path, "unlabelled_for_rank")
  expected = ("USE_RANK_CLASSIFICATION=True scores each class label, but "
              "'unlabelled_for_rank' has no class labels; set CLASS_LABELS (JSONL tasks), or "
              "USE_RANK_CLASSIFICATION=False to decode.")
  with pytest.raises(ValueError) as error:
    _evaluate(task, use_rank_classification=True)
  assert str(error.value) == expected
  with pytest.raises(ValueError) as error:  # the train job's periodic eval, before training
    eval_lib.make_evaluator(model=None, mixture_or_task_name=task, task_feature_lengths=LENGTHS,
                            batch_size=8, split="test", use_rank_classification=True)
  assert str(error.value) == expected
  eval_lib.make_evaluator(model=None, mixture_or_task_name=task, task_feature_lengths=LENGTHS,
                          batch_size=8, split="validation", use_rank_classification=True)


def test_eval_of_a_split_without_targets_has_nothing_to_score(tmp_path):
  with pytest.raises(ValueError) as error:
    _evaluate(_demo_jsonl(tmp_path, "no_targets", with_targets=0,
                          class_labels=["positive", "negative"]))
  assert str(error.value) == (
      "None of the 8 examples of the 'test' split of no_targets has a target, so there is "
      "nothing to score; evaluate a split with targets (e.g. EVAL_SPLIT='validation'), or get "
      "predictions with the infer job.")
  with pytest.raises(ValueError) as error:
    _evaluate(_demo_jsonl(tmp_path, "some_targets", with_targets=3))
  assert str(error.value) == (
      "5 of the 8 examples of the 'test' split of some_targets have no target (the first is "
      "example 4), and metrics would count them as wrong; give every example a target, or "
      "get predictions with the infer job.")


def test_unlabelled_glue_examples_count_as_without_target():
  assert not eval_lib._has_target({"targets_pretokenized": "<unk>", "targets": [3, 1]})
  assert not eval_lib._has_target({"targets_pretokenized": " ", "targets": [1]})
  assert eval_lib._has_target({"targets_pretokenized": "positive", "targets": [7, 1]})
  assert eval_lib._has_target({"targets": [7, 1, 0]})  # a task without the text feature
  assert not eval_lib._has_target({"targets": [1, 0]})


# ---- the jobs, from the command line ---------------------------------------------------------

@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
  """A finished 6-step run (checkpoints 2, 4, 6) and its log."""
  model_dir = tmp_path_factory.mktemp("clean") / "run"
  proc = run_fast_job("train", *RUN, f"--gin.MODEL_DIR={model_dir}")
  return model_dir, proc.stderr


def test_the_log_holds_our_lines_and_the_config_is_written(clean_run):
  model_dir, log = clean_run
  info = [line for line in log.splitlines() if line.startswith("I")]
  sources = {line.split("]")[0].split()[-1].split(":")[0] for line in info}
  assert sources <= {"train.py", "job_utils.py", "gin_utils.py", "features.py"}, sources
  assert "trainable: prompt/prompt [6, 4] (24 parameters)" in log
  assert "Saved checkpoint at step 6." in log and "cudart" not in log
  config = (model_dir / "config.gin").read_text()
  assert "TRAIN_STEPS = 6" in config and "train.train.train_steps = %TRAIN_STEPS" in config
  assert not (model_dir / job_utils.LOCK_FILE).exists()


def test_damaged_checkpoints_are_set_aside_and_the_run_resumes_exactly(clean_run, tmp_path):
  clean, _ = clean_run
  model_dir = tmp_path / "run"
  shutil.copytree(clean, model_dir)
  _truncate_a_data_file(str(model_dir / "checkpoints" / "6"))
  _empty_the_manifest(str(model_dir / "checkpoints" / "4"))
  log = run_fast_job("train", *RUN, f"--gin.MODEL_DIR={model_dir}").stderr
  for step in (6, 4):
    assert f"{model_dir / 'checkpoints' / str(step)} is damaged" in log
  assert "Resuming from the checkpoint at step 2." in log
  names = sorted(p.name for p in (model_dir / "checkpoints").iterdir())
  assert names[:3] == ["2", "4", "4.damaged-" + names[2].split("-", 1)[1]]
  assert names[3] == "6" and names[4].startswith("6.damaged-")
  np.testing.assert_array_equal(np.load(model_dir / "prompts" / "step_6.npy"),
                                np.load(clean / "prompts" / "step_6.npy"))


def test_a_second_train_job_on_a_model_dir_refuses_to_start(tmp_path):
  model_dir = tmp_path / "run"
  first = subprocess.Popen(job_command("train", *RUN, f"--gin.MODEL_DIR={model_dir}"),
                           env=job_env(1, FAST_COMPILE), cwd=REPO, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
  try:
    start = time.time()
    while not (model_dir / job_utils.LOCK_FILE).exists():
      assert first.poll() is None and time.time() - start < 300, "the first run did not start"
      time.sleep(0.05)
    first.send_signal(signal.SIGSTOP)  # alive, holding the lock, and leaving the CPU free
    second = run_fast_job("train", *RUN, f"--gin.MODEL_DIR={model_dir}", check=False)
  finally:
    first.kill()
    first.wait()
  assert second.returncode == 1 and "Traceback" not in second.stderr
  assert f"host {socket.gethostname()}, process {first.pid}" in second.stderr
  assert not (model_dir / "checkpoints" / "6").exists()


def _not_json_hf_dir(tmp_path):
  (tmp_path / "hf").mkdir()
  (tmp_path / "hf" / "config.json").write_text("{'d_model': 4}")  # Python, not JSON
  return tmp_path / "hf"


@pytest.mark.parametrize("flags, message", [
    (lambda t: [*RUN, f"--gin.MODEL_DIR={t / 'file'}"],
     "MODEL_DIR={t}/file is a file, not a directory"),
    (lambda t: ["--gin_file=models/hf_t5_prompt.gin", *RUN[1:],
                f"--gin.INITIAL_CHECKPOINT_PATH={_not_json_hf_dir(t)}",
                f"--gin.MODEL_DIR={t / 'run'}"],
     "Hugging Face config '{t}/hf/config.json' is not valid JSON"),
])
def test_bad_paths_get_one_clear_error_before_any_compute(tmp_path, flags, message):
  (tmp_path / "file").write_text("not a directory")
  proc = run_fast_job("train", *flags(tmp_path), check=False)
  assert proc.returncode == 1
  assert message.format(t=tmp_path) in proc.stderr and "Traceback" not in proc.stderr
  assert "Training" not in proc.stderr and not (tmp_path / "run").exists()
