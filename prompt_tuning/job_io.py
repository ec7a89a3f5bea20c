"""What the jobs read and feed for each kind of model: its frozen checkpoint and its batches.

train, eval and infer never ask which model they run: `for_model(model)` gives the reader
chosen by the model's `architecture` attribute, and every job calls the same methods on it.

  'encoder_decoder'  model.T5Model / PromptedT5Model (and a job given no model yet): T5X,
                     Hugging Face or orbax checkpoints (checkpoints/loading.py), seqio
                     EncDec batches (data/features.py).
  'decoder_only'     decoder_model.DecoderModel / PromptedDecoderModel: a Hugging Face
                     causal-LM directory (checkpoints/hf_causal_lm.py), rows [BOS] + inputs +
                     targets (data/decoder_features.py); prompt batches ([BOS] + inputs,
                     left-padded) for decoding and rank classification.
"""

import dataclasses
from typing import Any, Iterator, Mapping, Sequence

import jax
import numpy as np

from prompt_tuning import optim
from prompt_tuning.causal_lm import network as decoder_network
from prompt_tuning.checkpoints import hf_causal_lm, loading
from prompt_tuning.data import decoder_features, features, hf_tokenizers, rank_classification
from prompt_tuning.data import tasks
from prompt_tuning.t5 import config as t5_config
from prompt_tuning.t5 import network as t5_network

Batches = Iterator[tuple[dict[str, np.ndarray], np.ndarray]]


class EncoderDecoder:
  """A T5: what the jobs did before decoder-only models came (unchanged)."""

  network = t5_network  # the frozen network's param_shapes, param_axes, init_params
  # The keyword of model.predict that bounds the decoded length.
  predict_length_arg = "max_decode_length"
  # runs/pretrain.gin's default PRETRAIN_OBJECTIVE (data/pretraining.py's objectives).
  pretrain_objective = "span_corruption"
  _ARCHITECTURE_IGNORES = ("dtype", "dropout_rate", "vocab_size")

  # ---- the frozen checkpoint ----------------------------------------------------------------

  def frozen_shapes(self, config: Any) -> Any:
    return self.network.param_shapes(config)

  def frozen_axes(self, config: Any) -> Any:
    return self.network.param_axes(config)

  def random_frozen(self, config: Any, rng: Any) -> Any:
    return self.network.init_params(config, rng)

  def is_tiny(self, config: Any) -> bool:
    """Whether `config` has the tiny test architecture (whatever its dtype, dropout, vocab)."""
    tiny = t5_config.CONFIGS["t5_1_1_tiny"]
    fields = [f.name for f in dataclasses.fields(tiny)
              if f.name not in self._ARCHITECTURE_IGNORES]
    return all(getattr(config, f) == getattr(tiny, f) for f in fields)

  def check_checkpoint(self, config: Any, path: str | None, from_scratch: bool) -> None:
    """Fails unless `path` holds weights of `config`'s shapes; reads no weights. None
    (random weights) is for the tiny config, or any with `from_scratch`."""
    if path is None:
      if not (from_scratch or self.is_tiny(config)):
        raise ValueError("INITIAL_CHECKPOINT_PATH=None (a random frozen model) is only for "
                         "the tiny config; give the path of a T5X or Hugging Face checkpoint.")
      return
    if loading.detect_format(path) == "orbax":
      return  # its reader reads every weight: the shapes are checked when they are loaded
    fmt, lazy = loading.read_checkpoint(path, config)
    loading.check_tree(path, fmt, lazy, optim.flat(self.frozen_shapes(config)))

  def load(self, path: str, config: Any, shardings: Any) -> Any:
    return loading.load_params(path, config, shardings=shardings)

  def run_config(self, config: Any) -> dict:
    """The architecture a MODEL_DIR is bound to (run_config.json's "model")."""
    return {k: getattr(config, k) for k in (
        "vocab_size", "emb_dim", "num_heads", "head_dim", "mlp_dim", "num_encoder_layers",
        "num_decoder_layers")}

  # ---- data ---------------------------------------------------------------------------------

  def check_task(self, model: Any, name: str) -> None:
    """Nothing to check: a T5 reads any seqio task's EncDec features."""
    del model, name

  def get_batches(self, model: Any, name: str, split: str, lengths: Mapping[str, int],
                  batch_size: int, **kwargs) -> Iterator[dict[str, np.ndarray]]:
    """Training batches (features.get_batches's arguments)."""
    del model
    return features.get_batches(name, split, lengths, batch_size, **kwargs)

  def batch_shapes(self, batch_size: int, lengths: Mapping[str, int]) -> dict:
    """A training batch as get_batches yields it, as ShapeDtypeStructs (compile-only
    plans): int32 encoder inputs [batch, inputs] and decoder features [batch, targets]."""
    width = lambda key: lengths["inputs"] if key == "encoder_input_tokens" else lengths["targets"]
    return {k: jax.ShapeDtypeStruct((batch_size, width(k)), np.int32) for k in (
        "encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens",
        "decoder_loss_weights")}

  def get_examples(self, model: Any, name: str, split: str,
                   lengths: Mapping[str, int]) -> list[dict[str, Any]]:
    del model
    return features.get_examples(name, split, lengths)

  def score_batches(self, model: Any, examples: Sequence[dict], batch_size: int,
                    lengths: Mapping[str, int]) -> Batches:
    """(batch, real rows) for model.score, every batch full."""
    del model
    return features.batch_examples(examples, batch_size, lengths)

  def decode_batches(self, model: Any, examples: Sequence[dict], batch_size: int,
                     lengths: Mapping[str, int]) -> Batches:
    """(batch, real rows) for model.predict."""
    return self.score_batches(model, examples, batch_size, lengths)

  def candidates(self, model: Any, labels: Sequence[str], task: Any,
                 lengths: Mapping[str, int]) -> dict[str, np.ndarray]:
    """The class labels as model.score_candidates's `candidates`."""
    del model
    return rank_classification.candidate_batch(labels, task, lengths)

  def rank_batches(self, model: Any, rows: Sequence[dict], candidates: dict, batch_size: int,
                   lengths: Mapping[str, int]) -> Batches:
    """(batch, real rows) of the inputs for model.score_candidates."""
    # Rows need a target to batch; the candidates replace it, so any will do.
    dummy = candidates["decoder_target_tokens"][0]
    rows = [{**{k: v for k, v in ex.items() if k in ("inputs", "prompt_id")}, "targets": dummy}
            for ex in rows]
    return self.score_batches(model, rows, batch_size, lengths)


class DecoderOnly(EncoderDecoder):
  """A Hugging Face decoder-only LM (Llama, Qwen2, Gemma, GPT-2) and its own tokenizer."""

  network = decoder_network
  predict_length_arg = "max_new_tokens"
  pretrain_objective = "causal_lm"  # next-token prediction on every token of a chunk
  # Fields that change how the weights compute rather than which weights there are.
  _RUN_CONFIG_IGNORES = ("dtype", "dropout_rate", "attention_dropout_rate", "remat")

  def is_tiny(self, config: Any) -> bool:
    del config
    return False

  def check_checkpoint(self, config: Any, path: str | None, from_scratch: bool) -> None:
    """Fails unless `path` is a Hugging Face decoder directory whose config.json and tensors
    are `config`'s; reads no weights."""
    if path is None:
      if not from_scratch:
        raise ValueError("INITIAL_CHECKPOINT_PATH=None, but a decoder-only model loads its "
                         "weights from a Hugging Face model directory; give that directory "
                         "(config.json, *.safetensors and the tokenizer).")
      return
    hf_causal_lm.read_hf_causal_lm(path, config)

  def load(self, path: str, config: Any, shardings: Any) -> Any:
    return hf_causal_lm.load_params(path, config, shardings=shardings)

  def run_config(self, config: Any) -> dict:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
            if f.name not in self._RUN_CONFIG_IGNORES}

  # ---- data ---------------------------------------------------------------------------------

  def check_task(self, model: Any, name: str) -> None:
    """Refuses a task whose tokenizer is not the model's: another BOS or EOS would put the
    prompt or the end of the targets in the wrong place, and larger ids index past the
    embedding table."""
    ids = decoder_features.task_special_ids(name)
    base = tasks.base_name(tasks.as_provider(name).name)
    fix = ("tokenize it with the model's own tokenizer (VOCABULARY_PATH = "
           "INITIAL_CHECKPOINT_PATH, as models/hf_decoder.gin sets it)")
    if (ids.bos_id, ids.eos_id) != (model.bos_id, model.eos_id):
      raise ValueError(f"Task {base!r} is tokenized with BOS {ids.bos_id} and EOS "
                       f"{ids.eos_id}, but the model's are {model.bos_id} and "
                       f"{model.eos_id}; {fix}.")
    sizes = {t.output_features[k].vocabulary.vocab_size for t in tasks.get_subtasks(name)
             for k in features.FEATURE_KEYS}
    if max(sizes) > model.config.vocab_size:
      raise ValueError(f"Task {base!r} has a vocabulary of {max(sizes)} ids, more than the "
                       f"model's {model.config.vocab_size} embeddings; {fix}.")

  def get_batches(self, model, name, split, lengths, batch_size, task_ids=False, **kwargs):
    del model
    if task_ids:
      raise ValueError("Multi-task prompts (batches carrying each row's task) are for T5 "
                       "models; a decoder-only model takes a plain prompt.")
    return decoder_features.get_batches(name, split, lengths, batch_size, **kwargs)

  def batch_shapes(self, batch_size, lengths):
    """Rows of inputs + targets slots (decoder_features.layout): tokens, mask, positions,
    target_mask [batch, inputs + targets] and inputs_length [batch]."""
    shape = (batch_size, lengths["inputs"] + lengths["targets"])
    dtypes = {"tokens": np.int32, "mask": bool, "positions": np.int32, "target_mask": bool}
    return {**{k: jax.ShapeDtypeStruct(shape, d) for k, d in dtypes.items()},
            "inputs_length": jax.ShapeDtypeStruct((batch_size,), np.int32)}

  def get_examples(self, model, name, split, lengths):
    del model
    return decoder_features.get_examples(name, split, lengths)

  def score_batches(self, model, examples, batch_size, lengths):
    return decoder_features.batch_examples(examples, batch_size, lengths,
                                           _special_ids(model))

  def decode_batches(self, model, examples, batch_size, lengths):
    return decoder_features.batch_prompts(examples, batch_size, lengths, _special_ids(model))

  def candidates(self, model, labels, task, lengths):
    """{'tokens', 'mask'} [labels, longest label]: each label's ids with EOS, right-padded."""
    targets = rank_classification.label_targets(labels, task, lengths)
    if not tasks.as_provider(task).output_features["targets"].add_eos:  # as the rows get it
      targets = [np.append(t, model.eos_id).astype(np.int32) for t in targets]
    width = max(len(t) for t in targets)
    tokens = np.full((len(targets), width), _special_ids(model).pad_id, np.int32)
    for row, ids in zip(tokens, targets):
      row[:len(ids)] = ids
    mask = np.arange(width)[None] < np.asarray([len(t) for t in targets])[:, None]
    return {"tokens": tokens, "mask": mask}

  def rank_batches(self, model, rows, candidates, batch_size, lengths):
    del candidates
    return self.decode_batches(model, rows, batch_size, lengths)


def pretrain_objective(model: Any) -> str:
  """The pretraining objective for `model`'s kind: T5's span corruption, a decoder-only
  model's next-token prediction (runs/pretrain.gin: PRETRAIN_OBJECTIVE's default)."""
  return for_model(model).pretrain_objective


def _special_ids(model: Any) -> hf_tokenizers.SpecialIds:
  return hf_tokenizers.SpecialIds(bos_id=model.bos_id, eos_id=model.eos_id,
                                  pad_id=model.pad_id)


_ARCHITECTURES = {"encoder_decoder": EncoderDecoder(), "decoder_only": DecoderOnly()}


def for_model(model: Any) -> EncoderDecoder:
  """The reader of `model`'s checkpoint and data, by its `architecture` attribute (a job
  given no model, e.g. one stopped by bad input before it needs one, reads T5 data)."""
  name = getattr(model, "architecture", "encoder_decoder")
  if name not in _ARCHITECTURES:
    raise ValueError(f"The model's architecture {name!r} is not one of "
                     f"{sorted(_ARCHITECTURES)}.")
  return _ARCHITECTURES[name]
