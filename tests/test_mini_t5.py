"""The shipped mini T5: its files, its vocabulary, transformers parity, and that prompt tuning
it on wordnet_topic works (a regression anywhere from data to optimizer fails this)."""

import json
import os

import jax
import numpy as np
import pytest

from prompt_tuning import api, job_utils, optim, partitioning, pretrained, prompts, train
from prompt_tuning import eval as eval_lib
from prompt_tuning import model as model_lib
from prompt_tuning.checkpoints import prompts_io
from prompt_tuning.data import features, registry, vocabularies, wordnet
from prompt_tuning.t5 import config as t5_config

# Measured on a 2-core CPU with this test's seed: the mean log-likelihood of the validation
# targets (label + EOS) rose from -12.24 to -2.75 in 100 steps, and rank classification
# scored 34.3% (majority class and chance: 16.7%). The bounds leave wide margins.
MIN_LOG_LIKELIHOOD_GAIN = 5.0
MIN_ACCURACY = 25.0


def test_files_vocabulary_and_size():
  files = sorted(os.listdir(pretrained.MINI_DIR))
  assert files == ["LICENSE", "config.json", "model.safetensors", "spiece.model"]
  assert sum(os.path.getsize(os.path.join(pretrained.MINI_DIR, f)) for f in files) < 30e6
  vocab = vocabularies.get_vocabulary(api.MINI_VOCABULARY)
  assert vocab.vocab_size == 8192 and vocab.pad_id == 0 and vocab.eos_id == 1
  assert vocab.unk_id == 2
  assert vocab.tokenizer.id_to_piece(2) == "<unk>"
  assert vocab.decode([8191]) == "<extra_id_0>" and vocab.decode([8092]) == "<extra_id_99>"
  labels = [label for labels in wordnet.TASK_LABELS.values() for label in labels or ()]
  assert {"animal", "plant", "noun", "adverb", "true", "false", "one", "many"} <= set(labels)
  for label in labels:
    assert len(vocab.encode(label)) == 1, label  # class labels are single pieces


def test_load_frozen_without_a_path():
  model, params = api.load_frozen()
  assert model.config == t5_config.get_config("t5_1_1_mini")
  leaves = jax.tree.leaves(params)
  assert all(x.dtype == np.float32 for x in leaves)
  assert sum(x.size for x in leaves) == 10_491_648


def test_matches_transformers():
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  model, params = api.load_frozen()
  inputs, targets = ["dog: a member of the genus Canis"], ["that barks"]
  ours = api.logits(model, params, inputs, targets, api.MINI_VOCABULARY)
  hf = transformers.T5ForConditionalGeneration.from_pretrained(
      pretrained.MINI_DIR, dtype=torch.float32).eval()
  batch = api.make_batch(inputs, targets, api.MINI_VOCABULARY)
  with torch.no_grad():
    theirs = hf(input_ids=torch.tensor(batch["encoder_input_tokens"]),
                decoder_input_ids=torch.tensor(batch["decoder_input_tokens"])).logits.numpy()
  np.testing.assert_allclose(ours, theirs, atol=2e-4, rtol=1e-4)


def test_span_corruption_sibling_has_the_same_shape():
  if not os.path.isdir(pretrained.MINI_SPAN_CORRUPTION_DIR):
    pytest.skip("the span-corruption-only model is not in this install")
  _, lm_adapted = api.load_frozen()
  _, span_corruption = api.load_frozen(pretrained.mini_span_corruption_path())
  assert jax.tree.map(np.shape, lm_adapted) == jax.tree.map(np.shape, span_corruption)


def test_prompt_tuning_learns_the_task(tmp_path):
  """100 steps on wordnet_topic: the validation targets become much more likely (gradients
  and optimizer work) and rank classification stays far above the majority class (data,
  vocabulary, prompt injection and scoring work)."""
  task, lengths = "wordnet_topic", {"inputs": 48, "targets": 4}
  model = model_lib.PromptedT5Model(
      t5_config.get_config("t5_1_1_mini"), 20,
      prompts.class_labels(registry.class_labels(task), api.MINI_VOCABULARY), dropout_rate=0.1)
  common = dict(model=model, initial_checkpoint_path=pretrained.mini_checkpoint_path(),
                mixture_or_task_name=task, task_feature_lengths=lengths, batch_size=16)
  train.train(**common, model_dir=str(tmp_path), train_steps=100,
              optimizer=optim.adafactor(learning_rate=0.3), checkpoint_period=100)
  examples = features.get_examples(task, "validation", lengths)
  mesh = partitioning.make_mesh(1)
  with jax.set_mesh(mesh):
    initial = job_utils.place_params(model, pretrained.mini_checkpoint_path(), mesh,
                                     partitioning.DEFAULT_RULES, jax.random.PRNGKey(0))
    trained = optim.merge({"prompt": {"prompt": prompts_io.load_prompt(
        train.prompt_path(str(tmp_path), 100))}}, optim.partition(initial, "prompt/.*")[1])
    before, after = (eval_lib.scores(model, p, examples, 32, lengths, mesh).mean()
                     for p in (initial, trained))
  metrics = eval_lib.evaluate(**common, prompt_file=train.prompt_path(str(tmp_path), 100),
                              use_rank_classification=True)
  assert after > before + MIN_LOG_LIKELIHOOD_GAIN
  assert metrics["wordnet_topic/accuracy"] > MIN_ACCURACY


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRANSFER_RESULTS = os.path.join(REPO, "benchmarks", "results", "transfer_methods")


def _demo_model_with(prompt_gin: str, *bindings: str):
  """The model runs/cpu_demo.gin makes with `prompt_gin` and gin `bindings` after it."""
  import gin  # pylint: disable=import-outside-toplevel
  gin.clear_config()
  gin.add_config_file_search_path(os.path.join(REPO, "gin_configs"))
  try:
    gin.parse_config_files_and_bindings(["runs/cpu_demo.gin", prompt_gin],
                                        ["MODEL_DIR = '/unused'", *bindings])
    return gin.query_parameter("%MODEL").scoped_configurable_fn()
  finally:
    gin.clear_config()


def _assert_scores_what_its_source_run_stored(model, path: str, run_prefix: str, task: str,
                                              inputs_length: int):
  """`model` with the prompt file `path` scores on `task`'s test split what the transfer
  benchmark's source run (its result file starts with run_prefix) stored."""
  stored = [f for f in os.listdir(TRANSFER_RESULTS) if f.startswith(run_prefix)]
  with open(os.path.join(TRANSFER_RESULTS, stored[0])) as f:
    expected = json.load(f)["test"][task]
  metrics = eval_lib.evaluate(
      model=model, initial_checkpoint_path=pretrained.mini_checkpoint_path(),
      mixture_or_task_name=task, task_feature_lengths={"inputs": inputs_length, "targets": 4},
      batch_size=64, prompt_file=path, split="test", use_rank_classification=True)
  assert metrics[f"{task}/accuracy"] == pytest.approx(expected)


def test_shipped_source_prompt_is_the_benchmarks_spot_prompt_and_starts_a_task():
  """prompts/mini_source.gin after runs/cpu_demo.gin starts the prompt from the shipped source
  prompt, which is the transfer benchmark's SPoT source, scoring what that run stored."""
  path = pretrained.mini_source_prompt_path()
  shipped = np.load(path)
  np.testing.assert_array_equal(shipped,
                                np.load(os.path.join(TRANSFER_RESULTS, "prompts", "spot.npy")))
  model = _demo_model_with("prompts/mini_source.gin")
  embedding = np.zeros((8192, 256), np.float32)
  np.testing.assert_array_equal(
      model.prompt_initializer(jax.random.PRNGKey(0), embedding, (20, 256)), shipped)
  _assert_scores_what_its_source_run_stored(model, path, "wordnet_topic_pos.prompt.",
                                            "wordnet_topic", inputs_length=48)
  with pytest.raises(FileNotFoundError, match=r"'wordnet'; the mini T5 has \['wordnet_topic_pos'"):
    pretrained.mini_source_prompt_path("wordnet")
  with pytest.raises(ValueError, match="method 'dept'; use one of"):
    pretrained.mini_source_prompt_path(method="dept")


@pytest.mark.parametrize("length, source", [(20, "deep_spot"), (100, "deep100_spot")])
def test_shipped_deep_source_prompt_is_the_benchmarks_and_serves_its_tasks(length, source):
  """prompts/mini_deep_source.gin at PROMPT_LENGTH `length` makes the deep prompt model
  starting every layer from the shipped deep source of that length, the transfer benchmark's
  `source` prompt, scoring what that run stored."""
  path = pretrained.mini_source_prompt_path(method="deep", length=length)
  shipped = np.load(path)
  assert shipped.shape == (4, length, 256)
  np.testing.assert_array_equal(
      shipped, np.load(os.path.join(TRANSFER_RESULTS, "prompts", f"{source}.npy")))
  model = _demo_model_with("prompts/mini_deep_source.gin", f"PROMPT_LENGTH = {length}")
  assert model.prompt_length == length
  _assert_scores_what_its_source_run_stored(
      model, path, f"wordnet_topic_pos.deep.class_labels.p{length}.", "wordnet_pos",
      inputs_length=64)
  with pytest.raises(FileNotFoundError, match="of 50 rows for mixture 'wordnet_topic_pos'"):
    pretrained.mini_source_prompt_path(method="deep", length=50)
