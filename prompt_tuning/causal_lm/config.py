"""Decoder-only language models (Llama, Qwen2, Gemma, GPT-2) as one frozen dataclass.

The four families differ by a few switches, all read from a Hugging Face `config.json` by
`config_from_hf` and written back by `hf_config`:

    family  norm              mlp                  biases            positions  embedding
    llama   RMS               SwiGLU (gated silu)  attention_bias    RoPE       -
    qwen2   RMS               SwiGLU               q, k, v           RoPE       -
    gemma   RMS, 1 + scale    GeGLU (gated gelu)   attention_bias    RoPE       x sqrt(d_model)
    gpt2    LayerNorm + bias  GELU (tanh), plain   every projection  learned    -
"""

import dataclasses
import math
import os
from typing import Any

import jax.numpy as jnp

from prompt_tuning.checkpoints import huggingface
from prompt_tuning.checkpoints.base import CheckpointError
from prompt_tuning.t5.config import activation_dtype

FAMILIES = ("llama", "qwen2", "gemma", "gpt2")
# Hugging Face `hidden_act` / `activation_function` -> our activation name.
_ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu": "gelu",
                "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh"}
_HF_ACTIVATIONS = {"silu": "silu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}
ROPE_SCALINGS = ("default", "linear", "llama3")


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """Hyperparameters of a decoder-only transformer (pre-norm, causal).

  `head_dim` may differ from d_model / num_heads (Gemma); `num_kv_heads` < num_heads is
  grouped-query attention (each key/value head serves num_heads / num_kv_heads query heads).
  Attention logits are scaled by head_dim**-0.5 in every family.
  """
  family: str = "llama"
  vocab_size: int = 32000
  d_model: int = 4096
  num_heads: int = 32
  num_kv_heads: int = 32
  head_dim: int = 128
  mlp_dim: int = 11008
  num_layers: int = 32
  norm: str = "rms"  # 'rms' | 'layer' (LayerNorm with bias, GPT-2)
  norm_plus_one: bool = False  # Gemma: x * (1 + scale); the stored scale starts at 0
  norm_epsilon: float = 1e-6
  mlp_activation: str = "silu"  # 'silu' | 'gelu' (erf) | 'gelu_tanh'
  gated_mlp: bool = True  # act(wi_0 x) * wi_1 x (SwiGLU / GeGLU); else act(wi x) (GPT-2)
  qkv_bias: bool = False
  out_bias: bool = False  # the attention output projection's bias
  mlp_bias: bool = False
  positions: str = "rope"  # 'rope' | 'learned' (GPT-2's position table)
  rope_theta: float = 10000.0
  rope_scaling: str = "default"  # 'default' | 'linear' | 'llama3'
  rope_factor: float = 1.0  # linear and llama3
  rope_low_freq_factor: float = 1.0  # llama3
  rope_high_freq_factor: float = 4.0  # llama3
  rope_original_max_positions: int = 8192  # llama3
  max_positions: int = 2048
  tie_word_embeddings: bool = False  # logits through the embedding table (no logits_dense)
  scale_embeddings: bool = False  # Gemma: every embedded row is multiplied by sqrt(d_model)
  dropout_rate: float = 0.0  # embeddings and residual branches (GPT-2's embd/resid_pdrop)
  attention_dropout_rate: float = 0.0  # attention weights
  dtype: Any = jnp.float32  # activations; parameters are float32 (or FROZEN_DTYPE)
  remat: bool = False  # recompute each layer's activations in the backward pass

  def __post_init__(self):
    problems = []
    if self.family not in FAMILIES:
      problems.append(f"family {self.family!r} (supported: {', '.join(FAMILIES)})")
    if self.norm not in ("rms", "layer"):
      problems.append(f"norm {self.norm!r} (use 'rms' or 'layer')")
    if self.mlp_activation not in _HF_ACTIVATIONS:
      problems.append(f"mlp_activation {self.mlp_activation!r} (use one of "
                      f"{sorted(_HF_ACTIVATIONS)})")
    if self.positions not in ("rope", "learned"):
      problems.append(f"positions {self.positions!r} (use 'rope' or 'learned')")
    if self.rope_scaling not in ROPE_SCALINGS:
      problems.append(f"rope_scaling {self.rope_scaling!r} (use one of {ROPE_SCALINGS})")
    if self.num_kv_heads < 1 or self.num_heads % self.num_kv_heads:
      problems.append(f"num_kv_heads {self.num_kv_heads} (must divide num_heads "
                      f"{self.num_heads})")
    if self.positions == "rope" and self.head_dim % 2:
      problems.append(f"head_dim {self.head_dim} (RoPE rotates pairs: it must be even)")
    if problems:
      raise ValueError("DecoderConfig: unsupported " + "; ".join(problems) + ".")

  def replace(self, **changes) -> "DecoderConfig":
    return dataclasses.replace(self, **changes)


def _tiny(family: str, **fields) -> DecoderConfig:
  """A tiny config, checked to be one its family's config.json can express."""
  sizes = dict(vocab_size=128, d_model=32, num_heads=4, num_kv_heads=2, head_dim=8,
               mlp_dim=64, num_layers=2, max_positions=64)
  config = DecoderConfig(family=family, **{**sizes, **fields})
  hf_config(config)  # raises ValueError if the family cannot express it
  return config


def get_config(name: str, dtype: Any = None, **overrides) -> DecoderConfig:
  """The named size, e.g. 'llama_tiny' or 'llama_mini', with optional field overrides."""
  if name not in CONFIGS:
    raise ValueError(f"Unknown decoder config {name!r}; choose one of {sorted(CONFIGS)}, or "
                     "read a Hugging Face model's with config_from_hf(path).")
  if dtype is not None:
    overrides["dtype"] = activation_dtype(dtype)
  return CONFIGS[name].replace(**overrides)


# ---------------------------------------------------------------------------------------------
# Hugging Face config.json <-> DecoderConfig

def _read(source: Any) -> tuple[dict[str, Any], str]:
  """(config dict, a name for messages) of a dict, a config.json file or a model directory."""
  if isinstance(source, dict):
    return source, "the given config"
  if source is None:
    raise CheckpointError("No Hugging Face model given (None); pass its directory, its "
                          "config.json or the parsed dict.")
  path = os.fspath(source)
  file = path if path.endswith(".json") else os.path.join(path, huggingface.CONFIG_FILE)
  return huggingface.read_hf_config(path, model_types=None), file


def _model_type(hf: dict[str, Any], where: str) -> str:
  """The family named by `model_type` (or, without one, by `architectures`)."""
  model_type = hf.get("model_type")
  if model_type is None:
    names = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2",
             "GemmaForCausalLM": "gemma", "GPT2LMHeadModel": "gpt2"}
    found = [names[a] for a in hf.get("architectures") or [] if a in names]
    model_type = found[0] if found else (hf.get("architectures") or [None])[0]
  if model_type not in FAMILIES:
    raise CheckpointError(
        f"{where}: model_type {model_type!r} is not a supported decoder-only family; "
        f"supported: {', '.join(FAMILIES)} (Llama, Qwen2, Gemma 1, GPT-2 architectures).")
  return model_type


def _activation(name: Any, where: str) -> str:
  if name not in _ACTIVATIONS:
    raise CheckpointError(f"{where}: activation {name!r} is not supported; expected one of "
                          f"{sorted(_ACTIVATIONS)}.")
  return _ACTIVATIONS[name]


def _rope(hf: dict[str, Any], where: str) -> dict[str, Any]:
  """RoPE fields from `rope_parameters` (transformers >= 5) or rope_theta / rope_scaling."""
  params = dict(hf.get("rope_parameters") or {})
  legacy = hf.get("rope_scaling") or {}
  if not params:
    params = {**legacy, "rope_theta": hf.get("rope_theta", 10000.0)}
  kind = params.get("rope_type", params.get("type", "default"))
  if kind not in ROPE_SCALINGS:
    raise CheckpointError(f"{where}: rope scaling {kind!r} is not implemented; supported: "
                          f"{', '.join(ROPE_SCALINGS)}.")
  if params.get("partial_rotary_factor", 1.0) != 1.0:
    raise CheckpointError(f"{where}: partial_rotary_factor "
                          f"{params['partial_rotary_factor']} is not supported (only 1.0).")
  fields = {"rope_theta": float(params.get("rope_theta", 10000.0)), "rope_scaling": kind}
  if kind != "default":
    fields["rope_factor"] = float(params["factor"])
  if kind == "llama3":
    fields.update(rope_low_freq_factor=float(params["low_freq_factor"]),
                  rope_high_freq_factor=float(params["high_freq_factor"]),
                  rope_original_max_positions=int(params["original_max_position_embeddings"]))
  return fields


def _llama_like(hf: dict[str, Any], family: str, where: str) -> dict[str, Any]:
  heads = hf.get("num_attention_heads", 32)
  d_model = hf.get("hidden_size", 4096)
  if family == "qwen2" and hf.get("use_sliding_window"):
    raise CheckpointError(f"{where}: use_sliding_window=true is not supported (Qwen2 "
                          "checkpoints released for full attention set it false).")
  bias = bool(hf.get("attention_bias", False))
  return dict(
      vocab_size=hf.get("vocab_size", 32000), d_model=d_model, num_heads=heads,
      num_kv_heads=hf.get("num_key_value_heads") or heads,
      head_dim=hf.get("head_dim") or d_model // heads,
      mlp_dim=hf.get("intermediate_size", 11008), num_layers=hf.get("num_hidden_layers", 32),
      norm="rms", norm_plus_one=family == "gemma", norm_epsilon=hf.get("rms_norm_eps", 1e-6),
      mlp_activation=_activation(
          hf.get("hidden_act", "gelu_pytorch_tanh" if family == "gemma" else "silu"), where),
      gated_mlp=True,
      qkv_bias=family == "qwen2" or bias, out_bias=family != "qwen2" and bias,
      mlp_bias=family == "llama" and bool(hf.get("mlp_bias", False)),
      positions="rope", max_positions=hf.get("max_position_embeddings", 2048),
      tie_word_embeddings=bool(hf.get("tie_word_embeddings", family == "gemma")),
      scale_embeddings=family == "gemma",
      attention_dropout_rate=float(hf.get("attention_dropout", 0.0)),
      **_rope(hf, where))


def _gpt2(hf: dict[str, Any], where: str) -> dict[str, Any]:
  if hf.get("scale_attn_by_inverse_layer_idx") or not hf.get("scale_attn_weights", True):
    raise CheckpointError(f"{where}: GPT-2 attention scaling other than 1/sqrt(head_dim) "
                          "(scale_attn_by_inverse_layer_idx, scale_attn_weights=false) is not "
                          "supported.")
  if hf.get("add_cross_attention"):
    raise CheckpointError(f"{where}: GPT-2 with cross-attention is not a decoder-only model.")
  d_model, heads = hf.get("n_embd", 768), hf.get("n_head", 12)
  return dict(
      vocab_size=hf.get("vocab_size", 50257), d_model=d_model, num_heads=heads,
      num_kv_heads=heads, head_dim=d_model // heads, mlp_dim=hf.get("n_inner") or 4 * d_model,
      num_layers=hf.get("n_layer", 12), norm="layer",
      norm_epsilon=hf.get("layer_norm_epsilon", 1e-5),
      mlp_activation=_activation(hf.get("activation_function", "gelu_new"), where),
      gated_mlp=False, qkv_bias=True, out_bias=True, mlp_bias=True, positions="learned",
      max_positions=hf.get("n_positions", 1024),
      tie_word_embeddings=bool(hf.get("tie_word_embeddings", True)),
      dropout_rate=float(hf.get("resid_pdrop", 0.1)),
      attention_dropout_rate=float(hf.get("attn_pdrop", 0.1)))


def config_from_hf(source: Any, **overrides) -> DecoderConfig:
  """DecoderConfig of a Hugging Face model: its directory, its config.json or the dict.

  Absent keys take transformers' defaults for the family; `overrides` replace fields (e.g.
  dtype). Raises CheckpointError naming the supported families, scalings or activations.
  """
  hf, where = _read(source)
  family = _model_type(hf, where)
  fields = _gpt2(hf, where) if family == "gpt2" else _llama_like(hf, family, where)
  if family == "gpt2" and not fields["tie_word_embeddings"]:
    raise CheckpointError(f"{where}: GPT-2 with tie_word_embeddings=false is not supported "
                          "(GPT2LMHeadModel ties its output to wte).")
  return DecoderConfig(family=family, **fields).replace(**overrides)


def hf_config(config: DecoderConfig) -> dict[str, Any]:
  """config.json of `config` (transformers' keys for its family); raises ValueError if the
  family cannot express it (e.g. learned positions for Llama)."""
  cfg = config
  if cfg.family == "gpt2":
    hf = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
          "vocab_size": cfg.vocab_size, "n_embd": cfg.d_model, "n_head": cfg.num_heads,
          "n_inner": cfg.mlp_dim, "n_layer": cfg.num_layers, "n_positions": cfg.max_positions,
          "layer_norm_epsilon": cfg.norm_epsilon,
          "activation_function": {"gelu_tanh": "gelu_new"}.get(cfg.mlp_activation,
                                                                cfg.mlp_activation),
          "resid_pdrop": cfg.dropout_rate, "embd_pdrop": cfg.dropout_rate,
          "attn_pdrop": cfg.attention_dropout_rate, "tie_word_embeddings": True}
  else:
    rope = {"rope_type": cfg.rope_scaling, "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling != "default":
      rope["factor"] = cfg.rope_factor
    if cfg.rope_scaling == "llama3":
      rope.update(low_freq_factor=cfg.rope_low_freq_factor,
                  high_freq_factor=cfg.rope_high_freq_factor,
                  original_max_position_embeddings=cfg.rope_original_max_positions)
    arch = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
            "gemma": "GemmaForCausalLM"}[cfg.family]
    hf = {"architectures": [arch], "model_type": cfg.family, "vocab_size": cfg.vocab_size,
          "hidden_size": cfg.d_model, "num_attention_heads": cfg.num_heads,
          "num_key_value_heads": cfg.num_kv_heads, "head_dim": cfg.head_dim,
          "intermediate_size": cfg.mlp_dim, "num_hidden_layers": cfg.num_layers,
          "rms_norm_eps": cfg.norm_epsilon, "hidden_act": _HF_ACTIVATIONS[cfg.mlp_activation],
          "max_position_embeddings": cfg.max_positions,
          "tie_word_embeddings": cfg.tie_word_embeddings,
          "attention_dropout": cfg.attention_dropout_rate, "rope_parameters": rope}
    if cfg.family == "llama":
      hf.update(attention_bias=cfg.qkv_bias, mlp_bias=cfg.mlp_bias)
    elif cfg.family == "gemma":
      hf.update(attention_bias=cfg.qkv_bias)
    else:
      hf.update(use_sliding_window=False)
  back = config_from_hf(hf, dtype=cfg.dtype, remat=cfg.remat, dropout_rate=cfg.dropout_rate)
  if back != cfg:
    wrong = [f"{f.name}={getattr(cfg, f.name)!r}" for f in dataclasses.fields(cfg)
             if getattr(back, f.name) != getattr(cfg, f.name)]
    raise ValueError(f"A {cfg.family} config.json cannot express {', '.join(wrong)}.")
  return hf


def embedding_multiplier(config: DecoderConfig) -> float:
  """What every embedded row is multiplied by before the first layer."""
  return math.sqrt(config.d_model) if config.scale_embeddings else 1.0


# Tiny random models for tests and demos, one per family: grouped-query attention where the
# family has it, Gemma with head_dim != d_model / heads; GPT-2 always ties its output.
CONFIGS: dict[str, DecoderConfig] = {
    "llama_tiny": _tiny("llama"),
    "llama_tiny_tied": _tiny("llama", tie_word_embeddings=True),
    "qwen2_tiny": _tiny("qwen2", qkv_bias=True),
    "gemma_tiny": _tiny("gemma", num_heads=3, num_kv_heads=1, head_dim=16,
                        norm_plus_one=True, mlp_activation="gelu_tanh",
                        tie_word_embeddings=True, scale_embeddings=True),
    "gpt2_tiny": _tiny("gpt2", num_kv_heads=4, head_dim=8, norm="layer", norm_epsilon=1e-5,
                       mlp_activation="gelu_tanh", gated_mlp=False, qkv_bias=True,
                       out_bias=True, mlp_bias=True, positions="learned",
                       tie_word_embeddings=True),
}
# The project's mini decoder (pretrained/llama_mini, made by pretrained/make_mini_decoder.py):
# the mini T5's width (d_model 256, 4 heads of 64), vocabulary (8,192 ids) and parameter count
# (10,489,088 against its 10,491,648). The output layer is untied, as in T5 1.1 and so in the
# mini T5: both minis then spend 2.1M parameters on the input table and 2.1M on the output
# layer, and differ in the network between. Six layers with MLP 1,024 take the rest. 256
# positions hold a 100-row prompt, 64 input and 4 target tokens (RoPE: no parameters).
CONFIGS["llama_mini"] = DecoderConfig(
    family="llama", vocab_size=8192, d_model=256, num_heads=4, num_kv_heads=4, head_dim=64,
    mlp_dim=1024, num_layers=6, max_positions=256)
hf_config(CONFIGS["llama_mini"])  # a Llama config.json expresses it
# Llama 3 8B's architecture (Meta-Llama-3-8B / Llama 3.1 8B config.json; 8,030,261,248
# parameters, untied output), for the pod memory plan (benchmarks/pod_memory_plan.py): a
# real checkpoint gives its own config.json through models/hf_decoder_prompt.gin.
CONFIGS["llama3_8b"] = DecoderConfig(
    family="llama", vocab_size=128256, d_model=4096, num_heads=32, num_kv_heads=8,
    head_dim=128, mlp_dim=14336, num_layers=32, norm_epsilon=1e-5, rope_theta=500000.0,
    rope_scaling="llama3", rope_factor=8.0, rope_low_freq_factor=1.0,
    rope_high_freq_factor=4.0, rope_original_max_positions=8192, max_positions=131072)
hf_config(CONFIGS["llama3_8b"])
