"""DePT (Shi & Lipani 2024, "DePT: Decomposed Prompt Tuning for Parameter-Efficient
Fine-tuning"): a shorter prompt P [p', d] plus a low-rank update A [L, r] · B [r, d] added to
the frozen input embeddings by input position, each part with its own learning rate:

    embedded'[b, i] = embedded[b, i] + (A · B)[i - first[b]]     for the row's real tokens

where i - first[b] counts the row's real tokens (so the update lands on the same tokens
whatever the padding side) and L is the longest input (TASK_FEATURE_LENGTHS['inputs']).
Then P goes in as any prompt. Parameters: `prompt/prompt` [p', d], `prompt/low_rank_a`
[L, r], `prompt/low_rank_b` [r, d].

The same parameter count as the plain prompt of PROMPT_LENGTH p it replaces (`split`):
p' = round(0.6 p) unless given (the paper's main setting, 60 rows of 100 on T5-Base), and
r the largest rank with p' d + r (L + d) <= p d (on T5-Base with L = 256 that is the paper's
r = 30 exactly); the sequence gets p - p' rows shorter, which is the method's point.

Initialisation as the authors' code (github.com/ZhengxiangShi/DePT, peft/tuners/
prompt_tuning_lora.py): A uniform in [-1/sqrt(r), 1/sqrt(r)], B zero, so training starts from
the plain prompt P; their extra scale alpha/sqrt(r) on A · B is left out (with Adafactor's
scale-free steps it only rescales B's learning rate).

The prompt file holds all three: a .npy with one record of fields `prompt` [p', d],
`low_rank_a` [L, r], `low_rank_b` [r, d] (np.load(path)['prompt'] etc.), so it keeps the
`prompts/step_{STEP}.npy` name; eval and infer read it with methods/dept.gin.
"""

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from prompt_tuning import prompts
from prompt_tuning.prompts import method as method_lib

Array = jax.Array

FIELDS = ("prompt", "low_rank_a", "low_rank_b")
SHORT_FRACTION = 0.6  # p' / p by default (the paper's 60 of 100)


def split(prompt_length: int, embed_dim: int, max_input_length: int,
          short_length: int | None = None, rank: int | None = None) -> tuple[int, int]:
  """(p', r) for a DePT that replaces a plain prompt of `prompt_length` rows (see the module
  doc); explicit `short_length` or `rank` are kept as given."""
  short = round(SHORT_FRACTION * prompt_length) if short_length is None else short_length
  short = max(short, 1)
  if short >= prompt_length and short_length is None:
    short = prompt_length - 1
  if rank is None:
    rank = (prompt_length - short) * embed_dim // (max_input_length + embed_dim)
  if short < 1 or rank < 1:
    raise ValueError(
        f"DePT with PROMPT_LENGTH={prompt_length} (d_model {embed_dim}, inputs of "
        f"{max_input_length}) leaves a prompt of {short} rows and a rank-{rank} update; each "
        "needs at least 1: raise PROMPT_LENGTH, or set DEPT_PROMPT_LENGTH and DEPT_RANK.")
  return short, rank


class DecomposedPrompt(nn.Module):
  """`prompt/prompt` [length, embed_dim], `prompt/low_rank_a` [max_input_length, rank] and
  `prompt/low_rank_b` [rank, embed_dim]; calling it gives the prompt, `input_update()` A · B."""
  length: int
  embed_dim: int
  max_input_length: int
  rank: int

  def setup(self):
    self.prompt = prompts.prompt_parameter(self, self.length, self.embed_dim)
    bound = 1.0 / math.sqrt(self.rank)
    uniform = lambda rng, shape, dtype: jax.random.uniform(rng, shape, dtype, -bound, bound)
    self.low_rank_a = self.param(
        "low_rank_a", nn.with_logical_partitioning(uniform, ("prompt_input", "prompt_rank")),
        (self.max_input_length, self.rank), jnp.float32)
    self.low_rank_b = self.param(
        "low_rank_b", nn.with_logical_partitioning(nn.initializers.zeros,
                                                   ("prompt_rank", "prompt_embed")),
        (self.rank, self.embed_dim), jnp.float32)

  def __call__(self) -> Array:
    """-> the shorter prompt [length, embed_dim] float32."""
    return self.prompt

  def input_update(self) -> Array:
    """-> A · B [max_input_length, embed_dim] float32, row j for a row's j-th real token."""
    return self.low_rank_a @ self.low_rank_b


def add_by_position(update: Array, embedded: Array, tokens: Array) -> Array:
  """embedded [batch, length, embed] + update[j] [embed] on each row's j-th real token
  (id > 0; real tokens contiguous, as the combination requires), whatever the padding.

  Raises ValueError (when traced) if inputs are longer than the update's rows.
  """
  max_length, length = update.shape[0], tokens.shape[1]
  if length > max_length:
    raise ValueError(f"DePT's input update covers {max_length} input positions (its "
                     f"TASK_FEATURE_LENGTHS['inputs'] when trained) but the inputs have length "
                     f"{length}; use inputs of at most {max_length} tokens.")
  real = tokens > 0
  first = jnp.argmax(real, axis=1)                        # [batch] first real position
  index = jnp.arange(length)[None, :] - first[:, None]    # [batch, length] real-token index
  rows = jnp.take(update, jnp.clip(index, 0, max_length - 1), axis=0)
  rows = jnp.where(real[..., None], rows, 0).astype(embedded.dtype)
  return embedded + rows


@dataclasses.dataclass(frozen=True)
class DePT(method_lib.Method):
  """DePT of a plain prompt of PROMPT_LENGTH rows: see the module doc."""
  name = "dept"
  max_input_length: int = 512
  short_length: int | None = None
  rank: int | None = None

  def __post_init__(self):
    for label, value, optional in (("TASK_FEATURE_LENGTHS['inputs']", self.max_input_length,
                                    False), ("DEPT_PROMPT_LENGTH", self.short_length, True),
                                   ("DEPT_RANK", self.rank, True)):
      if optional and value is None:
        continue
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"DePT's {label}={value!r} must be a positive integer"
                         f"{' or None (chosen from PROMPT_LENGTH)' if optional else ''}.")

  def shape(self, prompt_length: int, embed_dim: int) -> tuple[int, int]:
    """(p', r) for PROMPT_LENGTH `prompt_length`."""
    return split(prompt_length, embed_dim, self.max_input_length, self.short_length, self.rank)

  def prompt_rows(self, prompt_length: int) -> int:
    # Only the row count is asked here, which does not depend on d_model.
    return split(prompt_length, 1, self.max_input_length, self.short_length, 1)[0]

  def module(self, prompt_length: int, embed_dim: int) -> nn.Module:
    short, rank = self.shape(prompt_length, embed_dim)
    return DecomposedPrompt(short, embed_dim, self.max_input_length, rank)

  def embed_inputs(self, module: nn.Module, embedded: Array, tokens: Array) -> Array:
    return add_by_position(module.input_update(), embedded, tokens)

  def export(self, module: nn.Module, params: Any) -> np.ndarray:
    del module
    return pack({name: params[name] for name in FIELDS})

  def params_from_file(self, value: np.ndarray, prompt_length: int | None, embed_dim: int,
                       source: str) -> Any:
    short, rank = self.shape(prompt_length, embed_dim)
    expected = {"prompt": (short, embed_dim), "low_rank_a": (self.max_input_length, rank),
                "low_rank_b": (rank, embed_dim)}
    return unpack(value, expected, source)


def pack(parts: Mapping[str, Any]) -> np.ndarray:
  """One record (a 0-d structured array) holding the DePT parts, float32, for one .npy."""
  arrays = {name: np.asarray(parts[name], np.float32) for name in FIELDS}
  dtype = np.dtype([(name, np.float32, arrays[name].shape) for name in FIELDS])
  record = np.zeros((), dtype)
  for name in FIELDS:
    record[name] = arrays[name]
  return record


def is_dept_file(value: np.ndarray) -> bool:
  return value.dtype.names is not None and set(FIELDS) <= set(value.dtype.names)


def describe(value: np.ndarray) -> str:
  """'prompt (12, 256), low_rank_a (48, 6), low_rank_b (6, 256)' for a DePT record."""
  return ", ".join(f"{name} {value.dtype[name].shape}" for name in FIELDS)


def unpack(value: np.ndarray, expected: Mapping[str, tuple[int, int]] | None,
           source: str) -> dict[str, np.ndarray]:
  """The parts of a DePT record, checked: float, finite, of the `expected` shapes if given."""
  want = ("prompt [p', d_model], low_rank_a [max input length, rank], low_rank_b "
          "[rank, d_model]")
  if not is_dept_file(value) or value.shape != ():
    raise ValueError(f"Prompt {source} has shape {value.shape} and dtype {value.dtype} but this "
                     f"DePT model (methods/dept.gin) needs a DePT prompt file ({want}), as the "
                     "train job exports with methods/dept.gin; evaluate a plain prompt without "
                     "methods/dept.gin.")
  parts = {name: np.asarray(value[name]) for name in FIELDS}
  for name, part in parts.items():
    if part.dtype.kind != "f" or not np.all(np.isfinite(part)):
      raise ValueError(f"Prompt {source} has a {name} that is not a finite float array; "
                       "export it again from a healthy checkpoint.")
  if expected is not None:
    got = {name: tuple(part.shape) for name, part in parts.items()}
    if got != {name: tuple(shape) for name, shape in expected.items()}:
      raise ValueError(
          f"Prompt {source} is a DePT prompt of {describe(value)} but the model needs "
          f"{', '.join(f'{n} {tuple(s)}' for n, s in expected.items())}; use the "
          "PROMPT_LENGTH, DEPT_PROMPT_LENGTH, DEPT_RANK and TASK_FEATURE_LENGTHS['inputs'] it "
          "was trained with, on a model of its width.")
  return {name: part.astype(np.float32) for name, part in parts.items()}


def method(max_input_length: int | Mapping[str, int], short_length: int | None = None,
           rank: int | None = None) -> DePT:
  """The DePT method. max_input_length: the longest input L (A's rows), or the
  TASK_FEATURE_LENGTHS mapping whose 'inputs' it is (methods/dept.gin passes the macro)."""
  if isinstance(max_input_length, Mapping):
    if "inputs" not in max_input_length:
      raise ValueError(f"TASK_FEATURE_LENGTHS={dict(max_input_length)!r} has no 'inputs'; DePT "
                       "sizes its input update by it.")
    max_input_length = max_input_length["inputs"]
  return DePT(max_input_length, short_length, rank)
