"""Deep prompts: the encoder's per-layer hook, then a prompt at every encoder layer's input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning.t5 import config as t5_config
from prompt_tuning.t5 import network

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

  plain = jax.jit(jax.grad(loss), static_argnums=1)(values, TINY)
  remat = jax.jit(jax.grad(loss), static_argnums=1)(values, TINY.replace(remat=True))
  assert "remat" in str(jax.make_jaxpr(jax.grad(loss), static_argnums=1)(
      values, TINY.replace(remat=True)))
  assert np.all(np.abs(plain).sum(-1) > 0)  # every layer's value reaches the output
  np.testing.assert_allclose(remat, plain, rtol=1e-5, atol=1e-6)
