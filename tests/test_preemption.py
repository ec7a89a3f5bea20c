"""SIGTERM (a preemption): the train job finishes its step, saves, exports the prompt and exits
143 saying how to resume; every process stops at the same step; the restart ends bit-identical
to a run that was never interrupted. Ctrl-C does the same (exit 130); a second one stops at
once, without saving."""

import json
import os
import re
import signal
import socket
import subprocess
import time

import jax
import numpy as np
import pytest

from prompt_tuning import job_utils, train
from subprocess_helpers import FAST_COMPILE, REPO, job_command, job_env, run_fast_job

FLAGS = ["--gin_file=models/t5_1_1_tiny_prompt.gin", "--gin_file=prompts/class_labels.gin",
         "--gin_file=runs/prompt_finetune.gin", "--gin_file=data/demo.gin",
         "--gin.INITIAL_CHECKPOINT_PATH=None", "--gin.PROMPT_LENGTH=6", "--gin.BATCH_SIZE=8",
         "--gin.EVAL_PERIOD=None", "--gin.CHECKPOINT_PERIOD=1000"]
# Steps to spare after the signal, which comes once step 10 is logged: two processes agree
# on the stopping step through JAX's preemption service, which notices within about a second.
STEPS = 150
STOPPED = re.compile(r"Stopped by SIGTERM after step (\d+) of (\d+)")

pytestmark = pytest.mark.usefixtures("shared_compilation_cache")


def _start(log, *flags, devices=1, cached=True):
  env = job_env(devices, FAST_COMPILE)
  if not cached:  # processes that load and compile unevenly can miss a collective's deadline
    env = {k: v for k, v in env.items() if not k.startswith("JAX_COMPILATION_CACHE")}
  return subprocess.Popen(job_command("train", *flags), env=env, cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=log.open("w"))


def _wait_for_line(log, text, procs, timeout=300):
  start = time.time()
  while text not in log.read_text():
    assert all(p.poll() is None for p in procs), log.read_text()[-3000:]
    assert time.time() - start < timeout, f"{text!r} did not appear"
    time.sleep(0.01)


def _stopped_step(log):
  match = STOPPED.search(log.read_text())
  assert match, log.read_text()[-3000:]
  return int(match.group(1))


def _prompt(model_dir, step):
  return np.load(model_dir / "prompts" / f"step_{step}.npy")


def test_sigterm_saves_the_step_in_progress_and_the_restart_is_bit_identical(tmp_path):
  common = [*FLAGS, f"--gin.TRAIN_STEPS={STEPS}"]
  run_fast_job("train", *common, f"--gin.MODEL_DIR={tmp_path / 'clean'}")
  model_dir, log = tmp_path / "stopped", tmp_path / "stopped.log"
  proc = _start(log, *common, f"--gin.MODEL_DIR={model_dir}")
  _wait_for_line(log, "step 10  loss", [proc])
  holder = json.loads((model_dir / job_utils.LOCK_FILE).read_text())
  proc.send_signal(signal.SIGTERM)
  assert holder["pid"] == proc.pid  # the live run holds its MODEL_DIR
  assert proc.wait(timeout=300) == job_utils.Preempted.EXIT_CODE, log.read_text()[-3000:]
  step = _stopped_step(log)
  assert 10 <= step < STEPS and "To resume, run the same command again." in log.read_text()
  assert "Traceback" not in log.read_text()
  assert [p.name for p in (model_dir / "checkpoints").iterdir()] == [str(step)]
  assert _prompt(model_dir, step).shape == (6, 4)
  assert not (model_dir / job_utils.LOCK_FILE).exists()

  resumed = run_fast_job("train", *common, f"--gin.MODEL_DIR={model_dir}").stderr
  assert f"Resuming from the checkpoint at step {step}." in resumed
  np.testing.assert_array_equal(_prompt(model_dir, STEPS), _prompt(tmp_path / "clean", STEPS))


def test_ctrl_c_saves_the_step_in_progress_and_says_how_to_resume(tmp_path):
  model_dir, log = tmp_path / "run", tmp_path / "run.log"
  proc = _start(log, *FLAGS, f"--gin.TRAIN_STEPS={STEPS}", f"--gin.MODEL_DIR={model_dir}")
  _wait_for_line(log, "step 10  loss", [proc])
  proc.send_signal(signal.SIGINT)
  assert proc.wait(timeout=300) == train.Interrupted.EXIT_CODE == 130, log.read_text()[-3000:]
  text = log.read_text()
  match = re.search(r"Stopped by Ctrl-C after step (\d+) of 150", text)
  assert match and "To resume, run the same command again." in text, text[-3000:]
  step = int(match.group(1))
  assert "press Ctrl-C again to stop at once" in text
  assert "Traceback" not in text and "KeyboardInterrupt" not in text
  assert [p.name for p in (model_dir / "checkpoints").iterdir()] == [str(step)]
  assert _prompt(model_dir, step).shape == (6, 4)
  assert not (model_dir / job_utils.LOCK_FILE).exists()


def test_a_second_ctrl_c_stops_at_once_without_saving(tmp_path):
  model_dir, log = tmp_path / "run", tmp_path / "run.log"
  proc = _start(log, *FLAGS, f"--gin.TRAIN_STEPS={STEPS}", f"--gin.MODEL_DIR={model_dir}")
  _wait_for_line(log, "the frozen model is RANDOM", [proc])  # seconds before the first step
  proc.send_signal(signal.SIGINT)
  _wait_for_line(log, "press Ctrl-C again", [proc])
  proc.send_signal(signal.SIGINT)
  assert proc.wait(timeout=300) == train.Interrupted.EXIT_CODE, log.read_text()[-3000:]
  text = log.read_text()
  assert text.rstrip().endswith("Stopped at once by a second Ctrl-C, without saving: the "
                                "steps since the last checkpoint are lost."), text[-3000:]
  assert "Traceback" not in text and "Saved checkpoint" not in text
  assert not (model_dir / "checkpoints").exists() or not any(
      p.name.isdigit() for p in (model_dir / "checkpoints").iterdir())


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _two_processes(model_dir, logs, *flags):
  """Starts a two-process run (gloo, 2 CPU devices each) logging to `logs`; its processes."""
  port = _free_port()
  return [_start(log, f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                 f"--process_id={i}", "--cpu_collectives=gloo", *flags,
                 f"--gin.MODEL_DIR={model_dir}", devices=2, cached=False)
          for i, log in enumerate(logs)]


def _finish(procs, logs):
  codes = [p.wait(timeout=600) for p in procs]
  return codes, "".join(log.read_text()[-3000:] for log in logs)


def test_sigterm_stops_two_processes_at_the_same_step_and_the_restart_is_bit_identical(
    tmp_path):
  common = [*FLAGS, f"--gin.TRAIN_STEPS={STEPS}"]
  clean, model_dir = tmp_path / "clean", tmp_path / "stopped"
  logs = {name: [tmp_path / f"{name}_{i}.log" for i in range(2)]
          for name in ("clean", "stopped", "resumed")}
  codes, text = _finish(_two_processes(clean, logs["clean"], *common), logs["clean"])
  assert codes == [0, 0], text

  procs = _two_processes(model_dir, logs["stopped"], *common)
  _wait_for_line(logs["stopped"][0], "step 10  loss", procs)
  procs[1].send_signal(signal.SIGTERM)  # one host's notice stops both
  codes, text = _finish(procs, logs["stopped"])
  assert codes == [job_utils.Preempted.EXIT_CODE] * 2, text
  steps = [_stopped_step(log) for log in logs["stopped"]]
  assert steps[0] == steps[1] and 10 <= steps[0] < STEPS, steps
  assert [p.name for p in (model_dir / "checkpoints").iterdir()] == [str(steps[0])]
  assert _prompt(model_dir, steps[0]).shape == (6, 4)

  codes, text = _finish(_two_processes(model_dir, logs["resumed"], *common), logs["resumed"])
  assert codes == [0, 0], text
  assert f"Resuming from the checkpoint at step {steps[0]}." in logs["resumed"][0].read_text()
  np.testing.assert_array_equal(_prompt(model_dir, STEPS), _prompt(clean, STEPS))



def test_ctrl_c_in_a_multi_process_run_is_passed_on_as_sigterm(monkeypatch):
  """Several processes: JAX's preemption service, which stops them all at one step, listens
  for SIGTERM (the two-process test above); Ctrl-C on one process becomes that SIGTERM."""
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  before = signal.getsignal(signal.SIGINT)  # Python's default, or what an earlier test left
  received = []
  service = lambda signum, frame: received.append(signum)  # stands in for JAX's handler
  previous = signal.signal(signal.SIGTERM, service)
  try:
    with train._StopRequest() as stop:
      assert signal.getsignal(signal.SIGTERM) is service  # the service's, not replaced
      os.kill(os.getpid(), signal.SIGINT)
      deadline = time.time() + 10
      while not received and time.time() < deadline:
        time.sleep(0.01)
      assert received == [signal.SIGTERM] and stop.cause == "Ctrl-C"
      assert type(stop.error("stopped")) is train.Interrupted
  finally:
    signal.signal(signal.SIGTERM, previous)
  assert signal.getsignal(signal.SIGINT) is before  # restored
