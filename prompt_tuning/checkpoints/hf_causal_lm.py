"""Reads and writes Hugging Face decoder-only checkpoints (Llama, Qwen2, Gemma, GPT-2).

    config = config_from_hf(path)                         # causal_lm.config
    params = load_params(path)                            # nested dict of numpy arrays
    params = load_params(path, config, shardings=s, frozen_dtype="bfloat16")  # jax.Arrays

The directory holds `config.json` and `model.safetensors`, or shards listed in
`model.safetensors.index.json` (read by checkpoints/huggingface.py, memory-mapped). Every
tensor's name and shape is checked against what config.json implies before any data is read:
one CheckpointError lists each mis-shaped, missing and unexpected tensor.

Layouts: Llama-style `nn.Linear` weights are [out, in] and become [in, out] kernels (read
lazily, a slice of the kernel is the transposed slice of the weight). GPT-2's `Conv1D`
weights are already [in, out]; its query, key and value come fused in `c_attn` ([d, 3d]) and
are read as three column blocks. Tied models need no `lm_head.weight` (transformers >= 5 does
not save it; an older file's copy is ignored).
"""

import dataclasses
import json
import os
import shutil
from typing import Any

import jax
import ml_dtypes
import numpy as np

from prompt_tuning.causal_lm import network
from prompt_tuning.causal_lm.config import DecoderConfig, config_from_hf, hf_config
from prompt_tuning.checkpoints import base, huggingface, loading
from prompt_tuning.checkpoints.base import CheckpointError, LazyArray
from prompt_tuning.t5.config import frozen_dtype as check_frozen_dtype

# Buffers some files carry that are not weights (GPT-2's causal mask, old Llama's RoPE rates).
_BUFFERS = (".attn.bias", ".attn.masked_bias", ".rotary_emb.inv_freq")


@dataclasses.dataclass(frozen=True)
class _Part:
  """Where (a block of) one Hugging Face tensor goes in our tree."""
  key: str  # '/'-path in the parameter tree
  transpose: bool = False  # [out, in] -> [in, out]
  columns: tuple[int, int] | None = None  # a block of the last axis (GPT-2's fused c_attn)


@dataclasses.dataclass(frozen=True)
class _Tensor:
  name: str
  shape: tuple[int, ...]
  parts: tuple[_Part, ...]


def _linear(name, out, inp, key, bias) -> list[_Tensor]:
  tensors = [_Tensor(f"{name}.weight", (out, inp), (_Part(f"{key}/kernel", True),))]
  if bias:
    tensors.append(_Tensor(f"{name}.bias", (out,), (_Part(f"{key}/bias"),)))
  return tensors


def _llama_tensors(cfg: DecoderConfig) -> list[_Tensor]:
  d, q, kv = cfg.d_model, cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
  tensors = [_Tensor("model.embed_tokens.weight", (cfg.vocab_size, d),
                     (_Part("token_embedder/embedding"),)),
             _Tensor("model.norm.weight", (d,), (_Part("decoder_norm/scale"),))]
  for i in range(cfg.num_layers):
    hf, ours = f"model.layers.{i}", f"layers_{i}"
    for proj, name, width in (("q_proj", "query", q), ("k_proj", "key", kv),
                              ("v_proj", "value", kv)):
      tensors += _linear(f"{hf}.self_attn.{proj}", width, d, f"{ours}/attention/{name}",
                         cfg.qkv_bias)
    tensors += _linear(f"{hf}.self_attn.o_proj", d, q, f"{ours}/attention/out", cfg.out_bias)
    for proj, name in (("gate_proj", "wi_0"), ("up_proj", "wi_1")):
      tensors += _linear(f"{hf}.mlp.{proj}", cfg.mlp_dim, d, f"{ours}/mlp/{name}", cfg.mlp_bias)
    tensors += _linear(f"{hf}.mlp.down_proj", d, cfg.mlp_dim, f"{ours}/mlp/wo", cfg.mlp_bias)
    tensors += [
        _Tensor(f"{hf}.input_layernorm.weight", (d,),
                (_Part(f"{ours}/pre_attention_layer_norm/scale"),)),
        _Tensor(f"{hf}.post_attention_layernorm.weight", (d,),
                (_Part(f"{ours}/pre_mlp_layer_norm/scale"),))]
  if not cfg.tie_word_embeddings:
    tensors += _linear("lm_head", cfg.vocab_size, d, "logits_dense", False)
  return tensors


def _gpt2_tensors(cfg: DecoderConfig) -> list[_Tensor]:
  d, m = cfg.d_model, cfg.mlp_dim
  def norm(hf, ours):
    return [_Tensor(f"{hf}.weight", (d,), (_Part(f"{ours}/scale"),)),
            _Tensor(f"{hf}.bias", (d,), (_Part(f"{ours}/bias"),))]
  def conv1d(hf, inp, out, ours):  # Conv1D: weight [in, out], no transpose
    return [_Tensor(f"{hf}.weight", (inp, out), (_Part(f"{ours}/kernel"),)),
            _Tensor(f"{hf}.bias", (out,), (_Part(f"{ours}/bias"),))]
  tensors = [_Tensor("transformer.wte.weight", (cfg.vocab_size, d),
                     (_Part("token_embedder/embedding"),)),
             _Tensor("transformer.wpe.weight", (cfg.max_positions, d),
                     (_Part("position_embedder/embedding"),)),
             *norm("transformer.ln_f", "decoder_norm")]
  for i in range(cfg.num_layers):
    hf, ours = f"transformer.h.{i}", f"layers_{i}"
    blocks = [(name, (j * d, (j + 1) * d)) for j, name in enumerate(("query", "key", "value"))]
    tensors += [
        _Tensor(f"{hf}.attn.c_attn.weight", (d, 3 * d),
                tuple(_Part(f"{ours}/attention/{n}/kernel", columns=c) for n, c in blocks)),
        _Tensor(f"{hf}.attn.c_attn.bias", (3 * d,),
                tuple(_Part(f"{ours}/attention/{n}/bias", columns=c) for n, c in blocks)),
        *conv1d(f"{hf}.attn.c_proj", d, d, f"{ours}/attention/out"),
        *conv1d(f"{hf}.mlp.c_fc", d, m, f"{ours}/mlp/wi"),
        *conv1d(f"{hf}.mlp.c_proj", m, d, f"{ours}/mlp/wo"),
        *norm(f"{hf}.ln_1", f"{ours}/pre_attention_layer_norm"),
        *norm(f"{hf}.ln_2", f"{ours}/pre_mlp_layer_norm")]
  return tensors


def hf_tensors(config: DecoderConfig) -> dict[str, _Tensor]:
  """{Hugging Face name: expected shape and where it goes} of a model of `config`."""
  tensors = _gpt2_tensors(config) if config.family == "gpt2" else _llama_tensors(config)
  return {t.name: t for t in tensors}


def _prefix(config: DecoderConfig) -> str:
  return "transformer." if config.family == "gpt2" else "model."


def _canonical(name: str, prefix: str) -> str:
  """The name as the *ForCausalLM / LMHeadModel class saves it: a base model's file (e.g.
  LlamaModel, or the original gpt2 upload) has no `model.` / `transformer.` prefix."""
  if name.startswith(prefix) or name.startswith("lm_head."):
    return name
  return prefix + name


# ---------------------------------------------------------------------------------------------
# Reading

def check_config_agrees(path: str, config: DecoderConfig) -> None:
  """Raises CheckpointError if `config` computes differently from the checkpoint's config.json
  (activation dtype, remat and dropout may differ)."""
  expected = config_from_hf(path).replace(dtype=config.dtype, remat=config.remat,
                                          dropout_rate=config.dropout_rate,
                                          attention_dropout_rate=config.attention_dropout_rate)
  wrong = [f"{f.name}: config.json implies {getattr(expected, f.name)!r}, the config has "
           f"{getattr(config, f.name)!r}" for f in dataclasses.fields(config)
           if getattr(expected, f.name) != getattr(config, f.name)]
  if wrong:
    raise CheckpointError(f"Hugging Face checkpoint {path!r} does not match the config:\n  "
                          + "\n  ".join(wrong)
                          + "\nBuild the config with causal_lm.config.config_from_hf(path).")


def _check_tensors(path: str, found: dict[str, np.ndarray],
                   expected: dict[str, _Tensor]) -> None:
  """One CheckpointError listing every mis-shaped, missing and unexpected tensor."""
  counts, lines = base.tree_problems(
      found, expected, lambda n, got, want: f"{n}: the file has {got}, config.json implies {want}")
  if counts:
    raise CheckpointError(
        f"Hugging Face checkpoint {path!r} does not fit its config.json ({counts}):\n  " + lines
        + "\nThe weights and config.json must come from the same model: download both again.")


def _lazy_part(array: np.ndarray, part: _Part, source: str) -> LazyArray:
  if part.columns is not None:
    array = array[..., part.columns[0]:part.columns[1]]  # a view: nothing is read yet
  return huggingface._lazy(array, part.transpose, source)  # pylint: disable=protected-access


def read_hf_causal_lm(path: str, config: DecoderConfig | None = None
                      ) -> tuple[DecoderConfig, dict[str, LazyArray]]:
  """(config, flat {'layers_0/attention/query/kernel': LazyArray}) of a Hugging Face
  decoder-only checkpoint; no array data is read. With `config`, first checks that it
  computes what config.json describes."""
  path = os.fspath(path)
  huggingface._refuse_gcs(path)  # pylint: disable=protected-access
  if config is None:
    config = config_from_hf(path)
  else:
    check_config_agrees(path, config)
  prefix = _prefix(config)
  expected = hf_tensors(config)
  found = {}
  for name, array in huggingface.read_tensors(path).items():
    name = _canonical(name, prefix)
    if name.endswith(_BUFFERS) or (name == "lm_head.weight" and config.tie_word_embeddings):
      continue
    found[name] = array
  _check_tensors(path, found, expected)
  lazy = {part.key: _lazy_part(found[name], part, f"{path}:{name}")
          for name, tensor in expected.items() for part in tensor.parts}
  loading.check_tree(path, "huggingface", lazy, base.flatten(network.param_shapes(config)))
  return config, lazy


def _cast(array: LazyArray, dtype: Any) -> LazyArray:
  """The same array read in `dtype`, one requested slice at a time."""
  return LazyArray(array.shape, lambda index: array.read(index).astype(dtype), array.source)


def load_params(path: str, config: DecoderConfig | None = None, *, shardings: Any = None,
                frozen_dtype: Any = "float32") -> dict[str, Any]:
  """The parameter tree of the Hugging Face checkpoint at `path`.

  Args:
    path: a local Hugging Face model directory (config.json + safetensors).
    config: the architecture; default `config_from_hf(path)`. If given, it must compute what
      config.json describes (only dtype, remat and dropout may differ).
    shardings: optional tree of jax.sharding.Sharding matching the parameter tree (e.g.
      `partitioning.logical_to_sharding(network.param_axes(config), mesh)`); each device's
      slice is then read on its own straight into its shard.
    frozen_dtype: FROZEN_DTYPE, 'float32' or 'bfloat16': the stored dtype of every weight;
      each slice is converted as it is read, so no float32 copy of the model is held.

  Returns:
    Nested dict of numpy arrays (host memory), or of jax.Arrays with the given shardings.
  """
  dtype = check_frozen_dtype(frozen_dtype)
  config, lazy = read_hf_causal_lm(path, config)
  lazy = {key: _cast(array, dtype) for key, array in lazy.items()}
  if shardings is None:
    return base.unflatten({key: array.read_all() for key, array in lazy.items()})
  flat_shardings = base.flatten(shardings)
  missing = sorted(set(lazy) - set(flat_shardings))
  if missing:
    raise ValueError(f"`shardings` has no entry for {missing[:5]}; it must match the "
                     "parameter tree of the config.")
  return base.unflatten({key: loading._sharded(array, flat_shardings[key])  # pylint: disable=protected-access
                         for key, array in lazy.items()})


# ---------------------------------------------------------------------------------------------
# Writing

def hf_state(params: dict, config: DecoderConfig, dtype: Any = np.float32
             ) -> dict[str, np.ndarray]:
  """{Hugging Face name: array} of the parameter tree (the names *ForCausalLM saves)."""
  flat = {key: np.asarray(jax.device_get(value), np.float32)
          for key, value in base.flatten(params).items()}
  state = {}
  for name, tensor in hf_tensors(config).items():
    blocks = [flat[part.key].T if part.transpose else flat[part.key] for part in tensor.parts]
    array = blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=-1)
    state[name] = np.ascontiguousarray(array).astype(dtype)
  return state


def write_hf_causal_lm(params: dict, config: DecoderConfig, out_dir: str, *,
                       dtype: Any = np.float32, overwrite: bool = False) -> None:
  """Writes `params` as a Hugging Face directory: config.json and model.safetensors (float32
  or bfloat16 `dtype`), loadable by transformers' AutoModelForCausalLM and by `load_params`.

  The directory appears whole or not at all (written beside it, then renamed); an existing
  `out_dir` is replaced only with `overwrite=True`.
  """
  out_dir = os.fspath(out_dir).rstrip("/")
  if os.path.exists(out_dir) and not overwrite:
    raise FileExistsError(f"{out_dir!r} exists; pass overwrite=True to replace it, or choose "
                          "another directory.")
  dtype = np.dtype(dtype)
  if dtype not in (np.dtype(np.float32), np.dtype(ml_dtypes.bfloat16)):
    raise ValueError(f"dtype {dtype} is not written; use float32 or bfloat16.")
  state = hf_state(params, config, dtype)
  hf = hf_config(config)
  tmp = out_dir + ".tmp"
  if os.path.exists(tmp):
    shutil.rmtree(tmp)
  os.makedirs(tmp)
  huggingface.write_safetensors(os.path.join(tmp, huggingface.WEIGHTS_FILE), state)
  with open(os.path.join(tmp, huggingface.CONFIG_FILE), "w", encoding="utf-8") as f:
    json.dump(hf, f, indent=2)
  if os.path.exists(out_dir):
    shutil.rmtree(out_dir)
  os.replace(tmp, out_dir)
