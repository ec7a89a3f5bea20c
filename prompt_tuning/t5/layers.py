"""T5 building blocks in Flax Linen, with T5X's parameter names and logical axis names.

Parameters are float32; activations run in the module's `dtype`. Every parameter is created
with logical axes (`nn.with_logical_partitioning`) so one set of rules maps it to a mesh.
"""

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

Array = jax.Array
Dtype = Any
Initializer = Callable[..., Array]

constrain = nn.with_logical_constraint


def _param(module: nn.Module, name: str, init: Initializer, shape, axes) -> Array:
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.float32)


class RMSNorm(nn.Module):
  """T5's layer norm: scale only, no mean subtraction, no bias; statistics in float32."""
  epsilon: float = 1e-6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """[..., embed] -> [..., embed]."""
    scale = _param(self, "scale", nn.initializers.ones, (x.shape[-1],), ("embed",))
    x = x.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.epsilon)
    return x.astype(self.dtype) * scale.astype(self.dtype)


class Embed(nn.Module):
  """Token embedding table [vocab, embed]; `attend` is its transpose for tied logits."""
  num_embeddings: int
  features: int
  dtype: Dtype = jnp.float32

  def setup(self):
    self.embedding = _param(self, "embedding", nn.initializers.normal(stddev=1.0),
                            (self.num_embeddings, self.features), ("vocab", "embed"))

  def __call__(self, tokens: Array) -> Array:
    """[batch, length] int -> [batch, length, embed]."""
    return jnp.take(self.embedding, tokens, axis=0).astype(self.dtype)

  def attend(self, query: Array) -> Array:
    """[batch, length, embed] -> [batch, length, vocab]."""
    return jnp.einsum("ble,ve->blv", query, self.embedding.astype(self.dtype))


class Dense(nn.Module):
  """A bias-free projection of the last axis, kernel [in, out] with the given logical axes."""
  features: int
  kernel_axes: tuple[str, str]
  kernel_init: Initializer = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """[..., in] -> [..., features]."""
    kernel = _param(self, "kernel", self.kernel_init, (x.shape[-1], self.features),
                    self.kernel_axes)
    return jnp.dot(x, kernel.astype(self.dtype))


class MlpBlock(nn.Module):
  """T5's feed-forward block: gated (`wi_0`, `wi_1`) or plain (`wi`), then `wo`."""
  mlp_dim: int
  activations: tuple[str, ...] = ("gelu", "linear")
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    """[batch, length, embed] -> [batch, length, embed]."""
    names = [f"wi_{i}" for i in range(len(self.activations))] if len(self.activations) > 1 \
        else ["wi"]
    inputs = [Dense(self.mlp_dim, ("embed", "mlp"), dtype=self.dtype, name=name)(x)
              for name in names]
    hidden = constrain(_activate(self.activations, inputs), ("batch", "length", "mlp"))
    hidden = nn.Dropout(self.dropout_rate, broadcast_dims=(-2,))(hidden, deterministic)
    return Dense(x.shape[-1], ("mlp", "embed"), dtype=self.dtype, name="wo")(hidden)


_ACTIVATIONS = {
    "gelu": functools.partial(nn.gelu, approximate=True),  # T5's "gelu_new" (tanh form)
    "relu": nn.relu,
    "linear": lambda x: x,
}


@functools.partial(jax.checkpoint, static_argnums=0)
def _activate(activations: tuple[str, ...], inputs: list[Array]) -> Array:
  """The product of `activations` applied to `inputs` (each [..., mlp]), recomputed in the
  backward pass: only the inputs stay live for it. This elementwise recomputation is
  nearly free; without it XLA kept gelu's inner tanh and the product, two more [batch,
  length, mlp] buffers per layer (114 MiB of the t5_1_1_small train step's temporaries at
  batch 8 and 228 encoder positions)."""
  hidden = 1.0
  for act, h in zip(activations, inputs):
    hidden = hidden * _ACTIVATIONS[act](h)
  return hidden


@jax.custom_vjp
def softmax(x: Array) -> Array:
  """Softmax over the last axis, computed as exp(x - logsumexp(x)) with a hand-written
  backward pass that reads only the output. With jax.nn.softmax, XLA:CPU kept the
  unnormalised exponentials live until the backward pass as well as the output: one more
  [batch, heads, q_len, kv_len] buffer per layer (76 MiB of the same step's temporaries)."""
  return jnp.exp(x - jax.nn.logsumexp(x, axis=-1, keepdims=True))


def _softmax_forward(x: Array) -> tuple[Array, Array]:
  y = softmax(x)
  return y, y


def _softmax_backward(y: Array, grad: Array) -> tuple[Array]:
  return (y * (grad - jnp.sum(grad * y, axis=-1, keepdims=True)),)


softmax.defvjp(_softmax_forward, _softmax_backward)


def _query_init(head_dim: int) -> Initializer:
  # T5 applies no 1/sqrt(head_dim) to attention logits; the query init is scaled instead.
  base = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
  return lambda key, shape, dtype: base(key, shape, dtype) / np.sqrt(head_dim)


class ProjectedKV(NamedTuple):
  """Keys [batch, heads, kv, kv_len] and values [batch, heads, kv_len, kv], projected once
  (the encoding's, before a decoding loop) in the layouts the products with the queries read
  directly: XLA's loop-invariant code motion hoists the projections out of a decoding loop
  but not the transposes that layout assignment would add to every step."""
  key: Array
  value: Array


def split_heads(y: Array, num_heads: int) -> Array:
  """[batch, length, heads * kv] -> [batch, heads, length, kv]. Attention runs head-major so
  its products batch over leading (batch, heads) axes: measured on XLA:CPU, the per-product
  transposes of the length-major layout cost about half the encoder attention's forward time."""
  y = y.reshape(*y.shape[:-1], num_heads, -1)
  return jnp.swapaxes(y, 1, 2)


def project_kv(attention_params: dict, x: Array, num_heads: int, dtype: Dtype) -> ProjectedKV:
  """`MultiHeadAttention`'s key and value projections of x [batch, kv_len, embed], in the
  decoding layouts of `ProjectedKV`."""
  project = lambda name: split_heads(
      jnp.dot(x.astype(dtype), attention_params[name]["kernel"].astype(dtype)), num_heads)
  return ProjectedKV(jnp.swapaxes(project("key"), 2, 3), project("value"))


class MultiHeadAttention(nn.Module):
  """Unscaled dot-product attention with joined-head kernels [embed, heads * head_dim],
  computed head-major ([batch, heads, length, head_dim]).

  With `decode=True` it keeps a key/value cache (collection 'cache') and attends from one new
  query position at a time; the first such call (at cache creation) sees the whole length.
  `inputs_kv` may be a `ProjectedKV` (decoding's cross-attention): its batch is the
  sequences, and the query rows are each sequence's copies in a row (beam search's beams).
  """
  num_heads: int
  head_dim: int
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs_q: Array, inputs_kv: Array | ProjectedKV, mask: Array | None = None,
               bias: Array | None = None, *, decode: bool = False,
               deterministic: bool = True) -> Array:
    """inputs_q [batch, q_len, embed], inputs_kv [batch, kv_len, embed],
    mask [batch, 1, q_len, kv_len] bool, bias [1, heads, q_len, kv_len] -> [batch, q_len, embed].
    """
    joined = self.num_heads * self.head_dim
    def project(name, x, init=nn.initializers.variance_scaling(1.0, "fan_in", "normal")):
      y = Dense(joined, ("embed", "joined_kv"), init, self.dtype, name=name)(x)
      return constrain(split_heads(y, self.num_heads), ("batch", "heads", "length", "kv"))

    query = project("query", inputs_q, _query_init(self.head_dim))
    if isinstance(inputs_kv, ProjectedKV):
      out = self._attend_projected(query, inputs_kv, mask, None, deterministic)
    else:
      key = project("key", inputs_kv)
      value = project("value", inputs_kv)
      if decode:
        cached, mask, bias = self._use_cache(key, value, mask, bias)
        out = self._attend_projected(query, cached, mask, bias, deterministic)
      else:
        logits = jnp.einsum("bhqd,bhkd->bhqk", query, key)
        weights = self._weights(logits, mask, bias, deterministic)
        out = jnp.einsum("bhqk,bhkd->bhqd", weights, value)
    out = jnp.swapaxes(out, 1, 2).reshape(*inputs_q.shape[:2], joined)
    return Dense(inputs_q.shape[-1], ("joined_kv", "embed"), dtype=self.dtype, name="out")(out)

  def _weights(self, logits, mask, bias, deterministic):
    """Softmax over the last axis in float32, masked, with the position bias."""
    logits = logits.astype(jnp.float32)
    if bias is not None:
      logits = logits + bias.astype(jnp.float32)
    if mask is not None:
      logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = softmax(logits).astype(self.dtype)
    return nn.Dropout(self.dropout_rate)(weights, deterministic)

  def _attend_projected(self, query, kv, mask, bias, deterministic):
    """query [rows, heads, q_len, kv] against `kv` of rows // copies sequences; mask
    [sequences, 1, 1 or q_len, kv_len] -> [rows, heads, q_len, kv]. A sequence's copies
    share its keys and values, which are read once per step, never repeated."""
    sequences = kv.key.shape[0]
    rows, heads, q_len, head_dim = query.shape
    copies = rows // sequences
    def group(x):  # [rows, heads, q_len, kv] -> [sequences, heads, copies * q_len, kv]
      x = x.reshape(sequences, copies, heads, q_len, head_dim)
      return jnp.swapaxes(x, 1, 2).reshape(sequences, heads, copies * q_len, head_dim)
    weights = self._weights(jnp.einsum("bhmd,bhds->bhms", group(query), kv.key), mask, bias,
                            deterministic)
    out = jnp.einsum("bhms,bhsd->bhmd", weights, kv.value)
    out = jnp.swapaxes(out.reshape(sequences, heads, copies, q_len, head_dim), 1, 2)
    return out.reshape(rows, heads, q_len, head_dim)

  def _use_cache(self, key, value, mask, bias):
    """Writes this step's key/value [batch, heads, 1, kv] at the cache index; returns what
    the query attends to: (the whole cache as a ProjectedKV, mask, bias). The cache is kept
    in ProjectedKV's layouts, so a step transposes only its own key, never the cache."""
    head_major = ProjectedKV(jnp.swapaxes(key, 2, 3), value)
    initialized = self.has_variable("cache", "cached_key")
    cached_key = self.variable("cache", "cached_key", jnp.zeros, head_major.key.shape, key.dtype)
    cached_value = self.variable("cache", "cached_value", jnp.zeros, head_major.value.shape,
                                 value.dtype)
    index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
    if not initialized:  # cache creation: a full-length pass, nothing to read yet
      return head_major, mask, bias
    step = index.value
    max_length = cached_key.value.shape[-1]
    cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, head_major.key,
                                                    (0, 0, 0, step))
    cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, head_major.value,
                                                      (0, 0, step, 0))
    index.value = step + 1
    # Only positions written so far are visible: [1, 1, 1, max_length].
    mask = (jnp.arange(max_length) <= step)[None, None, None, :]
    if bias is not None:  # the bias row of this query position: [1, heads, 1, max_length]
      bias = jax.lax.dynamic_slice_in_dim(bias, step, 1, axis=2)
    return ProjectedKV(cached_key.value, cached_value.value), mask, bias


def relative_position_bucket(relative_position: np.ndarray, bidirectional: bool,
                             num_buckets: int, max_distance: int) -> np.ndarray:
  """Maps key-minus-query offsets to T5's buckets: exact for small offsets, log-spaced after.

  Computed in numpy at trace time (lengths are static), in float32 like T5 and Hugging Face.
  """
  n = -relative_position
  bucket = np.zeros_like(n)
  if bidirectional:
    num_buckets //= 2
    bucket += (n < 0).astype(n.dtype) * num_buckets
    n = np.abs(n)
  else:
    n = np.maximum(n, 0)
  max_exact = num_buckets // 2
  with np.errstate(divide="ignore"):
    scaled = (np.log(n.astype(np.float32) / np.float32(max_exact))
              / np.float32(np.log(max_distance / max_exact))
              * np.float32(num_buckets - max_exact))
  large = np.minimum(max_exact + np.nan_to_num(scaled, neginf=0).astype(n.dtype),
                     num_buckets - 1)
  return bucket + np.where(n < max_exact, n, large)


class RelativePositionBiases(nn.Module):
  """One learned scalar per (head, bucket), shared by all layers of a stack."""
  num_buckets: int
  max_distance: int
  num_heads: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, q_len: int, k_len: int, bidirectional: bool) -> Array:
    """-> [1, heads, q_len, k_len]."""
    table = _param(self, "rel_embedding",
                   nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
                   (self.num_heads, self.num_buckets), ("heads", "relpos_buckets"))
    offsets = np.arange(k_len)[None, :] - np.arange(q_len)[:, None]
    buckets = relative_position_bucket(offsets, bidirectional, self.num_buckets,
                                       self.max_distance)
    return jnp.take(table, buckets, axis=1)[None].astype(self.dtype)
