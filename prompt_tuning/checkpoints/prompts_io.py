"""Prompt files: a trained prompt is a float32 .npy of shape [prompt_length, d_model].

Other prompt kinds (docs/methods.md) write their own: a deep prompt is float32 [encoder
layers, prompt_length, d_model] (prompts/deep.py), a DePT prompt one record of its parts
(prompts/dept.py); a model of that kind reads and checks them (`read_prompt_file`, then
`PromptedT5Model.with_prompt_file`), and `check_prompt` refuses them, naming their kind.

Read and written through tf.io.gfile, so paths may be local or gs://. Every prompt that
enters (a file, a T5X variable) is checked for shape, dtype and finite values, with one
clear error each.
"""

import io
import os

import numpy as np


def prompt_path(model_dir: str, step: int) -> str:
  """Where the training job exports the prompt of `step`: {model_dir}/prompts/step_{step}.npy."""
  return os.path.join(model_dir, "prompts", f"step_{step}.npy")


def check_prompt(value: np.ndarray, expected_shape: tuple[int, int] | None,
                 source: str) -> np.ndarray:
  """Returns `value` as float32 if it is a finite float matrix of `expected_shape` (if given;
  a 3-D one, [layers, p, d_model], asks for a deep prompt: `prompts.deep.check_file`).

  Raises ValueError naming `source` and the fix.
  """
  value = np.asarray(value)
  if expected_shape is not None and len(expected_shape) == 3:  # [layers, p, d]: deep prompts
    from prompt_tuning.prompts import deep
    return deep.check_file(value, *expected_shape, f"Prompt {source}")
  if value.dtype.names is not None and {"task_rows", "tasks"} <= set(value.dtype.names):  # MPT
    raise ValueError(f"Prompt {source} is a multi-task (MPT) file of tasks "
                     f"{[str(t) for t in np.asarray(value['tasks']).tolist()]}; a plain model "
                     "reads one task's prompt, prompts/step_{STEP}/{task}.npy beside it, and "
                     "a model with --gin_file=methods/mpt.gin reads this file.")
  if value.dtype.names is not None:  # a record: DePT's parts (prompts/dept.py)
    fields = ", ".join(f"{name} {value.dtype[name].shape}" for name in value.dtype.names)
    want = f"{tuple(expected_shape)} " if expected_shape is not None else ""
    raise ValueError(f"Prompt {source} is a DePT prompt file ({fields}) but a plain prompt "
                     f"{want}[PROMPT_LENGTH, d_model] is needed here; a DePT file is read by "
                     "a model with --gin_file=methods/dept.gin.")
  if value.dtype.kind != "f" and value.dtype.name != "bfloat16":
    raise ValueError(f"Prompt {source} has dtype {value.dtype}; it must be a float array "
                     "(float32 as exported by training).")
  if value.ndim == 3:
    raise ValueError(f"Prompt {source} has shape {value.shape}: a deep prompt [encoder "
                     "layers, PROMPT_LENGTH, d_model], but a plain prompt [PROMPT_LENGTH, "
                     "d_model] is needed here; a deep file is read by a model with "
                     "--gin_file=methods/deep.gin.")
  if value.ndim != 2:
    raise ValueError(f"Prompt {source} has shape {value.shape}; a prompt is a 2-D array "
                     "[prompt length, d_model], as training exports it.")
  shape = expected_shape
  if shape is not None and tuple(value.shape) != tuple(shape):
    fixes = []
    if value.shape[0] != shape[0]:
      fixes.append(f"set PROMPT_LENGTH={value.shape[0]}, the file's")
    if value.shape[1] != shape[1]:
      fixes.append(f"use the model it was trained for (width {value.shape[1]}; this model's "
                   f"d_model is {shape[1]})")
    raise ValueError(f"Prompt {source} has shape {value.shape} but the model needs "
                     f"{tuple(shape)} [PROMPT_LENGTH, d_model]; {' and '.join(fixes)}.")
  value = value.astype(np.float32)
  if not np.all(np.isfinite(value)):
    bad = int(np.size(value) - np.isfinite(value).sum())
    raise ValueError(f"Prompt {source} has {bad} non-finite values (NaN or inf); export it "
                     "again from a healthy checkpoint.")
  return value


def load_prompt(path: str, expected_shape: tuple[int, int] | None = None,
                name: str = "PROMPT_FILE") -> np.ndarray:
  """Reads a .npy prompt (local or gs://) -> float32 [prompt_length, d_model], checked.

  `name` is what set the path, for the messages: PROMPT_FILE, or e.g. PROMPTS['task'].
  """
  return check_prompt(read_prompt_file(path, name), expected_shape, f"file {path!r}")


def read_prompt_file(path: str, name: str = "PROMPT_FILE") -> np.ndarray:
  """The array of a .npy prompt file (local or gs://) as stored, of any prompt kind: a float
  array, or DePT's record (prompts/dept.py). The model that reads it checks it
  (`PromptedT5Model.with_prompt_file`); `load_prompt` checks a plain prompt. `name` is what
  the user set (a macro or a flag), for the messages. Local files are read without
  TensorFlow, so commands that need nothing else stay quick."""
  exists, is_dir, data = _read_bytes(path, name)
  if not exists or is_dir:
    raise ValueError(f"{name}={path!r} {'is a directory' if exists else 'does not exist'}; "
                     "point it at a .npy prompt, e.g. {MODEL_DIR}/prompts/step_{STEP}.npy.")
  try:
    value = np.load(io.BytesIO(data), allow_pickle=False)
  except (ValueError, OSError, EOFError) as e:
    raise ValueError(f"{name}={path!r} is not a readable .npy array ({e}).") from None
  return value


def _read_bytes(path: str, name: str) -> tuple[bool, bool, bytes | None]:
  """(exists, is a directory, the file's bytes when it is a file)."""
  if "://" not in path:
    if not os.path.isfile(path):
      return os.path.exists(path), os.path.isdir(path), None
    try:
      with open(path, "rb") as f:
        return True, False, f.read()
    except OSError as e:
      raise ValueError(f"{name}={path!r} cannot be read ({e.strerror}).") from None
  import tensorflow as tf  # gs:// support; imported here to keep `import prompts` light
  try:
    exists = tf.io.gfile.exists(path)
    is_dir = exists and tf.io.gfile.isdir(path)
    if exists and not is_dir:
      with tf.io.gfile.GFile(path, "rb") as f:
        return True, False, f.read()
    return exists, is_dir, None
  except tf.errors.OpError as e:  # an unreachable bucket, no credentials
    reason = " ".join(e.message.split())
    raise ValueError(f"{name}={path!r} cannot be read ({reason}); check the path, the "
                     "network and the credentials.") from None


def save_prompt(path: str, prompt: np.ndarray) -> None:
  """Writes `prompt` [prompt_length, d_model] as float32 .npy; the file appears whole or not.

  Writes a temporary file beside it and renames it over `path`.
  """
  import tensorflow as tf
  value = np.asarray(prompt)
  if value.dtype.names is None and value.ndim == 3:  # a deep prompt [layers, p, d_model]
    value = np.stack([check_prompt(layer.astype(np.float32), None, f"to save at {path!r}")
                      for layer in value])
  elif value.dtype.names is None:  # a DePT record is made and checked by prompts/dept.py
    value = check_prompt(value.astype(np.float32), None, f"to save at {path!r}")
  buffer = io.BytesIO()
  np.save(buffer, value, allow_pickle=False)
  tf.io.gfile.makedirs(os.path.dirname(path) or ".")
  tmp = f"{path}.tmp-{os.getpid()}"
  with tf.io.gfile.GFile(tmp, "wb") as f:
    f.write(buffer.getvalue())
  tf.io.gfile.rename(tmp, path, overwrite=True)


def read_t5x_prompt(path: str, variable: str = "encoder/prompt/prompt",
                    expected_shape: tuple[int, int] | None = None) -> np.ndarray:
  """One variable of a T5X checkpoint as a checked float32 prompt, e.g. 'encoder/prompt/prompt'."""
  from prompt_tuning.checkpoints import t5x
  value = t5x.read_t5x_variable(path, variable)
  return check_prompt(value, expected_shape, f"variable {variable!r} of T5X checkpoint {path!r}")
