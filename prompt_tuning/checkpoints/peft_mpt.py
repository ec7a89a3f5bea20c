"""MPT records (prompts/mpt.py) as PEFT MULTITASK_PROMPT_TUNING adapters, and back.

Our MPT record holds P* [p, d] (`shared`), u [K, p] (`task_rows`), v [K, d] (`task_cols`) and
the K task names; task k's prompt is P_k = P* * (u_k v_kᵀ), elementwise. PEFT's (0.21)
MultitaskPromptEmbedding holds, for num_ranks r and T = p * num_transformer_submodules rows,

  prompt_embeddings  [T, d]     the shared prompt
  prefix_task_cols   [K, T, r]  per task, one factor per prompt row
  prefix_task_rows   [K, r, d]  per task, one factor per embedding column

and gives task k (the model's `task_ids` argument, one per batch row) the prompt
prompt_embeddings * (prefix_task_cols[k] @ prefix_task_rows[k]). With r = 1 that is ours:
PEFT's prefix_task_cols[k, :, 0] is our u_k (our `task_rows`: one value per prompt row) and
its prefix_task_rows[k, 0, :] our v_k (our `task_cols`); the names cross over. A rank r > 1
update is not of the form u_k v_kᵀ, so such an adapter is refused.

For SEQ_2_SEQ_LM, PEFT feeds an MPT adapter's rows [0, p) to T5's encoder, and with
num_transformer_submodules 2 (its seq2seq default) also rows [p, 2p) in front of the decoder's
input: unlike PROMPT_TUNING, whose second half is never used. This library's MPT prompts the
encoder alone, so export writes num_transformer_submodules 1 and import refuses 2. Note that
PEFT's seq2seq MPT forward takes the decoder's input from `labels` (shifted right), not from
`decoder_input_ids`.

For CAUSAL_LM (a record packed for a decoder-only model's input: this library trains MPT on
T5 only), PEFT's shared rows carry Gemma's embedding multiplier, as a plain prompt's do
(peft.peft_embedding_factor); u and v are unchanged.

PEFT keeps no task names: export returns them in task-id order for the caller to report, and
import takes them (`tasks`) or names the tasks task_0 .. task_{K-1}.
"""

import os
from typing import Any, Sequence

import numpy as np

from prompt_tuning.checkpoints import peft
from prompt_tuning.prompts import mpt

COLS_KEY = "prefix_task_cols"  # [K, T, num_ranks]: our task_rows u, one value per prompt row
ROWS_KEY = "prefix_task_rows"  # [K, num_ranks, d]: our task_cols v, one value per column


def adapter_config(prompt_length: int, num_tasks: int,
                   base_model: str | peft.BaseModel) -> dict[str, Any]:
  """adapter_config.json of an MPT adapter: PromptTuningConfig's fields (peft.adapter_config)
  and MultitaskPromptTuningConfig's, rank one and encoder only."""
  return {**peft.adapter_config(prompt_length, base_model),
          "peft_type": peft.MPT_PEFT_TYPE, "num_tasks": int(num_tasks), "num_ranks": 1,
          "prompt_tuning_init_state_dict_path": None, "prompt_tuning_init_task": 0}


def to_tensors(parts: dict[str, Any], hf_base: peft.BaseModel) -> dict[str, np.ndarray]:
  """An unpacked MPT record (mpt.unpack) -> the adapter's three float32 tensors."""
  factor = peft.peft_embedding_factor(hf_base)
  return {peft.WEIGHTS_KEY: np.asarray(parts["shared"], np.float32) * factor,
          COLS_KEY: np.asarray(parts["task_rows"], np.float32)[:, :, None],
          ROWS_KEY: np.asarray(parts["task_cols"], np.float32)[:, None, :]}


def write_adapter(record: np.ndarray, base_model: str, output_dir: str,
                  source: str = "to export", overwrite: bool = False) -> list[str]:
  """Writes the MPT record `record` as a MULTITASK_PROMPT_TUNING adapter at `output_dir`.

  Then `peft.PeftModel.from_pretrained(T5ForConditionalGeneration.from_pretrained(base_model),
  output_dir)` called with `task_ids` gives a row of task id k the prompt P_k. The record and
  the width are checked before anything is written; files are written as peft.write_adapter
  writes them (`overwrite` likewise). Returns the task names in task-id order (PEFT keeps
  none).
  """
  value = np.asarray(record)
  if not peft.is_mpt_record(value):
    raise ValueError(f"Prompt {source} has shape {value.shape} and dtype {value.dtype}: not an "
                     "MPT record (the prompts/step_{STEP}.npy of a methods/mpt.gin run), which "
                     f"a {peft.MPT_PEFT_TYPE} adapter needs. A plain prompt is written as a "
                     f"{peft.PEFT_TYPE} adapter (peft.write_adapter; peft_adapter export tells "
                     "the two kinds apart itself).")
  parts = mpt.unpack(value, source)
  hf_base = peft.read_base_model(base_model)
  (length, width), num_tasks = parts["shared"].shape, len(parts["tasks"])
  if width != hf_base.d_model:
    raise ValueError(f"MPT record {source} has width {width} (shared prompt {length} x "
                     f"{width}) but base model {hf_base.path!r} ({hf_base.family}) has d_model "
                     f"{hf_base.d_model}; give the Hugging Face directory of the model it was "
                     "trained on.")
  peft.write_adapter_files(output_dir, to_tensors(parts, hf_base),
                           adapter_config(length, num_tasks, hf_base), overwrite)
  return parts["tasks"]


def read_adapter(adapter_dir: str, tasks: Sequence[str] | None = None,
                 d_model: int | None = None, base_model: str | None = None) -> np.ndarray:
  """A MULTITASK_PROMPT_TUNING adapter as this library's MPT record (mpt.pack).

  Args:
    adapter_dir: a local directory with adapter_config.json and adapter_model.safetensors:
      num_ranks 1 and (SEQ_2_SEQ_LM) num_transformer_submodules 1.
    tasks: the task names, one per PEFT task id in order (for methods/mpt.gin, the mixture's
      tasks in seqio's order: sorted by name); default task_0, task_1, ...
    d_model, base_model: as for peft.read_adapter (base_model required for CAUSAL_LM).
  Returns:
    The record: shared [p, d], task_rows [K, p], task_cols [K, d], tasks [K].
  """
  adapter_dir = os.fspath(adapter_dir)
  config = peft.read_adapter_config(adapter_dir)
  file = os.path.join(adapter_dir, peft.CONFIG_FILE)
  if config["peft_type"] != peft.MPT_PEFT_TYPE:
    raise ValueError(f"Adapter {adapter_dir!r} is a {config['peft_type']} adapter, one prompt "
                     f"and no tasks, not a {peft.MPT_PEFT_TYPE} one; import it as a plain "
                     "prompt (peft.read_adapter; peft_adapter import tells the kinds apart).")
  num_tasks, num_ranks = _check_mpt_config(config, file)
  names = _task_names(tasks, num_tasks, adapter_dir)
  hf_base, d_model = peft.resolve_base_model(config, adapter_dir, d_model, base_model)
  weights_file = os.path.join(adapter_dir, peft.WEIGHTS_FILE)
  tensors = peft.read_tensors(weights_file)
  missing = [k for k in (peft.WEIGHTS_KEY, COLS_KEY, ROWS_KEY) if k not in tensors]
  if missing:
    raise ValueError(f"{weights_file!r} has no {' or '.join(map(repr, missing))} tensor (it has "
                     f"{sorted(tensors)}); it is not a {peft.MPT_PEFT_TYPE} adapter's weights "
                     "file.")
  shared, cols, rows = (np.asarray(tensors[k]) for k in (peft.WEIGHTS_KEY, COLS_KEY, ROWS_KEY))
  length = config["num_virtual_tokens"]
  width = config.get("token_dim") or (shared.shape[-1] if shared.ndim else 0)
  want = {peft.WEIGHTS_KEY: (length, width), COLS_KEY: (num_tasks, length, num_ranks),
          ROWS_KEY: (num_tasks, num_ranks, width)}
  got = {peft.WEIGHTS_KEY: shared.shape, COLS_KEY: cols.shape, ROWS_KEY: rows.shape}
  if any(tuple(got[k]) != want[k] for k in want):
    raise ValueError(f"{weights_file!r} has shapes {_shapes(got)} but {peft.CONFIG_FILE} "
                     f"implies {_shapes(want)} (num_virtual_tokens {length}, num_tasks "
                     f"{num_tasks}, num_ranks {num_ranks}, token_dim); the two files are from "
                     "different adapters, save it again.")
  if d_model is not None and width != d_model:
    raise ValueError(f"The MPT prompt in {weights_file!r} has width {width} but the model has "
                     f"d_model {d_model}; use the base model the adapter was trained for.")
  if hf_base is not None:
    shared = np.asarray(shared, np.float32) / peft.peft_embedding_factor(hf_base)
  record = mpt.pack(shared, cols[:, :, 0], rows[:, 0, :], names)
  mpt.unpack(record, f"in {weights_file!r}")  # finite floats, else one clear error
  return record


def _check_mpt_config(config: dict[str, Any], file: str) -> tuple[int, int]:
  """(num_tasks, num_ranks) of an MPT adapter's config, if this library's MPT holds it."""
  num_tasks = config.get("num_tasks", 1)  # PEFT's defaults: 1 task, rank 1
  num_ranks = config.get("num_ranks", 1)
  for name, count in (("num_tasks", num_tasks), ("num_ranks", num_ranks)):
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
      raise ValueError(f"{file!r} has {name} {count!r}; it must be a positive integer.")
  if num_ranks != 1:
    raise ValueError(f"{file!r} has num_ranks {num_ranks}: each task's update "
                     "prefix_task_cols @ prefix_task_rows is then a rank-"
                     f"{num_ranks} matrix, but this library's MPT update is rank one "
                     "(u_k v_kᵀ, prompts/mpt.py), so the adapter does not map to an MPT "
                     "record. Train the PEFT adapter with num_ranks=1.")
  submodules = config.get("num_transformer_submodules")
  if config["task_type"] == peft.SEQ_2_SEQ_LM and submodules != 1:
    raise ValueError(f"{file!r} has num_transformer_submodules {submodules!r}: PEFT's seq2seq "
                     "multi-task prompt then also goes in front of T5's decoder input (rows "
                     "[p, 2p)), where this library's MPT has no prompt, so the adapter does not "
                     "map. Train the PEFT adapter with num_transformer_submodules=1 (the "
                     "encoder's prompt only).")
  return num_tasks, num_ranks


def _task_names(tasks: Sequence[str] | None, num_tasks: int, adapter_dir: str) -> list[str]:
  """The given names (checked: one per task id, valid MPT task names) or task_0 .. ."""
  if tasks is None:
    return [f"task_{k}" for k in range(num_tasks)]
  if isinstance(tasks, str):
    raise ValueError(f"tasks={tasks!r} is one string; give a list of task names, e.g. "
                     f"{tasks.split(',')!r}.")
  names = list(tasks)
  if len(names) != num_tasks:
    raise ValueError(f"--tasks names {len(names)} task{'s' if len(names) != 1 else ''} "
                     f"{names} but adapter {adapter_dir!r} has num_tasks {num_tasks}; give one "
                     "name per PEFT task id, in task-id order (or none: task_0, task_1, ...).")
  mpt.MultiTask(tuple(names))  # names usable as MPT tasks (file names, no repeats), or why not
  return names


def _shapes(shapes: dict[str, tuple[int, ...]]) -> str:
  return ", ".join(f"{name} {tuple(shape)}" for name, shape in shapes.items())
