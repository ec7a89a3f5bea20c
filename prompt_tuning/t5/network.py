"""The T5 encoder-decoder (T5 1.0, 1.1, Flan-T5, mT5) with T5X's parameter tree.

    token_embedder/embedding
    encoder/{relpos_bias, layers_i/{pre_attention_layer_norm, attention, pre_mlp_layer_norm,
             mlp}, encoder_norm}
    decoder/{relpos_bias, layers_i/{pre_self_attention_layer_norm, self_attention,
             pre_cross_attention_layer_norm, encoder_decoder_attention, pre_mlp_layer_norm,
             mlp}, decoder_norm, logits_dense}

The encoder takes embedded inputs, so a caller may change the sequence between the embedding
lookup and the encoder (prompt tuning does), and an optional per-layer hook, so a caller may
change the hidden states between layers (deep prompts do); this module knows nothing about
prompts.
Token id 0 is padding (and the decoder's start token).
"""

from typing import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from prompt_tuning.t5 import layers
from prompt_tuning.t5.config import T5Config

Array = jax.Array
# (layer index, that layer's input [batch, length, embed]) -> its replacement; see Encoder.
LayerHook = Callable[[int, Array], Array]
constrain = layers.constrain


def _dropout(cfg: T5Config) -> nn.Dropout:
  return nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))


def _attention(cfg: T5Config, name: str) -> layers.MultiHeadAttention:
  return layers.MultiHeadAttention(cfg.num_heads, cfg.head_dim, cfg.dropout_rate, cfg.dtype,
                                   name=name)


def _norm(cfg: T5Config, name: str) -> layers.RMSNorm:
  return layers.RMSNorm(cfg.layer_norm_epsilon, cfg.dtype, name=name)


def _relpos(cfg: T5Config) -> layers.RelativePositionBiases:
  return layers.RelativePositionBiases(cfg.relative_attention_num_buckets,
                                       cfg.relative_attention_max_distance, cfg.num_heads,
                                       cfg.dtype, name="relpos_bias")


def _maybe_remat(layer_cls, cfg: T5Config, static_argnums: tuple[int, ...]):
  """The layer, recomputed in the backward pass when cfg.remat: only layer inputs are kept
  between forward and backward, trading about a third more compute for far less memory."""
  return nn.remat(layer_cls, static_argnums=static_argnums) if cfg.remat else layer_cls


def _mlp(cfg: T5Config) -> layers.MlpBlock:
  return layers.MlpBlock(cfg.mlp_dim, cfg.mlp_activations, cfg.dropout_rate, cfg.dtype,
                         name="mlp")


class EncoderLayer(nn.Module):
  """Pre-norm self-attention then MLP, each with a residual."""
  config: T5Config

  @nn.compact
  def __call__(self, x, mask, bias, deterministic):
    """x [batch, length, embed], mask [batch, 1, length, length], bias [1, heads, l, l]."""
    cfg = self.config
    y = _norm(cfg, "pre_attention_layer_norm")(x)
    y = _attention(cfg, "attention")(y, y, mask, bias, deterministic=deterministic)
    x = x + _dropout(cfg)(y, deterministic)
    y = _norm(cfg, "pre_mlp_layer_norm")(x)
    y = _mlp(cfg)(y, deterministic)
    x = x + _dropout(cfg)(y, deterministic)
    return constrain(x, ("batch", "length", "embed"))


class DecoderLayer(nn.Module):
  """Pre-norm causal self-attention, cross-attention to the encoder, then MLP."""
  config: T5Config

  @nn.compact
  def __call__(self, x, encoded, self_mask, cross_mask, bias, deterministic, decode):
    """x [batch, t_len, embed], encoded [batch, s_len, embed] or this layer's
    `layers.ProjectedKV` of it (decoding)."""
    cfg = self.config
    y = _norm(cfg, "pre_self_attention_layer_norm")(x)
    y = _attention(cfg, "self_attention")(y, y, self_mask, bias, decode=decode,
                                          deterministic=deterministic)
    x = x + _dropout(cfg)(y, deterministic)
    y = _norm(cfg, "pre_cross_attention_layer_norm")(x)
    y = _attention(cfg, "encoder_decoder_attention")(y, encoded, cross_mask,
                                                     deterministic=deterministic)
    x = x + _dropout(cfg)(y, deterministic)
    y = _norm(cfg, "pre_mlp_layer_norm")(x)
    y = _mlp(cfg)(y, deterministic)
    x = x + _dropout(cfg)(y, deterministic)
    return constrain(x, ("batch", "length", "embed"))


class Encoder(nn.Module):
  """The encoder stack over already-embedded inputs."""
  config: T5Config

  @nn.compact
  def __call__(self, embedded: Array, mask: Array, deterministic: bool = True,
               layer_hook: LayerHook | None = None) -> Array:
    """embedded [batch, length, embed], mask [batch, length] bool -> [batch, length, embed].

    layer_hook: `(i, x [batch, length, embed]) -> x'` of the same shape, applied to the input
    of every layer i (for layer 0, after the input dropout); a pure function of its arguments
    and what it closes over. It runs between layers, outside each layer's remat, so a
    rematerialised layer saves the hooked input like any other.
    """
    cfg = self.config
    length = embedded.shape[1]
    bias = _relpos(cfg)(length, length, bidirectional=True)
    attention_mask = mask[:, None, None, :] & mask[:, None, :, None]
    x = _dropout(cfg)(constrain(embedded, ("batch", "length", "embed")), deterministic)
    layer = _maybe_remat(EncoderLayer, cfg, static_argnums=(4,))  # deterministic
    for i in range(cfg.num_encoder_layers):
      if layer_hook is not None:
        x = layer_hook(i, x)
      x = layer(cfg, name=f"layers_{i}")(x, attention_mask, bias, deterministic)
    x = _norm(cfg, "encoder_norm")(x)
    return _dropout(cfg)(x, deterministic)


class Decoder(nn.Module):
  """The decoder stack and the output projection (tied or `logits_dense`)."""
  config: T5Config
  shared_embedding: layers.Embed

  @nn.compact
  def __call__(self, encoded, encoder_mask, decoder_input_tokens, decoder_target_tokens=None,
               deterministic=True, decode=False, max_decode_length=None):
    """encoded [batch, s_len, embed], encoder_mask [batch, s_len] bool,
    decoder_input_tokens [batch, t_len] (t_len 1 when decode) -> logits [batch, t_len, vocab].

    When decoding, `encoded` may instead be `cross_attention_kv`'s list (one ProjectedKV per
    layer, for the encoder_mask's sequences); the decoder's rows are then each sequence's
    copies in a row.
    """
    cfg = self.config
    t_len = decoder_input_tokens.shape[1]
    bias_len = max_decode_length if decode and max_decode_length else t_len
    bias = _relpos(cfg)(bias_len, bias_len, bidirectional=False)
    if decode:  # the attention cache supplies causality; every query row is real
      query_mask = jnp.ones_like(decoder_input_tokens, dtype=bool)
      self_mask = None
    else:
      query_mask = (decoder_target_tokens > 0 if decoder_target_tokens is not None
                    else jnp.ones_like(decoder_input_tokens, dtype=bool))
      causal = jnp.tril(jnp.ones((t_len, t_len), bool))
      self_mask = causal[None, None] & query_mask[:, None, :, None]
    projected = isinstance(encoded, (list, tuple))
    if projected:  # per sequence; every query row is real when decoding
      cross_mask = encoder_mask[:, None, None, :]
    else:
      cross_mask = query_mask[:, None, :, None] & encoder_mask[:, None, None, :]

    x = self.shared_embedding(decoder_input_tokens)
    x = _dropout(cfg)(x, deterministic)
    layer = _maybe_remat(DecoderLayer, cfg, static_argnums=(6, 7))  # deterministic, decode
    for i in range(cfg.num_decoder_layers):
      x = layer(cfg, name=f"layers_{i}")(x, encoded[i] if projected else encoded, self_mask,
                                         cross_mask, bias, deterministic, decode)
    x = _norm(cfg, "decoder_norm")(x)
    x = _dropout(cfg)(x, deterministic)
    if cfg.logits_via_embedding:  # T5 1.0: tied, rescaled by emb_dim**-0.5
      logits = self.shared_embedding.attend(x) / jnp.sqrt(cfg.emb_dim).astype(x.dtype)
    else:
      logits = layers.Dense(cfg.vocab_size, ("embed", "vocab"), dtype=cfg.dtype,
                            name="logits_dense")(x)
    return constrain(logits.astype(jnp.float32), ("batch", "length", "vocab"))


class Transformer(nn.Module):
  """T5 encoder-decoder. Subclasses may override `encode` (prompt tuning does)."""
  config: T5Config

  def setup(self):
    cfg = self.config
    self.token_embedder = layers.Embed(cfg.vocab_size, cfg.emb_dim, cfg.dtype,
                                       name="token_embedder")
    self.encoder = Encoder(cfg, name="encoder")
    self.decoder = Decoder(cfg, self.token_embedder, name="decoder")

  def encode(self, encoder_input_tokens: Array, enable_dropout: bool = False):
    """[batch, length] -> (encoded [batch, length, embed], mask [batch, length] bool)."""
    mask = encoder_input_tokens > 0
    embedded = self.token_embedder(encoder_input_tokens)
    return self.encoder(embedded, mask, not enable_dropout), mask

  def decode(self, encoded, encoder_mask, decoder_input_tokens, decoder_target_tokens=None,
             enable_dropout=False, decode=False, max_decode_length=None):
    """Logits [batch, t_len, vocab] (float32) for the decoder inputs, given the encoding."""
    return self.decoder(encoded, encoder_mask, decoder_input_tokens, decoder_target_tokens,
                        not enable_dropout, decode, max_decode_length)

  def __call__(self, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens=None,
               enable_dropout=False, decode=False, max_decode_length=None, **encode_kwargs):
    """[batch, s_len], [batch, t_len] -> logits [batch, t_len, vocab] (float32).

    encode_kwargs go to `encode` (a subclass's extra encoder inputs).
    """
    encoded, mask = self.encode(encoder_input_tokens, enable_dropout, **encode_kwargs)
    return self.decode(encoded, mask, decoder_input_tokens, decoder_target_tokens,
                       enable_dropout, decode, max_decode_length)


def cross_attention_kv(params, config: T5Config, encoded: Array) -> list[layers.ProjectedKV]:
  """Each decoder layer's cross-attention keys and values of encoded [batch, s_len, embed],
  for `Decoder` to read at every decoding step instead of projecting them again."""
  decoder = params["decoder"]
  return [layers.project_kv(decoder[f"layers_{i}"]["encoder_decoder_attention"], encoded,
                            config.num_heads, config.dtype)
          for i in range(config.num_decoder_layers)]


def _abstract_variables(model: nn.Module):
  tokens = jnp.ones((1, 1), jnp.int32)
  return jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens, tokens)


def strip_axes(boxed):
  """Parameters without their logical-axis boxes. Unlike `nn.unbox` this applies no sharding
  constraint, so it also works on abstract values outside jit under an active mesh."""
  return jax.tree.map(lambda x: x.unbox(apply_constraint=False), boxed,
                      is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))


def logical_axes(boxed):
  """The logical axis-name tuple of each boxed parameter (nn.with_logical_partitioning)."""
  specs = nn.get_partition_spec(boxed)
  return jax.tree.map(tuple, specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))


def param_shapes(config: T5Config):
  """Nested dict of jax.ShapeDtypeStruct, the tree a checkpoint must fill."""
  return strip_axes(_abstract_variables(Transformer(config))["params"])


def param_axes(config: T5Config):
  """Nested dict of logical axis-name tuples, one per parameter."""
  return logical_axes(_abstract_variables(Transformer(config))["params"])


def init_params(config: T5Config, rng: Array):
  """Random float32 parameters (unboxed nested dict), as T5X would initialise them."""
  tokens = jnp.ones((1, 1), jnp.int32)
  return strip_axes(Transformer(config).init(rng, tokens, tokens)["params"])
