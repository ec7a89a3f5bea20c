"""The train, eval and infer jobs on a decoder-only model (models/hf_decoder_prompt.gin) and a
JSONL task: prompt files, exact resume, rank-classification accuracy and infer's scores
against DecoderModel computed directly, 8 devices against 1, and bad input through the jobs.

The jobs run in this process through gin (`gin_utils.execute`, as the command line does),
on tiny random Hugging Face directories written here with a tokenizer trained in a second;
only the 8-device run needs a fresh interpreter.
"""

import functools
import json
import pathlib
import shutil
import sys

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
import tokenizers
from absl import flags
from tensorboard.backend.event_processing import event_accumulator

from prompt_tuning import decoder_model, gin_utils, optim
from prompt_tuning import eval as eval_lib
from prompt_tuning import infer as infer_lib
from prompt_tuning import train as train_lib
from prompt_tuning.causal_lm import config as decoder_config
from prompt_tuning.causal_lm import network
from prompt_tuning.checkpoints import hf_causal_lm
from prompt_tuning.data import decoder_features, hf_tokenizers
from subprocess_helpers import run_job

sys.path.insert(0, str(pathlib.Path(__file__).parent / "data"))
import decoder_tokenizers  # pylint: disable=g-import-not-at-top,wrong-import-position

P = 4  # PROMPT_LENGTH
LENGTHS = {"inputs": 24, "targets": 8}  # no line is cut, for either tokenizer
LABELS = ["positive", "negative"]
JOBS = {"train": train_lib, "eval": eval_lib, "infer": infer_lib}


def _model_dir(root: pathlib.Path, name: str, tokenizer, **config) -> str:
  """A random Hugging Face model directory `root/name` (config.json, model.safetensors) with
  the tokenizer files `tokenizer` writes; the model's vocabulary covers the tokenizer's."""
  tok = tokenizer(root / f"{name}_tokenizer")
  config = decoder_config.get_config(f"{name}_tiny", **config)
  params = network.init_params(config, jax.random.PRNGKey(0))
  hf_causal_lm.write_hf_causal_lm(params, config, root / name)
  for file in tok.iterdir():
    if file.name != "config.json":  # the tokenizer helpers' own ids; the model's is kept
      shutil.copy(file, root / name / file.name)
  return str(root / name)


def _jsonl(root: pathlib.Path) -> list[str]:
  """data/jsonl.gin flags of a small labelled task (train and validation alike)."""
  lines = [{"inputs": text, "targets": LABELS[i % 2]}
           for i, text in enumerate(decoder_tokenizers.TEXTS[:7])]
  path = root / "lines.jsonl"
  path.write_text("".join(json.dumps(line) + "\n" for line in lines))
  return ["--gin_file=data/jsonl.gin", f"--gin.JSONL_TRAIN='{path}'",
          f"--gin.JSONL_VALIDATION='{path}'", f"--gin.CLASS_LABELS={LABELS}",
          f"--gin.TASK_FEATURE_LENGTHS={LENGTHS}"]


def _run(job: str, *argv: str) -> str:
  """`python -m prompt_tuning.{job} ARGV` in this process: '' or the one error line."""
  gin.clear_config()
  flags.FLAGS.unparse_flags()
  flags.FLAGS(gin_utils.rewrite_gin_args([job, "--verbosity=0", *argv]))
  try:
    gin_utils.execute(JOBS[job].main)
  except SystemExit as e:
    return str(e.code)
  finally:
    gin.clear_config()
  return ""


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
  """(root, model directory, the flags of a 4-step train run, its MODEL_DIR, made once)."""
  root = tmp_path_factory.mktemp("decoder_jobs")
  directory = _model_dir(root, "llama", decoder_tokenizers.llama_like, vocab_size=128)
  common = ["--gin_file=models/hf_decoder_prompt.gin", "--gin_file=prompts/class_labels.gin",
            "--gin_file=runs/prompt_finetune.gin",
            *_jsonl(root), f"--gin.INITIAL_CHECKPOINT_PATH='{directory}'",
            f"--gin.PROMPT_LENGTH={P}", "--gin.BATCH_SIZE=8", "--gin.CHECKPOINT_PERIOD=2",
            "--gin.EVAL_PERIOD=None", "--gin.JSONL_TASK_NAME='decoder_jsonl'"]
  straight = root / "straight"
  assert _run("train", *common, "--gin.TRAIN_STEPS=4", f"--gin.MODEL_DIR='{straight}'") == ""
  return root, directory, common, straight


def _model(directory: str) -> decoder_model.PromptedDecoderModel:
  """The model hf_decoder_prompt.gin builds, made by hand."""
  ids = hf_tokenizers.decoder_vocabulary(directory).special_ids
  return decoder_model.PromptedDecoderModel(
      decoder_config.config_from_hf(directory), P, eos_id=ids.eos_id, bos_id=ids.bos_id,
      pad_id=ids.pad_id)


def _prompted_params(model, directory, prompt_file):
  return model.with_prompt_file(hf_causal_lm.load_params(directory), np.load(prompt_file),
                                "test")


def test_train_writes_prompt_files_and_binds_the_decoder(llama):
  _, directory, _, straight = llama
  config = decoder_config.config_from_hf(directory)
  assert sorted(p.name for p in (straight / "prompts").iterdir()) == ["step_2.npy",
                                                                        "step_4.npy"]
  prompt = np.load(straight / "prompts" / "step_4.npy")
  assert prompt.shape == (P, config.d_model) and prompt.dtype == np.float32
  assert not np.array_equal(prompt, np.load(straight / "prompts" / "step_2.npy"))
  bound = json.loads((straight / "run_config.json").read_text())
  assert bound["model_class"] == "PromptedDecoderModel"
  assert bound["model"]["family"] == "llama" and bound["model"]["d_model"] == config.d_model
  operative = (straight / "config.gin").read_text()  # prompts/class_labels.gin reached it
  assert "PROMPT_INITIALIZER = @prompts.class_labels()" in operative


def test_resume_equals_a_straight_run_and_another_model_is_refused(llama, tmp_path):
  root, _, common, straight = llama
  resumed = tmp_path / "resumed"
  assert _run("train", *common, "--gin.TRAIN_STEPS=2", f"--gin.MODEL_DIR='{resumed}'") == ""
  assert _run("train", *common, "--gin.TRAIN_STEPS=4", f"--gin.MODEL_DIR='{resumed}'") == ""
  for step in (2, 4):
    np.testing.assert_array_equal(np.load(resumed / "prompts" / f"step_{step}.npy"),
                                  np.load(straight / "prompts" / f"step_{step}.npy"))

  other = _model_dir(root, "gpt2", decoder_tokenizers.gpt2_like, vocab_size=300)
  error = _run("train", *common, "--gin.TRAIN_STEPS=6", f"--gin.MODEL_DIR='{resumed}'",
               f"--gin.INITIAL_CHECKPOINT_PATH='{other}'")
  assert error.startswith(f"error: MODEL_DIR={resumed} holds a different run (model: ")
  assert "'family': 'llama'" in error and "'family': 'gpt2'" in error


def _inputs_and_targets(directory: str, lines_file: pathlib.Path):
  """Each line's inputs and targets ids (targets with EOS), tokenized here."""
  vocabulary = hf_tokenizers.decoder_vocabulary(directory).vocabulary
  lines = [json.loads(line) for line in lines_file.read_text().splitlines()]
  return ([list(vocabulary.encode(l["inputs"])) for l in lines],
          [list(vocabulary.encode(l["targets"])) + [vocabulary.eos_id] for l in lines], lines)


def test_eval_rank_classification_equals_score_candidates_by_hand(llama):
  root, directory, _, straight = llama
  model = _model(directory)
  prompt_file = straight / "prompts" / "step_4.npy"
  metrics = eval_lib.evaluate(
      model=model, initial_checkpoint_path=directory, mixture_or_task_name="decoder_jsonl",
      task_feature_lengths=LENGTHS, batch_size=4, prompt_file=str(prompt_file),
      use_rank_classification=True, vocabulary_path=directory)

  params = _prompted_params(model, directory, prompt_file)
  inputs, _, lines = _inputs_and_targets(directory, root / "lines.jsonl")
  ids = hf_tokenizers.SpecialIds(model.bos_id, model.eos_id, model.pad_id)
  vocabulary = hf_tokenizers.decoder_vocabulary(directory).vocabulary
  labels = [list(vocabulary.encode(label)) + [model.eos_id] for label in LABELS]
  width = max(map(len, labels))
  candidates = {"tokens": np.array([c + [model.pad_id] * (width - len(c)) for c in labels]),
                "mask": np.array([[j < len(c) for j in range(width)] for c in labels])}
  score_candidates = jax.jit(model.score_candidates)
  hits = 0
  for x, line in zip(inputs, lines):  # one example at a time: no batching
    batch = decoder_features.to_prompt_batch([x], LENGTHS["inputs"], ids)
    scores = np.asarray(score_candidates(params, batch, candidates))[0]
    hits += LABELS[int(np.argmax(scores))] == line["targets"]
  assert metrics["decoder_jsonl/accuracy"] == pytest.approx(100 * hits / len(lines))


@pytest.mark.parametrize("case", ["llama", "gpt2"])
def test_infer_scores_equal_decoder_model_score(llama, tmp_path, case):
  """score = sum of ln p of the target tokens, EOS included (docs/decoder_data.md): infer's
  file against DecoderModel.score of each line alone. Llama (BOS, prompt after it) with the
  trained prompt; GPT-2 (no BOS, EOS id 0, prompt first) with a random prompt file."""
  root, directory, common, straight = llama
  prompt_file = straight / "prompts" / "step_4.npy"
  if case == "gpt2":
    directory = _model_dir(tmp_path, "gpt2", decoder_tokenizers.gpt2_like, vocab_size=300)
    prompt_file = tmp_path / "random.npy"
    d_model = decoder_config.config_from_hf(directory).d_model
    np.save(prompt_file, np.random.RandomState(0).normal(0, 0.5, (P, d_model)).astype("f4"))
  flags_ = [f if not f.startswith("--gin_file=runs/") else "--gin_file=runs/prompt_score.gin"
            for f in common]
  assert _run("infer", *flags_, f"--gin.INITIAL_CHECKPOINT_PATH='{directory}'",
              f"--gin.PROMPT_FILE='{prompt_file}'", f"--gin.INFER_OUTPUT_DIR='{tmp_path}/out'",
              "--gin.INFER_SPLIT='validation'") == ""
  written = [json.loads(l) for l in (tmp_path / "out" / "decoder_jsonl.jsonl").open()]
  if case == "llama":  # the same prompt served from a prompt table (PROMPTS) scores alike
    assert _run("infer", *flags_, f"--gin.INITIAL_CHECKPOINT_PATH='{directory}'",
                f"--gin.PROMPTS={{'decoder_jsonl': '{prompt_file}'}}",
                f"--gin.INFER_OUTPUT_DIR='{tmp_path}/table'",
                "--gin.INFER_SPLIT='validation'") == ""
    table = [json.loads(l) for l in (tmp_path / "table" / "decoder_jsonl.jsonl").open()]
    np.testing.assert_allclose([t["score"] for t in table], [w["score"] for w in written],
                               rtol=0, atol=1e-5)

  model = _model(directory)
  params = _prompted_params(model, directory, prompt_file)
  inputs, targets, lines = _inputs_and_targets(directory, root / "lines.jsonl")
  ids = hf_tokenizers.SpecialIds(model.bos_id, model.eos_id, model.pad_id)
  score = jax.jit(model.score)
  expected = [float(score(params, decoder_features.to_model_batch([x], [y], LENGTHS, ids))[0])
              for x, y in zip(inputs, targets)]
  assert [w["inputs"] for w in written] == [l["inputs"] for l in lines]
  np.testing.assert_allclose([w["score"] for w in written], expected, rtol=0, atol=2e-5)


def test_infer_predictions_equal_decoder_model_predict(llama, tmp_path):
  root, directory, _, straight = llama
  model = _model(directory)
  prompt_file = straight / "prompts" / "step_4.npy"
  infer_lib.infer(model=model, initial_checkpoint_path=directory,
                  mixture_or_task_name="decoder_jsonl", task_feature_lengths=LENGTHS,
                  batch_size=4, output_dir=str(tmp_path), split="validation",
                  prompt_file=str(prompt_file), vocabulary_path=directory)
  written = [json.loads(l)["prediction"] for l in (tmp_path / "decoder_jsonl.jsonl").open()]

  params = _prompted_params(model, directory, prompt_file)
  inputs, _, _ = _inputs_and_targets(directory, root / "lines.jsonl")
  ids = hf_tokenizers.SpecialIds(model.bos_id, model.eos_id, model.pad_id)
  vocabulary = hf_tokenizers.decoder_vocabulary(directory).vocabulary
  predict = jax.jit(functools.partial(model.predict, max_new_tokens=LENGTHS["targets"]))
  expected = []
  for x in inputs:
    tokens = predict(params, decoder_features.to_prompt_batch([x], LENGTHS["inputs"], ids))
    expected.append(vocabulary.decode(np.asarray(tokens)[0].tolist()))
  assert written == expected


def _last_loss(model_dir: pathlib.Path) -> float:
  """The last 'loss' the run wrote to its TensorBoard events."""
  events = event_accumulator.EventAccumulator(str(model_dir / "train"),
                                              size_guidance={"tensors": 0})
  events.Reload()
  return float(tf.make_ndarray(events.Tensors("loss")[-1].tensor_proto))


def test_eight_devices_equal_one(llama, tmp_path):
  """The straight run again on 8 CPU devices, data- and model-parallel (4 x 2): the same
  prompt at every checkpoint and the same loss at the last step."""
  _, _, common, straight = llama
  proc = run_job("train", *common, "--gin.TRAIN_STEPS=4", f"--gin.MODEL_DIR='{tmp_path}'",
                 "--gin.NUM_PARTITIONS=2", devices=8)
  assert "step 4  loss" in proc.stderr
  for step in (2, 4):
    np.testing.assert_allclose(np.load(tmp_path / "prompts" / f"step_{step}.npy"),
                               np.load(straight / "prompts" / f"step_{step}.npy"),
                               rtol=0, atol=1e-5)
  assert _last_loss(tmp_path) == pytest.approx(_last_loss(straight), abs=1e-5)



def _spy_on_compile(monkeypatch) -> list:
  """(model, dtypes of the frozen leaves) of every train step the jobs compile from now on:
  what gin built and what the job placed."""
  seen, compile_step = [], train_lib.compile_step
  def spy(model, optimizer, state, frozen, *args):
    seen.append((model, {x.dtype for x in jax.tree.leaves(frozen)}))
    return compile_step(model, optimizer, state, frozen, *args)
  monkeypatch.setattr(train_lib, "compile_step", spy)
  return seen


def test_remat_trains_the_same_prompt(llama, tmp_path, monkeypatch):
  """--gin.REMAT=True reaches the decoder (each layer recomputed in the backward pass) and,
  in float32, trains the straight run's prompts and loss (REMAT=False)."""
  _, _, common, straight = llama
  seen = _spy_on_compile(monkeypatch)
  assert _run("train", *common, "--gin.TRAIN_STEPS=4", f"--gin.MODEL_DIR='{tmp_path}'",
              "--gin.REMAT=True") == ""
  [(model, dtypes)] = seen
  assert model.config.remat and model.config.dtype == jnp.float32
  assert dtypes == {jnp.dtype(jnp.float32)}
  for step in (2, 4):
    np.testing.assert_allclose(np.load(tmp_path / "prompts" / f"step_{step}.npy"),
                               np.load(straight / "prompts" / f"step_{step}.npy"),
                               rtol=0, atol=1e-5)
  assert _last_loss(tmp_path) == pytest.approx(_last_loss(straight), abs=1e-5)


def test_frozen_dtype_bfloat16_trains_on_bfloat16_weights(llama, tmp_path, monkeypatch):
  """--gin.FROZEN_DTYPE='bfloat16': the job holds every checkpoint weight in bfloat16 and
  trains a float32 prompt; the loss stays within bfloat16's rounding of the float32 run's."""
  _, _, common, straight = llama
  seen = _spy_on_compile(monkeypatch)
  assert _run("train", *common, "--gin.TRAIN_STEPS=4", f"--gin.MODEL_DIR='{tmp_path}'",
              "--gin.FROZEN_DTYPE='bfloat16'") == ""
  [(model, dtypes)] = seen
  assert model.frozen_dtype == jnp.bfloat16 and not model.config.remat
  assert dtypes == {jnp.dtype(jnp.bfloat16)}
  prompt = np.load(tmp_path / "prompts" / "step_4.npy")
  assert prompt.dtype == np.float32
  assert not np.array_equal(prompt, np.load(straight / "prompts" / "step_4.npy"))  # rounded
  assert _last_loss(tmp_path) == pytest.approx(_last_loss(straight), rel=1e-2)


# ---- bad input through the jobs -------------------------------------------------------------

def _unsupported(root: pathlib.Path, directory: str) -> str:
  bad = root / "mistral"
  shutil.copytree(directory, bad)
  config = json.loads((bad / "config.json").read_text())
  (bad / "config.json").write_text(json.dumps({**config, "model_type": "mistral",
                                               "architectures": ["MistralForCausalLM"]}))
  return str(bad)


def _no_tokenizer(root: pathlib.Path, directory: str) -> str:
  bare = root / "bare"
  shutil.copytree(directory, bare)
  for name in ("tokenizer.json", "tokenizer_config.json"):
    (bare / name).unlink()
  return str(bare)


@pytest.mark.parametrize("job, make, extra, message", [
    ("train", _unsupported, [], "model_type 'mistral' is not a supported decoder-only family; "
     "supported: llama, qwen2, gemma, gpt2"),
    ("train", _no_tokenizer, [], "has no tokenizer: looked for tokenizer.json and "
     "tokenizer.model"),
    ("train", None, ["--gin.VOCABULARY_PATH=None"], "VOCABULARY_PATH=None"),
    ("eval", None, ["--gin.PROMPT_FILE='{t5}'"], "(4, 6) but the model needs (4, 32)"),
    ("eval", None, ["--gin.PROMPT_FILE='{deep}'"], "a deep prompt [layers, PROMPT_LENGTH, "
     "d_model] (methods/deep.gin, T5 models only)"),
    ("infer", None, ["--gin.PROMPTS={{'decoder_jsonl': '{t5}'}}"], "but the model needs "
     "[length >= 1, 32]"),
])
def test_bad_input_gets_one_clear_error(llama, tmp_path, job, make, extra, message):
  _, directory, common, _ = llama
  if make is not None:
    directory = make(tmp_path, directory)
  np.save(tmp_path / "t5.npy", np.zeros((P, 6), np.float32))  # a tiny T5's width
  np.save(tmp_path / "deep.npy", np.zeros((2, P, 32), np.float32))
  files = {"t5": tmp_path / "t5.npy", "deep": tmp_path / "deep.npy"}
  run = {"train": "runs/prompt_finetune.gin", "eval": "runs/prompt_eval.gin",
         "infer": "runs/prompt_score.gin"}[job]
  argv = [f if not f.startswith("--gin_file=runs/") else f"--gin_file={run}" for f in common]
  outputs = {"train": [f"--gin.MODEL_DIR='{tmp_path}/run'"], "eval": [],
             "infer": [f"--gin.INFER_OUTPUT_DIR='{tmp_path}/out'",
                       "--gin.INFER_SPLIT='validation'"]}[job]
  error = _run(job, *argv, f"--gin.INITIAL_CHECKPOINT_PATH='{directory}'", *outputs,
               *[e.format(**files) for e in extra])
  assert error.startswith("error: ") and message in error, error
  assert "Traceback" not in error
  assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()


def test_a_task_tokenized_for_another_model_is_refused(llama, tmp_path):
  """demo_sentiment keeps its T5 vocabulary (no BOS, EOS 1) when VOCABULARY_PATH is None."""
  _, directory, _, _ = llama
  with pytest.raises(ValueError, match=r"^Task 'demo_sentiment' is tokenized with BOS None and "
                     r"EOS 1, but the model's are 1 and 2; tokenize it with the model's own "):
    train_lib.train(model=_model(directory), model_dir=str(tmp_path / "run"),
                    initial_checkpoint_path=directory, mixture_or_task_name="demo_sentiment",
                    task_feature_lengths=LENGTHS, train_steps=1, batch_size=8,
                    optimizer=optim.adafactor(), checkpoint_period=1)
  assert not (tmp_path / "run").exists()


def test_default_initializer_samples_the_tokenizers_ordinary_tokens(llama):
  """hf_decoder_prompt.gin's default (sampled vocab) draws rows of the model's own ordinary
  tokens: never the BOS, EOS or pad rows, nor rows past the tokenizer's vocabulary (100 of
  the ~117 ordinary ids; the T5 rule, ids 3..127 of the 128-row table, would reach them)."""
  _, directory, _, _ = llama
  gin.clear_config()
  try:
    gin_utils.parse(["models/hf_decoder_prompt.gin"],
                    [f"INITIAL_CHECKPOINT_PATH='{directory}'", "PROMPT_LENGTH=100"])
    model = gin.get_configurable(decoder_model.PromptedDecoderModel)()
  finally:
    gin.clear_config()
  frozen = hf_causal_lm.load_params(directory)
  table = np.asarray(frozen["token_embedder"]["embedding"])
  prompt = np.asarray(model.init_params(jax.random.PRNGKey(0), frozen)["prompt"]["prompt"])
  rows = [int(np.flatnonzero((table == row).all(axis=1))[0]) for row in prompt]
  vocabulary = hf_tokenizers.decoder_vocabulary(directory)
  special = {vocabulary.special_ids.bos_id, vocabulary.special_ids.eos_id,
             vocabulary.special_ids.pad_id}
  assert len(set(rows)) == 100 and not special & set(rows)
  size = tokenizers.Tokenizer.from_file(f"{directory}/tokenizer.json").get_vocab_size()
  assert max(rows) < size < table.shape[0]  # the T5 rule would reach rows past the tokenizer
