"""gs:// end to end, against a local Cloud Storage emulator (tests/gcs_emulator.py).

Every path a job reads or writes is put in a bucket: the T5X checkpoint, the JSONL files, the
vocabulary, MODEL_DIR (checkpoints, prompts, TensorBoard events, a resume after a kill), the
prompt file and INFER_OUTPUT_DIR. The module skips where the emulator cannot run (the
`gcp-storage-emulator` package or the openssl command missing).
"""

import io
import json
import pathlib
import re
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import gcs_emulator
from prompt_tuning.data import demo
from prompt_tuning.t5 import config as t5_config
from prompt_tuning.t5 import network
from subprocess_helpers import FAST_COMPILE, REPO, job_command, job_env, run_python

sys.path.insert(0, str(pathlib.Path(__file__).parent / "checkpoints"))
import checkpoint_helpers  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

BUCKET = "prompt-tuning-test"
TINY = t5_config.get_config("t5_1_1_tiny")


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
  """The running emulator and its empty bucket, one per test process (each xdist worker)."""
  directory = tmp_path_factory.mktemp("gcs_emulator")
  try:
    emulator = gcs_emulator.start(directory, BUCKET)
  except gcs_emulator.EmulatorUnavailable as e:
    pytest.skip(f"no Cloud Storage emulator: {e}")
  try:
    yield emulator
  finally:
    emulator.stop()

pytestmark = pytest.mark.usefixtures("shared_compilation_cache")


def _env(gcs):
  return {**job_env(xla_flags=FAST_COMPILE), **gcs.env}


def _run_job(gcs, job, *flags, check=True, timeout=600):
  """A job from the command line, its gs:// requests sent to the emulator."""
  proc = subprocess.run(job_command(job, *flags), capture_output=True, text=True,
                        timeout=timeout, env=_env(gcs), cwd=REPO)
  if check and proc.returncode:
    raise AssertionError(f"{job} failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
  return proc


def _t5x_checkpoint(tmp_path):
  """A random tiny T5X checkpoint written as T5X writes one to gs:// (zarr specs recording
  the 'gcs' kvstore of another bucket)."""
  params = jax.tree.map(np.asarray, network.init_params(TINY, jax.random.PRNGKey(3)))
  checkpoint_helpers.write_t5x(tmp_path / "checkpoint_3", params, gcs_written=True)
  return tmp_path / "checkpoint_3"


def test_a_t5x_checkpoint_reads_the_same_from_a_bucket(gcs, tmp_path):
  checkpoints = {"written": _t5x_checkpoint(tmp_path)}
  if checkpoint_helpers.T5X_TINY.is_dir():  # the real one, where ../shared/fixtures is
    checkpoints["t5x"] = checkpoint_helpers.T5X_TINY
  pairs = {name: (str(local), gcs.upload_tree(local, f"t5x_{name}/checkpoint_3"))
           for name, local in checkpoints.items()}
  out = run_python(f"""
      import numpy as np
      from prompt_tuning.checkpoints import base, loading
      from prompt_tuning.t5 import config
      tiny = config.get_config("t5_1_1_tiny")
      for name, (local, remote) in {pairs!r}.items():
        assert loading.detect_format(remote) == "t5x"
        a = base.flatten(loading.load_params(local, tiny))
        b = base.flatten(loading.load_params(remote, tiny))
        assert a.keys() == b.keys() and len(a) > 30, (name, sorted(a))
        for key in a:
          np.testing.assert_array_equal(a[key], b[key], err_msg=f"{{name}} {{key}}")
        print(name, len(a), "arrays equal")
      """, devices=1, env=gcs.env)
  for name in pairs:
    assert re.search(rf"^{name} \d+ arrays equal$", out, re.MULTILINE), out


def _data(gcs, tmp_path):
  """The demo's sentences as a JSONL task in the bucket (test lines without targets), and
  its vocabulary there too; returns the data flags."""
  for split in ("train", "validation", "test"):
    lines = open(demo.FILES[split]).read().splitlines()[:24]
    if split == "test":
      lines = [json.dumps({"inputs": json.loads(l)["inputs"]}) for l in lines]
    (tmp_path / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    gcs.upload(f"data/{split}.jsonl", (tmp_path / f"{split}.jsonl").read_bytes())
  gcs.upload("data/vocab.model", pathlib.Path(demo.vocabulary_path()).read_bytes())
  data = f"gs://{BUCKET}/data"
  return ["--gin_file=data/jsonl.gin", f"--gin.JSONL_TRAIN={data}/train.jsonl",
          f"--gin.JSONL_VALIDATION={data}/validation.jsonl",
          f"--gin.JSONL_TEST={data}/test.jsonl", "--gin.CLASS_LABELS=['positive', 'negative']",
          f"--gin.VOCABULARY_PATH={data}/vocab.model",
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 4}"]


def _wait_for(gcs, name, proc, log, timeout=300):
  """Waits until the object `name` is in the bucket, while `proc` (its stderr in `log`) runs."""
  deadline = time.time() + timeout
  while name not in gcs.names(name):
    if proc.poll() is not None or time.time() > deadline:
      what = f"ended ({proc.returncode})" if proc.poll() is not None else f"ran {timeout}s"
      raise AssertionError(f"the job {what} without writing {name}:\n"
                           f"{log.read_text()[-6000:]}")
    time.sleep(0.2)


def test_a_run_whose_model_dir_is_a_bucket(gcs, tmp_path):
  """Train (killed after its first checkpoint), resume, eval and infer, all on gs://."""
  checkpoint = gcs.upload_tree(_t5x_checkpoint(tmp_path), "t5x/checkpoint_3")
  data = _data(gcs, tmp_path)
  model_dir = f"gs://{BUCKET}/run"
  common = ["--gin_file=models/t5_1_1_tiny_prompt.gin", "--gin_file=prompts/class_labels.gin",
            f"--gin.INITIAL_CHECKPOINT_PATH={checkpoint}", "--gin.PROMPT_LENGTH=6",
            "--gin.BATCH_SIZE=8"]
  train = [*common, "--gin_file=runs/prompt_finetune.gin", *data, f"--gin.MODEL_DIR={model_dir}",
           "--gin.TRAIN_STEPS=12", "--gin.EVAL_PERIOD=None"]

  # A run that checkpoints every step, killed (SIGKILL) once its first checkpoint is out.
  log = tmp_path / "first_run.log"
  with open(log, "w") as stderr:
    first = subprocess.Popen(job_command("train", *train, "--gin.CHECKPOINT_PERIOD=1"),
                             stdout=subprocess.DEVNULL, stderr=stderr, text=True,
                             env=_env(gcs), cwd=REPO)
  try:
    _wait_for(gcs, "run/prompts/step_1.npy", first, log)
    assert first.poll() is None, "the first run ended before it could be killed"
  finally:
    first.kill()
    first.wait()

  # The same command resumes from the newest checkpoint in the bucket.
  resumed = _run_job(gcs, "train", *train, "--gin.CHECKPOINT_PERIOD=12")
  resumed_from = re.search(r"Resuming from the checkpoint at step (\d+)", resumed.stderr)
  assert resumed_from, resumed.stderr[-3000:]
  assert 1 <= int(resumed_from.group(1)) < 12
  names = gcs.names("run/")
  steps = {int(m.group(1)) for n in names if (m := re.match(r"run/checkpoints/(\d+)/", n))}
  assert {1, 12} <= steps
  assert {"run/prompts/step_1.npy", "run/prompts/step_12.npy", "run/run_config.json",
          "run/config.gin"} <= set(names)
  assert "run/train.lock" not in names
  assert len([n for n in names if n.startswith("run/train/events.out.tfevents")]) >= 2
  prompt = np.load(io.BytesIO(gcs.download("run/prompts/step_12.npy")))
  assert prompt.shape == (6, 4) and prompt.dtype == np.float32 and np.all(np.isfinite(prompt))
  # The bucket's folder of steps is a checkpoint too (INITIAL_CHECKPOINT_PATH of a later run).
  run_python(f"""
      import numpy as np
      from prompt_tuning.checkpoints import job, loading
      assert loading.detect_format("{model_dir}/checkpoints") == "orbax"
      leaves = job.read_trainable_leaves("{model_dir}/checkpoints")
      exported = np.frombuffer(bytes.fromhex("{prompt.tobytes().hex()}"), np.float32)
      np.testing.assert_array_equal(leaves["prompt/prompt"], exported.reshape(6, 4))
      """, devices=1, env=gcs.env)

  # Eval reads the newest checkpoint from the bucket and writes its metrics there.
  evaluated = _run_job(gcs, "eval", *common, "--gin_file=runs/prompt_eval.gin", *data,
                       f"--gin.MODEL_DIR={model_dir}", "--gin.USE_RANK_CLASSIFICATION=True")
  assert "jsonl/accuracy" in evaluated.stderr
  assert any(n.startswith("run/eval_validation/events.out.tfevents") for n in gcs.names("run/"))

  # Infer reads the prompt file from the bucket and writes its predictions there.
  _run_job(gcs, "infer", *common, "--gin_file=runs/prompt_infer.gin", *data,
           f"--gin.PROMPT_FILE={model_dir}/prompts/step_12.npy",
           f"--gin.INFER_OUTPUT_DIR=gs://{BUCKET}/infer", "--gin.INFER_MODE='rank'")
  lines = gcs.download("infer/jsonl.jsonl").decode().splitlines()
  inputs = [json.loads(l)["inputs"] for l in (tmp_path / "test.jsonl").open()]
  assert [json.loads(l)["inputs"] for l in lines] == inputs
  assert {json.loads(l)["prediction"] for l in lines} <= {"positive", "negative"}


def test_a_missing_checkpoint_in_a_bucket_ends_the_job_with_one_error_line(gcs, tmp_path):
  missing = f"gs://{BUCKET}/no/such/checkpoint_3"
  proc = _run_job(gcs, "train", "--gin_file=models/t5_1_1_tiny_prompt.gin",
                  "--gin_file=runs/prompt_finetune.gin", "--gin_file=data/demo.gin",
                  f"--gin.INITIAL_CHECKPOINT_PATH={missing}", f"--gin.MODEL_DIR={tmp_path}",
                  "--gin.PROMPT_LENGTH=6", "--gin.BATCH_SIZE=8", "--gin.TRAIN_STEPS=1",
                  check=False)
  assert proc.returncode != 0
  assert f"error: Checkpoint path '{missing}' does not exist" in proc.stderr, proc.stderr[-8000:]
  assert "Traceback" not in proc.stderr


# Each reader of a gs:// path, called under each of `roots`; prints {"root what": message} of
# the errors as JSON.
_READ_ALL = """
    import json
    from prompt_tuning.checkpoints import loading, prompts_io
    from prompt_tuning.data import jsonl
    from prompt_tuning.t5 import config
    tiny = config.get_config("t5_1_1_tiny")
    errors = {{}}
    for root in {roots!r}:
      for what, read in [
          ("checkpoint", lambda: loading.load_params(root + "/checkpoint_3", tiny)),
          ("prompt", lambda: prompts_io.load_prompt(root + "/prompt.npy")),
          ("jsonl", lambda: jsonl.check_file(root + "/train.jsonl", "train"))]:
        try:
          read()
        except (ValueError, FileNotFoundError) as e:  # a job's one `error:` line
          errors[root + " " + what] = str(e)
    print(json.dumps(errors))
    """


def _errors(gcs, roots, env=None):
  out = run_python(_READ_ALL.format(roots=roots), devices=1, env={**gcs.env, **(env or {})})
  return json.loads(out.splitlines()[-1])


def test_missing_bucket_paths_name_the_path(gcs):
  roots = [f"gs://{BUCKET}/no/such/dir", "gs://no-such-bucket-1234/dir"]
  errors = _errors(gcs, roots)
  for root in roots:
    assert "does not exist" in errors[f"{root} checkpoint"]
    assert f"{root}/checkpoint_3" in errors[f"{root} checkpoint"]
    assert f"PROMPT_FILE='{root}/prompt.npy' does not exist" in errors[f"{root} prompt"]
    assert f"JSONL_TRAIN='{root}/train.jsonl': no such file" in errors[f"{root} jsonl"]
  assert all("\n" not in message for message in errors.values()), errors


def test_an_unreachable_bucket_gives_one_clear_error(gcs):
  """Cloud Storage down (a closed port): each reader gives up after a few retries."""
  with socket.socket() as closed:  # bound, never listening: connections are refused
    closed.bind(("127.0.0.1", 0))
    nowhere = f"http://127.0.0.1:{closed.getsockname()[1]}"
    root = f"gs://{BUCKET}/dir"
    errors = _errors(gcs, [root], env={
        "TENSORSTORE_GCS_HTTP_URL": nowhere, "HTTPS_PROXY": nowhere, "https_proxy": nowhere,
        "GCS_RETRY_CONFIG_MAX_RETRIES": "1", "GCS_RETRY_CONFIG_INIT_DELAY_TIME_US": "1000"})
  assert f"Cannot read '{root}/checkpoint_3/checkpoint'" in errors[f"{root} checkpoint"]
  assert f"PROMPT_FILE='{root}/prompt.npy' cannot be read" in errors[f"{root} prompt"]
  assert f"JSONL_TRAIN='{root}/train.jsonl' cannot be read" in errors[f"{root} jsonl"]
  assert all("Could not connect" in message for message in errors.values()), errors
  assert all("\n" not in message for message in errors.values()), errors


def test_a_model_dir_in_a_missing_bucket_gives_one_clear_error(gcs):
  out = run_python("""
      import threading
      from prompt_tuning import job_utils
      result = []
      def check():
        try:
          job_utils.check_output_dir("MODEL_DIR", "gs://no-such-bucket-1234/run")
          result.append("no error")
        except ValueError as e:
          result.append(str(e))
      thread = threading.Thread(target=check, daemon=True)
      thread.start()
      thread.join(10)
      print(result[0] if result else "still running after 10 s", flush=True)
      import os
      os._exit(0)  # the thread may never return
      """, devices=1, env=gcs.env, timeout=120)
  assert "MODEL_DIR=gs://no-such-bucket-1234/run: the bucket gs://no-such-bucket-1234 does " \
      "not exist" in out, out
