"""A small Python API beside gin, for notebooks.

    model, frozen = api.load_frozen()    # the shipped mini T5 (vocabulary: api.MINI_VOCABULARY)
    model, frozen = api.load_frozen("/ckpt/t5_1_1_lm100k_base_hf")      # or a T5X checkpoint
    model, params = api.add_prompt(model, frozen, prompt_length=100,
                                   initializer=prompts.class_labels(["negative", "positive"]))
    api.log_likelihood(model, params, ["sst2 sentence: great fun"], ["positive"], vocab)
    api.logits(model, params, inputs, targets, vocab)     # [batch, target_length, vocab]
    api.generate(model, params, inputs, vocab)            # decoded strings

    # One frozen model, several prompts: each example names its prompt by index.
    model, table = api.add_prompts(model, frozen, [topic_prompt, pos_prompt])
    api.generate(model, table, inputs, vocab, prompt_ids=[0, 1, 1])

    # Other prompt kinds (docs/methods.md), e.g. deep prompts [encoder layers, p, d_model]:
    model, params = api.add_prompt(model, frozen, 20, method=prompts.deep.method())
    model, table = api.add_prompts(model, frozen, deep_prompts, method=prompts.deep.method())

Texts are tokenized with `vocabulary` (a seqio vocabulary or a path for
`data.vocabularies.get_vocabulary`), or passed as lists of token ids with vocabulary None.
EOS is appended to inputs and targets, as the jobs' feature converter does. No inputs give
an empty result; one string where a list is expected, a missing target, or a token id outside
the model's vocabulary is a ValueError naming it.
"""

import functools
from typing import Any, Sequence

import jax
import numpy as np

from prompt_tuning import model as model_lib
from prompt_tuning import pretrained, prompts
from prompt_tuning.t5 import config as t5_config

Texts = Sequence[str] | Sequence[Sequence[int]]
MINI_VOCABULARY = pretrained.MINI_VOCABULARY_PATH  # the shipped mini T5's SentencePiece model


def load_frozen(path: str | None = None, config: str | t5_config.T5Config | None = None,
                activation_dtype: str = "float32") -> tuple[model_lib.T5Model, Any]:
  """A frozen T5 and its weights from a checkpoint directory.

  Args:
    path: a Hugging Face T5 directory (config.json, safetensors) or a T5X checkpoint; None
      is the shipped mini T5 (docs/mini_t5.md), whose vocabulary is MINI_VOCABULARY.
    config: a size name ('t5_1_1_base') or T5Config; None reads a Hugging Face config.json.
    activation_dtype: 'float32' (CPU) or 'bfloat16' (TPU/GPU).
  Returns:
    (T5Model, params: nested dict of float32 numpy arrays).
  """
  from prompt_tuning.checkpoints import huggingface, loading
  if path is not None and not str(path):
    raise ValueError("path='' is empty; give a checkpoint directory, or None for the shipped "
                     "mini T5.")
  if path is None:
    path = pretrained.mini_checkpoint_path()
  if config is None:
    config = huggingface.config_from_hf(path)
  elif isinstance(config, str):
    config = t5_config.get_config(config)
  model = model_lib.T5Model(config, activation_dtype=activation_dtype)
  return model, loading.load_params(path, model.config)


def add_prompt(model: model_lib.T5Model, frozen_params: Any, prompt_length: int = 100,
               initializer: prompts.Initializer | None = None, combine: Any = "prefix",
               seed: int = 0, method: Any = None) -> tuple[model_lib.PromptedT5Model, Any]:
  """Wraps a frozen model with a prompt; initializer default `prompts.sampled_vocab()`.

  method: the prompt kind (None: plain; e.g. `prompts.deep.method()`, `prompts.residual.
  method()`; see docs/methods.md).
  Returns (PromptedT5Model, params = frozen_params + {'prompt': {'prompt': [p, d_model]}}
  (deep prompts: [encoder layers, p, d_model]; other kinds add their parameters)).
  """
  prompted = model_lib.PromptedT5Model(model.config, prompt_length, initializer, combine,
                                       eos_id=model.eos_id, method=method)
  return prompted, prompted.init_params(jax.random.PRNGKey(seed), frozen_params)


def add_prompts(model: model_lib.T5Model, frozen_params: Any, prompts_: Sequence[Any],
                method: Any = None) -> tuple[model_lib.PromptedT5Model, Any]:
  """Serves several prompts [p_i, d_model] (any lengths) on one frozen model; deep prompts
  [encoder layers, p_i, d_model] with `method=prompts.deep.method()`.

  Returns (PromptedT5Model, params with the prompt table); pass `prompt_ids` (one index into
  `prompts_` per example) to `log_likelihood`, `logits` and `generate`.
  """
  longest = max((np.shape(p)[-2] for p in prompts_ if np.ndim(p) >= 2), default=1)
  prompted = model_lib.PromptedT5Model(model.config, max(longest, 1), eos_id=model.eos_id,
                                       method=method)
  return prompted, prompted.with_prompt_table(frozen_params, prompts_)


def make_batch(inputs: Texts, targets: Texts | None = None, vocabulary: Any = None,
               eos_id: int = 1, prompt_ids: Sequence[int] | None = None,
               num_prompts: int | None = None) -> dict[str, np.ndarray]:
  """Right-padded int32 features [batch, longest + 1] (EOS appended) for `T5Model` methods;
  with `prompt_ids`, also `prompt_ids` [batch] (each checked against `num_prompts`)."""
  inputs = _text_list("inputs", inputs)
  if not inputs:
    raise ValueError("inputs is empty: a batch needs at least one input.")
  encode = _encoder(vocabulary)
  batch = {"encoder_input_tokens": _pad([encode(x) + [eos_id] for x in inputs])}
  if prompt_ids is not None:
    batch["prompt_ids"] = _check_prompt_ids(prompt_ids, len(inputs), num_prompts)
  if targets is not None:
    targets = _text_list("targets", targets)
    if len(targets) != len(inputs):
      raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets; give one each.")
    target = _pad([encode(y) + [eos_id] for y in targets])
    batch["decoder_target_tokens"] = target
    batch["decoder_input_tokens"] = np.pad(target[:, :-1], ((0, 0), (1, 0)))
    batch["decoder_loss_weights"] = (target > 0).astype(np.int32)
  return batch


def _check_prompt_ids(prompt_ids: Sequence[int], batch: int,
                      num_prompts: int | None) -> np.ndarray:
  ids = np.asarray(prompt_ids, np.int32).reshape(-1)
  if len(ids) != batch:
    raise ValueError(f"{len(ids)} prompt_ids for {batch} inputs; give one per input.")
  bad = [int(i) for i in ids if i < 0 or (num_prompts is not None and i >= num_prompts)]
  if bad:
    raise ValueError(f"prompt_ids {bad} are not in the prompt table [0, {num_prompts}); give "
                     "each input the index of its prompt in add_prompts' list.")
  return ids


def _text_list(name: str, texts: Any) -> list:
  """`texts` as a list; one string would be taken as a list of characters, so it is refused."""
  if isinstance(texts, (str, bytes)):
    raise ValueError(f"{name} is one string ({texts[:40]!r}); give a list with one text per "
                     f"example, e.g. [{texts[:40]!r}].")
  if texts is None or not hasattr(texts, "__len__"):
    raise ValueError(f"{name}={texts!r:.60} is not a list; give one text (or list of token "
                     "ids) per example.")
  return list(texts)


def _batch(model, params, inputs, targets, vocabulary, prompt_ids,
           with_targets: bool = True) -> dict[str, np.ndarray] | None:
  """make_batch's features, their token ids checked against the model's vocabulary; None
  when there are no inputs (after the same checks of targets and prompt_ids)."""
  table = params.get("prompt", {}).get("lengths")
  num_prompts = None if table is None else len(table)
  inputs = _text_list("inputs", inputs)
  if with_targets and len(_text_list("targets", targets)) != len(inputs):
    raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets; give one each.")
  if not inputs:
    if prompt_ids is not None:
      _check_prompt_ids(prompt_ids, 0, num_prompts)
    return None
  batch = make_batch(inputs, targets if with_targets else None, vocabulary, model.eos_id,
                     prompt_ids, num_prompts)
  _check_in_vocabulary(batch, model.config.vocab_size)
  return batch


def _check_in_vocabulary(batch: dict[str, np.ndarray], vocab_size: int) -> None:
  """The model's embedding lookup would clamp an id it does not have: refuse it instead."""
  for key, name in (("encoder_input_tokens", "inputs"), ("decoder_target_tokens", "targets")):
    ids = batch.get(key)
    outside = np.argwhere((ids < 0) | (ids >= vocab_size)) if ids is not None else []
    if len(outside):
      row, column = outside[0]
      raise ValueError(f"{name}[{row}] holds token id {ids[row, column]}, outside the model's "
                       f"vocabulary [0, {vocab_size}); tokenize with the model's own "
                       "vocabulary.")


def log_likelihood(model: model_lib.T5Model, params: Any, inputs: Texts, targets: Texts,
                   vocabulary: Any = None,
                   prompt_ids: Sequence[int] | None = None) -> np.ndarray:
  """[batch] float32: ln p(target | input), summed over the target's tokens and its EOS.

  prompt_ids: with params from `add_prompts`, each input's prompt (an index).
  """
  batch = _batch(model, params, inputs, targets, vocabulary, prompt_ids)
  if batch is None:
    return np.zeros((0,), np.float32)
  return np.asarray(_jit(model.score)(params, batch))


def logits(model: model_lib.T5Model, params: Any, inputs: Texts, targets: Texts,
           vocabulary: Any = None, prompt_ids: Sequence[int] | None = None) -> np.ndarray:
  """[batch, target_length, vocab] float32 teacher-forced logits (position t predicts
  target token t; the last real position predicts EOS)."""
  batch = _batch(model, params, inputs, targets, vocabulary, prompt_ids)
  if batch is None:
    return np.zeros((0, 0, model.config.vocab_size), np.float32)
  return np.asarray(_jit(model.logits)(params, batch))


def generate(model: model_lib.T5Model, params: Any, inputs: Texts, vocabulary: Any = None,
             max_length: int = 32, method: str = "greedy",
             prompt_ids: Sequence[int] | None = None) -> list:
  """Decoded outputs: strings with a vocabulary, else token-id lists (EOS dropped)."""
  if not isinstance(max_length, int) or max_length < 1:
    raise ValueError(f"max_length={max_length!r} must be a positive integer (the most tokens "
                     "to generate).")
  batch = _batch(model, params, inputs, None, vocabulary, prompt_ids, with_targets=False)
  if batch is None:
    return []
  predict = functools.partial(model.predict, method=method, max_decode_length=max_length)
  tokens = np.asarray(jax.jit(predict)(params, batch))
  rows = [[int(t) for t in row if t not in (0, model.eos_id)] for row in tokens]
  vocab = _vocabulary(vocabulary)
  return [vocab.decode(r) for r in rows] if vocab is not None else rows


@functools.lru_cache(maxsize=32)
def _jit(method):
  return jax.jit(method)


def _vocabulary(vocabulary: Any) -> Any:
  if vocabulary is None or hasattr(vocabulary, "decode"):
    return vocabulary
  from prompt_tuning.data import vocabularies
  return vocabularies.get_vocabulary(vocabulary)


def _encoder(vocabulary: Any):
  vocab = _vocabulary(vocabulary)

  def encode(x) -> list[int]:
    if isinstance(x, str):
      if vocab is None:
        raise ValueError(f"Text {x!r} needs a vocabulary; pass vocabulary= (a path or a "
                         "seqio vocabulary) or token ids.")
      return list(vocab.encode(x))
    return [int(t) for t in x]
  return encode


def _pad(rows: list[list[int]]) -> np.ndarray:
  out = np.zeros((len(rows), max(len(r) for r in rows)), np.int32)
  for i, row in enumerate(rows):
    out[i, :len(row)] = row
  return out
