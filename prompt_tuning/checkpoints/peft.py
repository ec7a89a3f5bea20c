"""Prompts as Hugging Face PEFT prompt-tuning adapters, and back.

A PEFT prompt-tuning adapter is a directory with two files:

  adapter_config.json        {"peft_type": "PROMPT_TUNING", "task_type": "SEQ_2_SEQ_LM" or
                              "CAUSAL_LM", "num_virtual_tokens": p, "token_dim": d_model,
                              "num_transformer_submodules": 1 or 2, ...}
  adapter_model.safetensors  one tensor, `prompt_embeddings`:
                             [num_virtual_tokens * num_transformer_submodules, token_dim]

The task type follows the base model's config.json: a T5 directory gives SEQ_2_SEQ_LM, a
decoder-only one (Llama, Qwen2, Gemma, GPT-2: causal_lm/config.py) CAUSAL_LM. An adapter
is read only for a base model of its own kind.

For SEQ_2_SEQ_LM, PEFT (0.21) defaults to num_transformer_submodules=2 and saves 2p rows, but
prompt tuning feeds only rows [0, p) to the encoder, in front of the embedded input (mask 1);
rows [p, 2p) are never used. That is exactly this library's prefix prompt, so an export writes
num_transformer_submodules=1 (p rows, the prompt itself) and an import takes rows [0, p) of
either layout.

For CAUSAL_LM, PEFT saves p rows and puts them in front of the embedded input ids. Its rows
are ours except for Gemma, whose embedding multiplier PEFT's rows must carry
(`peft_embedding_factor`). Where PEFT's layout differs from ours (the prompt before BOS,
docs/decoder_only.md), the same prompt sees another context there.

An MPT record (prompts/mpt.py) is a MULTITASK_PROMPT_TUNING adapter instead: export_adapter
and import_adapter tell the kinds apart and hand it to checkpoints/peft_mpt.py, which says
what maps.

Plain numpy, no torch or peft needed.

A deep prompt [layers, p, d_model] (methods/deep.gin) is refused: PEFT has no adapter that
replaces each layer's hidden states at the prompt positions (its prefix tuning sets attention
keys and values instead, which is not the same model).
"""

import dataclasses
import json
import os
import shutil
import struct
import tempfile
from typing import Any, Sequence

import numpy as np

from prompt_tuning.checkpoints import base, huggingface, prompts_io

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
WEIGHTS_KEY = "prompt_embeddings"
PEFT_TYPE = "PROMPT_TUNING"
MPT_PEFT_TYPE = "MULTITASK_PROMPT_TUNING"  # an MPT record's adapter (checkpoints/peft_mpt.py)
SEQ_2_SEQ_LM = "SEQ_2_SEQ_LM"
CAUSAL_LM = "CAUSAL_LM"
TASK_TYPE = SEQ_2_SEQ_LM  # T5's, the default
# Allowed num_transformer_submodules, then PEFT's default when the config has none. Seq2seq:
# encoder only, or encoder + decoder (PEFT's default); causal LM: the one stack.
_SUBMODULES = {SEQ_2_SEQ_LM: ((1, 2), 2), CAUSAL_LM: ((1,), 1)}
_T5_MODEL_TYPES = ("t5", "mt5")


# ---------------------------------------------------------------------------------------------
# The base model

@dataclasses.dataclass(frozen=True)
class BaseModel:
  """What an adapter needs of its base model's config.json.

  path: the Hugging Face directory; task_type: SEQ_2_SEQ_LM (T5) or CAUSAL_LM (decoder-only);
  family: 't5', 'mt5' or a causal_lm family; d_model, num_layers, num_heads: the sizes PEFT
  records; embedding_multiplier: what the network multiplies embedded rows by (Gemma's
  sqrt(d_model), else 1).
  """
  path: str
  task_type: str
  family: str
  d_model: int
  num_layers: int
  num_heads: int
  embedding_multiplier: float = 1.0


def read_base_model(base_model: str) -> BaseModel:
  """The BaseModel of the Hugging Face directory `base_model` (its config.json).

  A T5 config (model_type t5 / mt5) gives SEQ_2_SEQ_LM with transformers' T5 defaults; a
  decoder-only one (causal_lm.config.config_from_hf) gives CAUSAL_LM; any other is refused,
  naming what is supported.
  """
  base_model = os.fspath(base_model)
  if not os.path.isfile(os.path.join(base_model, huggingface.CONFIG_FILE)):
    raise ValueError(f"Base model {base_model!r} has no {huggingface.CONFIG_FILE}; give a "
                     "local Hugging Face directory (config.json + safetensors) of a T5 or a "
                     "decoder-only model (Llama, Qwen2, Gemma, GPT-2).")
  hf = huggingface.read_hf_config(base_model, model_types=None)
  if _is_t5(hf):
    return BaseModel(base_model, SEQ_2_SEQ_LM, hf.get("model_type", "t5"),
                     int(hf.get("d_model", 512)), int(hf.get("num_layers", 6)),
                     int(hf.get("num_heads", 8)))
  from prompt_tuning.causal_lm import config as decoder_config  # pylint: disable=g-import-not-at-top
  try:
    cfg = decoder_config.config_from_hf(hf)
  except ValueError as e:
    raise ValueError(f"Base model {base_model!r}: {e} PEFT adapters are written for T5 "
                     "(t5, mt5) and those decoder-only families.") from None
  return BaseModel(base_model, CAUSAL_LM, cfg.family, cfg.d_model, cfg.num_layers,
                   cfg.num_heads, decoder_config.embedding_multiplier(cfg))


def _is_t5(hf: dict[str, Any]) -> bool:
  """T5 by model_type; without one (old T5 files), unless `architectures` names an LM head."""
  if "model_type" in hf:
    return hf["model_type"] in _T5_MODEL_TYPES
  return not any(str(name).endswith(("ForCausalLM", "LMHeadModel"))
                 for name in hf.get("architectures") or [])


def peft_embedding_factor(hf_base: BaseModel) -> np.float32:
  """PEFT's prompt rows = this library's prompt rows x this factor (1 but for Gemma).

  Gemma multiplies its embedded input by sqrt(d_model). causal_lm/network.py does it to every
  row the network receives, the prompt included, so our prompt lives in the space of the raw
  embedding table (class-label rows are table rows). transformers 5 does it inside Gemma's
  embedding module, and PEFT hands its prompt to the model as inputs_embeds, past that module:
  to compute what we compute, PEFT's rows must already carry the multiplier. Both sides round
  it to float32 (for float32 models), so export multiplies by that float32 value and import
  divides by it. (transformers 4.x scaled inputs_embeds in Gemma's forward instead; an adapter
  for it would need no factor.)
  """
  return np.float32(hf_base.embedding_multiplier)


def _to_peft(prompt: np.ndarray, hf_base: BaseModel) -> np.ndarray:
  return np.asarray(prompt, np.float32) * peft_embedding_factor(hf_base)


def _from_peft(rows: np.ndarray, hf_base: BaseModel) -> np.ndarray:
  return np.asarray(rows, np.float32) / peft_embedding_factor(hf_base)


# ---------------------------------------------------------------------------------------------
# Export: prompt -> adapter directory

def base_model_width(base_model: str) -> int:
  """d_model of the Hugging Face directory `base_model` (T5 or decoder-only)."""
  return read_base_model(base_model).d_model


def adapter_config(prompt_length: int, base_model: str | BaseModel) -> dict[str, Any]:
  """adapter_config.json for a [prompt_length, d_model] prompt on `base_model`: T5's encoder
  (SEQ_2_SEQ_LM) or a decoder-only model's input (CAUSAL_LM).

  Fields are those of PEFT's PromptTuningConfig; the sizes come from the base model's
  config.json.
  """
  hf_base = base_model if isinstance(base_model, BaseModel) else read_base_model(base_model)
  return {"auto_mapping": None, "base_model_name_or_path": hf_base.path,
          "inference_mode": True, "modules_to_save": None,
          "num_attention_heads": hf_base.num_heads, "num_layers": hf_base.num_layers,
          "num_transformer_submodules": 1, "num_virtual_tokens": int(prompt_length),
          "peft_type": PEFT_TYPE, "prompt_tuning_init": "RANDOM",
          "prompt_tuning_init_text": None, "revision": None, "task_type": hf_base.task_type,
          "token_dim": hf_base.d_model, "tokenizer_kwargs": None,
          "tokenizer_name_or_path": None}


def write_adapter(prompt: np.ndarray, base_model: str, output_dir: str,
                  source: str = "to export", overwrite: bool = False) -> None:
  """Writes `prompt` [prompt_length, d_model] as a PEFT adapter directory at `output_dir`.

  Checks the prompt against the base model's width. A new directory appears whole or not at
  all: it is written beside and renamed into place. Into an existing one only the adapter's
  two files are written (each renamed into place); with `overwrite` alone, and nothing else
  there is ever touched.

  Args:
    prompt: the prompt, any float dtype; written as float32.
    base_model: the Hugging Face directory (T5 or decoder-only) the prompt was trained on.
    output_dir: a local directory: absent or empty; with `overwrite`, any directory (an
      earlier adapter's two files there are replaced).
    source: how errors name the prompt, e.g. "file 'step_300.npy'".
    overwrite: allows writing into a directory that holds files (--overwrite).
  """
  _refuse_deep(prompt, source)
  if is_mpt_record(prompt):
    raise ValueError(f"Prompt {source} is an MPT record (shared prompt, task_rows, task_cols, "
                     "tasks), which is a MULTITASK_PROMPT_TUNING adapter: write it with "
                     "export_adapter or peft_mpt.write_adapter (peft_adapter export tells the "
                     "two kinds apart itself).")
  prompt = prompts_io.check_prompt(prompt, None, source)
  hf_base = read_base_model(base_model)
  config = adapter_config(prompt.shape[0], hf_base)
  if prompt.shape[1] != hf_base.d_model:
    raise ValueError(f"Prompt {source} has width {prompt.shape[1]} but base model "
                     f"{hf_base.path!r} ({hf_base.family}) has d_model {hf_base.d_model}; give "
                     "the Hugging Face directory of the model the prompt was trained on.")
  write_adapter_files(output_dir, {WEIGHTS_KEY: _to_peft(prompt, hf_base)}, config, overwrite)


def write_adapter_files(output_dir: str, tensors: dict[str, np.ndarray],
                        config: dict[str, Any], overwrite: bool = False) -> None:
  """Writes an adapter's two files, `tensors` (float32) and `config`, at `output_dir`: a new
  directory whole or not at all, an existing one (with `overwrite` alone) file by file."""
  output_dir = _check_output_dir(output_dir, overwrite)
  if not os.path.isdir(output_dir):
    _write_new_dir(output_dir, tensors, config)
    return
  # Weights first: should the config's rename not happen, the pair disagrees in shape (or
  # is the earlier adapter's whole), which read_adapter reports.
  _write_file(os.path.join(output_dir, WEIGHTS_FILE),
              lambda path: huggingface.write_safetensors(path, tensors))
  _write_file(os.path.join(output_dir, CONFIG_FILE), lambda path: _write_json(path, config))


def _write_json(path: str, config: dict[str, Any]) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(config, f, indent=2, sort_keys=True)


def _write_new_dir(output_dir: str, tensors: dict[str, np.ndarray],
                   config: dict[str, Any]) -> None:
  """The adapter written into a fresh temporary directory beside, renamed into place."""
  parent, name = os.path.split(os.path.abspath(output_dir))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)  # new: ours to remove
  try:
    huggingface.write_safetensors(os.path.join(tmp, WEIGHTS_FILE), tensors)
    _write_json(os.path.join(tmp, CONFIG_FILE), config)
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0o700, as a plain mkdir would make it
    try:
      os.rename(tmp, output_dir)
    except OSError:  # a directory appeared meanwhile: never replaced
      raise ValueError(f"Adapter directory {output_dir!r} appeared while the adapter was "
                       "written; it is left as it is. Export again.") from None
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp)


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def _write_file(path: str, write: Any) -> None:
  """`write(tmp)` for a new temporary file beside `path`, then renamed over `path`."""
  handle, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-",
                                 dir=os.path.dirname(path))
  os.close(handle)
  try:
    write(tmp)
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def export_adapter(prompt_file: str, base_model: str, output_dir: str,
                   overwrite: bool = False) -> np.ndarray:
  """Writes the .npy prompt `prompt_file` as a PEFT adapter at `output_dir`; returns it.

  `peft.PeftModel.from_pretrained(T5ForConditionalGeneration.from_pretrained(base_model),
  output_dir)` then computes what this library computes with the prompt as a prefix; for a
  decoder-only base, `AutoModelForCausalLM` computes what PromptedDecoderModel does where the
  layouts agree (no BOS; docs/decoder_only.md). An MPT record (prompts/mpt.py) becomes a
  MULTITASK_PROMPT_TUNING adapter instead (checkpoints/peft_mpt.py), and the record is
  returned. `overwrite`: see write_adapter.
  """
  read_base_model(base_model)  # bad paths fail before the prompt is read
  _check_output_dir(output_dir, overwrite)
  prompt = _load_prompt(os.fspath(prompt_file))
  if is_mpt_record(prompt):
    from prompt_tuning.checkpoints import peft_mpt  # pylint: disable=g-import-not-at-top
    peft_mpt.write_adapter(prompt, base_model, output_dir, f"file {prompt_file!r}", overwrite)
  else:
    write_adapter(prompt, base_model, output_dir, f"file {prompt_file!r}", overwrite)
  return prompt


def _load_prompt(path: str) -> np.ndarray:
  """A .npy prompt, checked; an MPT record as stored (peft_mpt checks it)."""
  value = prompts_io.read_prompt_file(path, name="--prompt_file")
  _refuse_deep(value, f"file {path!r}")
  if is_mpt_record(value):
    return value
  return prompts_io.check_prompt(value, None, f"file {path!r}")


def is_mpt_record(value: Any) -> bool:
  """An MPT record's fields (prompts/mpt.FIELDS, named here to keep jax out of this module)."""
  names = getattr(value, "dtype", np.dtype(float)).names
  return names is not None and {"shared", "task_rows", "task_cols", "tasks"} <= set(names)


def _refuse_deep(value: Any, source: str) -> None:
  """A deep prompt (methods/deep.gin) has no PEFT adapter: one clear error, naming `source`."""
  value = np.asarray(value)
  if value.dtype.names is None and value.ndim == 3:
    raise ValueError(
        f"Prompt {source} has shape {value.shape}: a deep prompt [encoder layers, "
        "PROMPT_LENGTH, d_model] (methods/deep.gin), which no PEFT adapter holds: PEFT's "
        "prompt tuning has one prompt at the model's input, and its prefix tuning sets "
        "each layer's attention keys and values, not the hidden states a deep prompt "
        "replaces. Serve it with this library (eval or infer with --gin_file=methods/deep.gin).")


def _check_output_dir(output_dir: str, overwrite: bool = False) -> str:
  """`output_dir` without a trailing slash, if the adapter may be written there.

  Absent or empty: yes. Holding files: only with `overwrite`, and then only the adapter's
  two files are replaced.
  """
  output_dir = os.fspath(output_dir).rstrip("/") or "/"
  if "://" in output_dir:
    raise ValueError(f"Adapter directory {output_dir!r} must be local (PEFT reads local "
                     "directories or the Hub); write it locally and copy it.")
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise ValueError(f"Adapter directory {output_dir!r} is a file; choose a directory path.")
  held = sorted(os.listdir(output_dir)) if os.path.isdir(output_dir) else []
  if held and not overwrite:
    ours = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if name in held]
    if ours:
      raise ValueError(f"Adapter directory {output_dir!r} already holds {' and '.join(ours)}; "
                       "pass --overwrite to replace the adapter's two files (nothing else "
                       "there is touched), or choose a new directory.")
    raise ValueError(f"Adapter directory {output_dir!r} exists and is not a PEFT adapter (it "
                     f"holds {', '.join(held[:3])}{', ...' if len(held) > 3 else ''}); choose "
                     "a new or empty directory, or pass --overwrite to write the adapter's two "
                     "files beside them.")
  return output_dir


# ---------------------------------------------------------------------------------------------
# Import: adapter directory -> prompt

def read_adapter_config(adapter_dir: str) -> dict[str, Any]:
  """adapter_config.json of `adapter_dir`, checked: a SEQ_2_SEQ_LM or CAUSAL_LM prompt-tuning
  adapter (PROMPT_TUNING, or MULTITASK_PROMPT_TUNING: checkpoints/peft_mpt.py)."""
  file = os.path.join(os.fspath(adapter_dir), CONFIG_FILE)
  if not os.path.isdir(adapter_dir):
    raise ValueError(f"Adapter directory {os.fspath(adapter_dir)!r} does not exist; give the "
                     "directory a PEFT save_pretrained wrote.")
  if not os.path.isfile(file):
    raise ValueError(f"{file!r} does not exist; give the directory a PEFT save_pretrained "
                     "wrote (adapter_config.json + adapter_model.safetensors).")
  try:
    with open(file, encoding="utf-8") as f:
      config = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"{file!r} is not a readable JSON file ({e}); save the adapter again "
                     "with PEFT's save_pretrained.") from None
  if not isinstance(config, dict):
    raise ValueError(f"{file!r} holds {type(config).__name__}, not a JSON object; save the "
                     "adapter again with PEFT's save_pretrained.")
  _check_config(config, file)
  return config


def _check_config(config: dict[str, Any], file: str) -> None:
  if config.get("peft_type") not in (PEFT_TYPE, MPT_PEFT_TYPE):
    raise ValueError(f"{file!r} has peft_type {config.get('peft_type')!r}; only {PEFT_TYPE} "
                     f"adapters hold a prompt (PromptTuningConfig), and {MPT_PEFT_TYPE} ones a "
                     "multi-task prompt (MultitaskPromptTuningConfig).")
  task_type = config.get("task_type")
  if task_type not in _SUBMODULES:
    raise ValueError(f"{file!r} has task_type {task_type!r}; only {SEQ_2_SEQ_LM} (prompts for "
                     f"T5's encoder) and {CAUSAL_LM} (prompts for a decoder-only model) "
                     "adapters are read.")
  length = config.get("num_virtual_tokens")
  if isinstance(length, bool) or not isinstance(length, int) or length < 1:
    raise ValueError(f"{file!r} has num_virtual_tokens {length!r}; it must be a positive "
                     "integer (the prompt length).")
  submodules = config.get("num_transformer_submodules")
  allowed, default = _SUBMODULES[task_type]
  if submodules is not None and submodules not in allowed:
    raise ValueError(f"{file!r} has num_transformer_submodules {submodules!r}; a {task_type} "
                     f"prompt-tuning adapter has {' or '.join(map(str, allowed))} (or none: "
                     f"PEFT's default, {default}).")


def _check_kind(config: dict[str, Any], hf_base: BaseModel, adapter_dir: str) -> None:
  """An adapter is read only for a base model of its own kind (T5 / decoder-only)."""
  if config["task_type"] != hf_base.task_type:
    kinds = {SEQ_2_SEQ_LM: "a T5 model's encoder", CAUSAL_LM: "a decoder-only model"}
    raise ValueError(f"Adapter {adapter_dir!r} is a {config['task_type']} adapter (a prompt "
                     f"for {kinds[config['task_type']]}) but base model {hf_base.path!r} is a "
                     f"{hf_base.family} model, which takes {hf_base.task_type} adapters; give "
                     "the base model the adapter was trained for.")


def resolve_base_model(config: dict[str, Any], adapter_dir: str, d_model: int | None,
                       base_model: str | None) -> tuple[BaseModel | None, int | None]:
  """(the base model or None, the width the adapter must have or None), checked against the
  adapter's `config`: the kind must match, and a CAUSAL_LM adapter needs its base model."""
  hf_base = None if base_model is None else read_base_model(base_model)
  if hf_base is not None:
    _check_kind(config, hf_base, adapter_dir)
    if d_model is not None and d_model != hf_base.d_model:
      raise ValueError(f"d_model {d_model} disagrees with base model {hf_base.path!r} "
                       f"(d_model {hf_base.d_model}); give one of them.")
    return hf_base, hf_base.d_model
  if config["task_type"] == CAUSAL_LM:
    raise ValueError(f"Adapter {adapter_dir!r} is a {CAUSAL_LM} adapter, whose prompt depends "
                     "on its base model (Gemma's embedding multiplier); give the base model's "
                     "Hugging Face directory with --base_model.")
  return None, d_model


def read_adapter(adapter_dir: str, d_model: int | None = None,
                 base_model: str | None = None) -> np.ndarray:
  """The prompt of a PEFT prompt-tuning adapter as this library's prompt -> float32
  [num_virtual_tokens, d_model].

  SEQ_2_SEQ_LM: both layouts, num_transformer_submodules 1 (p rows) or 2 (PEFT's seq2seq
  default, 2p rows, of which PEFT feeds rows [0, p) to the encoder; the rest are unused and
  dropped). CAUSAL_LM: p rows, divided by `peft_embedding_factor` (Gemma); it needs
  `base_model`, since the factor and the width are the base model's.

  Args:
    adapter_dir: a local directory with adapter_config.json and adapter_model.safetensors.
    d_model: if given, the width the prompt must have (the base model's d_model).
    base_model: if given, the Hugging Face directory the adapter is for: its kind must be the
      adapter's and its d_model the prompt's width.
  """
  adapter_dir = os.fspath(adapter_dir)
  config = read_adapter_config(adapter_dir)
  if config["peft_type"] == MPT_PEFT_TYPE:
    raise ValueError(f"Adapter {adapter_dir!r} is a {MPT_PEFT_TYPE} adapter (a shared prompt "
                     "and per-task factors), not one prompt; import it with peft_adapter "
                     "import, which writes it as an MPT record (peft_mpt.read_adapter).")
  hf_base, d_model = resolve_base_model(config, adapter_dir, d_model, base_model)
  file = os.path.join(adapter_dir, WEIGHTS_FILE)
  weights = _read_weights(file)
  length = config["num_virtual_tokens"]
  submodules = config.get("num_transformer_submodules") or _SUBMODULES[config["task_type"]][1]
  width = config.get("token_dim") or (weights.shape[-1] if weights.ndim else 0)
  if tuple(weights.shape) != (length * submodules, width):
    raise ValueError(f"{file!r}: {WEIGHTS_KEY!r} has shape {tuple(weights.shape)} but "
                     f"{CONFIG_FILE} implies ({length * submodules}, {width}) "
                     f"(num_virtual_tokens {length} x num_transformer_submodules {submodules}, "
                     "token_dim); the two files are from different adapters, save it again.")
  prompt = prompts_io.check_prompt(np.array(weights[:length]), None, f"in {file!r}")
  if d_model is not None and prompt.shape[1] != d_model:
    raise ValueError(f"The prompt in {file!r} has width {prompt.shape[1]} but the model has "
                     f"d_model {d_model}; use the base model the adapter was trained for.")
  return prompt if hf_base is None else _from_peft(prompt, hf_base)


def import_adapter(adapter_dir: str, output: str, base_model: str | None = None,
                   d_model: int | None = None, overwrite: bool = False,
                   tasks: Sequence[str] | None = None) -> np.ndarray:
  """Reads the prompt of a PEFT adapter and saves it as a .npy prompt file at `output`.

  Args:
    adapter_dir: a PEFT prompt-tuning adapter directory (see read_adapter), or a
      MULTITASK_PROMPT_TUNING one (peft_mpt.read_adapter), which gives an MPT record.
    output: the .npy file to write (local or gs://), float32 [num_virtual_tokens, d_model]
      (an MPT adapter: the MPT record, prompts/mpt.py).
    base_model: the Hugging Face directory the adapter is for (T5 or decoder-only); optional
      for SEQ_2_SEQ_LM (then it checks the width), required for CAUSAL_LM.
    d_model: if given, the width the prompt must have.
    overwrite: replace a file already at `output` (otherwise refused, before anything is
      read).
    tasks: an MPT adapter's task names, one per PEFT task id in order (default task_0,
      task_1, ...); refused for a PROMPT_TUNING adapter, which has no tasks.
  Returns:
    The prompt (or MPT record) written.
  """
  output = os.fspath(output)
  if not overwrite:
    _refuse_existing_output(output)
  config = read_adapter_config(adapter_dir)
  if config["peft_type"] == MPT_PEFT_TYPE:
    from prompt_tuning.checkpoints import peft_mpt  # pylint: disable=g-import-not-at-top
    prompt = peft_mpt.read_adapter(adapter_dir, tasks, d_model, base_model)
  elif tasks is not None:
    raise ValueError(f"Adapter {os.fspath(adapter_dir)!r} is a {PEFT_TYPE} adapter, one prompt "
                     f"without tasks, but tasks {list(tasks)} were given; --tasks names the "
                     f"tasks of a {MPT_PEFT_TYPE} adapter. Leave it out.")
  else:
    prompt = read_adapter(adapter_dir, d_model, base_model)
  if "://" in output:
    prompts_io.save_prompt(output, prompt)  # TensorFlow's gfile
  else:
    _save_local_prompt(output, prompt, overwrite)
  return prompt


def _refuse_existing_output(output: str) -> None:
  if "://" in output:
    exists = base.file_exists(output)
  else:
    exists = os.path.lexists(output)
  if exists:
    raise ValueError(f"Prompt file {output!r} already exists; pass --overwrite to replace it, "
                     "or choose another --output.")


def _save_local_prompt(path: str, prompt: np.ndarray, overwrite: bool) -> None:
  """The prompt as float32 .npy at `path` (an MPT record as it is), whole or not at all;
  without `overwrite` a file that appeared meanwhile is kept. Plain numpy: no TensorFlow
  start-up."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  handle, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-",
                                 dir=os.path.dirname(os.path.abspath(path)))
  try:
    with os.fdopen(handle, "wb") as f:
      value = prompt if is_mpt_record(prompt) else np.asarray(prompt, np.float32)
      np.save(f, value, allow_pickle=False)
    os.chmod(tmp, 0o666 & ~_umask())
    if overwrite or not base.link_new(tmp, path):
      os.replace(tmp, path)
  except FileExistsError:
    raise ValueError(f"Prompt file {path!r} appeared meanwhile; it is kept. Pass --overwrite "
                     "to replace it.") from None
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _read_weights(file: str) -> np.ndarray:
  """The `prompt_embeddings` tensor of an adapter's safetensors file (memory-mapped)."""
  tensors = read_tensors(file)
  if WEIGHTS_KEY not in tensors:
    raise ValueError(f"{file!r} has no {WEIGHTS_KEY!r} tensor (it has {sorted(tensors)}); it "
                     "is not a prompt-tuning adapter's weights file.")
  return tensors[WEIGHTS_KEY]


def read_tensors(file: str) -> dict[str, np.ndarray]:
  """{name: memory-mapped array} of an adapter's safetensors file, or one clear error."""
  if not os.path.isfile(file):
    bin_file = os.path.join(os.path.dirname(file), "adapter_model.bin")
    fix = ("it has only adapter_model.bin: save it again with save_pretrained(dir, "
           "safe_serialization=True)" if os.path.isfile(bin_file) else
           "save the adapter again with PEFT's save_pretrained")
    raise ValueError(f"{file!r} does not exist; {fix}.")
  try:
    tensors = huggingface.read_safetensors(file)
  except (ValueError, struct.error, OSError, KeyError, TypeError) as e:
    raise ValueError(f"{file!r} is not a readable safetensors file ({e}); save the adapter "
                     "again with PEFT's save_pretrained.") from None
  return tensors
