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

Texts are tokenized with `vocabulary` (a seqio vocabulary or a path for
`data.vocabularies.get_vocabulary`), or passed as lists of token ids with vocabulary None.
EOS is appended to inputs and targets, as the jobs' feature converter does.
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
               seed: int = 0) -> tuple[model_lib.PromptedT5Model, Any]:
  """Wraps a frozen model with a prompt; initializer default `prompts.sampled_vocab()`.

  Returns (PromptedT5Model, params = frozen_params + {'prompt': {'prompt': [p, d_model]}}).
  """
  prompted = model_lib.PromptedT5Model(model.config, prompt_length, initializer, combine,
                                       eos_id=model.eos_id)
  return prompted, prompted.init_params(jax.random.PRNGKey(seed), frozen_params)


def add_prompts(model: model_lib.T5Model, frozen_params: Any,
                prompts_: Sequence[Any]) -> tuple[model_lib.PromptedT5Model, Any]:
  """Serves several prompts [p_i, d_model] (any lengths) on one frozen model.

  Returns (PromptedT5Model, params with the prompt table); pass `prompt_ids` (one index into
  `prompts_` per example) to `log_likelihood`, `logits` and `generate`.
  """
  prompted = model_lib.PromptedT5Model(model.config, max(len(p) for p in prompts_) if prompts_
                                       else 1, eos_id=model.eos_id)
  return prompted, prompted.with_prompt_table(frozen_params, prompts_)


def make_batch(inputs: Texts, targets: Texts | None = None, vocabulary: Any = None,
               eos_id: int = 1, prompt_ids: Sequence[int] | None = None,
               num_prompts: int | None = None) -> dict[str, np.ndarray]:
  """Right-padded int32 features [batch, longest + 1] (EOS appended) for `T5Model` methods;
  with `prompt_ids`, also `prompt_ids` [batch] (each checked against `num_prompts`)."""
  encode = _encoder(vocabulary)
  batch = {"encoder_input_tokens": _pad([encode(x) + [eos_id] for x in inputs])}
  if prompt_ids is not None:
    batch["prompt_ids"] = _check_prompt_ids(prompt_ids, len(inputs), num_prompts)
  if targets is not None:
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


def _batch(model, params, inputs, targets, vocabulary, prompt_ids) -> dict[str, np.ndarray]:
  table = params.get("prompt", {}).get("lengths")
  return make_batch(inputs, targets, vocabulary, model.eos_id, prompt_ids,
                    None if table is None else len(table))


def log_likelihood(model: model_lib.T5Model, params: Any, inputs: Texts, targets: Texts,
                   vocabulary: Any = None,
                   prompt_ids: Sequence[int] | None = None) -> np.ndarray:
  """[batch] float32: ln p(target | input), summed over the target's tokens and its EOS.

  prompt_ids: with params from `add_prompts`, each input's prompt (an index).
  """
  batch = _batch(model, params, inputs, targets, vocabulary, prompt_ids)
  return np.asarray(_jit(model.score)(params, batch))


def logits(model: model_lib.T5Model, params: Any, inputs: Texts, targets: Texts,
           vocabulary: Any = None, prompt_ids: Sequence[int] | None = None) -> np.ndarray:
  """[batch, target_length, vocab] float32 teacher-forced logits (position t predicts
  target token t; the last real position predicts EOS)."""
  batch = _batch(model, params, inputs, targets, vocabulary, prompt_ids)
  return np.asarray(_jit(model.logits)(params, batch))


def generate(model: model_lib.T5Model, params: Any, inputs: Texts, vocabulary: Any = None,
             max_length: int = 32, method: str = "greedy",
             prompt_ids: Sequence[int] | None = None) -> list:
  """Decoded outputs: strings with a vocabulary, else token-id lists (EOS dropped)."""
  batch = _batch(model, params, inputs, None, vocabulary, prompt_ids)
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
