"""The model object: parameter tree, injection of the prompt, loss/score/predict, gin files."""

import functools
from pathlib import Path

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning import combine, model, optim, prompts
from prompt_tuning.t5 import config as t5_config
from prompt_tuning.t5 import network

import batch_helpers
import peft_helpers

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"
PRETRAINED = FIXTURES / "pretrained_prompts_t5_1_1_lm100k_base"
TINY = t5_config.get_config("t5_1_1_tiny").replace(vocab_size=64)
P = 3

# Ragged, right-padded; the same rows left-padded.
INPUTS = np.array([[5, 6, 7, 8, 1], [9, 10, 1, 0, 0], [11, 1, 0, 0, 0]], np.int32)
INPUTS_LEFT = np.array([[5, 6, 7, 8, 1], [0, 0, 9, 10, 1], [0, 0, 0, 11, 1]], np.int32)
TARGETS = np.array([[3, 4, 1, 0], [5, 6, 7, 1], [8, 1, 0, 0]], np.int32)


def make_batch(inputs=INPUTS, targets=TARGETS):
  return batch_helpers.teacher_forced(inputs, targets)


@pytest.fixture(scope="module")
def prompted():
  m = model.PromptedT5Model(TINY, prompt_length=P, prompt_initializer=prompts.random_uniform())
  return m, m.random_params(jax.random.PRNGKey(0))


# ---- parameters ----------------------------------------------------------------------------------


def test_tree_is_the_t5_tree_plus_prompt():
  m = model.PromptedT5Model(TINY, prompt_length=P)
  shapes = jax.tree.map(lambda s: (s.shape, s.dtype), m.abstract_params())
  frozen = jax.tree.map(lambda s: (s.shape, s.dtype), network.param_shapes(TINY))
  assert shapes == {**frozen, "prompt": {"prompt": ((P, 4), jnp.float32)}}
  assert m.param_axes() == {**network.param_axes(TINY),
                            "prompt": {"prompt": ("prompt", "prompt_embed")}}


def test_plain_model_adds_nothing():
  m = model.T5Model(TINY)
  frozen = network.param_shapes(TINY)
  assert m.init_params(jax.random.PRNGKey(1), frozen) is frozen
  assert jax.tree.map(lambda s: s.shape, m.abstract_params()) == \
      jax.tree.map(lambda s: s.shape, network.param_shapes(TINY))


def test_init_params_reads_the_frozen_table_and_keeps_frozen_leaves():
  m = model.PromptedT5Model(TINY, prompt_length=P,
                            prompt_initializer=prompts.sampled_vocab(population_size=10))
  table = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
  frozen = {**network.param_shapes(TINY), "token_embedder": {"embedding": table}}
  params = m.init_params(jax.random.PRNGKey(1), frozen)
  for row in np.asarray(params["prompt"]["prompt"]):
    assert any(np.array_equal(row, table[i]) for i in range(3, 13))
  assert {k: v for k, v in params.items() if k != "prompt"} == frozen
  jitted = jax.jit(m.init_params)(jax.random.PRNGKey(1), {"token_embedder": frozen[
      "token_embedder"]})  # as the jobs call it: jitted, the table a traced array
  np.testing.assert_array_equal(jitted["prompt"]["prompt"], params["prompt"]["prompt"])


def test_not_a_config():
  with pytest.raises(ValueError, match="MODEL_CONFIG="):
    model.T5Model("t5_1_1_base")


# ---- injection -----------------------------------------------------------------------------------


def test_encoder_sees_prompt_then_tokens_and_decoder_attends_to_all(prompted):
  m, params = prompted
  batch = make_batch()
  t5 = network.Transformer(TINY)
  plain = {k: v for k, v in params.items() if k != "prompt"}

  def reference(module):  # embed, prepend P, encode, decode: all by hand
    embedded = module.token_embedder(batch["encoder_input_tokens"])
    prompt = jnp.broadcast_to(params["prompt"]["prompt"], (3, P, 4))
    x = jnp.concatenate([prompt, embedded], axis=1)
    mask = jnp.concatenate([jnp.ones((3, P), bool), batch["encoder_input_tokens"] > 0], 1)
    encoded = module.encoder(x, mask)
    return module.decode(encoded, mask, batch["decoder_input_tokens"],
                         batch["decoder_target_tokens"])

  real = TARGETS > 0  # padded target rows attend to anything; they carry no weight
  expected = jax.jit(functools.partial(t5.apply, method=reference))({"params": plain})[real]
  logits = jax.jit(m.logits)
  np.testing.assert_allclose(logits(params, batch)[real], expected, atol=1e-6)
  # and the prompt matters
  changed = {**params, "prompt": {"prompt": params["prompt"]["prompt"] + 1.0}}
  assert not np.allclose(logits(changed, batch)[real], expected, atol=1e-3)


@pytest.mark.parametrize("position", ["prefix", "suffix", "prefix_after_bos"])
def test_scores_do_not_depend_on_padding_side(prompted, position):
  m, params = prompted
  m = model.PromptedT5Model(TINY, prompt_length=P, combine=position)
  score = jax.jit(m.score)
  right = score(params, make_batch(INPUTS))
  left = score(params, make_batch(INPUTS_LEFT))
  np.testing.assert_allclose(left, right, atol=1e-5)


# ---- loss, score, predict ------------------------------------------------------------------------


def test_loss_is_mean_cross_entropy_and_score_its_sum(prompted):
  m, params = prompted
  batch = make_batch()
  loss, metrics = jax.jit(m.loss)(params, batch)
  scores = jax.jit(m.score)(params, batch)
  assert scores.shape == (3,) and scores.dtype == jnp.float32
  np.testing.assert_allclose(loss, -scores.sum() / (TARGETS > 0).sum(), rtol=1e-5)
  assert metrics["num_tokens"] == (TARGETS > 0).sum()
  assert 0 <= metrics["accuracy"] <= 1
  # A score is the sum of ln p over the target tokens, EOS included, of the row alone.
  log_p = jax.nn.log_softmax(jax.jit(m.logits)(params, batch))
  row1 = sum(float(log_p[1, t, TARGETS[1, t]]) for t in range(4))
  np.testing.assert_allclose(scores[1], row1, rtol=1e-5)
  single = jax.jit(m.score)(params, {k: v[1:2] for k, v in batch.items()})
  np.testing.assert_allclose(single[0], scores[1], rtol=1e-5)


@pytest.mark.parametrize("prompted_model", [True, False])
def test_score_candidates_equals_scoring_each_pair(prompted, prompted_model):
  m, params = prompted
  if not prompted_model:
    m, params = model.T5Model(TINY), {k: v for k, v in params.items() if k != "prompt"}
  # Candidates of different lengths, padded to the longest; every input meets every one.
  candidates = make_batch(INPUTS, TARGETS)
  del candidates["encoder_input_tokens"]
  table = jax.jit(m.score_candidates)(params, {"encoder_input_tokens": INPUTS_LEFT},
                                      candidates)
  assert table.shape == (3, 3)
  pairs = make_batch(np.repeat(INPUTS_LEFT, 3, axis=0), np.tile(TARGETS, (3, 1)))
  one_by_one = jax.jit(m.score)(params, pairs).reshape(3, 3)
  np.testing.assert_allclose(table, one_by_one, rtol=1e-5, atol=1e-5)


def test_gradient_reaches_the_prompt_and_dropout_needs_rng(prompted):
  m, params = prompted
  trainable = params["prompt"]
  frozen = {k: v for k, v in params.items() if k != "prompt"}
  loss_fn = lambda t: m.loss({**frozen, "prompt": t}, make_batch())[0]
  grads = jax.jit(jax.grad(loss_fn))(trainable)
  assert grads["prompt"].shape == (P, 4) and float(jnp.abs(grads["prompt"]).sum()) > 0
  with_dropout = model.PromptedT5Model(TINY, prompt_length=P, dropout_rate=0.5)
  loss = jax.jit(with_dropout.loss)
  a, _ = loss(params, make_batch(), dropout_rng=jax.random.PRNGKey(1))
  b, _ = loss(params, make_batch())  # no rng: deterministic, as evaluation needs
  assert abs(a - b) > 1e-3


def test_remat_recomputes_layers_with_the_same_gradients(prompted):
  m, params = prompted
  remat = model.PromptedT5Model(TINY, prompt_length=P, remat=True)
  frozen = {k: v for k, v in params.items() if k != "prompt"}
  grad = lambda mdl: jax.jit(jax.grad(
      lambda t: mdl.loss({**frozen, "prompt": t}, make_batch())[0]))(params["prompt"])
  jaxpr = str(jax.make_jaxpr(lambda p: remat.loss(p, make_batch())[0])(params))
  assert "checkpoint" in jaxpr or "remat" in jaxpr
  np.testing.assert_allclose(grad(remat)["prompt"], grad(m)["prompt"], atol=1e-6)


def test_bfloat16_activations(prompted):
  _, params = prompted
  m = model.PromptedT5Model(TINY, prompt_length=P, activation_dtype="bfloat16")
  loss, _ = jax.jit(m.loss)(params, make_batch())
  assert np.isfinite(loss)
  assert m.abstract_params()["prompt"]["prompt"].dtype == jnp.float32


def test_greedy_predict_matches_argmax_without_cache(prompted):
  m, params = prompted
  batch = {"encoder_input_tokens": INPUTS}
  length = 4
  tokens = jax.jit(functools.partial(m.predict, max_decode_length=length))(params, batch)
  assert tokens.shape == (3, length) and tokens.dtype == jnp.int32
  # Reference: re-run the whole decoder on the prefix at each step, no cache.
  out = np.zeros((3, length), np.int32)
  apply = jax.jit(m.module.apply)
  for t in range(length):
    dec_in = np.pad(out[:, :t], ((0, 0), (1, length - t - 1)))
    logits = apply({"params": params}, INPUTS, dec_in)
    out[:, t] = np.argmax(logits[:, t], axis=-1)
  done = np.cumsum(out == 1, axis=1) - (out == 1) > 0  # after the first EOS
  np.testing.assert_array_equal(tokens, np.where(done, 0, out))


def test_beam_and_sample_predict(prompted):
  m, params = prompted
  batch = {"encoder_input_tokens": INPUTS}
  predict = jax.jit(m.predict, static_argnames=("method", "max_decode_length", "beam_size"))
  beam = predict(params, batch, method="beam", max_decode_length=4, beam_size=2)
  sample = predict(params, batch, method="sample", max_decode_length=4,
                   rng=jax.random.PRNGKey(0), temperature=0.0)
  greedy = predict(params, batch, max_decode_length=4)
  assert beam.shape == (3, 4)
  np.testing.assert_array_equal(sample, greedy)  # temperature 0 is greedy
  with pytest.raises(ValueError, match="needs an rng"):
    m.predict(params, batch, method="sample", max_decode_length=4)
  with pytest.raises(ValueError, match="Unknown decoding method 'nucleus'"):
    m.predict(params, batch, method="nucleus", max_decode_length=4)


# ---- gin -----------------------------------------------------------------------------------------


@gin.configurable
def _built(model=gin.REQUIRED):  # pylint: disable=redefined-outer-name
  return model


def build(files, bindings=()):
  gin.clear_config()
  gin.add_config_file_search_path(str(REPO / "gin_configs"))
  try:
    gin.parse_config_files_and_bindings(files, ["_built.model = %MODEL", *bindings])
    return _built()
  finally:
    gin.clear_config()


SIZES = [n for n in t5_config.CONFIGS]


@pytest.mark.parametrize("name", SIZES)
def test_model_gin_files(name):
  plain = build([f"models/{name}.gin"])
  assert type(plain) is model.T5Model and plain.config == t5_config.CONFIGS[name]
  prompted_ = build([f"models/{name}_prompt.gin"])
  assert type(prompted_) is model.PromptedT5Model
  assert prompted_.config == t5_config.CONFIGS[name] and prompted_.prompt_length == 100


def test_gin_overrides_and_initializer_files(tmp_path):
  np.save(tmp_path / "p.npy", np.ones((7, 4), np.float32))
  common = ["PROMPT_LENGTH = 7", "ACTIVATION_DTYPE = 'bfloat16'",
            "combine.combiner.position = 'suffix'", "CLASS_LABELS = ['a', 'b']",
            "PROMPT_TEXT = 'hello'", f"PROMPT_FILE = '{tmp_path / 'p.npy'}'"]
  for file in ["random_uniform", "sampled_vocab", "class_labels", "from_text", "from_file",
               "from_t5x_checkpoint"]:
    for order in [0, 1]:  # the prompt file works before or after the model file
      files = ["models/t5_1_1_tiny_prompt.gin", f"prompts/{file}.gin"][::1 - 2 * order]
      m = build(files, common)
      assert m.prompt_length == 7 and m.config.dtype == jnp.bfloat16
      assert m.combine.func is combine.suffix
      assert m.prompt_initializer.__qualname__.startswith(f"{file}.")
  frozen = network.param_shapes(t5_config.CONFIGS["t5_1_1_tiny"])
  m = build(["models/t5_1_1_tiny_prompt.gin", "prompts/from_file.gin"], common)
  np.testing.assert_array_equal(m.init_params(None, frozen)["prompt"]["prompt"], 1.0)


def test_gin_missing_class_labels():
  with pytest.raises(ValueError, match="CLASS_LABELS"):
    build(["models/t5_1_1_tiny_prompt.gin", "prompts/class_labels.gin"])


METHODS = sorted(p.stem for p in (REPO / "gin_configs" / "methods").glob("*.gin"))
INITIALIZERS = ["random_uniform", "sampled_vocab", "class_labels", "from_text", "from_file",
                "from_t5x_checkpoint"]


@pytest.mark.parametrize("method", METHODS)
def test_method_gin_files_compose_with_every_model_initializer_and_run_file(method, tmp_path):
  from prompt_tuning.prompts import method as method_lib
  np.save(tmp_path / "p.npy", np.ones((7, 4), np.float32))
  common = ["MODEL_DIR = '/unused'", "PROMPT_LENGTH = 7",
            "TASK_FEATURE_LENGTHS = {'inputs': 8, 'targets': 4}",
            "CLASS_LABELS = ['a', 'b']", "PROMPT_TEXT = 'hello'",
            f"PROMPT_FILE = '{tmp_path / 'p.npy'}'",
            "MIXTURE_OR_TASK_NAME = 'wordnet_topic'"]  # a registered task: MPT reads its tasks
  demo = build(["runs/cpu_demo.gin", f"methods/{method}.gin"], ["MODEL_DIR = '/unused'"])
  assert demo.method != method_lib.Method()
  same = lambda a, b: a.replace(dropout_rate=0.0) == b.replace(dropout_rate=0.0)  # runs set it
  assert same(demo.config, t5_config.CONFIGS["t5_1_1_mini"])
  for name in SIZES:
    m = build([f"models/{name}_prompt.gin", "runs/prompt_finetune.gin",
               f"methods/{method}.gin"], common)
    assert type(m.method) is type(demo.method) and same(m.config, t5_config.CONFIGS[name])
  for file in INITIALIZERS:
    m = build(["models/t5_1_1_tiny_prompt.gin", f"prompts/{file}.gin",
               "runs/prompt_finetune.gin", f"methods/{method}.gin"], common)
    assert type(m.method) is type(demo.method)
    assert m.prompt_initializer.__qualname__.startswith(f"{file}.")


@pytest.mark.skipif(not PRETRAINED.is_dir(), reason="pretrained prompt fixtures absent")
@pytest.mark.parametrize("task", ["sst2", "mrpc", "rte"])
def test_pretrained_prompts_load_into_base_through_from_file_gin(task):
  path = PRETRAINED / f"{task}.npy"
  m = build(["models/t5_1_1_base_prompt.gin", "prompts/from_file.gin"],
            [f"PROMPT_FILE = '{path}'"])
  frozen = network.param_shapes(m.config)  # abstract: only the prompt needs values
  params = m.init_params(jax.random.PRNGKey(0), frozen)
  prompt = params["prompt"]["prompt"]
  assert prompt.shape == (100, 768) and prompt.dtype == jnp.float32
  np.testing.assert_array_equal(prompt, np.load(path))
  assert jax.tree.map(lambda s: s.shape, params) == \
      jax.tree.map(lambda s: s.shape, m.abstract_params())
  with pytest.raises(ValueError, match=r"\(100, 768\) but the model needs \(20, 768\)"):
    build(["models/t5_1_1_base_prompt.gin", "prompts/from_file.gin"],
          [f"PROMPT_FILE = '{path}'", "PROMPT_LENGTH = 20"]).init_params(None, frozen)


# ---- parity with Hugging Face PEFT ---------------------------------------------------------------


def hf_t5(kind: str, directory: Path):
  """A random tiny HF T5 (d_model 32, 2+2 layers) saved to `directory`: 'gated' is T5 1.1
  (gated GELU, its own lm_head), 'relu' is T5 1.0 (tied, scaled logits)."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  config = transformers.T5Config(
      vocab_size=100, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2,
      num_decoder_layers=2, feed_forward_proj="gated-gelu" if kind == "gated" else "relu",
      dropout_rate=0.0, tie_word_embeddings=kind == "relu", decoder_start_token_id=0)
  torch.manual_seed(0)
  hf = transformers.T5ForConditionalGeneration(config)
  with torch.no_grad():  # layer norms start at 1; make them matter
    for name, param in hf.named_parameters():
      if "layer_norm" in name:
        param.uniform_(0.5, 1.5)
  if kind == "gated":
    hf.lm_head.weight = torch.nn.Parameter(torch.randn(100, 32))
  hf.save_pretrained(directory)
  return hf.eval()


def peft_scores(hf, prompt, batch):
  """Sum of ln p(target) per row under PEFT prompt tuning with `prompt` as its prompt rows."""
  import torch  # pylint: disable=g-import-not-at-top
  peft = pytest.importorskip("peft")
  config = peft.PromptTuningConfig(task_type=peft.TaskType.SEQ_2_SEQ_LM,
                                   num_virtual_tokens=prompt.shape[0])
  tuned = peft.get_peft_model(hf, config).eval()
  with torch.no_grad():  # the encoder's prompt is the first num_virtual_tokens rows
    tuned.prompt_encoder["default"].embedding.weight[:prompt.shape[0]] = torch.tensor(prompt)
  return peft_helpers.peft_log_likelihoods(tuned, batch)


def prompted_from_hf(tmp_path: Path, prompt: np.ndarray):
  """(model, params): the HF checkpoint saved at tmp_path/hf, through the gin files, with
  `prompt` [5, 32] as its prompt."""
  from prompt_tuning.checkpoints import loading  # pylint: disable=g-import-not-at-top
  np.save(tmp_path / "prompt.npy", prompt)
  m = build(["models/hf_t5_prompt.gin", "prompts/from_file.gin"],
            [f"INITIAL_CHECKPOINT_PATH = '{tmp_path / 'hf'}'", "PROMPT_LENGTH = 5",
             f"PROMPT_FILE = '{tmp_path / 'prompt.npy'}'"])
  return m, m.init_params(None, loading.load_params(str(tmp_path / "hf"), m.config))


def test_loss_and_prompt_gradient_match_peft(tmp_path):
  """The train step's loss and prompt gradient against PyTorch autograd through PEFT: pins
  the attention's layout changes (made for speed) to the same numbers."""
  peft = pytest.importorskip("peft")
  import torch  # pylint: disable=g-import-not-at-top
  hf = hf_t5("gated", tmp_path / "hf")
  prompt = np.random.default_rng(2).uniform(-0.5, 0.5, (5, 32)).astype(np.float32)
  m, params = prompted_from_hf(tmp_path, prompt)
  batch = make_batch()
  trainable, frozen = optim.partition(params, optim.PROMPT_REGEX)
  loss_fn = lambda t: m.loss(optim.merge(t, frozen), batch)[0]
  loss, grads = jax.jit(jax.value_and_grad(loss_fn))(trainable)

  tuned = peft.get_peft_model(hf, peft.PromptTuningConfig(
      task_type=peft.TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=5,
      num_transformer_submodules=1)).eval()
  table = tuned.prompt_encoder["default"].embedding.weight
  with torch.no_grad():
    table.copy_(torch.tensor(prompt))
  inputs = torch.tensor(batch["encoder_input_tokens"], dtype=torch.long)
  targets = torch.tensor(batch["decoder_target_tokens"], dtype=torch.long)
  theirs = tuned(input_ids=inputs, attention_mask=(inputs > 0).long(),
                 decoder_input_ids=torch.tensor(batch["decoder_input_tokens"], dtype=torch.long),
                 labels=targets.masked_fill(targets == 0, -100)).loss
  theirs.backward()
  np.testing.assert_allclose(float(loss), theirs.item(), rtol=1e-6)
  expected = table.grad.numpy()
  np.testing.assert_allclose(np.asarray(grads["prompt"]["prompt"]), expected, rtol=0,
                             atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("kind", ["gated", "relu"])
def test_log_likelihoods_match_peft_prompt_tuning(tmp_path, kind):
  hf = hf_t5(kind, tmp_path / "hf")
  prompt = np.random.default_rng(1).uniform(-0.5, 0.5, (5, 32)).astype(np.float32)
  m, params = prompted_from_hf(tmp_path, prompt)
  batch = make_batch()
  ours = np.asarray(jax.jit(m.score)(params, batch))
  theirs = peft_scores(hf, prompt, batch)
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
  # PEFT puts the prompt before left padding; ours keeps it next to the text, so our
  # left-padded scores equal PEFT's (and our) right-padded ones.
  left = np.asarray(jax.jit(m.score)(params, make_batch(INPUTS_LEFT)))
  np.testing.assert_allclose(left, theirs, atol=1e-4, rtol=0)
