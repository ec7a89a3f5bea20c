"""The decoder-only family (causal_lm/): logits equal transformers' for random tiny Llama,
Qwen2, Gemma and GPT-2 models; padding, the KV cache, the layer hook, remat, logical axes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning import partitioning
from prompt_tuning.causal_lm import config as decoder_config
from prompt_tuning.causal_lm import network
from prompt_tuning.checkpoints import hf_causal_lm

import hf_decoder_helpers as helpers


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory):
  """{case: (transformers model, saved directory)}, built once for the module."""
  root = tmp_path_factory.mktemp("hf_decoders")
  models = {}
  for case in helpers.CASES:
    model = helpers.build(case)
    model.save_pretrained(root / case)
    models[case] = (model, root / case)
  return models


def _logits(config, params, tokens, mask):
  """Our logits, jitted: one compilation per shape is far cheaper than op-by-op dispatch."""
  run = jax.jit(lambda p, t, m: network.DecoderOnly(config).apply(
      {"params": p}, t, m, method=network.DecoderOnly.token_logits))
  return np.asarray(run(params, jnp.asarray(tokens), jnp.asarray(mask)))


@pytest.mark.parametrize("case", sorted(helpers.CASES))
def test_logits_equal_transformers(hf_models, case):
  model, path = hf_models[case]
  config = decoder_config.config_from_hf(path)
  params = hf_causal_lm.load_params(path)
  tokens, mask = helpers.batch()  # right padding
  ours = _logits(config, params, tokens, mask)
  theirs = helpers.logits(model, tokens, mask)
  assert np.abs(ours - theirs)[mask].max() < 1e-4

  # Left padding, positions cumsum(mask) - 1: each row equals that row alone, unpadded.
  lengths = mask.sum(1)
  left_tokens = np.stack([np.roll(t, len(t) - n) for t, n in zip(tokens, lengths)])
  left_mask = np.stack([np.roll(m, len(m) - n) for m, n in zip(mask, lengths)])
  left = _logits(config, params, left_tokens, left_mask)
  for row, n in enumerate(lengths):
    alone = helpers.logits(model, tokens[row:row + 1, :n])[0]
    assert np.abs(left[row, -n:] - alone).max() < 1e-4, row


def test_config_round_trip_and_families():
  for name, config in decoder_config.CONFIGS.items():
    assert decoder_config.config_from_hf(decoder_config.hf_config(config)) == config, name
  gemma = decoder_config.CONFIGS["gemma_tiny"]
  assert gemma.head_dim * gemma.num_heads != gemma.d_model and gemma.scale_embeddings
  assert gemma.norm_plus_one and gemma.tie_word_embeddings and gemma.num_kv_heads == 1
  qwen = decoder_config.config_from_hf({"model_type": "qwen2", "hidden_size": 64,
                                        "num_attention_heads": 4})
  assert qwen.qkv_bias and not qwen.out_bias and qwen.num_kv_heads == 4
  gpt2 = decoder_config.config_from_hf({"architectures": ["GPT2LMHeadModel"]})
  assert (gpt2.positions, gpt2.norm, gpt2.gated_mlp, gpt2.d_model) == ("learned", "layer",
                                                                       False, 768)
  # transformers 4's keys: rope_theta and rope_scaling at the top level.
  old = decoder_config.config_from_hf({"model_type": "llama", "rope_theta": 5e5, "rope_scaling": {
      "type": "linear", "factor": 4.0}})
  assert (old.rope_theta, old.rope_scaling, old.rope_factor) == (5e5, "linear", 4.0)


def test_llama3_8b_has_the_parameters_transformers_builds_from_its_config():
  """'llama3_8b' (the pod memory plan's shape): transformers' LlamaForCausalLM of its
  config.json, its parameters on the meta device (accelerate's init_empty_weights: no
  weight is allocated), counts the same 8,030,261,248."""
  import accelerate  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  config = decoder_config.CONFIGS["llama3_8b"]
  with accelerate.init_empty_weights():
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**decoder_config.hf_config(
        config)))
  assert sum(p.numel() for p in hf.parameters()) == network.num_params(config) == 8_030_261_248

def test_every_parameter_has_axes_the_default_rules_know():
  ruled = {name for name, _ in partitioning.DEFAULT_RULES}
  for name, config in decoder_config.CONFIGS.items():
    axes = jax.tree.leaves(network.param_axes(config), is_leaf=lambda x: isinstance(x, tuple))
    shapes = jax.tree.leaves(network.param_shapes(config))
    assert len(axes) == len(shapes), name
    for axis_names, shape in zip(axes, shapes):
      assert len(axis_names) == len(shape.shape) and set(axis_names) <= ruled, (name,
                                                                                axis_names)


def _cached_logits(config, params, embedded, positions, mask, prefill):
  """Logits of a prefill over the first `prefill` rows, then one row per cached step."""
  model = network.DecoderOnly(config)
  step = jax.jit(lambda cache, e, p, m: model.apply(
      {"params": params, "cache": cache}, e, p, m, decode=True, mutable=["cache"]))
  prefill_fn = jax.jit(lambda e, p, m: model.apply(
      {"params": params}, e, p, m, decode=True, cache_length=embedded.shape[1] + 2,
      mutable=["cache"]))
  logits, state = prefill_fn(embedded[:, :prefill], positions[:, :prefill], mask[:, :prefill])
  out = [logits]
  for i in range(prefill, embedded.shape[1]):
    logits, state = step(state["cache"], embedded[:, i:i + 1], positions[:, i:i + 1],
                         mask[:, i:i + 1])
    out.append(logits)
  return jnp.concatenate(out, axis=1)


# The named configs that initialise in a test: not the shapes kept for compile-only plans
# (llama3_8b's 8B float32 weights would take 32 GB).
RUNNABLE = sorted(n for n, c in decoder_config.CONFIGS.items() if c.d_model <= 1024)


@pytest.mark.parametrize("name", RUNNABLE)
def test_cached_steps_equal_the_full_forward(name):
  config = decoder_config.CONFIGS[name]
  params = network.init_params(config, jax.random.PRNGKey(1))
  model = network.DecoderOnly(config)
  tokens = jax.random.randint(jax.random.PRNGKey(2), (3, 10), 0, config.vocab_size)
  mask = jnp.asarray(np.arange(10)[None, :] >= np.array([0, 2, 5])[:, None])  # left padding
  positions = network.positions_of(mask)
  embedded = model.apply({"params": params}, tokens, method=network.DecoderOnly.embed)
  full = jax.jit(lambda e, p, m: model.apply({"params": params}, e, p, m))(embedded, positions,
                                                                          mask)
  cached = _cached_logits(config, params, embedded, positions, mask, prefill=6)
  real = np.asarray(mask)
  assert np.abs(np.asarray(cached) - np.asarray(full))[real].max() < 1e-5


def test_cache_needs_a_length_that_fits():
  config = decoder_config.CONFIGS["llama_tiny"]
  params = network.init_params(config, jax.random.PRNGKey(0))
  model = network.DecoderOnly(config)
  embedded = jnp.zeros((1, 4, config.d_model))
  positions, mask = jnp.arange(4)[None], jnp.ones((1, 4), bool)
  with pytest.raises(ValueError, match="cache_length"):
    model.apply({"params": params}, embedded, positions, mask, decode=True, mutable=["cache"])
  with pytest.raises(ValueError, match="4 positions do not fit a cache of cache_length=3"):
    model.apply({"params": params}, embedded, positions, mask, decode=True, cache_length=3,
                mutable=["cache"])


def test_layer_hook_and_remat():
  config = decoder_config.CONFIGS["llama_tiny"]
  params = network.init_params(config, jax.random.PRNGKey(0))
  embedded = jax.random.normal(jax.random.PRNGKey(3), (2, 5, config.d_model))
  positions, mask = jnp.broadcast_to(jnp.arange(5), (2, 5)), jnp.ones((2, 5), bool)
  def run(cfg, emb, hook=None):
    return network.DecoderOnly(cfg).apply({"params": params}, emb, positions, mask,
                                          layer_hook=hook)
  plain = run(config, embedded)
  seen = []
  identity = run(config, embedded, lambda i, x: seen.append(i) or x)
  assert seen == [0, 1] and np.array_equal(np.asarray(identity), np.asarray(plain))
  # Llama adds nothing to the embedded rows, so doubling layer 0's input doubles the input.
  doubled = run(config, embedded, lambda i, x: 2 * x if i == 0 else x)
  np.testing.assert_allclose(doubled, run(config, 2 * embedded), atol=1e-6)
  grad = lambda cfg: jax.grad(lambda e: run(cfg, e).sum())(embedded)
  np.testing.assert_allclose(grad(config.replace(remat=True)), grad(config), atol=1e-6)


def test_gemma_scales_every_embedded_row():
  """Rows the caller adds (a prompt) are scaled by sqrt(d_model) like the token rows, as
  transformers' Gemma scales inputs_embeds."""
  config = decoder_config.CONFIGS["gemma_tiny"]
  plain = config.replace(scale_embeddings=False)
  params = network.init_params(config, jax.random.PRNGKey(0))
  embedded = jax.random.normal(jax.random.PRNGKey(4), (1, 4, config.d_model))
  positions, mask = jnp.arange(4)[None], jnp.ones((1, 4), bool)
  scaled = network.DecoderOnly(config).apply({"params": params}, embedded, positions, mask)
  by_hand = network.DecoderOnly(plain).apply({"params": params},
                                             embedded * np.sqrt(config.d_model), positions,
                                             mask)
  np.testing.assert_allclose(scaled, by_hand, atol=1e-5)
