"""Reads Hugging Face T5 checkpoints (T5 1.0, T5 1.1, Flan-T5, mT5) under T5X's names.

A Hugging Face directory holds `config.json` and `model.safetensors`, or shards listed in
`model.safetensors.index.json`. Linear weights are stored [out, in] and T5X kernels are
[in, out], so they are transposed (lazily: a slice of the kernel is read as the transposed
slice of the weight). Safetensors files are memory-mapped and parsed here (the format is a
JSON header and raw little-endian data) rather than with `safetensors.safe_open`, whose numpy
backend cannot hold bfloat16 and whose flax backend puts every slice on the default device.

Output scaling: T5 1.0 ties the output projection to the embedding and scales the decoder
output by d_model**-0.5 (T5X: `logits_via_embedding`); T5 1.1 / Flan / mT5 do not scale. Old
configs say so with `tie_word_embeddings: false`; transformers >= 5 always ties the weights
and writes `scale_decoder_outputs` instead, and omits `lm_head.weight` from the file when it
equals the embedding. So an unscaled checkpoint without `lm_head.weight` gets
`logits_dense/kernel = shared.weight.T`, exactly what transformers computes.
"""

import json
import os
import re
import shutil
import struct
from typing import Any

import ml_dtypes
import numpy as np

from prompt_tuning.checkpoints import base
from prompt_tuning.checkpoints.base import CheckpointError, LazyArray
from prompt_tuning.t5.config import T5Config

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# Hugging Face `feed_forward_proj` -> T5X `mlp_activations` (T5X's 'gelu' is the tanh form,
# Hugging Face's 'gelu_new'; the exact-erf 'gelu' has no T5X counterpart).
_ACTIVATIONS = {
    "relu": ("relu",),
    "gelu_new": ("gelu",),
    "gated-gelu": ("gelu", "linear"),
    "gated-gelu_new": ("gelu", "linear"),
    "gated-relu": ("relu", "linear"),
}
_MODEL_TYPES = ("t5", "mt5")


# ---------------------------------------------------------------------------------------------
# config.json

def _refuse_gcs(path: str) -> None:
  """Hugging Face files are memory-mapped, so they must be local: one clear error if not."""
  if base.is_gcs(path):
    raise CheckpointError(f"Hugging Face checkpoints are read from local directories, not "
                          f"{path!r}; copy it locally first (gsutil -m cp -r).")


def read_hf_config(path_or_dir: str, model_types: tuple[str, ...] | None = _MODEL_TYPES
                   ) -> dict[str, Any]:
  """The parsed config.json of a checkpoint directory (or the file itself); with
  `model_types` (default: the T5 family), refuses any other model_type."""
  path_or_dir = os.fspath(path_or_dir)
  file = path_or_dir if path_or_dir.endswith(".json") else os.path.join(path_or_dir,
                                                                        CONFIG_FILE)
  _refuse_gcs(path_or_dir)
  if not os.path.isfile(file):
    raise FileNotFoundError(f"No Hugging Face config at {file!r}.")
  try:
    with open(file, encoding="utf-8") as f:
      hf = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CheckpointError(f"Hugging Face config {file!r} is not valid JSON ({e}); restore it "
                          "from the model's original files.") from None
  if not isinstance(hf, dict):
    raise CheckpointError(f"Hugging Face config {file!r} holds a {type(hf).__name__}, not a "
                          "JSON object; restore it from the model's original files.")
  if model_types is not None and hf.get("model_type", "t5") not in model_types:
    raise CheckpointError(f"{file!r} has model_type {hf['model_type']!r}; only T5-family "
                          f"checkpoints ({', '.join(_MODEL_TYPES)}) are read.")
  return hf


def logits_scaled(hf: dict[str, Any]) -> bool:
  """Whether logits are tied to the embedding and scaled by d_model**-0.5 (T5 1.0)."""
  return bool(hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True)))


def config_from_hf(path_or_dir: str, **overrides) -> T5Config:
  """T5Config of a Hugging Face T5 checkpoint; `overrides` replace fields (e.g. dtype).

  Absent keys take Hugging Face's T5Config defaults.
  """
  if path_or_dir is None:  # models/hf_t5*.gin bind INITIAL_CHECKPOINT_PATH here
    raise CheckpointError("INITIAL_CHECKPOINT_PATH=None, but models/hf_t5*.gin read the "
                          "architecture from its config.json; give a Hugging Face T5 "
                          "directory.")
  path_or_dir = os.fspath(path_or_dir)
  hf = read_hf_config(path_or_dir)
  proj = hf.get("feed_forward_proj", "relu")
  if proj not in _ACTIVATIONS:
    raise CheckpointError(f"Hugging Face config at {path_or_dir!r}: feed_forward_proj {proj!r} "
                          f"is not supported; expected one of {sorted(_ACTIVATIONS)}.")
  config = T5Config(
      vocab_size=hf.get("vocab_size", 32128),
      emb_dim=hf.get("d_model", 512),
      num_heads=hf.get("num_heads", 8),
      head_dim=hf.get("d_kv", 64),
      mlp_dim=hf.get("d_ff", 2048),
      num_encoder_layers=hf.get("num_layers", 6),
      num_decoder_layers=hf.get("num_decoder_layers") or hf.get("num_layers", 6),
      mlp_activations=_ACTIVATIONS[proj],
      logits_via_embedding=logits_scaled(hf),
      relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
      relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
      dropout_rate=hf.get("dropout_rate", 0.1),
      layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-6),
  )
  return config.replace(**overrides)


# Fields that change the computation but not any parameter shape, so a shape check misses them.
_UNSEEN_BY_SHAPES = ("logits_via_embedding", "mlp_activations", "relative_attention_max_distance")


def check_config_agrees(path: str, config: T5Config) -> None:
  """Raises CheckpointError if `config` computes differently from the checkpoint's config."""
  expected = config_from_hf(path)
  wrong = [f"{name}: config.json implies {getattr(expected, name)!r}, the config has "
           f"{getattr(config, name)!r}" for name in _UNSEEN_BY_SHAPES
           if getattr(expected, name) != getattr(config, name)]
  if wrong:
    raise CheckpointError(f"Hugging Face checkpoint {path!r} does not match the config:\n  "
                          + "\n  ".join(wrong)
                          + "\nBuild the config with config_from_hf(path).")


# ---------------------------------------------------------------------------------------------
# Names: Hugging Face -> T5X

_BLOCK = re.compile(r"(encoder|decoder)\.block\.(\d+)\.layer\.(\d+)\.(.+)\.weight")
_ATTENTION = {("encoder", "SelfAttention"): "attention",
              ("decoder", "SelfAttention"): "self_attention",
              ("decoder", "EncDecAttention"): "encoder_decoder_attention"}
_PROJECTIONS = {"q": "query", "k": "key", "v": "value", "o": "out"}
_NORMS = {("encoder", 0): "pre_attention_layer_norm", ("encoder", 1): "pre_mlp_layer_norm",
          ("decoder", 0): "pre_self_attention_layer_norm",
          ("decoder", 1): "pre_cross_attention_layer_norm", ("decoder", 2): "pre_mlp_layer_norm"}
_SKIPPED = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight",  # copies of shared
            # unused; older conversions wrote it and transformers ignores it on load
            "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight")


def t5x_key(hf_name: str) -> tuple[str, bool] | None:
  """(T5X '/'-path, whether to transpose) of a Hugging Face tensor name; None to skip it.

  A name with no T5X counterpart maps to itself, so the tree check reports it as unexpected.
  """
  if hf_name in _SKIPPED:
    return None
  simple = {"shared.weight": ("token_embedder/embedding", False),
            "lm_head.weight": ("decoder/logits_dense/kernel", True),
            "encoder.final_layer_norm.weight": ("encoder/encoder_norm/scale", False),
            "decoder.final_layer_norm.weight": ("decoder/decoder_norm/scale", False)}
  if hf_name in simple:
    return simple[hf_name]
  match = _BLOCK.fullmatch(hf_name)
  if not match:
    return hf_name, False
  stack, block, layer, rest = match[1], int(match[2]), int(match[3]), match[4]
  module, _, leaf = rest.partition(".")
  if rest == "layer_norm" and (stack, layer) in _NORMS:
    return f"{stack}/layers_{block}/{_NORMS[stack, layer]}/scale", False
  if (stack, module) in _ATTENTION and leaf in _PROJECTIONS:
    return f"{stack}/layers_{block}/{_ATTENTION[stack, module]}/{_PROJECTIONS[leaf]}/kernel", True
  if module == "SelfAttention" and leaf == "relative_attention_bias" and block == 0:
    return f"{stack}/relpos_bias/rel_embedding", True  # [buckets, heads] -> [heads, buckets]
  if module == "DenseReluDense" and leaf in ("wi", "wi_0", "wi_1", "wo"):
    return f"{stack}/layers_{block}/mlp/{leaf}/kernel", True
  return hf_name, False


# ---------------------------------------------------------------------------------------------
# Safetensors

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}


def read_safetensors(file: str) -> dict[str, np.ndarray]:
  """{name: memory-mapped array} of a .safetensors file; data is read only when indexed.

  The file is 8 bytes (the header's length, little-endian), a JSON header {name: {dtype,
  shape, data_offsets}}, then the data. A file cut short (a download that stopped) or
  garbled raises CheckpointError naming it, before any tensor is read.
  """
  file = os.fspath(file)
  size = os.path.getsize(file)
  with open(file, "rb") as f:
    length = f.read(8)
    if len(length) < 8:
      raise _damaged(file, f"it has {size} bytes, fewer than the 8 that give the header's "
                     "length")
    (header_size,) = struct.unpack("<Q", length)
    if 8 + header_size > size:
      raise _damaged(file, f"its header should be {header_size:,} bytes but the file has "
                     f"{size:,}")
    try:
      header = json.loads(f.read(header_size))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise _damaged(file, f"its header is not valid JSON ({e})") from None
  if not isinstance(header, dict):
    raise _damaged(file, f"its header is a JSON {type(header).__name__}, not an object")
  header.pop("__metadata__", None)
  data_size = size - 8 - header_size
  data = (np.memmap(file, dtype=np.uint8, mode="r", offset=8 + header_size) if data_size
          else np.zeros(0, np.uint8))  # mmap refuses an empty range
  arrays = {}
  for name, info in header.items():
    dtype, shape, offsets = _tensor_entry(file, name, info)
    start, end = offsets
    if end > data_size:
      raise _damaged(file, f"tensor {name!r} ends at byte {8 + header_size + end:,} but the "
                     f"file has {size:,} bytes")
    arrays[name] = data[start:end].view(dtype).reshape(shape)
  return arrays


def _tensor_entry(file: str, name: str, info: Any) -> tuple[Any, list[int], list[int]]:
  """(numpy dtype, shape, [start, end]) of one header entry, checked against each other."""
  try:
    dtype, shape, (start, end) = info["dtype"], list(info["shape"]), info["data_offsets"]
    count = int(np.prod(shape, dtype=np.int64))
    valid = all(isinstance(n, int) and n >= 0 for n in [*shape, start, end])
  except (TypeError, KeyError, ValueError):
    valid = False
  if not valid:
    raise _damaged(file, f"the header entry of tensor {name!r} is not {{dtype, shape, "
                   f"data_offsets}} ({str(info)[:80]})")
  if dtype not in _DTYPES:
    raise CheckpointError(f"{file!r}: tensor {name!r} has dtype {dtype}; only "
                          f"{sorted(_DTYPES)} are read.")
  if end - start != count * np.dtype(_DTYPES[dtype]).itemsize:
    raise _damaged(file, f"tensor {name!r} of shape {shape} ({dtype}) spans {end - start:,} "
                   "bytes in the header")
  return _DTYPES[dtype], shape, [start, end]


def _damaged(file: str, detail: str) -> CheckpointError:
  return CheckpointError(f"Hugging Face weights file {file!r} is incomplete or damaged: "
                         f"{detail}. Download it again, or restore it from the model's "
                         "original files.")


def _weight_files(path: str) -> dict[str, str]:
  """{tensor name: file} from the shard index, or {'*': file} for a single file."""
  index = os.path.join(path, INDEX_FILE)
  if os.path.isfile(index):
    try:
      with open(index, encoding="utf-8") as f:
        weight_map = json.load(f)["weight_map"]
      return {name: os.path.join(path, file) for name, file in weight_map.items()}
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
      raise CheckpointError(f"Hugging Face shard index {index!r} is incomplete or damaged: it "
                            "is not a JSON object whose \"weight_map\" maps tensor names to "
                            "files. Download it again, or restore it from the model's "
                            "original files.") from None
  single = os.path.join(path, WEIGHTS_FILE)
  if os.path.isfile(single):
    return {"*": single}
  raise CheckpointError(
      f"Hugging Face checkpoint {path!r} has {CONFIG_FILE} but neither {WEIGHTS_FILE} nor "
      f"{INDEX_FILE}. PyTorch .bin weights are not read: re-save the model with "
      f"save_pretrained(dir) (safetensors is the default).")


def read_tensors(path: str) -> dict[str, np.ndarray]:
  """{Hugging Face name: memory-mapped array} over all weight files of a checkpoint."""
  path = os.fspath(path)
  files = _weight_files(path)
  opened = {}
  for file in sorted(set(files.values())):
    if not os.path.isfile(file):
      raise CheckpointError(f"Hugging Face checkpoint {path!r}: the shard index lists {file!r}, "
                            f"which does not exist.")
    opened[file] = read_safetensors(file)
  if "*" in files:
    return opened[files["*"]]
  missing = [name for name, file in files.items() if name not in opened[file]]
  if missing:
    raise CheckpointError(f"Hugging Face checkpoint {path!r}: tensors {missing[:5]} are listed "
                          f"in {INDEX_FILE} but absent from their files.")
  return {name: opened[file][name] for name, file in files.items()}


def _lazy(array: np.ndarray, transpose: bool, source: str) -> LazyArray:
  """A LazyArray over a mapped [out, in] weight; with `transpose`, of its [in, out] kernel."""
  if transpose:
    return LazyArray(array.shape[::-1],
                     lambda index: np.array(array[index[::-1]].T, np.float32, order="C"),
                     source)
  return LazyArray(array.shape, lambda index: np.array(array[index], np.float32, order="C"),
                   source)


def _with_shared_embedding(path: str, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Supplies `shared.weight` from `encoder.embed_tokens.weight` when only that was saved.

  T5X has one embedding for both stacks, so a distinct decoder embedding cannot be loaded.
  """
  if "shared.weight" in tensors or "encoder.embed_tokens.weight" not in tensors:
    return tensors
  encoder = tensors["encoder.embed_tokens.weight"]
  decoder = tensors.get("decoder.embed_tokens.weight", encoder)
  if decoder is not encoder and not np.array_equal(decoder, encoder):
    raise CheckpointError(f"Hugging Face checkpoint {path!r} has different encoder and decoder "
                          f"embeddings; T5 shares one (shared.weight).")
  return {**tensors, "shared.weight": encoder}


def read_huggingface(path: str, config: T5Config | None = None) -> dict[str, LazyArray]:
  """Flat `{'encoder/layers_0/attention/query/kernel': LazyArray}` of a Hugging Face T5.

  With `config`, first checks that it computes what config.json describes.
  """
  path = os.fspath(path)
  _refuse_gcs(path)
  hf = read_hf_config(path)
  if config is not None:
    check_config_agrees(path, config)
  tensors = _with_shared_embedding(path, read_tensors(path))
  lazy = {}
  for name, array in tensors.items():
    target = t5x_key(name)
    if target is not None:
      lazy[target[0]] = _lazy(array, target[1], f"{path}:{name}")
  if logits_scaled(hf):
    lazy.pop("decoder/logits_dense/kernel", None)  # tied: T5X attends with the embedding
  elif "decoder/logits_dense/kernel" not in lazy and "shared.weight" in tensors:
    lazy["decoder/logits_dense/kernel"] = _lazy(tensors["shared.weight"], True,
                                                f"{path}:shared.weight (tied lm_head)")
  return lazy


# ---------------------------------------------------------------------------------------------
# Writing: T5X tree -> Hugging Face directory

_SAFETENSORS_DTYPES = {np.dtype(np.float32): "F32", np.dtype(ml_dtypes.bfloat16): "BF16"}


def hf_names(config: T5Config) -> list[str]:
  """Every Hugging Face tensor name of a T5 1.1-style (gated, untied) model of `config`."""
  names = ["shared.weight", "lm_head.weight", "encoder.final_layer_norm.weight",
           "decoder.final_layer_norm.weight"]
  mlp = [f"DenseReluDense.{w}.weight" for w in ("wi_0", "wi_1", "wo")]
  for stack, layers, blocks in (("encoder", config.num_encoder_layers, ("SelfAttention",)),
                                ("decoder", config.num_decoder_layers,
                                 ("SelfAttention", "EncDecAttention"))):
    names.append(f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
    for i in range(layers):
      for j, module in enumerate(blocks):
        names += [f"{stack}.block.{i}.layer.{j}.{module}.{p}.weight" for p in "qkvo"]
        names.append(f"{stack}.block.{i}.layer.{j}.layer_norm.weight")
      j = len(blocks)
      names += [f"{stack}.block.{i}.layer.{j}.{m}" for m in mlp]
      names.append(f"{stack}.block.{i}.layer.{j}.layer_norm.weight")
  return names


def hf_config(config: T5Config) -> dict[str, Any]:
  """config.json of a T5 1.1-style model (transformers' T5Config keys)."""
  return {"architectures": ["T5ForConditionalGeneration"], "model_type": "t5",
          "d_model": config.emb_dim, "d_kv": config.head_dim, "d_ff": config.mlp_dim,
          "num_heads": config.num_heads, "num_layers": config.num_encoder_layers,
          "num_decoder_layers": config.num_decoder_layers, "vocab_size": config.vocab_size,
          "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False,
          "scale_decoder_outputs": False,
          "relative_attention_num_buckets": config.relative_attention_num_buckets,
          "relative_attention_max_distance": config.relative_attention_max_distance,
          "dropout_rate": 0.0, "layer_norm_epsilon": config.layer_norm_epsilon,
          "is_encoder_decoder": True, "pad_token_id": 0, "eos_token_id": 1,
          "decoder_start_token_id": 0}


def write_safetensors(file: str, tensors: dict[str, np.ndarray]) -> None:
  """Writes `tensors` (float32 or bfloat16) as one .safetensors file."""
  header, offset = {}, 0
  for name, array in tensors.items():
    size = array.nbytes
    header[name] = {"dtype": _SAFETENSORS_DTYPES[array.dtype], "shape": list(array.shape),
                    "data_offsets": [offset, offset + size]}
    offset += size
  encoded = json.dumps(header, separators=(",", ":")).encode()
  encoded += b" " * (-len(encoded) % 8)  # data starts 8-byte aligned
  with open(file, "wb") as f:
    f.write(struct.pack("<Q", len(encoded)) + encoded)
    for array in tensors.values():
      f.write(np.ascontiguousarray(array).tobytes())


def write_huggingface(params: dict, config: T5Config, out_dir: str, *,
                      dtype: Any = ml_dtypes.bfloat16, extra_files: dict[str, str] | None = None
                      ) -> None:
  """Writes the T5X parameter tree `params` as a Hugging Face T5 directory at `out_dir`:
  config.json and model.safetensors (in `dtype`), plus `extra_files` {name: source file}
  (e.g. spiece.model). Only T5 1.1-style models (gated GELU, untied logits).

  The directory appears whole or not at all: it is written beside and renamed into place.
  """
  if config.mlp_activations != ("gelu", "linear") or config.logits_via_embedding:
    raise ValueError("write_huggingface writes T5 1.1-style models (gated GELU, untied "
                     "logits) only.")
  flat = base.flatten(params)
  tensors = {}
  for name in hf_names(config):
    key, transpose = t5x_key(name)
    array = np.asarray(flat[key], np.float32)
    tensors[name] = (array.T if transpose else array).astype(dtype)
  tmp = out_dir.rstrip("/") + ".tmp"
  if os.path.exists(tmp):
    shutil.rmtree(tmp)
  os.makedirs(tmp)
  write_safetensors(os.path.join(tmp, WEIGHTS_FILE), tensors)
  with open(os.path.join(tmp, CONFIG_FILE), "w", encoding="utf-8") as f:
    json.dump(hf_config(config), f, indent=2)
  for name, source in (extra_files or {}).items():
    shutil.copyfile(source, os.path.join(tmp, name))
  if os.path.exists(out_dir):
    shutil.rmtree(out_dir)
  os.replace(tmp, out_dir)
