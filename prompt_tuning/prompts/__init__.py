"""Soft prompts: the `Prompt` parameter and the paper's initializers.

A prompt is one float32 matrix P [prompt_length, embed] (parameter `prompt/prompt`, logical
axes ("prompt", "prompt_embed")). Its first value comes from an *initializer*

    init(rng, embedding [vocab, embed], shape (prompt_length, embed)) -> [prompt_length, embed]

applied by the model object (`model.PromptedT5Model.init_params`) once the frozen checkpoint
is loaded, since several initializers read the frozen embedding table. Initializers are pure
JAX functions of the table (tokenization happens in Python at trace time), so they run
under `jax.jit` with a sharded table. Each factory below is gin-configurable (see
gin_configs/prompts/*.gin):

  random_uniform(scale=0.5)               uniform in [-scale, scale] (the paper's "random")
  sampled_vocab(population_size=5000,     distinct rows of the K most frequent tokens' embeddings
                vocabulary=None)
  class_labels(labels, vocabulary)        one row per label (mean of its pieces), rest sampled
  from_text(text, vocabulary)             the embeddings of the text's pieces, tiled or cut
  from_file(path)                         a .npy file (local or gs://)
  from_t5x_checkpoint(path, variable)     a variable of a T5X checkpoint

The last two read a trained prompt whole: a prompt kind with more than [p, d] (deep prompts,
[layers, p, d]) asks them for its full shape (`reads_trained_prompt`).

The same initializers serve decoder-only models (decoder_model.PromptedDecoderModel): the
table is `token_embedder/embedding` there too, and `vocabulary` may be the model's Hugging
Face directory (its tokenizer.json or tokenizer.model, encoded without special tokens, as
the decoder layout encodes targets, so a label's ids are those its target has). Rows are the
raw table rows even for Gemma, whose network multiplies its embedded input by sqrt(d_model):
it multiplies every row it receives, the prompt's included (causal_lm/network.py), so a raw
row in the prompt means exactly what that token means beside it.
"""

import re
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

Array = jax.Array
Initializer = Callable[[Array, Array, tuple[int, int]], Array]

PROMPT_AXES = ("prompt", "prompt_embed")
# SentencePiece vocabularies of T5 and mT5 list pad 0, eos 1, unk 2 first, then pieces by
# decreasing frequency; sampling starts after the special ids.
NUM_SPECIAL_IDS = 3


def check_prompt_length(length: Any) -> int:
  """Returns `length` if it is a positive int, else a ValueError naming it."""
  if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
    raise ValueError(f"PROMPT_LENGTH={length!r} is not a positive integer; set e.g. "
                     "--gin.PROMPT_LENGTH=100 (the paper's default).")
  return int(length)


class Prompt(nn.Module):
  """The soft prompt: parameter `prompt` [length, embed_dim], float32 at any activation dtype.

  Its module-level init (uniform in [-0.5, 0.5]) only serves `Module.init`; real runs replace
  the value with an initializer applied to the loaded frozen model (see the module doc).
  """
  length: int
  embed_dim: int

  @nn.compact
  def __call__(self) -> Array:
    """-> prompt [length, embed_dim] float32."""
    return prompt_parameter(self, self.length, self.embed_dim)


def prompt_parameter(module: nn.Module, length: int, embed_dim: int) -> Array:
  """`module`'s parameter 'prompt' [length, embed_dim] float32, logical axes PROMPT_AXES.

  Every prompt kind keeps its raw prompt under this name, so initializers, PROMPT_REGEX and
  the prompt files find it at `prompt/prompt`.
  """
  check_prompt_length(length)
  init = lambda rng, shape, dtype: jax.random.uniform(rng, shape, dtype, -0.5, 0.5)
  return module.param("prompt", nn.with_logical_partitioning(init, PROMPT_AXES),
                      (length, embed_dim), jnp.float32)


# ------------------------------------------------------------------------------------------
# Initializers.


def random_uniform(scale: float = 0.5) -> Initializer:
  """Uniform in [-scale, scale], as the paper describes (its reference code drew [0, 0.5))."""
  if not scale > 0:
    raise ValueError(f"random_uniform scale={scale!r} must be > 0 (the paper uses 0.5).")

  def init(rng: Array, embedding: Array, shape: tuple[int, int]) -> Array:
    del embedding
    return jax.random.uniform(rng, shape, jnp.float32, -scale, scale)
  return init


def sampled_vocab(population_size: int = 5000, num_special_ids: int = NUM_SPECIAL_IDS,
                  vocabulary: Any = None) -> Initializer:
  """Rows drawn without replacement from the embeddings of the K most frequent tokens.

  Without `vocabulary` the population is the ids [num_special_ids, num_special_ids + K),
  K = population_size (cut to the table's size): T5's SentencePiece vocabularies list pad,
  eos, unk first and then pieces by decreasing frequency. With `vocabulary` (an object with
  `encode`, or a path for `vocabularies.get_vocabulary`, e.g. a decoder model directory) it
  is the first K ids that the tokenizer treats as ordinary text (`ordinary_token_ids`):
  SentencePiece orders pieces by score and byte-level BPE (GPT-2, Llama 3, Qwen2) by merge
  order, both roughly by frequency, while special and added tokens (BOS, EOS, pad, Gemma's
  <unused*> rows), byte-fallback pieces and table rows past the tokenizer are skipped. For
  T5's vocabulary both give the same population and the same draws.
  """
  if not isinstance(population_size, int) or population_size < 1:
    raise ValueError(f"sampled_vocab population_size={population_size!r} must be a positive "
                     "integer (the paper uses 5000).")

  def init(rng: Array, embedding: Array, shape: tuple[int, int]) -> Array:
    _check_embed_dim(embedding, shape)
    if vocabulary is None:
      first = min(num_special_ids, embedding.shape[0])
      pool = np.arange(first, min(first + population_size, embedding.shape[0]))
    else:
      pool = ordinary_token_ids(_resolve_vocabulary(vocabulary), population_size,
                                embedding.shape[0])
    if shape[0] > len(pool):
      raise ValueError(f"sampled_vocab cannot draw {shape[0]} distinct rows from {len(pool)} "
                       "tokens; lower PROMPT_LENGTH or raise population_size.")
    picks = jax.random.choice(rng, len(pool), (shape[0],), replace=False)
    return jnp.take(embedding, jnp.asarray(pool, jnp.int32)[picks], axis=0).astype(jnp.float32)
  return init


_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def ordinary_token_ids(vocabulary: Any, count: int, table_rows: int) -> np.ndarray:
  """The first `count` ids below `table_rows` that `vocabulary` maps to ordinary text.

  Skipped: the vocabulary's special ids (BOS, EOS, pad, unk); for a Hugging Face
  `tokenizers` tokenizer its added tokens and byte-fallback pieces ('<0x0A>'); for
  SentencePiece its control, unknown, unused and byte pieces; ids the tokenizer does not have
  (a table padded past it). Another vocabulary object skips ids below NUM_SPECIAL_IDS.
  """
  skip = {getattr(vocabulary, name, None) for name in ("bos_id", "eos_id", "pad_id", "unk_id")}
  tokenizer = getattr(vocabulary, "tokenizer", None)
  if hasattr(tokenizer, "get_added_tokens_decoder"):  # tokenizers.Tokenizer
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    skip |= set(tokenizer.get_added_tokens_decoder())
    ordinary = lambda i: not _BYTE_PIECE.fullmatch(tokenizer.id_to_token(i) or "")
  elif hasattr(tokenizer, "IsControl"):  # sentencepiece.SentencePieceProcessor
    size = tokenizer.GetPieceSize()
    ordinary = lambda i: not (tokenizer.IsControl(i) or tokenizer.IsUnknown(i)
                              or tokenizer.IsUnused(i) or tokenizer.IsByte(i))
  else:
    size = getattr(vocabulary, "vocab_size", table_rows)
    ordinary = lambda i: i >= NUM_SPECIAL_IDS
  ids = []
  for i in range(min(size, table_rows)):
    if i not in skip and ordinary(i):
      ids.append(i)
      if len(ids) == count:
        break
  return np.asarray(ids, np.int64)


def class_labels(labels: Sequence[str], vocabulary: Any = None,
                 fallback: Initializer | None = None) -> Initializer:
  """Row i is the embedding of labels[i] (the mean over its pieces); later rows from `fallback`.

  Args:
    labels: CLASS_LABELS, e.g. ['negative', 'positive'], at most PROMPT_LENGTH of them.
    vocabulary: a vocabulary object (with `encode`) or a path for
      `prompt_tuning.data.vocabularies.get_vocabulary` (None: T5's default).
    fallback: initializer of the remaining rows; default `sampled_vocab` over `vocabulary`.
  """
  if isinstance(labels, str) or not labels or not all(isinstance(l, str) for l in labels):
    raise ValueError(f"CLASS_LABELS={labels!r} must be a non-empty list of strings, e.g. "
                     "--gin.CLASS_LABELS=\"['negative', 'positive']\".")
  labels = tuple(labels)
  fallback = fallback or sampled_vocab(vocabulary=vocabulary)

  def init(rng: Array, embedding: Array, shape: tuple[int, int]) -> Array:
    _check_embed_dim(embedding, shape)
    check_fits(init, shape[0])
    vocab = _resolve_vocabulary(vocabulary)
    rows = [_mean_embedding(embedding, _encode(vocab, label, "CLASS_LABELS"))
            for label in labels]
    rest = shape[0] - len(labels)
    if rest:
      rows.append(fallback(rng, embedding, (rest, shape[1])))
    return jnp.concatenate([jnp.atleast_2d(r) for r in rows]).astype(jnp.float32)
  init.num_labels = len(labels)
  return init


def from_text(text: str, vocabulary: Any = None) -> Initializer:
  """The embeddings of `text`'s pieces (no EOS), repeated or cut to the prompt length."""
  if not isinstance(text, str) or not text.strip():
    raise ValueError(f"PROMPT_TEXT={text!r} is empty; give some text, e.g. "
                     "--gin.PROMPT_TEXT='Classify the sentiment:', or use another initializer.")

  def init(rng: Array, embedding: Array, shape: tuple[int, int]) -> Array:
    del rng
    _check_embed_dim(embedding, shape)
    ids = _encode(_resolve_vocabulary(vocabulary), text, "PROMPT_TEXT")
    return jnp.take(embedding, np.resize(ids, shape[0]), axis=0).astype(jnp.float32)
  return init


def from_file(path: str) -> Initializer:
  """A [prompt_length, embed] float .npy file (local or gs://), checked for shape and values."""
  if not isinstance(path, str) or not path:
    raise ValueError(f"PROMPT_FILE={path!r} must be the path of a .npy prompt file.")

  def init(rng: Array, embedding: Any, shape: tuple[int, ...]) -> Array:
    del rng, embedding  # only the shape matters: it also runs on an abstract frozen model
    from prompt_tuning.checkpoints import prompts_io
    return jnp.asarray(prompts_io.load_prompt(path, shape))
  init.reads_trained_prompt = True  # a deep prompt's init asks it for every layer at once
  return init


def from_t5x_checkpoint(path: str, variable: str = "encoder/prompt/prompt") -> Initializer:
  """A variable of a T5X checkpoint (e.g. a prompt trained with the reference code)."""
  if not isinstance(path, str) or not path:
    raise ValueError(f"PROMPT_FILE={path!r} must be the path of a T5X checkpoint directory.")

  def init(rng: Array, embedding: Any, shape: tuple[int, ...]) -> Array:
    del rng, embedding
    from prompt_tuning.checkpoints import prompts_io
    return jnp.asarray(prompts_io.read_t5x_prompt(path, variable, shape))
  init.reads_trained_prompt = True
  return init


def check_fits(initializer: Initializer, prompt_length: int) -> None:
  """Raises ValueError early (before any weights load) if `initializer` needs more rows."""
  num_labels = getattr(initializer, "num_labels", 0)
  if num_labels > prompt_length:
    raise ValueError(f"CLASS_LABELS has {num_labels} labels but PROMPT_LENGTH="
                     f"{prompt_length}; use a prompt at least as long as the label list.")


# ------------------------------------------------------------------------------------------
# Helpers.


def _check_embed_dim(embedding: Any, shape: tuple[int, int]) -> None:
  if embedding.shape[-1] != shape[-1]:
    raise ValueError(f"The embedding table has width {embedding.shape[-1]} but the prompt "
                     f"{tuple(shape)}; they must agree (d_model).")


def _resolve_vocabulary(vocabulary: Any) -> Any:
  """A vocabulary object as is; None or a path through `get_vocabulary`."""
  if vocabulary is not None and not isinstance(vocabulary, (str, os.PathLike)):
    return vocabulary
  from prompt_tuning.data import vocabularies  # seqio; imported only when text is tokenized
  return vocabularies.get_vocabulary(vocabulary)


def _encode(vocabulary: Any, text: str, macro: str) -> np.ndarray:
  """Pieces of `text` (without EOS) as an int array; an error when there are none."""
  ids = np.asarray(vocabulary.encode(text), np.int32).reshape(-1)
  if ids.size == 0:
    raise ValueError(f"{macro} entry {text!r} tokenizes to no pieces; give non-empty text.")
  return ids


def _mean_embedding(embedding: Array, ids: np.ndarray) -> Array:
  """[vocab, embed], ids [n] -> [embed]: a multi-piece label is the mean of its pieces."""
  return jnp.mean(jnp.take(embedding, ids, axis=0).astype(jnp.float32), axis=0)
