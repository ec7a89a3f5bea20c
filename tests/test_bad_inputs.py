"""Bad input, one row each: what a new user gets wrong, and what the library must answer.

Every row runs one command as a user would (a job, `peft_adapter`, a launcher, an API call)
in a sandbox folder that is also the working directory, and asserts three things: the exit
status, one error line that names the value (and, where a hint would not fit, not that
hint), and that nothing in the sandbox changed but the files the row allows (a bad input
must never cost the user a file, nor leave a stray folder behind).

The jobs run in this process (`gin_utils.execute`, as the command line does): most rows are
refused before any compute, in milliseconds. One finished 3-step run, made once from the
command line, is copied by the rows that need a run directory.

To add a row: append a `Case` to CASES (its id says what the user did). `args(t)` is the
argv after the command (t: the sandbox); `setup(t)` makes the inputs; `message` must appear
in the error line ('{t}' stands for the sandbox); `writes` lists what may change.
"""

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import shutil
import subprocess
from typing import Any, Callable

import gin
import numpy as np
import pytest
from absl import flags

from prompt_tuning import api, gin_utils, peft_adapter, pretrained
from prompt_tuning import eval as eval_lib
from prompt_tuning import infer as infer_lib
from prompt_tuning import inspect as inspect_lib
from prompt_tuning import train as train_lib
from prompt_tuning.checkpoints import huggingface
from prompt_tuning.checkpoints import peft as peft_io
from prompt_tuning.data import demo
from subprocess_helpers import REPO, run_fast_job

pytestmark = pytest.mark.usefixtures("shared_compilation_cache")

JOBS = {"train": train_lib, "eval": eval_lib, "infer": infer_lib, "inspect": inspect_lib}
TINY = ["--gin_file=models/t5_1_1_tiny_prompt.gin", "--gin_file=prompts/class_labels.gin",
        "--gin.INITIAL_CHECKPOINT_PATH=None", "--gin.PROMPT_LENGTH=6", "--gin.BATCH_SIZE=8"]
DEMO = ["--gin_file=data/demo.gin"]
TRAIN = [*TINY, "--gin_file=runs/prompt_finetune.gin", *DEMO, "--gin.EVAL_PERIOD=None",
         "--gin.TRAIN_STEPS=3", "--gin.CHECKPOINT_PERIOD=3"]
EVAL = [*TINY, "--gin_file=runs/prompt_eval.gin", *DEMO]
INFER = [*TINY, "--gin_file=runs/prompt_score.gin", *DEMO, "--gin.INFER_SPLIT=validation"]
EVAL_JSONL = [TINY[0], *TINY[2:], "--gin_file=runs/prompt_eval.gin", "--gin_file=data/jsonl.gin",
              f"--gin.VOCABULARY_PATH={demo.vocabulary_path()}",
              "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 4}", "--gin.PROMPT_FILE=p.npy"]
JSONL = [*TINY, "--gin_file=runs/prompt_finetune.gin", "--gin_file=data/jsonl.gin",
         "--gin.CLASS_LABELS=['positive', 'negative']", "--gin.MODEL_DIR=run"]
MINI = str(pretrained.mini_checkpoint_path())
GOOD_LINE = '{"inputs": "a fine film", "targets": "positive"}\n'


@dataclasses.dataclass(frozen=True)
class Case:
  """One bad input. `command`: a job name (train, eval, infer, inspect), 'peft_adapter', a
  launcher ('launch/gpu.sh'), or 'api' (then `call(t)` is run and a ValueError expected)."""
  id: str
  command: str
  message: str
  args: Callable[[pathlib.Path], list[str]] = lambda t: []
  setup: Callable[[pathlib.Path], Any] | None = None
  exit_code: int = 1
  writes: tuple[str, ...] = ()  # paths under the sandbox the command may change
  absent: tuple[str, ...] = ()  # wrong hints the message must not give
  call: Callable[[pathlib.Path], Any] | None = None
  run_dir: bool = False  # the sandbox starts with `run`, a copy of a finished 3-step run


# ---- inputs the rows make -------------------------------------------------------------------

def _file(path: str, text: str | bytes) -> Callable[[pathlib.Path], None]:
  def make(t):
    (t / path).parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
      (t / path).write_bytes(text)
    else:
      (t / path).write_text(text)
  return make


def _prompt(path: str, shape: tuple[int, ...], value: float = 0.5):
  def make(t):
    (t / path).parent.mkdir(parents=True, exist_ok=True)
    np.save(t / path, np.full(shape, value, np.float32))
  return make


def _dir(path: str):
  return lambda t: (t / path).mkdir(parents=True)


def _all(*makers):
  def make(t):
    for maker in makers:
      maker(t)
  return make


def _lora_adapter(t):
  """Another method's adapter, as PEFT saves it, with the user's README."""
  (t / "adapter").mkdir()
  (t / "adapter" / peft_io.CONFIG_FILE).write_text(json.dumps(
      {"peft_type": "LORA", "task_type": "SEQ_2_SEQ_LM", "r": 8}))
  huggingface.write_safetensors(str(t / "adapter" / peft_io.WEIGHTS_FILE),
                                {"lora_A": np.ones((8, 256), np.float32)})
  (t / "adapter" / "README.md").write_text("My LoRA adapter, trained for a week.")


def _prompt_adapter(t):
  _prompt("p.npy", (4, 256))(t)
  peft_io.export_adapter(str(t / "p.npy"), MINI, str(t / "adapter"))


def _api_batch(**kwargs):
  return lambda t: api.make_batch(**kwargs)


def _cut_checkpoint(t):
  """The finished run's only checkpoint with its index file cut in half (a disk that filled)."""
  data = max((t / "run" / "checkpoints" / "3" / "trainable" / "d").iterdir(),
             key=lambda p: p.stat().st_size)
  data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])


def _hf_dir_cut_at(size: int):
  """The mini T5's Hugging Face folder with model.safetensors cut after `size` bytes."""
  def make(t):
    (t / "hf").mkdir()
    for name in (huggingface.CONFIG_FILE, "spiece.model"):
      shutil.copyfile(os.path.join(MINI, name), t / "hf" / name)
    with open(os.path.join(MINI, huggingface.WEIGHTS_FILE), "rb") as f:
      (t / "hf" / huggingface.WEIGHTS_FILE).write_bytes(f.read(size))
  return make


def _jsonl_without_targets(name: str):
  """The demo's first 8 validation sentences, without their "targets"."""
  def make(t):
    lines = [json.loads(line) for line in open(demo.FILES["validation"]).readlines()[:8]]
    (t / name).write_text("".join(json.dumps({"inputs": l["inputs"]}) + "\n" for l in lines))
  return make


# ---- the rows -------------------------------------------------------------------------------

CASES = [
    # -- gin values and macros
    Case("train-without-MODEL_DIR", "train", "MODEL_DIR is required and not set; pass "
         "--gin.MODEL_DIR=", args=lambda t: TRAIN),
    Case("infer-without-INFER_OUTPUT_DIR", "infer", "INFER_OUTPUT_DIR is required and not set",
         args=lambda t: [*TINY, "--gin_file=runs/prompt_infer.gin", *DEMO]),
    Case("class_labels-init-without-CLASS_LABELS", "train", "CLASS_LABELS is required and not "
         "set", args=lambda t: [*TINY, "--gin_file=runs/prompt_finetune.gin",
                                "--gin.MIXTURE_OR_TASK_NAME=demo_sentiment",
                                "--gin.MODEL_DIR=run"]),
    Case("from_text-without-PROMPT_TEXT", "train", "PROMPT_TEXT is required and not set",
         args=lambda t: [TINY[0], "--gin_file=prompts/from_text.gin", *TRAIN[2:],
                         "--gin.MODEL_DIR=run"]),
    Case("MODEL_DIR-empty", "train", "MODEL_DIR='' is empty",
         args=lambda t: [*TRAIN, "--gin.MODEL_DIR="]),
    Case("MODEL_DIR-relative-is-made-absolute-before-any-check", "train",
         "Checkpoint path '{t}/no_such_ckpt' does not exist",
         args=lambda t: [*TRAIN, "--gin.MODEL_DIR=rel_run",
                         "--gin.INITIAL_CHECKPOINT_PATH=no_such_ckpt"]),
    Case("macro-typo", "train", "--gin.TRAIN_STEPZ sets a macro that no gin file uses; did you "
         "mean TRAIN_STEPS?", args=lambda t: [*TRAIN, "--gin.TRAIN_STEPZ=3",
                                              "--gin.MODEL_DIR=run"]),
    Case("task-typo", "train", "demo_sentiment", args=lambda t: [
        *TRAIN, "--gin.MIXTURE_OR_TASK_NAME=demo_sentimnt", "--gin.MODEL_DIR=run"]),
    Case("TRAIN_STEPS-zero", "train", "TRAIN_STEPS=0 must be a positive integer",
         args=lambda t: [*TRAIN, "--gin.TRAIN_STEPS=0", "--gin.MODEL_DIR=run"]),
    Case("PROMPT_LENGTH-zero", "train", "PROMPT_LENGTH=0 is not a positive integer",
         args=lambda t: [*TRAIN, "--gin.PROMPT_LENGTH=0", "--gin.MODEL_DIR=run"]),
    Case("a-data-folder-in-the-working-directory", "train", "TRAIN_STEPS=0 must be a positive "
         "integer", setup=_dir("data"), absent=("Gin configuration error",),
         args=lambda t: [*TRAIN, "--gin.TRAIN_STEPS=0", "--gin.MODEL_DIR=run"]),
    Case("gin-file-missing", "train", "--gin_file=runs/no_such_run.gin was not found",
         args=lambda t: [*TRAIN, "--gin_file=runs/no_such_run.gin", "--gin.MODEL_DIR=run"]),
    Case("no-gin-file", "train", "No --gin_file given; start from e.g. --gin_file=models/",
         args=lambda t: ["--gin.MODEL_DIR=run"]),
    Case("no-checkpoint-for-a-big-model", "train", "INITIAL_CHECKPOINT_PATH=None (a random "
         "frozen model) is only for the tiny config", args=lambda t: [
             "--gin_file=models/t5_1_1_small_prompt.gin", *TRAIN[1:], "--gin.MODEL_DIR=run"]),
    Case("hf-model-with-INITIAL_CHECKPOINT_PATH-None", "train", "INITIAL_CHECKPOINT_PATH=None, "
         "but models/hf_t5*.gin read the architecture from its config.json", args=lambda t: [
             "--gin_file=models/hf_t5_prompt.gin", *TRAIN[1:], "--gin.MODEL_DIR=run"]),
    # -- paths
    Case("checkpoint-missing-creates-no-MODEL_DIR", "train",
         "Checkpoint path '{t}/no/such/ckpt' does not exist", args=lambda t: [
             *TRAIN, f"--gin.INITIAL_CHECKPOINT_PATH={t}/no/such/ckpt", "--gin.MODEL_DIR=run"]),
    Case("checkpoint-not-a-checkpoint", "train", "'{t}/notes' is not a checkpoint directory "
         "this library reads", setup=_file("notes/todo.txt", "x"), args=lambda t: [
             *TRAIN, "--gin.INITIAL_CHECKPOINT_PATH=notes", "--gin.MODEL_DIR=run"]),
    Case("MODEL_DIR-is-a-file", "train", "MODEL_DIR={t}/file is a file, not a directory",
         setup=_file("file", "mine"), args=lambda t: [*TRAIN, "--gin.MODEL_DIR=file"]),
    Case("MODEL_DIR-under-a-file", "train", "MODEL_DIR={t}/file/run cannot be created: {t}/file "
         "is a file", setup=_file("file", "mine"),
         args=lambda t: [*TRAIN, "--gin.MODEL_DIR=file/run"]),
    Case("eval-MODEL_DIR-missing-is-not-created", "eval", "MODEL_DIR={t}/typo does not exist",
         args=lambda t: [*EVAL, "--gin.MODEL_DIR=typo"]),
    Case("INFER_OUTPUT_DIR-is-a-file", "infer", "INFER_OUTPUT_DIR={t}/out is a file",
         setup=_file("out", "mine"), args=lambda t: [*INFER, "--gin.PROMPT_FILE=p.npy",
                                                      "--gin.INFER_OUTPUT_DIR=out"]),
    Case("infer-twice-into-one-INFER_OUTPUT_DIR", "infer",
         "{t}/out/demo_sentiment.jsonl already exists; pass --gin.INFER_OVERWRITE=True",
         setup=_all(_prompt("p.npy", (6, 4)), _file("out/demo_sentiment.jsonl", "earlier\n")),
         args=lambda t: [*INFER, "--gin.PROMPT_FILE=p.npy", "--gin.INFER_OUTPUT_DIR=out"]),
    # -- data lines
    Case("jsonl-unclosed-object", "train", "{t}/train.jsonl, line 2: not valid JSON (Expecting "
         "',' delimiter; the line ends before the JSON is complete)",
         setup=_file("train.jsonl", GOOD_LINE + GOOD_LINE[:-2] + "\n"), absent=("column 1",),
         args=lambda t: [*JSONL, "--gin.JSONL_TRAIN=train.jsonl"]),
    Case("jsonl-target-not-a-label", "train", "{t}/train.jsonl, line 1: target 'great' is not "
         "one of CLASS_LABELS", setup=_file("train.jsonl", GOOD_LINE.replace("positive",
                                                                            "great")),
         args=lambda t: [*JSONL, "--gin.JSONL_TRAIN=train.jsonl"]),
    Case("jsonl-path-is-a-directory", "train", "JSONL_TRAIN='{t}/data': a directory; give the "
         "path of a JSONL file", setup=_dir("data"), absent=("no such file",),
         args=lambda t: [*JSONL, "--gin.JSONL_TRAIN=data"]),
    Case("jsonl-missing", "train", "JSONL_TRAIN='{t}/trian.jsonl': no such file",
         args=lambda t: [*JSONL, "--gin.JSONL_TRAIN=trian.jsonl"]),
    Case("jsonl-empty", "train", "JSONL_TRAIN='{t}/train.jsonl' has no examples",
         setup=_file("train.jsonl", "\n"), args=lambda t: [*JSONL, "--gin.JSONL_TRAIN=train.jsonl"]),
    Case("jsonl-not-utf8", "train", "{t}/train.jsonl, line 1: not UTF-8 text",
         setup=_file("train.jsonl", b'{"inputs": "caf\xe9", "targets": "positive"}\n'),
         args=lambda t: [*JSONL, "--gin.JSONL_TRAIN=train.jsonl"]),
    # -- prompt files
    Case("PROMPT_FILE-missing", "eval", "PROMPT_FILE='{t}/step_100.npy' does not exist",
         args=lambda t: [*EVAL, "--gin.PROMPT_FILE=step_100.npy"]),
    Case("PROMPT_FILE-is-a-directory", "eval", "PROMPT_FILE='{t}/prompts' is a directory",
         setup=_dir("prompts"), absent=("credentials",),
         args=lambda t: [*EVAL, "--gin.PROMPT_FILE=prompts"]),
    Case("PROMPT_FILE-of-another-width", "eval", "has shape (6, 8) but the model needs (6, 4) "
         "[PROMPT_LENGTH, d_model]; use the model it was trained for (width 8",
         setup=_prompt("p.npy", (6, 8)), absent=("set PROMPT_LENGTH",),
         args=lambda t: [*EVAL, "--gin.PROMPT_FILE=p.npy"]),
    Case("PROMPT_FILE-of-another-length", "eval", "has shape (8, 4) but the model needs (6, 4) "
         "[PROMPT_LENGTH, d_model]; set PROMPT_LENGTH=8, the file's",
         setup=_prompt("p.npy", (8, 4)), absent=("use the model",),
         args=lambda t: [*EVAL, "--gin.PROMPT_FILE=p.npy"]),
    Case("PROMPT_FILE-not-npy", "eval", "PROMPT_FILE='{t}/p.npy' is not a readable .npy array",
         setup=_file("p.npy", "0.1 0.2"), args=lambda t: [*EVAL, "--gin.PROMPT_FILE=p.npy"]),
    Case("PROMPT_FILE-with-nan", "eval", "has 24 non-finite values",
         setup=_prompt("p.npy", (6, 4), np.nan),
         args=lambda t: [*EVAL, "--gin.PROMPT_FILE=p.npy"]),
    # -- serving several prompts
    Case("PROMPTS-entry-missing", "eval", "PROMPTS['demo_sentiment']='{t}/a.npy' does not exist",
         absent=("PROMPT_FILE",),
         args=lambda t: [*EVAL, "--gin.PROMPTS={'demo_sentiment': 'a.npy'}"]),
    Case("PROMPTS-and-PROMPT_FILE", "infer", "PROMPT_FILE is set together with PROMPTS",
         setup=_prompt("p.npy", (6, 4)), args=lambda t: [
             *INFER, "--gin.PROMPT_FILE=p.npy", "--gin.PROMPTS={'demo_sentiment': 'p.npy'}",
             "--gin.INFER_OUTPUT_DIR=out"]),
    Case("PROMPT_ENSEMBLE-member-missing", "eval", "PROMPT_ENSEMBLE[1]='{t}/b.npy' does not "
         "exist", setup=_prompt("a.npy", (6, 4)),
         args=lambda t: [*EVAL, "--gin.PROMPT_ENSEMBLE=['a.npy', 'b.npy']"]),
    # -- what eval scores
    Case("eval-rank-classification-without-CLASS_LABELS", "eval", "USE_RANK_CLASSIFICATION=True "
         "scores each class label, but 'jsonl' has no class labels",
         setup=_all(_prompt("p.npy", (6, 4)), _file("valid.jsonl", GOOD_LINE)),
         args=lambda t: [*EVAL_JSONL, "--gin.JSONL_VALIDATION=valid.jsonl",
                         "--gin.USE_RANK_CLASSIFICATION=True"]),
    Case("eval-of-a-split-without-targets", "eval", "None of the 8 examples of the 'test' split "
         "of jsonl has a target, so there is nothing to score",
         setup=_all(_prompt("p.npy", (6, 4)), _jsonl_without_targets("test.jsonl")),
         args=lambda t: [*EVAL_JSONL, "--gin.JSONL_TEST=test.jsonl", "--gin.EVAL_SPLIT=test"]),
    Case("INFER_MODE-unknown", "infer", "mode='rnak' is not one of",
         args=lambda t: [*INFER, "--gin.INFER_MODE=rnak", "--gin.INFER_OUTPUT_DIR=out"]),
    # -- run directories and checkpoints
    Case("resume-with-TRAIN_STEPS-below-the-checkpoint-changes-nothing", "train",
         "Nothing to do: MODEL_DIR={t}/run holds the checkpoint of step 3 and TRAIN_STEPS=2",
         exit_code=0, run_dir=True,
         args=lambda t: [*TRAIN, "--gin.TRAIN_STEPS=2", "--gin.MODEL_DIR=run"]),
    Case("MODEL_DIR-of-another-run", "train", "prompt_length: 6 there, 7 now", run_dir=True,
         args=lambda t: [*TRAIN, "--gin.PROMPT_LENGTH=7", "--gin.MODEL_DIR=run"]),
    Case("eval-MODEL_DIR-with-another-PROMPT_LENGTH", "eval", "prompt/prompt has shape [6, 4] "
         "in {t}/run/checkpoints/3 but this job's model has [7, 4]; set PROMPT_LENGTH=6",
         run_dir=True, args=lambda t: [*EVAL, "--gin.PROMPT_LENGTH=7",
                                              "--gin.MODEL_DIR=run"]),
    Case("eval-of-a-damaged-checkpoint-names-it-and-sets-nothing-aside", "eval",
         "The checkpoint {t}/run/checkpoints/3 is damaged: ", run_dir=True,
         setup=_cut_checkpoint, absent=("TensorStore",),
         args=lambda t: [*EVAL, "--gin.MODEL_DIR=run"]),
    Case("hf-weights-file-cut-short", "train", "Hugging Face weights file "
         "'{t}/hf/model.safetensors' is incomplete or damaged: tensor 'shared.weight' ends at "
         "byte", setup=_hf_dir_cut_at(1_000_000), absent=("reshape",), args=lambda t: [
             "--gin_file=models/hf_t5_prompt.gin", *TRAIN[1:],
             "--gin.INITIAL_CHECKPOINT_PATH=hf", "--gin.MODEL_DIR=run"]),
    Case("MODEL_DIR-locked-by-a-run-on-another-host", "train", "is in use by another train job "
         "(host tpu-vm-7, process 4242", run_dir=True,
         setup=_file("run/train.lock", json.dumps({"host": "tpu-vm-7", "pid": 4242})),
         args=lambda t: [*TRAIN, "--gin.TRAIN_STEPS=6", "--gin.MODEL_DIR=run"]),
    # -- inspect
    Case("inspect-without-gin-file", "inspect", "--gin_file=models/t5_1_1_mini_prompt.gin (the "
         "model the prompt was trained on)", setup=_prompt("p.npy", (4, 256)),
         absent=("runs/", "PROMPT_LENGTH"), args=lambda t: ["--prompt_file=p.npy"]),
    Case("inspect-prompt-not-2d", "inspect", "has shape (6,); a prompt is a 2-D array",
         setup=_prompt("p.npy", (6,)), absent=("PROMPT_LENGTH",), args=lambda t: [
             "--prompt_file=p.npy", "--gin_file=models/t5_1_1_mini_prompt.gin"]),
    Case("inspect-prompt-is-a-directory", "inspect", "--prompt_file='prompts' is a directory",
         setup=_dir("prompts"), args=lambda t: [
             "--prompt_file=prompts", "--gin_file=models/t5_1_1_mini_prompt.gin"]),
    Case("inspect-k-zero", "inspect", "k=0 must be an integer from 1",
         setup=_prompt("p.npy", (4, 256)), args=lambda t: [
             "--prompt_file=p.npy", "--gin_file=models/t5_1_1_mini_prompt.gin", "--k=0"]),
    # -- PEFT adapters
    Case("peft-export-over-another-methods-adapter", "peft_adapter", "Adapter directory "
         "'adapter' already holds adapter_config.json and adapter_model.safetensors; pass "
         "--overwrite", setup=_all(_lora_adapter, _prompt("p.npy", (4, 256))),
         args=lambda t: ["export", "--prompt_file=p.npy", f"--base_model={MINI}",
                         "--output_dir=adapter"]),
    Case("peft-export-into-a-folder-of-notes", "peft_adapter", "Adapter directory "
         "'notes' exists and is not a PEFT adapter (it holds todo.txt)",
         setup=_all(_file("notes/todo.txt", "mine"), _prompt("p.npy", (4, 256))),
         args=lambda t: ["export", "--prompt_file=p.npy", f"--base_model={MINI}",
                         "--output_dir=notes"]),
    Case("peft-export-overwrite-replaces-only-the-adapter-files", "peft_adapter",
         "Wrote the PEFT adapter adapter (prompt 4 x 256)", exit_code=0,
         setup=_all(_lora_adapter, _prompt("p.npy", (4, 256))),
         writes=("adapter/adapter_config.json", "adapter/adapter_model.safetensors"),
         args=lambda t: ["export", "--prompt_file=p.npy", f"--base_model={MINI}",
                         "--output_dir=adapter", "--overwrite"]),
    Case("peft-export-prompt-is-a-directory", "peft_adapter", "--prompt_file='prompts' is "
         "a directory", setup=_dir("prompts"), args=lambda t: [
             "export", "--prompt_file=prompts", f"--base_model={MINI}", "--output_dir=out"]),
    Case("peft-export-width-mismatch", "peft_adapter", "has width 4 but base model",
         setup=_prompt("p.npy", (6, 4)), args=lambda t: [
             "export", "--prompt_file=p.npy", f"--base_model={MINI}", "--output_dir=out"]),
    Case("peft-import-over-an-existing-prompt", "peft_adapter", "Prompt file 'mine.npy' already "
         "exists; pass --overwrite to replace it",
         setup=_all(_prompt_adapter, _prompt("mine.npy", (3, 256), 7.0)),
         args=lambda t: ["import", "--adapter_dir=adapter", "--output=mine.npy"]),
    Case("peft-import-of-a-lora-adapter", "peft_adapter", "has peft_type 'LORA'; only "
         "PROMPT_TUNING", setup=_lora_adapter,
         args=lambda t: ["import", "--adapter_dir=adapter", "--output=p.npy"]),
    Case("peft-import-without-adapter", "peft_adapter", "Adapter directory 'nowhere' does not "
         "exist", args=lambda t: ["import", "--adapter_dir=nowhere", "--output=p.npy"]),
    # -- launchers
    *[Case(f"launcher-{script}-option-as-value", f"launch/{script}", "--model-dir needs a "
           "value, not the option '--dry-run'; see --help", exit_code=2,
           args=lambda t, extra=extra: [*extra, "--model-dir", "--dry-run"])
      for script, extra in [("local_cpu.sh", []), ("local_multiprocess_cpu.sh", []),
                            ("gpu.sh", ["--task", "rte", "--checkpoint", "/ckpt",
                                        "--class-labels", "['a']"])]],
    Case("launcher-unknown-option", "launch/local_cpu.sh", "unknown option '--modeldir'", exit_code=2,
         args=lambda t: ["--modeldir", "run"]),
    Case("launcher-missing-option", "launch/tpu_vm_pod.sh", "missing --tpu", exit_code=2,
         args=lambda t: ["--dry-run", "--zone", "z"]),
    # -- the Python API
    Case("api-inputs-and-targets-differ-in-number", "api", "2 inputs but 1 targets",
         call=_api_batch(inputs=[[5], [6]], targets=[[7]])),
    Case("api-text-without-vocabulary", "api", "Text 'hello' needs a vocabulary",
         call=_api_batch(inputs=["hello"])),
    Case("api-prompt-id-outside-the-table", "api", "prompt_ids [3] are not in the prompt "
         "table [0, 2)", call=_api_batch(inputs=[[5]], prompt_ids=[3], num_prompts=2)),
    Case("api-one-string-for-a-list", "api", "inputs is one string ('a fine film'); give a list",
         call=_api_batch(inputs="a fine film")),
    Case("api-no-inputs", "api", "inputs is empty", call=_api_batch(inputs=[])),
    Case("api-score-with-no-targets", "api", "targets=None is not a list",
         call=lambda t: api.log_likelihood(None, {}, [[5]], None)),
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """A finished 3-step run of the tiny model (checkpoint and prompt at step 3), made once
  from the command line; rows with `run_dir` copy it."""
  model_dir = tmp_path_factory.mktemp("finished") / "run"
  run_fast_job("train", *TRAIN, f"--gin.MODEL_DIR={model_dir}")
  return model_dir


@pytest.fixture(scope="module", autouse=True)
def _leave_gin_and_flags_clean():
  yield
  gin.clear_config()
  flags.FLAGS.unparse_flags()


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
  """Every command a launcher could start, as a stub that records its call."""
  root = tmp_path_factory.mktemp("stubs")
  (root / "calls").mkdir()
  for name in ["python3", "gcloud", "srun", "git", "tar"]:
    (root / name).write_text(f'#!/bin/sh\necho "$0 $*" >> "{root}/calls/log"\nexit 3\n')
    (root / name).chmod(0o755)
  return root


# ---- running a row --------------------------------------------------------------------------

def _run_job(job: str, argv: list[str]) -> tuple[int, str]:
  """(exit status, error text) of `python -m prompt_tuning.{job} ARGV`, in this process."""
  if job == "inspect" and "prompt_file" not in flags.FLAGS:
    inspect_lib.define_flags()
  gin.clear_config()
  flags.FLAGS.unparse_flags()
  flags.FLAGS(gin_utils.rewrite_gin_args([job, "--verbosity=0", *argv]))  # INFO, as app.run
  example = {"inspect": inspect_lib.EXAMPLE_GIN_FILES}.get(job, gin_utils.JOB_EXAMPLE)
  try:
    gin_utils.execute(JOBS[job].main, example)
  except SystemExit as e:
    return (1, e.code) if isinstance(e.code, str) else (e.code or 0, "")
  finally:
    gin.clear_config()
  return 0, ""


def _run(case: Case, t: pathlib.Path, stubs: pathlib.Path, capsys) -> tuple[int, str, str]:
  """(exit status, error text, what else it said: log and output)."""
  if case.call is not None:
    try:
      case.call(t)
    except ValueError as e:
      return 1, str(e), ""
    return 0, "", ""
  if case.command.startswith("launch/"):
    env = {**os.environ, "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(REPO / case.command), *case.args(t)], cwd=t, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert not (stubs / "calls" / "log").exists(), "the launcher started a command"
    return proc.returncode, proc.stderr.strip(), proc.stdout
  if case.command == "peft_adapter":
    try:
      peft_adapter.main(["peft_adapter", *case.args(t)])
    except SystemExit as e:
      return 1, str(e.code), capsys.readouterr().out
    return 0, "", capsys.readouterr().out
  code, error = _run_job(case.command, case.args(t))
  return code, error, ""


def _snapshot(root: pathlib.Path) -> dict[str, tuple]:
  """{path under root: (kind, size, mtime, digest)} of every file and folder."""
  found = {}
  for folder, dirs, files in os.walk(root):
    for name in dirs:
      found[os.path.relpath(os.path.join(folder, name), root)] = ("dir",)
    for name in files:
      path = os.path.join(folder, name)
      stat = os.stat(path)
      with open(path, "rb") as f:
        digest = hashlib.sha1(f.read()).hexdigest()
      found[os.path.relpath(path, root)] = ("file", stat.st_size, stat.st_mtime_ns, digest)
  return found


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case, tmp_path, monkeypatch, caplog, capsys, stubs, request):
  t = tmp_path / "sandbox"
  t.mkdir()
  monkeypatch.chdir(t)  # relative paths are the user's: they resolve here
  if case.run_dir:
    shutil.copytree(request.getfixturevalue("finished_run"), t / "run")
  if case.setup is not None:
    case.setup(t)
  before = _snapshot(t)
  caplog.set_level(logging.INFO, logger="absl")  # the jobs' own lines
  code, error, said = _run(case, t, stubs, capsys)
  message = case.message.replace("{t}", str(t))
  assert code == case.exit_code, error
  if case.exit_code:
    line, *rest = error.splitlines()
    assert message in line
    assert rest in ([], ["(--verbosity=1 shows the traceback)"]), error  # one line, a hint
    for wrong in ("Traceback", "In call to configurable", "<object object", *case.absent):
      assert wrong not in line, wrong
  else:
    assert message in caplog.text + said
  after = _snapshot(t)
  changed = {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}
  assert changed <= set(case.writes), sorted(changed)


def test_every_case_has_its_own_id():
  ids = [case.id for case in CASES]
  assert len(ids) == len(set(ids))


# ---- what the rows cannot show cheaply ------------------------------------------------------

def test_relative_path_macros_become_absolute_when_parsed(tmp_path, monkeypatch):
  """A relative MODEL_DIR used to train until the first checkpoint, then fail in orbax."""
  monkeypatch.chdir(tmp_path)
  gin.clear_config()
  try:
    gin_utils.parse([f.split("=", 1)[1] for f in EVAL if f.startswith("--gin_file=")],
                    ["MODEL_DIR = 'rel_run'", "PROMPT_FILE = '~/p.npy'",
                     "PROMPTS = {'a': 'x/a.npy', 'b': 'gs://bucket/b.npy'}"])
    assert gin.query_parameter("%MODEL_DIR") == str(tmp_path / "rel_run")
    assert gin.query_parameter("%PROMPT_FILE") == os.path.expanduser("~/p.npy")
    assert gin.query_parameter("%PROMPTS") == {"a": str(tmp_path / "x" / "a.npy"),
                                               "b": "gs://bucket/b.npy"}
  finally:
    gin.clear_config()


def test_infer_outputs_replace_only_when_asked(tmp_path):
  path = str(tmp_path / "task.jsonl")
  infer_lib.write_jsonl(path, [{"prediction": "a"}])
  with pytest.raises(infer_lib.OutputExistsError, match="task.jsonl appeared while this job"):
    infer_lib.write_jsonl(path, [{"prediction": "b"}])
  assert (tmp_path / "task.jsonl").read_text() == '{"prediction": "a"}\n'
  infer_lib.write_jsonl(path, [{"prediction": "b"}], overwrite=True)
  assert (tmp_path / "task.jsonl").read_text() == '{"prediction": "b"}\n'
  assert sorted(p.name for p in tmp_path.iterdir()) == ["task.jsonl"]  # no temporary left
