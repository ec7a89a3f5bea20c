"""Building blocks of the decoder-only family in Flax Linen, with logical axis names.

Parameters are float32 (the frozen copy may be stored in bfloat16 by the loader); activations
run in the config's dtype; norms, RoPE angles and softmax statistics are float32. Names and
axes follow T5X (`t5/layers.py`), so `partitioning.DEFAULT_RULES` shard them.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from prompt_tuning.causal_lm.config import DecoderConfig
from prompt_tuning.t5 import layers as t5_layers

Array = jax.Array
Dtype = Any

constrain = t5_layers.constrain
_param = t5_layers._param  # pylint: disable=protected-access  (float32, logically partitioned)
# Hugging Face initialises every weight of these families as normal(0, 0.02).
_WEIGHT_INIT = nn.initializers.normal(stddev=0.02)

ACTIVATIONS = {
    "silu": nn.silu,
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: nn.gelu(x, approximate=True),  # gelu_new / gelu_pytorch_tanh
}


class Norm(nn.Module):
  """RMSNorm (Llama, Qwen2), RMSNorm with 1 + scale (Gemma) or LayerNorm with bias (GPT-2),
  statistics in float32, each rounded back to `dtype` where its Hugging Face model does."""
  kind: str = "rms"  # 'rms' | 'layer'
  plus_one: bool = False
  epsilon: float = 1e-6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """[..., embed] -> [..., embed]."""
    init = nn.initializers.zeros if self.plus_one else nn.initializers.ones
    scale = _param(self, "scale", init, (x.shape[-1],), ("embed",))
    x = x.astype(jnp.float32)
    if self.kind == "layer":
      bias = _param(self, "bias", nn.initializers.zeros, (x.shape[-1],), ("embed",))
      x = x - jnp.mean(x, axis=-1, keepdims=True)
      x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.epsilon)
      return (x * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(self.dtype)
    x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.epsilon)
    if self.plus_one:  # Gemma scales in float32, then rounds
      return (x * (1.0 + scale.astype(jnp.float32))).astype(self.dtype)
    return x.astype(self.dtype) * scale.astype(self.dtype)  # Llama rounds, then scales


class Dense(nn.Module):
  """x @ kernel [in, out] (+ bias [out]), with the kernel's and bias's logical axes."""
  features: int
  kernel_axes: tuple[str, str]
  use_bias: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """[..., in] -> [..., features]."""
    kernel = _param(self, "kernel", _WEIGHT_INIT, (x.shape[-1], self.features),
                    self.kernel_axes)
    y = jnp.dot(x, kernel.astype(self.dtype))
    if self.use_bias:
      bias = _param(self, "bias", nn.initializers.zeros, (self.features,),
                    self.kernel_axes[1:])
      y = y + bias.astype(self.dtype)
    return y


class Embed(nn.Module):
  """An embedding table [num, embed]; `attend` is its transpose (tied output logits)."""
  num_embeddings: int
  features: int
  axes: tuple[str, str] = ("vocab", "embed")
  dtype: Dtype = jnp.float32

  def setup(self):
    self.embedding = _param(self, "embedding", _WEIGHT_INIT,
                            (self.num_embeddings, self.features), self.axes)

  def __call__(self, ids: Array) -> Array:
    """[batch, length] int -> [batch, length, embed]."""
    return jnp.take(self.embedding, ids, axis=0).astype(self.dtype)

  def attend(self, x: Array) -> Array:
    """[batch, length, embed] -> [batch, length, num]."""
    return jnp.einsum("ble,ve->blv", x, self.embedding.astype(self.dtype))


# ---------------------------------------------------------------------------------------------
# Rotary position embedding

def inverse_frequencies(config: DecoderConfig) -> np.ndarray:
  """[head_dim / 2] float32 rotation rates, with the config's scaling (as transformers)."""
  dim = config.head_dim
  rates = 1.0 / (np.float32(config.rope_theta)
                 ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))
  if config.rope_scaling == "linear":
    rates = rates / np.float32(config.rope_factor)
  elif config.rope_scaling == "llama3":
    rates = _llama3_rates(rates, config)
  return rates.astype(np.float32)


def _llama3_rates(rates: np.ndarray, config: DecoderConfig) -> np.ndarray:
  """Llama 3.1's scaling: long wavelengths slowed by `factor`, short ones kept, the band
  between interpolated linearly in context / wavelength."""
  factor = config.rope_factor
  context = config.rope_original_max_positions
  low, high = config.rope_low_freq_factor, config.rope_high_freq_factor
  wavelengths = 2 * np.pi / rates
  slowed = np.where(wavelengths > context / low, rates / factor, rates)
  blend = (context / wavelengths - low) / (high - low)
  between = (wavelengths <= context / low) & (wavelengths >= context / high)
  return np.where(between, (1 - blend) * slowed / factor + blend * slowed, slowed)


def rope_angles(config: DecoderConfig, positions: Array) -> tuple[Array, Array]:
  """positions [batch, length] int -> (sin, cos), each [batch, length, 1, head_dim / 2]
  float32 (the 1 broadcasts over heads)."""
  angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inverse_frequencies(config))
  return jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]


def apply_rope(x: Array, sin: Array, cos: Array) -> Array:
  """Rotates the pairs (x[i], x[i + head_dim / 2]) of x [batch, length, heads, head_dim] by
  the angles (the 'rotate half' layout of Hugging Face's Llama-style checkpoints)."""
  first, second = jnp.split(x, 2, axis=-1)
  sin, cos = sin.astype(x.dtype), cos.astype(x.dtype)
  return jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)


# ---------------------------------------------------------------------------------------------
# Attention and MLP

class Attention(nn.Module):
  """Causal multi-head attention with grouped-query heads (num_kv_heads <= num_heads), joined
  kernels [embed, heads * head_dim], logits scaled by head_dim**-0.5.

  With `decode=True` it keeps keys, values and their padding mask in the 'cache' collection,
  `cache_length` slots: each call appends its positions at the cache index and attends to
  the real slots written so far (a prefill of L tokens, then one token per step).
  """
  config: DecoderConfig

  @nn.compact
  def __call__(self, x: Array, rope: tuple[Array, Array] | None, mask: Array,
               deterministic: bool = True, decode: bool = False,
               cache_length: int | None = None) -> Array:
    """x [batch, length, embed], rope (sin, cos) of rope_angles or None, mask [batch, length]
    bool (real tokens) -> [batch, length, embed]."""
    cfg = self.config
    batch, length, _ = x.shape
    groups = cfg.num_heads // cfg.num_kv_heads
    def project(name, heads):
      y = Dense(heads * cfg.head_dim, ("embed", "joined_kv"), cfg.qkv_bias, cfg.dtype,
                name=name)(x)
      return constrain(y.reshape(batch, length, heads, cfg.head_dim),
                       ("batch", "length", "heads", "kv"))
    query = project("query", cfg.num_heads)
    key = project("key", cfg.num_kv_heads)
    value = project("value", cfg.num_kv_heads)
    if rope is not None:
      query, key = apply_rope(query, *rope), apply_rope(key, *rope)
    if decode:
      key, value, visible = self._use_cache(key, value, mask, cache_length)
    else:
      causal = jnp.tril(jnp.ones((length, length), bool))
      visible = causal[None] & mask[:, None, :]  # [batch, q_len, kv_len]
    query = query.reshape(batch, length, cfg.num_kv_heads, groups, cfg.head_dim)
    logits = jnp.einsum("blkgd,bskd->bkgls", query, key).astype(jnp.float32)
    logits = logits * np.float32(cfg.head_dim ** -0.5)
    logits = jnp.where(visible[:, None, None], logits, jnp.finfo(jnp.float32).min)
    weights = t5_layers.softmax(logits).astype(cfg.dtype)
    weights = nn.Dropout(cfg.attention_dropout_rate)(weights, deterministic)
    out = jnp.einsum("bkgls,bskd->blkgd", weights, value)
    out = out.reshape(batch, length, cfg.num_heads * cfg.head_dim)
    return Dense(x.shape[-1], ("joined_kv", "embed"), cfg.out_bias, cfg.dtype, name="out")(out)

  def _use_cache(self, key, value, mask, cache_length):
    """Writes key/value [batch, length, kv_heads, head_dim] and mask [batch, length] at the
    cache index; returns (cached keys, cached values, visible [batch, length, cache_length]):
    a query sees the real slots up to its own."""
    batch, length, kv_heads, head_dim = key.shape
    if not self.has_variable("cache", "cached_key"):
      if cache_length is None:
        raise ValueError("decode=True: the first (prefill) call creates the cache and needs "
                         "cache_length (the most positions it will hold).")
      if length > cache_length:
        raise ValueError(f"decode=True: {length} positions do not fit a cache of "
                         f"cache_length={cache_length}.")
    shape = (batch, cache_length, kv_heads, head_dim)
    cached_key = self.variable("cache", "cached_key", jnp.zeros, shape, key.dtype)
    cached_value = self.variable("cache", "cached_value", jnp.zeros, shape, value.dtype)
    cached_mask = self.variable("cache", "cached_mask", jnp.zeros, shape[:2], bool)
    index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
    start = index.value
    cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key, (0, start, 0, 0))
    cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value,
                                                      (0, start, 0, 0))
    cached_mask.value = jax.lax.dynamic_update_slice(cached_mask.value, mask, (0, start))
    index.value = start + length
    slots = jnp.arange(cached_key.value.shape[1])
    causal = slots[None, :] <= (start + jnp.arange(length))[:, None]  # [length, cache_length]
    return cached_key.value, cached_value.value, causal[None] & cached_mask.value[:, None, :]


class Mlp(nn.Module):
  """Gated (`wi_0` activated, times `wi_1`: SwiGLU, GeGLU) or plain (`wi`, GPT-2), then `wo`."""
  config: DecoderConfig

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    """[batch, length, embed] -> [batch, length, embed]."""
    cfg = self.config
    dense = lambda name: Dense(cfg.mlp_dim, ("embed", "mlp"), cfg.mlp_bias, cfg.dtype,
                               name=name)
    activation = ACTIVATIONS[cfg.mlp_activation]
    if cfg.gated_mlp:
      hidden = activation(dense("wi_0")(x)) * dense("wi_1")(x)
    else:
      hidden = activation(dense("wi")(x))
    hidden = constrain(hidden, ("batch", "length", "mlp"))
    return Dense(x.shape[-1], ("mlp", "embed"), cfg.mlp_bias, cfg.dtype, name="wo")(hidden)
