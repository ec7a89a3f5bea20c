"""The decoder-only transformer (Llama, Qwen2, Gemma, GPT-2) with a T5X-style parameter tree.

    token_embedder/embedding                      [vocab, embed]    ('vocab', 'embed')
    position_embedder/embedding (GPT-2)           [positions, embed] ('length', 'embed')
    layers_i/pre_attention_layer_norm/{scale, bias (GPT-2)}
    layers_i/attention/{query, key, value}/{kernel, bias (qkv_bias)}  ('embed', 'joined_kv')
    layers_i/attention/out/{kernel, bias (out_bias)}                  ('joined_kv', 'embed')
    layers_i/pre_mlp_layer_norm/{scale, bias (GPT-2)}
    layers_i/mlp/{wi_0, wi_1 | wi}/{kernel, bias (mlp_bias)}          ('embed', 'mlp')
    layers_i/mlp/wo/{kernel, bias}                                    ('mlp', 'embed')
    decoder_norm/{scale, bias (GPT-2)}
    logits_dense/kernel (untied only)                                 ('embed', 'vocab')

`embed` returns the raw table rows and `__call__` takes embedded rows, so a caller may put
other rows (a prompt) into the sequence in the table's space; the family's embedding scaling
(Gemma's sqrt(d_model)) and learned positions are applied in `__call__` to every row it gets,
as Hugging Face does to `inputs_embeds`. This module knows nothing about prompts.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from prompt_tuning.causal_lm import layers
from prompt_tuning.causal_lm.config import DecoderConfig, embedding_multiplier
from prompt_tuning.t5 import network as t5_network

Array = jax.Array
# (layer index, that layer's input [batch, length, embed]) -> its replacement.
LayerHook = Callable[[int, Array], Array]
constrain = layers.constrain
strip_axes = t5_network.strip_axes


class DecoderLayer(nn.Module):
  """Pre-norm causal self-attention then MLP, each with a residual."""
  config: DecoderConfig

  @nn.compact
  def __call__(self, x, rope, mask, deterministic, decode, cache_length):
    """x [batch, length, embed], rope (sin, cos) or None, mask [batch, length] bool."""
    cfg = self.config
    norm = lambda name: layers.Norm(cfg.norm, cfg.norm_plus_one, cfg.norm_epsilon, cfg.dtype,
                                    name=name)
    dropout = nn.Dropout(cfg.dropout_rate)
    y = norm("pre_attention_layer_norm")(x)
    y = layers.Attention(cfg, name="attention")(y, rope, mask, deterministic, decode,
                                                cache_length)
    x = x + dropout(y, deterministic)
    y = norm("pre_mlp_layer_norm")(x)
    y = layers.Mlp(cfg, name="mlp")(y, deterministic)
    x = x + dropout(y, deterministic)
    return constrain(x, ("batch", "length", "embed"))


class DecoderOnly(nn.Module):
  """A frozen causal language model over embedded inputs. Token id 0 is not special: which
  rows are real is the `mask` argument."""
  config: DecoderConfig

  def setup(self):
    cfg = self.config
    self.token_embedder = layers.Embed(cfg.vocab_size, cfg.d_model, dtype=cfg.dtype)
    if cfg.positions == "learned":
      self.position_embedder = layers.Embed(cfg.max_positions, cfg.d_model, ("length", "embed"),
                                            cfg.dtype)
    # Static: deterministic, decode, cache_length (counting the module itself).
    layer = nn.remat(DecoderLayer, static_argnums=(4, 5, 6)) if cfg.remat else DecoderLayer
    self.layers = [layer(cfg) for _ in range(cfg.num_layers)]  # named layers_0, layers_1, ...
    self.decoder_norm = layers.Norm(cfg.norm, cfg.norm_plus_one, cfg.norm_epsilon, cfg.dtype)
    if not cfg.tie_word_embeddings:
      self.logits_dense = layers.Dense(cfg.vocab_size, ("embed", "vocab"), dtype=cfg.dtype)
    self.embedding_dropout = nn.Dropout(cfg.dropout_rate)

  def embed(self, tokens: Array) -> Array:
    """tokens [batch, length] int -> the table's rows [batch, length, embed], unscaled."""
    return self.token_embedder(tokens)

  def __call__(self, embedded: Array, positions: Array, mask: Array, *,
               layer_hook: LayerHook | None = None, deterministic: bool = True,
               decode: bool = False, cache_length: int | None = None,
               logits_at: Array | None = None) -> Array:
    """embedded [batch, length, embed], positions [batch, length] int, mask [batch, length]
    bool (real rows) -> logits [batch, length, vocab] float32.

    Row i attends to rows j <= i that are real. For a row alone, positions are 0, 1, ...;
    with left padding, `cumsum(mask) - 1` gives each real row the logits it has alone.
    layer_hook: `(i, x) -> x'` applied to the input of every layer i (outside remat).
    decode: keep keys and values in the 'cache' collection (apply with mutable=['cache']):
    the first call (the prefill, any length) creates a cache of `cache_length` positions,
    each later call appends its rows (e.g. one token) and reads the cache, never recomputing
    earlier rows.
    logits_at: [batch] int, one slot per row: only that slot's logits, [batch, 1, vocab]
    (a prefill needs only the last real slot's; the vocabulary projection of every slot
    would cost about a quarter of a small model's prefill).
    """
    cfg = self.config
    x = embedded.astype(cfg.dtype)
    if cfg.scale_embeddings:  # Hugging Face rounds the multiplier to the activation dtype
      x = x * jnp.asarray(embedding_multiplier(cfg), cfg.dtype)
    if cfg.positions == "learned":
      x = x + self.position_embedder(jnp.clip(positions, 0, cfg.max_positions - 1))
    x = self.embedding_dropout(x, deterministic)
    x = constrain(x, ("batch", "length", "embed"))
    rope = layers.rope_angles(cfg, positions) if cfg.positions == "rope" else None
    mask = mask.astype(bool)
    for i, layer in enumerate(self.layers):
      if layer_hook is not None:
        x = layer_hook(i, x)
      x = layer(x, rope, mask, deterministic, decode, cache_length)
    if logits_at is not None:
      x = jnp.take_along_axis(x, logits_at[:, None, None].astype(jnp.int32), axis=1)
    x = self.decoder_norm(x)
    if cfg.tie_word_embeddings:
      logits = self.token_embedder.attend(x)
    else:
      logits = self.logits_dense(x)
    return constrain(logits.astype(jnp.float32), ("batch", "length", "vocab"))

  def token_logits(self, tokens: Array, mask: Array | None = None) -> Array:
    """tokens [batch, length] (mask: real tokens, default all) -> logits [batch, length,
    vocab]: the embedded tokens at positions cumsum(mask) - 1 (left or right padding)."""
    mask = jnp.ones_like(tokens, bool) if mask is None else mask.astype(bool)
    return self(self.embed(tokens), positions_of(mask), mask)


def positions_of(mask: Array) -> Array:
  """mask [batch, length] bool -> positions [batch, length] int32 counting real rows from 0
  (padding before the first real row gets -1; it is never attended to)."""
  return jnp.cumsum(mask.astype(jnp.int32), axis=1) - 1


def _abstract_variables(model: DecoderOnly):
  tokens = jnp.ones((1, 1), jnp.int32)
  return jax.eval_shape(lambda r: model.init(r, tokens, method=DecoderOnly.token_logits),
                        jax.random.PRNGKey(0))


def param_shapes(config: DecoderConfig):
  """Nested dict of jax.ShapeDtypeStruct, the tree a checkpoint must fill."""
  return strip_axes(_abstract_variables(DecoderOnly(config))["params"])


def param_axes(config: DecoderConfig):
  """Nested dict of logical axis-name tuples, one per parameter."""
  return t5_network.logical_axes(_abstract_variables(DecoderOnly(config))["params"])


def init_params(config: DecoderConfig, rng: Array):
  """Random float32 parameters (unboxed nested dict), initialised as Hugging Face does."""
  tokens = jnp.ones((1, 1), jnp.int32)
  return strip_axes(DecoderOnly(config).init(rng, tokens, method=DecoderOnly.token_logits)
                    ["params"])


def num_params(config: DecoderConfig) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(param_shapes(config)))
