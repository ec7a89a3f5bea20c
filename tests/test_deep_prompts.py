"""Deep prompts: the encoder's per-layer hook, then a prompt at every encoder layer's input."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning import combine, model, optim, prompts
from prompt_tuning.prompts import deep
from prompt_tuning.t5 import config as t5_config
from prompt_tuning.t5 import network

import batch_helpers

TINY = t5_config.get_config("t5_1_1_tiny").replace(vocab_size=64, num_encoder_layers=3)


# ---- the encoder's per-layer hook (t5/ knows nothing of prompts) ---------------------------------


@pytest.fixture(scope="module")
def encoder_inputs():
  params = network.init_params(TINY, jax.random.PRNGKey(0))
  embedded = jax.random.normal(jax.random.PRNGKey(1), (2, 5, TINY.emb_dim))
  mask = jnp.asarray([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
  return params, embedded, mask


def encoder_by_hand(params, cfg, embedded, mask, hook):
  """The encoder stack written out layer by layer, each layer's input passed through hook."""
  enc = params["encoder"]
  length = embedded.shape[1]
  bias = network.layers.RelativePositionBiases(
      cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance, cfg.num_heads
  ).apply({"params": enc["relpos_bias"]}, length, length, bidirectional=True)
  attention_mask = mask[:, None, None, :] & mask[:, None, :, None]
  x = embedded
  for i in range(cfg.num_encoder_layers):
    x = network.EncoderLayer(cfg).apply({"params": enc[f"layers_{i}"]}, hook(i, x),
                                        attention_mask, bias, True)
  return network.layers.RMSNorm(cfg.layer_norm_epsilon).apply(
      {"params": enc["encoder_norm"]}, x)


def run_encoder(params, cfg, embedded, mask, hook=None):
  return network.Encoder(cfg).apply({"params": params["encoder"]}, embedded, mask, True, hook)


def test_identity_hook_changes_nothing(encoder_inputs):
  params, embedded, mask = encoder_inputs
  np.testing.assert_array_equal(run_encoder(params, TINY, embedded, mask, lambda i, x: x),
                                run_encoder(params, TINY, embedded, mask))


def test_hook_sees_and_replaces_every_layers_input(encoder_inputs):
  params, embedded, mask = encoder_inputs
  seen = []

  def hook(i, x):  # writes 10 * (i + 1) into position 1 of every row at layer i's input
    seen.append(i)
    return x.at[:, 1].set(10.0 * (i + 1))

  got = run_encoder(params, TINY, embedded, mask, hook)
  assert seen == [0, 1, 2]
  np.testing.assert_allclose(got, encoder_by_hand(params, TINY, embedded, mask, hook),
                             rtol=1e-6, atol=1e-6)
  assert not np.allclose(got, run_encoder(params, TINY, embedded, mask))


def test_hook_gradients_are_the_same_with_remat(encoder_inputs):
  params, embedded, mask = encoder_inputs
  values = jax.random.normal(jax.random.PRNGKey(2), (TINY.num_encoder_layers, TINY.emb_dim))

  def loss(v, cfg):
    out = run_encoder(params, cfg, embedded, mask, lambda i, x: x.at[:, 0].set(v[i]))
    return jnp.sum(out ** 2)

  plain = jax.grad(loss)(values, TINY)
  remat = jax.grad(loss)(values, TINY.replace(remat=True))
  assert "remat" in str(jax.make_jaxpr(jax.grad(loss), static_argnums=1)(
      values, TINY.replace(remat=True)))
  assert np.all(np.abs(plain).sum(-1) > 0)  # every layer's value reaches the output
  np.testing.assert_allclose(remat, plain, rtol=1e-5, atol=1e-6)


# ---- the deep prompt's pieces: where P[i] goes, and the deeper layers' initial value -------------


def test_hook_puts_each_layers_prompt_at_the_prompt_positions_only():
  rng = np.random.default_rng(0)
  prompt = jnp.asarray(rng.normal(size=(3, 2, TINY.emb_dim)), jnp.float32)  # [layers, p, d]
  tokens = jnp.asarray([[5, 6, 1, 0], [0, 7, 8, 1]])
  rows = combine.prompt_rows(combine.suffix, tokens, 2)
  hook = deep.layer_hook(prompt, rows)
  x = jnp.asarray(rng.normal(size=(2, 6, TINY.emb_dim)), jnp.float32)
  np.testing.assert_array_equal(hook(0, x), x)  # the combination placed P[0] already
  for i in (1, 2):
    out = np.asarray(hook(i, x))
    for b in range(2):
      for j, r in enumerate(np.asarray(rows[b])):
        np.testing.assert_array_equal(out[b, j], prompt[i, r] if r >= 0 else x[b, j])
  # A mixed-prompt batch: each row its own deep prompt.
  per_row = jnp.stack([prompt, -prompt])
  mixed = deep.layer_hook(per_row, rows)(1, x)
  np.testing.assert_array_equal(mixed[0], hook(1, x)[0])
  np.testing.assert_array_equal(mixed[1], deep.layer_hook(-prompt, rows)(1, x)[1])


@pytest.mark.parametrize("position", ["prefix", "prefix_after_bos", "suffix"])
def test_propagated_layers_reproduce_the_plain_prompt_on_an_empty_input(encoder_inputs,
                                                                         position):
  params = encoder_inputs[0]
  fn = combine.combiner(position)
  first = jax.random.normal(jax.random.PRNGKey(3), (3, TINY.emb_dim))
  full = deep.propagate(TINY, params, first, fn)
  assert full.shape == (TINY.num_encoder_layers, 3, TINY.emb_dim)
  np.testing.assert_array_equal(full[0], first)
  assert not np.allclose(full[1], first)  # hidden states, not the embedding-space prompt
  tokens = jnp.ones((1, 1), jnp.int32)  # EOS alone
  embedded = jnp.take(params["token_embedder"]["embedding"], tokens, axis=0)
  combined, mask = fn(first, embedded, tokens)
  hook = deep.layer_hook(full, combine.prompt_rows(fn, tokens, 3))
  np.testing.assert_allclose(run_encoder(params, TINY, combined, mask, hook),
                             run_encoder(params, TINY, combined, mask), rtol=1e-5, atol=1e-6)


# ---- the deep-prompt model ----------------------------------------------------------------------

P = 3
INPUTS = np.array([[5, 6, 7, 8, 1], [0, 0, 9, 10, 1], [11, 1, 0, 0, 0], [12, 13, 1, 0, 0]],
                  np.int32)
TARGETS = np.array([[3, 4, 1, 0], [5, 6, 7, 1], [8, 1, 0, 0], [9, 9, 1, 0]], np.int32)


def make_batch(inputs=INPUTS, targets=TARGETS):
  return batch_helpers.teacher_forced(inputs, targets)


def deep_model(position="prefix", length=P, **kwargs):
  return model.PromptedT5Model(TINY, prompt_length=length, combine=combine.combiner(position),
                               prompt_initializer=prompts.random_uniform(),
                               method=deep.method(**kwargs))


@pytest.fixture(scope="module")
def frozen():
  return network.init_params(TINY, jax.random.PRNGKey(0))


def test_tree_axes_and_export(frozen):
  m = deep_model()
  shape = (TINY.num_encoder_layers, P, TINY.emb_dim)
  assert m.abstract_params()["prompt"]["prompt"].shape == shape
  assert m.param_axes()["prompt"] == {"prompt": ("prompt_layers", "prompt", "prompt_embed")}
  params = m.init_params(jax.random.PRNGKey(1), frozen)
  assert params["prompt"]["prompt"].shape == shape
  trainable, _ = optim.partition(params, optim.PROMPT_REGEX)
  np.testing.assert_array_equal(m.export_prompt(trainable), params["prompt"]["prompt"])
  assert m.serving_model() is m


def test_deep_prompt_of_the_plain_models_hidden_states_scores_like_the_plain_prompt(frozen):
  """Row by row, a deep prompt whose layer-i rows are the plain model's own hidden states at
  the prompt positions (that row's) changes nothing: the scores equal the plain prompt's."""
  for position in ("prefix", "suffix"):
    fn = combine.combiner(position)
    plain = model.PromptedT5Model(TINY, prompt_length=P, combine=fn)
    first = np.random.default_rng(1).uniform(-0.5, 0.5, (P, TINY.emb_dim)).astype(np.float32)
    params = {**frozen, "prompt": {"prompt": first}}
    tokens = jnp.asarray(INPUTS)
    embedded = jnp.take(frozen["token_embedder"]["embedding"], tokens, axis=0)
    combined, mask = fn(first, embedded, tokens)
    layer_inputs = []
    network.Encoder(TINY).apply({"params": frozen["encoder"]}, combined, mask, True,
                                lambda i, x: layer_inputs.append(x) or x)
    rows = np.asarray(combine.prompt_rows(fn, tokens, P))
    per_row = [np.stack([np.asarray(x[b])[np.argsort(np.where(rows[b] >= 0, rows[b], 99))[:P]]
                         for x in layer_inputs]) for b in range(len(INPUTS))]
    m = model.PromptedT5Model(TINY, prompt_length=P, combine=fn, method=deep.method())
    table = m.with_prompt_table(frozen, per_row)
    ids = np.arange(len(INPUTS), dtype=np.int32)
    got = m.score(table, {**make_batch(), "prompt_ids": ids})
    np.testing.assert_allclose(got, plain.score(params, make_batch()), rtol=1e-5, atol=1e-5)
    # And a deep prompt that is the plain prompt copied to every layer is another model.
    copies = m.with_prompt_table(frozen, [np.broadcast_to(first, per_row[0].shape)] * 4)
    assert not np.allclose(m.score(copies, {**make_batch(), "prompt_ids": ids}), got)


def test_mixed_batch_of_deep_prompts_equals_each_row_alone(frozen):
  rng = np.random.default_rng(2)
  layers = TINY.num_encoder_layers
  deep_prompts = [rng.uniform(-1, 1, (layers, p, TINY.emb_dim)).astype(np.float32)
                  for p in (3, 1, 2)]
  ids = np.array([2, 0, 1, 2], np.int32)
  m = deep_model("suffix", length=3)
  table = m.with_prompt_table(frozen, deep_prompts)
  batch = make_batch()
  got = m.score(table, {**batch, "prompt_ids": ids})  # eager: one call costs less than a jit
  for i, prompt in enumerate(deep_prompts):  # the rows under prompt i, run with it alone
    rows = np.flatnonzero(ids == i)
    alone = deep_model("suffix", length=prompt.shape[1])
    some = {k: v[rows] for k, v in batch.items()}
    np.testing.assert_allclose(got[rows], alone.score({**frozen, "prompt": {"prompt": prompt}},
                                                      some), rtol=1e-5, atol=1e-5)


def test_every_layers_prompt_gets_a_gradient(frozen):
  m = deep_model()
  params = m.init_params(jax.random.PRNGKey(1), frozen)
  loss = lambda prompt: m.loss({**frozen, "prompt": prompt}, make_batch())[0]
  grad = np.asarray(jax.grad(loss)(params["prompt"])["prompt"])
  assert grad.shape == (TINY.num_encoder_layers, P, TINY.emb_dim)
  assert np.all(np.abs(grad).sum(axis=(1, 2)) > 0)


def test_deeper_layers_start_from_the_encoders_hidden_states_or_copies(frozen):
  rng = jax.random.PRNGKey(4)
  first = prompts.random_uniform()(rng, None, (P, TINY.emb_dim))
  propagated = deep_model("suffix").init_params(rng, frozen)["prompt"]["prompt"]
  np.testing.assert_array_equal(propagated,
                                deep.propagate(TINY, frozen, first, combine.suffix))
  copied = deep_model(deeper_init="copy").init_params(rng, frozen)["prompt"]["prompt"]
  np.testing.assert_array_equal(copied, np.broadcast_to(first, copied.shape))
  with pytest.raises(ValueError, match="deeper_init='random'"):
    deep.method(deeper_init="random")


def test_files_of_the_wrong_kind_are_refused_with_their_shape(frozen):
  m = deep_model()
  good = np.zeros((TINY.num_encoder_layers, P, TINY.emb_dim), np.float32)
  np.testing.assert_array_equal(
      m.with_prompt_file(frozen, good, "file 'd.npy'")["prompt"]["prompt"], good)
  cases = {
      "plain [P, d]": (np.zeros((P, TINY.emb_dim)), r"shape \(3, 4\) but this model needs "
                       r"\[3, 3, 4\] .*a plain prompt .* without methods/deep.gin"),
      "2 layers": (np.zeros((2, P, TINY.emb_dim)), r"prompts for 2 encoder layers"),
      "length": (np.zeros((3, 5, TINY.emb_dim)), r"set PROMPT_LENGTH=5"),
      "width": (np.zeros((3, P, 8)), r"width is 8"),
      "NaN": (np.full(good.shape, np.nan), r"non-finite"),
      "DePT": (np.zeros((), [("prompt", "f4", (2, 4))]), r"a DePT prompt file .*methods/dept"),
  }
  for value, message in cases.values():
    with pytest.raises(ValueError, match=r"Prompt file 'x.npy' (has|is) .*" + message):
      m.with_prompt_file(frozen, value, "file 'x.npy'")
  plain = model.PromptedT5Model(TINY, prompt_length=P)
  with pytest.raises(ValueError, match=r"x.npy has shape \(3, 3, 4\): a deep prompt .*"
                                       r"--gin_file=methods/deep.gin"):
    plain.with_prompt_table(frozen, [good], names=["x.npy"])
  with pytest.raises(ValueError, match=r"x.npy has shape \(3, 4\) but this model needs"):
    m.with_prompt_table(frozen, [good[0]], names=["x.npy"])


def test_from_file_initializer_reads_every_layer(frozen, tmp_path):
  path = str(tmp_path / "deep.npy")
  value = np.random.default_rng(3).normal(size=(TINY.num_encoder_layers, P, TINY.emb_dim))
  np.save(path, value.astype(np.float32))
  m = model.PromptedT5Model(TINY, prompt_length=P, prompt_initializer=prompts.from_file(path),
                            method=deep.method())
  abstract = network.param_shapes(TINY)  # a file needs no frozen values
  np.testing.assert_allclose(m.init_params(None, abstract)["prompt"]["prompt"], value,
                             rtol=1e-6)
  np.save(path, value[0].astype(np.float32))
  with pytest.raises(ValueError, match=r"deep.npy' has shape \(3, 4\) but this model needs "
                                       r"\[3, 3, 4\].*a plain prompt"):
    m.init_params(None, abstract)


# ---- the jobs: train exports [layers, p, d]; eval/infer, PROMPTS, inspect and PEFT read it -------


def test_jobs_train_export_and_serve_deep_prompts(tmp_path):
  from prompt_tuning import infer, inspect as inspect_lib, train
  from prompt_tuning.checkpoints import peft
  from prompt_tuning.data import demo
  tiny = t5_config.get_config("t5_1_1_tiny")
  m = model.PromptedT5Model(tiny, prompt_length=2, prompt_initializer=prompts.random_uniform(),
                            method=deep.method())
  lengths = {"inputs": 32, "targets": 4}
  train.train(model=m, model_dir=str(tmp_path / "run"), initial_checkpoint_path=None,
              mixture_or_task_name=demo.TASK_NAME, task_feature_lengths=lengths,
              train_steps=2, batch_size=4, optimizer=optim.adafactor(), checkpoint_period=2,
              vocabulary_path=demo.vocabulary_path())
  exported = str(tmp_path / "run" / "prompts" / "step_2.npy")
  value = np.load(exported)
  assert value.shape == (tiny.num_encoder_layers, 2, tiny.emb_dim) and value.dtype == np.float32

  def scores(name, served, **where):
    [path] = infer.infer(model=served, output_dir=str(tmp_path / name),
                         initial_checkpoint_path=None, mixture_or_task_name=demo.TASK_NAME,
                         task_feature_lengths=lengths, batch_size=8, split="validation",
                         mode="score", vocabulary_path=demo.vocabulary_path(), **where)
    return [json.loads(line)["score"] for line in open(path)]

  from_dir = scores("dir", m, model_dir=str(tmp_path / "run"))
  assert len(from_dir) > 10 and from_dir == scores("file", m, prompt_file=exported)
  from_table = scores("table", m, prompts={demo.TASK_NAME: exported})
  np.testing.assert_allclose(from_table, from_dir, rtol=1e-5, atol=1e-5)
  plain = model.PromptedT5Model(tiny, prompt_length=2)
  deep_file = r"step_2.npy' has shape \(2, 2, 4\): a deep prompt .*methods/deep.gin"
  with pytest.raises(ValueError, match=deep_file):
    scores("plain", plain, prompt_file=exported)
  with pytest.raises(ValueError, match=deep_file):
    scores("plain_table", plain, prompts={demo.TASK_NAME: exported})
  with pytest.raises(ValueError, match=r"step_2.npy' has shape \(2, 2, 4\): a deep prompt .*no "
                                       r"PEFT adapter holds"):
    peft.write_adapter(value, "unused", str(tmp_path / "adapter"), f"file {exported!r}")
  name, layer_0 = inspect_lib.read_prompt_file(exported, tiny.emb_dim, tiny.num_encoder_layers)
  assert name == f"{exported} (layer 0 of 2: a deep prompt)"
  np.testing.assert_array_equal(layer_0, value[0])
  with pytest.raises(ValueError, match="prompts for 2 encoder layers"):
    inspect_lib.read_prompt_file(exported, tiny.emb_dim, 3)
