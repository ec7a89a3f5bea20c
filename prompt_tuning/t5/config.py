"""The T5 architecture as one frozen dataclass, and the published sizes by name."""

import dataclasses
from typing import Any

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Hyperparameters of a T5 encoder-decoder.

  `mlp_activations` ('gelu', 'linear') is the gated-GELU MLP of T5 1.1 / Flan-T5 / mT5
  (`wi_0`, `wi_1`, `wo`); ('relu',) is T5 1.0's MLP (`wi`, `wo`). T5 1.0 also ties the
  output projection to the embedding (`logits_via_embedding`), scaled by emb_dim**-0.5.
  """
  vocab_size: int = 32128
  emb_dim: int = 512
  num_heads: int = 6
  head_dim: int = 64
  mlp_dim: int = 1024
  num_encoder_layers: int = 8
  num_decoder_layers: int = 8
  mlp_activations: tuple[str, ...] = ("gelu", "linear")
  logits_via_embedding: bool = False
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  dropout_rate: float = 0.0
  layer_norm_epsilon: float = 1e-6
  dtype: Any = jnp.float32  # activations; parameters are always float32
  remat: bool = False  # recompute each layer's activations in the backward pass

  def replace(self, **changes) -> "T5Config":
    return dataclasses.replace(self, **changes)


def _t5_1_1(emb, heads, head_dim, mlp, layers, vocab=32128):
  return T5Config(vocab_size=vocab, emb_dim=emb, num_heads=heads, head_dim=head_dim,
                  mlp_dim=mlp, num_encoder_layers=layers, num_decoder_layers=layers)


def _t5_1_0(emb, heads, head_dim, mlp, layers):
  return T5Config(emb_dim=emb, num_heads=heads, head_dim=head_dim, mlp_dim=mlp,
                  num_encoder_layers=layers, num_decoder_layers=layers,
                  mlp_activations=("relu",), logits_via_embedding=True)


# Sizes as published (T5 1.1 / LM-adapted / Flan-T5, T5 1.0, mT5). `t5_1_1_tiny` matches the
# T5X test checkpoint: embed 4, 2 heads of 2, MLP 8, 2+2 layers, 4 buckets up to distance 8.
# `t5_1_1_mini` is this project's own pretrained model (prompt_tuning/pretrained/): 10.5M
# parameters, 8,192 ids (its own SentencePiece vocabulary).
CONFIGS: dict[str, T5Config] = {
    "t5_1_1_tiny": _t5_1_1(4, 2, 2, 8, 2).replace(
        relative_attention_num_buckets=4, relative_attention_max_distance=8),
    "t5_1_1_mini": _t5_1_1(256, 4, 64, 512, 4, vocab=8192),
    "t5_1_1_small": _t5_1_1(512, 6, 64, 1024, 8),
    "t5_1_1_base": _t5_1_1(768, 12, 64, 2048, 12),
    "t5_1_1_large": _t5_1_1(1024, 16, 64, 2816, 24),
    "t5_1_1_xl": _t5_1_1(2048, 32, 64, 5120, 24),
    "t5_1_1_xxl": _t5_1_1(4096, 64, 64, 10240, 24),
    "t5_1_0_small": _t5_1_0(512, 8, 64, 2048, 6),
    "t5_1_0_base": _t5_1_0(768, 12, 64, 3072, 12),
    "t5_1_0_large": _t5_1_0(1024, 16, 64, 4096, 24),
    "t5_1_0_3B": _t5_1_0(1024, 32, 128, 16384, 24),
    "t5_1_0_11B": _t5_1_0(1024, 128, 128, 65536, 24),
    "mt5_small": _t5_1_1(512, 6, 64, 1024, 8, vocab=250112),
    "mt5_base": _t5_1_1(768, 12, 64, 2048, 12, vocab=250112),
    "mt5_large": _t5_1_1(1024, 16, 64, 2816, 24, vocab=250112),
    "mt5_xl": _t5_1_1(2048, 32, 64, 5120, 24, vocab=250112),
    "mt5_xxl": _t5_1_1(4096, 64, 64, 10240, 24, vocab=250112),
}


def get_config(name: str, dtype: Any = None, **overrides) -> T5Config:
  """Returns the named T5 size, e.g. 't5_1_1_base', with optional field overrides.

  `dtype` is the activation dtype, a name ('bfloat16', 'float32') or a numpy dtype.
  """
  if name not in CONFIGS:
    raise ValueError(f"Unknown T5 config {name!r}; choose one of {sorted(CONFIGS)}.")
  if dtype is not None:
    overrides["dtype"] = activation_dtype(dtype)
  return CONFIGS[name].replace(**overrides)


def activation_dtype(name: Any) -> Any:
  """'bfloat16' | 'float32' | 'float16' (or a dtype) -> the jnp dtype, checked."""
  try:
    dtype = jnp.dtype(name)
  except TypeError:
    dtype = None
  if dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
    raise ValueError(f"ACTIVATION_DTYPE={name!r} is not supported; use 'bfloat16' (TPU/GPU) "
                     "or 'float32' (CPU).")
  return dtype


def frozen_dtype(name: Any) -> Any:
  """FROZEN_DTYPE, 'float32' | 'bfloat16' (or a dtype) -> the jnp dtype, checked."""
  try:
    dtype = jnp.dtype(name)
  except TypeError:
    dtype = None
  if dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
    raise ValueError(f"FROZEN_DTYPE={name!r} is not supported; use 'float32' or 'bfloat16' "
                     "(the frozen weights in half the memory).")
  return dtype
