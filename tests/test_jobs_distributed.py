"""The train job across devices, processes and crashes: the prompt must not depend on them."""

import os
import signal
import socket
import subprocess
import time

import numpy as np
import pytest

from subprocess_helpers import FAST_COMPILE, REPO, job_command, job_env, run_fast_job

FLAGS = ["--gin_file=models/t5_1_1_tiny_prompt.gin", "--gin_file=prompts/class_labels.gin",
         "--gin_file=runs/prompt_finetune.gin", "--gin_file=data/demo.gin",
         "--gin.INITIAL_CHECKPOINT_PATH=None", "--gin.PROMPT_LENGTH=6", "--gin.BATCH_SIZE=8",
         "--gin.EVAL_PERIOD=None"]


def _prompt(model_dir, step):
  return np.load(os.path.join(model_dir, "prompts", f"step_{step}.npy"))


@pytest.mark.usefixtures("shared_compilation_cache")
def test_eight_devices_with_four_way_model_parallelism_match_one_device(tmp_path):
  # The two runs compare with each other only (FAST_COMPILE).
  steps = ["--gin.TRAIN_STEPS=5", "--gin.CHECKPOINT_PERIOD=2"]  # prompts at steps 2, 4, 5
  run_fast_job("train", *FLAGS, *steps, f"--gin.MODEL_DIR={tmp_path / 'one'}", devices=1)
  run_fast_job("train", *FLAGS, *steps, f"--gin.MODEL_DIR={tmp_path / 'eight'}",
               "--gin.NUM_PARTITIONS=4", devices=8)
  # Steps 3 to 5 moved the prompt, so the match below is not that of an untrained prompt.
  assert not np.allclose(_prompt(tmp_path / "one", 5), _prompt(tmp_path / "one", 2))
  for step in (2, 5):
    np.testing.assert_allclose(_prompt(tmp_path / "eight", step),
                               _prompt(tmp_path / "one", step), atol=1e-5, rtol=0,
                               err_msg=f"step {step}")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path):
  # No shuffling: each process then reads every other example (seqio ShardInfo), so a global
  # batch holds the same examples as the one-process batch, in another row order.
  common = [*FLAGS, "--gin.TRAIN_STEPS=4", "--gin.CHECKPOINT_PERIOD=4",
            "--gin.train.train.shuffle=False", "--gin.DROPOUT_RATE=0.0"]
  run_fast_job("train", *common, f"--gin.MODEL_DIR={tmp_path / 'one'}", devices=8)
  port = _free_port()
  # Uncached: processes that load and compile unevenly can miss a collective's deadline.
  env = {k: v for k, v in job_env(4, FAST_COMPILE).items()
         if not k.startswith("JAX_COMPILATION_CACHE")}
  procs = [subprocess.Popen(
      job_command("train", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                  f"--process_id={i}", "--cpu_collectives=gloo", *common,
                  f"--gin.MODEL_DIR={tmp_path / 'two'}"),
      env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  errors = [p.communicate(timeout=600)[1] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], errors[0][-3000:] + errors[1][-3000:]
  np.testing.assert_allclose(_prompt(tmp_path / "two", 4), _prompt(tmp_path / "one", 4),
                             atol=1e-5, rtol=0)


@pytest.mark.usefixtures("shared_compilation_cache")
def test_sigkill_at_several_points_then_restart_is_bit_identical(tmp_path):
  # The five launches compare with each other only (so they may share programs and
  # compile with less optimization).
  common = [*FLAGS, "--gin.TRAIN_STEPS=12", "--gin.CHECKPOINT_PERIOD=2"]
  run_fast_job("train", *common, f"--gin.MODEL_DIR={tmp_path / 'clean'}")
  crashed = tmp_path / "crashed"
  command = job_command("train", *common, f"--gin.MODEL_DIR={crashed}")
  # Kill when a given checkpoint step appears (+ a delay, to land mid-step or mid-save).
  for step, delay in [(2, 0.0), (6, 0.05), (8, 0.3)]:
    proc = subprocess.Popen(command, env=job_env(xla_flags=FAST_COMPILE), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(crashed / "checkpoints" / str(step), proc)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  run_fast_job("train", *common, f"--gin.MODEL_DIR={crashed}")
  for step in range(2, 13, 2):
    np.testing.assert_array_equal(_prompt(crashed, step), _prompt(tmp_path / "clean", step))


def _wait_for(path, proc, timeout=300):
  start = time.time()
  while not path.exists():
    assert proc.poll() is None, f"the job ended before {path} appeared"
    assert time.time() - start < timeout, f"{path} did not appear"
    time.sleep(0.01)
