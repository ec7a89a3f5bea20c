"""The mini decoder's recipe (prompt_tuning/pretrained/make_mini_decoder.py) at toy scale: the
causal_lm objective's rows against the corpus tokenized by hand, pretraining through the train
job and its exact resume, the exported directory in transformers and under
runs/cpu_demo_decoder.gin, and that demo's message while the real model is not made yet.

Everything runs in this process (the train job through gin, as the command line does) on a
one-layer model of width 32 with the mini T5's real vocabulary and a corpus written here.
"""

import json
import os
import pathlib
import random

import gin
import numpy as np
import pytest
import sentencepiece
from absl import flags

from prompt_tuning import gin_utils, pretrained
from prompt_tuning import train as train_lib
from prompt_tuning.causal_lm import config as decoder_config
from prompt_tuning.causal_lm import network
from prompt_tuning.checkpoints import hf_causal_lm, job
from prompt_tuning.data import decoder_features, errors, pretraining
from prompt_tuning.pretrained import make_mini_decoder

TINY = ["num_layers=1", "d_model=32", "num_heads=2", "num_kv_heads=2", "head_dim=16",
        "mlp_dim=64"]
WORDS = ("dog cat animal plant food tree a the of small large member genus family herb "
         "shrub edible fruit person who lives city river water flower").split()
RECIPE = dict(batch_size=4, chunk_length=16, checkpoint_period=2, overrides=TINY)


def _run_train(args) -> None:
  """`python -m prompt_tuning.train ARGS` in this process; fails on its error line."""
  gin.clear_config()
  flags.FLAGS.unparse_flags()
  flags.FLAGS(gin_utils.rewrite_gin_args(["train", "--verbosity=0", *args]))
  try:
    gin_utils.execute(train_lib.main)
  except SystemExit as e:
    pytest.fail(f"train job failed: {e.code}")
  finally:
    gin.clear_config()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> pathlib.Path:
  """A work dir with a 200-line corpus and the decoder form of the mini T5's vocabulary."""
  root = tmp_path_factory.mktemp("mini_decoder")
  rng = random.Random(0)
  lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(200)]
  (root / "corpus.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
  make_mini_decoder.make_tokenizer(str(root), pretrained.MINI_VOCABULARY_PATH)
  return root


@pytest.fixture(scope="module")
def recipe(work):
  """The recipe's pretraining (2 steps, then resumed to 4), report and export; and 4
  straight steps in another directory."""
  corpus, tokenizer = str(work / "corpus.txt"), str(work / "tokenizer")
  resumed, straight = str(work / "pretrain"), str(work / "straight")
  for steps in (2, 4):
    make_mini_decoder.pretrain(resumed, make_mini_decoder.pretrain_args(
        resumed, corpus, tokenizer, steps=steps, **RECIPE), run=_run_train)
  make_mini_decoder.pretrain(straight, make_mini_decoder.pretrain_args(
      straight, corpus, tokenizer, steps=4, **RECIPE), run=_run_train)
  summary = make_mini_decoder.report(resumed, str(work), str(work / "loss.png"),
                                     batch_size=4, chunk_length=16)
  out = work / "llama_mini"
  make_mini_decoder.export(resumed, tokenizer, str(out), summary, corpus_lines=200)
  return {"resumed": resumed, "straight": straight, "out": out, "summary": summary}


def test_causal_lm_rows_are_the_corpus_stream(work):
  """Rows hold the texts' ids, each text followed by EOS, cut into chunks in order; every
  token but a row's first is a target; no inputs."""
  name = pretraining.text_task("causal_lm", text_files=[str(work / "corpus.txt")],
                               vocabulary_path=str(work / "tokenizer"), chunk_length=16)
  lengths = pretraining.feature_lengths("causal_lm", chunk_length=16)
  assert lengths == {"inputs": 1, "targets": 16}
  batch = next(decoder_features.get_batches(name, "train", lengths, 5, shuffle=False,
                                            seed=None, num_epochs=1))
  spm = sentencepiece.SentencePieceProcessor(model_file=pretrained.MINI_VOCABULARY_PATH)
  stream = [i for line in (work / "corpus.txt").read_text().splitlines()
            for i in spm.encode(line) + [1]]
  np.testing.assert_array_equal(batch["tokens"][:, :16], np.reshape(stream[:80], (5, 16)))
  assert batch["mask"][:, :16].all() and not batch["mask"][:, 16].any()  # the BOS slot: pad
  assert batch["target_mask"][:, :16].all()  # the first is never a loss term (no context)
  np.testing.assert_array_equal(batch["inputs_length"], 0)
  with pytest.raises(errors.DataError, match="PRETRAIN_CHUNK_LENGTH=1 must be an int >= 2"):
    pretraining.feature_lengths("causal_lm", chunk_length=1)


def test_pretraining_resumes_exactly_and_exports(recipe):
  resumed = job.read_trainable_leaves(os.path.join(recipe["resumed"], "checkpoints"))
  straight = job.read_trainable_leaves(os.path.join(recipe["straight"], "checkpoints"))
  assert sorted(resumed) == sorted(straight) and len(resumed) > 10  # every weight trained
  for key, value in resumed.items():
    np.testing.assert_array_equal(value, straight[key], err_msg=key)
  summary = recipe["summary"]
  assert summary["steps"] == 4 and summary["tokens_seen"] == 4 * 4 * 16
  assert summary["parameters"] == network.num_params(
      decoder_config.get_config("llama_mini", num_layers=1, d_model=32, num_heads=2,
                                num_kv_heads=2, head_dim=16, mlp_dim=64))
  out = recipe["out"]
  assert sorted(os.listdir(out)) == ["LICENSE", "README.md", "config.json",
                                     "generation_config.json", "model.safetensors",
                                     "tokenizer.model", "tokenizer_config.json"]
  hf = json.loads((out / "config.json").read_text())
  assert hf["model_type"] == "llama" and hf["eos_token_id"] == 1 and hf["pad_token_id"] == 0
  assert hf["bos_token_id"] is None
  assert (out / "tokenizer.model").read_bytes() == pathlib.Path(
      pretrained.MINI_VOCABULARY_PATH).read_bytes()
  card = (out / "README.md").read_text()
  assert "On the mini decoder" in card and f"{summary['last_logged'][1]:.2f}" in card


def test_transformers_loads_it_with_our_logits(recipe):
  _check_in_transformers(str(recipe["out"]))


@pytest.mark.skipif(not os.path.isdir(pretrained.MINI_DECODER_DIR),
                    reason="the shipped mini decoder is not made (make_mini_decoder)")
def test_the_shipped_mini_decoder_in_transformers():
  """prompt_tuning/pretrained/llama_mini, the full run's export."""
  _check_in_transformers(pretrained.MINI_DECODER_DIR)
  assert network.num_params(decoder_config.config_from_hf(pretrained.MINI_DECODER_DIR)) == (
      network.num_params(decoder_config.get_config("llama_mini")))


def _check_in_transformers(out: str) -> None:
  """The directory loads in transformers (bfloat16 weights) with our logits, and its
  tokenizer splits text as SentencePiece does."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  assert {str(a.dtype) for a in load_file(os.path.join(out, "model.safetensors")).values()} == {
      "bfloat16"}
  tokens = np.array([[5, 17, 300, 8000, 1, 42, 8191], [3, 1, 0, 9, 2, 4, 6]])
  theirs = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
  with torch.no_grad():
    expected = theirs(torch.tensor(tokens)).logits.numpy()
  config = decoder_config.config_from_hf(out)
  ours = network.DecoderOnly(config).apply({"params": hf_causal_lm.load_params(out)}, tokens,
                                           method="token_logits")
  np.testing.assert_allclose(np.asarray(ours), expected, atol=1e-4, rtol=0)
  # transformers' tokenizer of the directory splits text as SentencePiece does
  tokenizer = transformers.AutoTokenizer.from_pretrained(out)
  spm = sentencepiece.SentencePieceProcessor(model_file=os.path.join(out, "tokenizer.model"))
  for text in ("dog, domestic dog: a member of the genus Canis", "an edible fruit;  Ünï 3.5"):
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == spm.encode(text)


def test_demo_gin_prompt_tunes_the_exported_model(recipe, tmp_path):
  _run_train(["--gin_file=runs/cpu_demo_decoder.gin",
              f"--gin.INITIAL_CHECKPOINT_PATH='{recipe['out']}'",
              f"--gin.MODEL_DIR='{tmp_path}'", "--gin.TRAIN_STEPS=2", "--gin.BATCH_SIZE=2",
              "--gin.CHECKPOINT_PERIOD=2", "--gin.EVAL_PERIOD=None",
              "--gin.train.train.eval_before_training=False"])
  prompt = np.load(tmp_path / "prompts" / "step_2.npy")
  assert prompt.shape == (20, 32) and np.isfinite(prompt).all()
  run_config = json.loads((tmp_path / "run_config.json").read_text())
  assert run_config["model"]["family"] == "llama"


def test_demo_gin_names_the_recipe_until_the_model_exists(tmp_path, monkeypatch):
  monkeypatch.setattr(pretrained, "MINI_DECODER_DIR", str(tmp_path / "llama_mini"))
  gin.clear_config()
  flags.FLAGS.unparse_flags()
  flags.FLAGS(gin_utils.rewrite_gin_args([
      "train", "--verbosity=0", "--gin_file=runs/cpu_demo_decoder.gin",
      f"--gin.MODEL_DIR='{tmp_path / 'run'}'"]))
  try:
    with pytest.raises(SystemExit) as error:
      gin_utils.execute(train_lib.main)
  finally:
    gin.clear_config()
  message = str(error.value.code)
  first, *rest = message.splitlines()  # one error line, then the job's traceback hint
  assert "does not exist yet" in first and "make_mini_decoder" in first
  assert all("verbosity" in line for line in rest)
  assert not (tmp_path / "run").exists()
